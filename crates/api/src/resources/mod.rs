//! The `shoal.io/v1alpha1` resources.

pub mod baremetal;
pub mod cluster;
pub mod common;
pub mod host;
pub mod keypair;
pub mod machine;
pub mod nodepool;
pub mod organization;
pub mod release;

pub use baremetal::{
    BareMetalMachine, BareMetalMachineSpec, BareMetalMachineStatus, BareMetalState,
    BareMetalTransition, BmcSpec, HardwareFacts, ProductionNetwork,
};
pub use cluster::{
    AwsProviderSpec, AwsResource, AwsStatus, Cluster, ClusterPhase, ClusterSpec, ClusterStatus,
    ControlPlaneSpec, ProviderType, RemovedResources,
};
pub use common::{Condition, MachineRole, MachineSize, ResourceTotals};
pub use host::{DrainFailure, DrainMode, Host, HostDrain, HostDrainStatus, HostSpec, HostStatus};
pub use keypair::{KeyPair, KeyPairSpec, KeyPairStatus};
pub use machine::{
    ConsoleTail, IllegalPhaseTransition, Machine, MachineBootstrap, MachinePhase, MachineSpec,
    MachineStatus, MigrationRequest, MigrationState, MigrationStatus,
};
pub use nodepool::{NodePool, NodePoolSpec, NodePoolStatus};
pub use organization::{OrgAwsAccess, OrgRole, Organization, OrganizationSpec, OrganizationStatus};
pub use release::{BootstrapFormat, Release, ReleaseImage, ReleaseSpec, ReleaseState};
