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
    hex(&Sha256::digest(bytes))
}

/// How a value that may be secret is kept in observations and plans: `sha256:<hex>`.
#[must_use]
pub fn fingerprint(value: &str) -> String {
    format!("sha256:{}", sha256_hex(value.as_bytes()))
}

/// A keyed fingerprint of a value that may be secret: `hmac-sha256:<hex>` under the host's key
/// (see `observe::fingerprint_key`), so a short secret cannot be guessed from a snapshot or a saved
/// plan by hashing candidates; `sha256:<hex>` without a key (observations built in code).
#[must_use]
pub fn fingerprint_with(key: Option<&[u8]>, value: &[u8]) -> String {
    match key {
        Some(k) => format!("hmac-sha256:{}", hex(&hmac_sha256(k, value))),
        None => format!("sha256:{}", sha256_hex(value)),
    }
}

/// The public id of a fingerprint key: which key fingerprints were made with, revealing nothing
/// of it. Plans compare fingerprints only when the ids match.
#[must_use]
pub fn fingerprint_key_id(key: &[u8]) -> String {
    hex(&hmac_sha256(key, b"nemoclaw fingerprint key id"))[..16].to_owned()
}

/// HMAC-SHA256 (RFC 2104): 30 lines that do not need a crate of their own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `sha256:<hex>` of file content.
#[must_use]
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    /// RFC 4231, test case 2.
    #[test]
    fn hmac_matches_the_rfc_vector() {
        assert_eq!(
            super::fingerprint_with(Some(b"Jefe"), b"what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231, test case 6).
        assert_eq!(
            super::fingerprint_with(
                Some(&[0xaa; 131]),
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "hmac-sha256:60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
