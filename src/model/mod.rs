//! Plain data shared by every layer: the resolved desired state and the observed host.
//!
//! Nothing here does I/O. Every type serializes, so an observation can be saved and planned against
//! offline, and a plan can be reviewed as data.

pub mod desired;
pub mod observed;
pub mod text;

pub use desired::{
    Cleanup, Desired, DesiredSource, GatewayDesired, GatewayRuntime, Millis, PolicyFile, PortRange,
    SandboxCreate, SandboxDesired,
};
pub use observed::{
    CertFacts, CliFacts, CliStatus, ClusterFacts, ContainerFacts, DockerFacts, DriverFacts,
    DriverProcess, ForwardContent, ForwardPidFile, ForwardRow, GatewayRegistration, Health,
    Holders, HostFacts, ImageFacts, Listener, Lookup, MountFacts, NetworkFacts,
    OBSERVED_FORMAT_VERSION, Observation, Observed, OpenClawFacts, OpenClawLock, ProcessInfo,
    PublishedPort, PvcFacts, Registry, RegistryEntry, RuntimeMarker, SandboxContainer, SandboxRow,
    SecretFacts, VolumeFacts,
};

/// Returns the lowercase hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// How a value that may be secret is kept in observations and plans: `sha256:<hex>`.
#[must_use]
pub fn fingerprint(value: &str) -> String {
    format!("sha256:{}", sha256_hex(value.as_bytes()))
}

/// `sha256:<hex>` of file content.
#[must_use]
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}
