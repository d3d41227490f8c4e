//! One module per subcommand.

pub mod cluster;
pub mod login;
pub mod objects;
pub mod org;
pub mod server;
pub mod token;
