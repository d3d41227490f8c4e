//! One module per subcommand.

pub mod agent;
pub mod audit;
pub mod aws_progress;
pub mod baremetal;
pub mod cluster;
pub mod cluster_view;
pub mod gateway;
pub mod host;
pub mod host_drain;
pub mod kubeconfig;
pub mod login;
pub mod monitoring;
pub mod objects;
pub mod oidc;
pub mod org;
pub mod pxe;
pub mod server;
pub mod token;
pub mod wait;
