//! The desired state after defaults are applied and every cross-reference is checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the user asked this host to look like, resolved from a `nemoclaw.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Where the desired state came from, and the hash that saved plans pin.
    pub source: DesiredSource,
    /// The OpenShell gateway.
    pub gateway: GatewayDesired,
    /// The dashboard port pool (inclusive).
    pub dashboard: PortRange,
    /// Declared sandboxes, in file order.
    pub sandboxes: Vec<SandboxDesired>,
    /// How stale listeners are recognised and stopped.
    pub cleanup: Cleanup,
    /// Docker volumes the user asked to delete, by exact name.
    pub destroy_volumes: BTreeSet<String>,
    /// Undeclared sandboxes the user allows the engine to delete, by exact name.
    pub prune_sandboxes: BTreeSet<String>,
    /// Fingerprints of the file's `gateway.env` values, as the planner compares them.
    #[serde(default)]
    pub secret_fingerprints: SecretFingerprints,
}

/// The file's secret values reduced to fingerprints, under the host's key when there is one
/// ([`Desired::fingerprint_secrets`]). The planner sees only these, never a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFingerprints {
    /// The key's public id; `None`: plain SHA-256.
    pub key_id: Option<String>,
    /// Per `gateway.env` key, its value's fingerprint.
    pub env: BTreeMap<String, String>,
    /// Of the whole `gateway.env` map: saved plans pin it and apply re-checks it.
    pub env_map: String,
}

/// The file a [`Desired`] was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSource {
    /// The path as the user gave it.
    pub path: String,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
}

/// The gateway's desired settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDesired {
    /// Host port of the gateway (reserved even when the gateway is not managed).
    pub port: u16,
    /// Gateway name: `nemoclaw` for port 8080, `nemoclaw-<port>` otherwise, unless set.
    pub name: String,
    /// Address the port is published on: 127.0.0.1 or 0.0.0.0.
    pub bind_address: IpAddr,
    /// How it runs; `None` when the file has no `gateway` section and nothing is managed.
    pub runtime: Option<GatewayRuntime>,
    /// How long a started gateway may take to answer on its port.
    pub health_timeout: Millis,
    /// How long a restart waits for the running gateway to exit on SIGTERM.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Millis,
}

/// The two ways an OpenShell gateway runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GatewayRuntime {
    /// A privileged container `openshell-cluster-<name>` running k3s.
    LegacyK3s {
        /// The cluster image reference.
        image: String,
        /// Whether the container runs privileged.
        privileged: bool,
        /// Whether the file asks the engine to manage the cluster's bootstrap secrets and report
        /// its PVCs (a `gateway.cluster` section).
        cluster: bool,
        /// A kubeconfig for the k3s API, when the file names one.
        kubeconfig: Option<String>,
        /// `auto`, `on` or `off`: GPUs for the container.
        #[serde(default = "gpu_auto")]
        gpu: String,
    },
    /// A host process `openshell-gateway`.
    DockerDriver {
        /// The binary, when the file names one; otherwise it is resolved on the host.
        binary: Option<String>,
        /// Extra environment from the file.
        env: BTreeMap<String, String>,
    },
}

impl GatewayDesired {
    /// The default name for a gateway port (NemoClaw #4422).
    #[must_use]
    pub fn default_name(port: u16) -> String {
        if port == 8080 {
            "nemoclaw".to_owned()
        } else {
            format!("nemoclaw-{port}")
        }
    }

    /// `openshell-cluster-<name>`: the legacy container, its volume and its network.
    #[must_use]
    pub fn cluster_name(&self) -> String {
        format!("openshell-cluster-{}", self.name)
    }

    /// The k3s node name, stable across container recreation so PV node affinity survives:
    /// `openshell-<name lowercased, runs of other characters as one hyphen>`.
    #[must_use]
    pub fn node_name(&self) -> String {
        let mut out = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let trimmed = out.trim_matches('-');
        if trimmed.is_empty() {
            "openshell-gateway".to_owned()
        } else {
            format!("openshell-{trimmed}")
        }
    }
}

/// One declared sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxDesired {
    /// Sandbox name (DNS label).
    pub name: String,
    /// Dashboard port pinned in the file, if any.
    pub dashboard_port: Option<u16>,
    /// Address the dashboard forward binds.
    pub dashboard_bind: IpAddr,
    /// What `openshell sandbox create` is told, beyond the name and port.
    pub create: SandboxCreate,
}

/// How a sandbox is created, resolved from the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCreate {
    /// Agent (recorded in the registry).
    pub agent: String,
    /// `--from`: a Dockerfile or build directory (a path, resolved against the file's
    /// directory) or an image reference, as written. `None`: the sandbox cannot be created.
    pub from: Option<String>,
    /// `--policy FILE`, if any.
    pub policy: Option<PolicyFile>,
    /// `auto`, `on` or `off`.
    pub gpu: String,
    /// CPU limit (`--cpu`), validated to the CLI's syntax.
    pub cpu: Option<String>,
    /// Memory limit (`--memory`), validated to the CLI's syntax.
    pub memory: Option<String>,
    /// How long a create may take to report `Ready`.
    pub ready_timeout: Millis,
}

/// A sandbox policy file and the SHA-256 of its content when the file was loaded (the plan shows
/// it; apply refuses the create if the file changed since).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    /// Path, resolved against the desired file's directory.
    pub path: String,
    /// `sha256:<hex>` of the content; `None` until the CLI has read the file.
    pub sha256: Option<String>,
}

/// Stale-listener cleanup settings, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Whether stale listeners in the dashboard range are stopped at all.
    pub stale_listeners: bool,
    /// Substrings of a full command line that mark a process as ours to stop.
    pub markers: Vec<String>,
    /// Ports never touched, whatever listens there.
    pub protected_ports: BTreeSet<u16>,
    /// How long to wait after SIGTERM before SIGKILL.
    pub term_grace: Millis,
    /// How long to wait after SIGKILL before giving up.
    pub kill_grace: Millis,
    /// How long to poll the socket table for the port to be free.
    pub port_free_timeout: Millis,
    /// OpenClaw profiles whose gateways are wanted.
    #[serde(default)]
    pub keep_openclaw_profiles: BTreeSet<String>,
}

impl Desired {
    /// (Re)computes [`Self::secret_fingerprints`] under `key` (`None`: plain SHA-256).
    pub fn fingerprint_secrets(&mut self, key: Option<&[u8]>) {
        let empty = BTreeMap::new();
        let env = match &self.gateway.runtime {
            Some(GatewayRuntime::DockerDriver { env, .. }) => env,
            _ => &empty,
        };
        let map: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        self.secret_fingerprints = SecretFingerprints {
            key_id: key.map(super::fingerprint_key_id),
            env: env
                .iter()
                .map(|(k, v)| (k.clone(), super::fingerprint_with(key, v.as_bytes())))
                .collect(),
            // Without a key, the bare hex saved plans always carried.
            env_map: match key {
                Some(_) => super::fingerprint_with(key, map.as_bytes()),
                None => super::sha256_hex(map.as_bytes()),
            },
        };
    }

    /// Returns the declared sandbox that pins `port`, if any.
    #[must_use]
    pub fn sandbox_needing(&self, port: u16) -> Option<&SandboxDesired> {
        self.sandboxes
            .iter()
            .find(|s| s.dashboard_port == Some(port))
    }

    /// Returns whether a sandbox of that name is declared.
    #[must_use]
    pub fn declares(&self, name: &str) -> bool {
        self.sandboxes.iter().any(|s| s.name == name)
    }
}

/// An inclusive TCP port range such as `18789-18799`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// The default dashboard range, 18789-18799.
    pub const DASHBOARD_DEFAULT: Self = Self {
        start: 18789,
        end: 18799,
    };

    /// Returns whether `port` lies in the range.
    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Returns the ports of the range in ascending order.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }

    /// Parses `A-B` (inclusive, A <= B) or a single port `A`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parse_port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{}` is not a port number (1-65535)", s.trim()))
        };
        let (start, end) = match text.split_once('-') {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let p = parse_port(text)?;
                (p, p)
            }
        };
        if start > end {
            return Err(format!(
                "the range starts at {start} but ends before it, at {end}"
            ));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A duration in whole milliseconds, written in files as `500ms`, `1s`, `1.5s` or `2m`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The longest wait a file can ask for (one hour); no plan of the engine waits longer.
    pub const MAX: Self = Self(3_600_000);

    /// Parses `<number><unit>` with unit `ms`, `s` or `m`; the number may have a fraction.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` has no unit; write it as `500ms`, `1s` or `2m`"))?;
        let (number, unit) = text.split_at(split);
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            _ => return Err(format!("unknown unit `{unit}`; use `ms`, `s` or `m`")),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{number}` is not a number"))?;
        let ms = value * scale;
        if !ms.is_finite() || ms > Self::MAX.0 as f64 {
            return Err(format!("`{text}` is too long; the limit is one hour"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self(ms.round() as u64))
    }

    /// Returns the value as a [`std::time::Duration`].
    #[must_use]
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

fn default_stop_grace() -> Millis {
    Millis(30_000)
}

fn gpu_auto() -> String {
    "auto".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_normalized() {
        let g = |name: &str| GatewayDesired {
            port: 8080,
            name: name.to_owned(),
            bind_address: "127.0.0.1".parse().unwrap(),
            runtime: None,
            health_timeout: Millis(1000),
            stop_grace: Millis(1000),
        };
        assert_eq!(g("nemoclaw").node_name(), "openshell-nemoclaw");
        assert_eq!(g("My__GW.9").node_name(), "openshell-my-gw-9");
        assert_eq!(g("--").node_name(), "openshell-gateway");
        assert_eq!(
            g("nemoclaw-9090").cluster_name(),
            "openshell-cluster-nemoclaw-9090"
        );
    }

    #[test]
    fn millis_parses_units_and_fractions() {
        assert_eq!(Millis::parse("1s"), Ok(Millis(1000)));
        assert_eq!(Millis::parse("1.5s"), Ok(Millis(1500)));
        assert_eq!(Millis::parse("250ms"), Ok(Millis(250)));
        assert_eq!(Millis::parse("2m"), Ok(Millis(120_000)));
        assert!(Millis::parse("5").unwrap_err().contains("no unit"));
        assert!(Millis::parse("5h").unwrap_err().contains("unknown unit"));
        assert!(Millis::parse("..s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn port_range_parses_and_rejects_reversed() {
        assert_eq!(
            PortRange::parse("18789-18799"),
            Ok(PortRange {
                start: 18789,
                end: 18799
            })
        );
        assert_eq!(
            PortRange::parse("9000"),
            Ok(PortRange {
                start: 9000,
                end: 9000
            })
        );
        assert!(PortRange::parse("2-1").unwrap_err().contains("ends before"));
        assert!(PortRange::parse("0-5").unwrap_err().contains("not a port"));
        assert!(PortRange::parse("x-70000").is_err());
    }
}
