//! Plain data shared by every layer: the resolved desired state and the observed host.
//!
//! Nothing here does I/O. Every type serializes, so an observation can be saved and planned against
//! offline, and a plan can be reviewed as data.

pub mod desired;
pub mod observed;

pub use desired::{
    Cleanup, Desired, DesiredSource, GatewayDesired, Millis, PortRange, SandboxDesired,
};
pub use observed::{
    ForwardContent, ForwardPidFile, Holders, HostFacts, Listener, OBSERVED_FORMAT_VERSION,
    Observation, Observed, ProcessInfo, Registry, RegistryEntry,
};
