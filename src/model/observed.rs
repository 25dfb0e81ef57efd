//! What the observers saw on the host, as plain serializable data.
//!
//! Every observation is tri-state: a known value (which may itself say "absent"), or
//! [`Observation::Unknown`] with the reason it could not be told. The planner must never read
//! "unknown" as "absent".

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::PortRange;

/// Version of the observed-snapshot format (`nemoclaw observe -o json`). Minor bumps are additive.
pub const OBSERVED_FORMAT_VERSION: &str = "1.0";

/// One snapshot of the host, everything the planner needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Snapshot format version, see [`OBSERVED_FORMAT_VERSION`].
    pub format_version: String,
    /// Who observed, and from which process.
    pub host: HostFacts,
    /// The ports whose listeners were looked at. Ports outside these were not observed.
    pub scanned_ports: Vec<PortRange>,
    /// Listening TCP sockets on the scanned ports (IPv4 and IPv6).
    pub listeners: Observation<Vec<Listener>>,
    /// The processes that hold those listeners, by pid.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// The NemoClaw sandbox registry (`~/.nemoclaw/sandboxes.json`).
    pub registry: Observation<Registry>,
    /// Dashboard forward pid files (`~/.config/openshell/forwards/*.pid`).
    pub forwards: Observation<Vec<ForwardPidFile>>,
    /// The Docker engine's objects that the file refers to; absent when nothing needs Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Observation<DockerFacts>>,
    /// TCP and HTTP probes of the gateway port; absent when no gateway is managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_health: Option<Health>,
    /// The `docker-driver` gateway's files and process; absent for other runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_process: Option<DriverFacts>,
    /// The legacy gateway's k3s cluster (bootstrap secrets, PVCs); absent for other runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Observation<ClusterFacts>>,
    /// The `openshell` CLI's view; absent when it was not asked (no sandboxes declared or
    /// registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openshell: Option<CliFacts>,
    /// What each OpenClaw gateway among the listeners says about itself, by pid.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub openclaw: BTreeMap<u32, OpenClawFacts>,
}

/// Evidence about one OpenClaw gateway process beyond its command line (which every gateway
/// shares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenClawFacts {
    /// Its identifying environment (`OPENCLAW_PROFILE`, `OPENCLAW_STATE_DIR`, the service
    /// markers, `INVOCATION_ID`); never credentials.
    pub environ: Observation<BTreeMap<String, String>>,
    /// The systemd unit its cgroup names, if any.
    pub unit: Option<String>,
    /// Its parent, when that is an OpenClaw launcher holding it as a child.
    pub wrapper: Option<u32>,
    /// Client connections established to its ports.
    pub established: Observation<u32>,
    /// The status `GET /healthz` answered with, if it answered.
    pub healthz: Option<u16>,
    /// OpenClaw's lock files that name this pid.
    pub locks: Observation<Vec<OpenClawLock>>,
}

impl OpenClawFacts {
    /// The systemd unit that supervises it: the service markers OpenClaw's unit exports, or the
    /// unit its cgroup names under systemd (`INVOCATION_ID`). `None` when nothing says so.
    #[must_use]
    pub fn supervisor(&self) -> Option<String> {
        let env = self.environ.known()?;
        // OpenClaw's own test (`dist/supervisor-markers-*.mjs`), plus its unit's service marker.
        let supervised = env
            .get("OPENCLAW_SERVICE_MARKER")
            .is_some_and(|m| m == "openclaw")
            || [
                "OPENCLAW_SYSTEMD_UNIT",
                "INVOCATION_ID",
                "SYSTEMD_EXEC_PID",
                "JOURNAL_STREAM",
            ]
            .iter()
            .any(|k| env.contains_key(*k));
        if !supervised {
            return None;
        }
        Some(
            env.get("OPENCLAW_SYSTEMD_UNIT")
                .cloned()
                .or_else(|| self.unit.clone())
                .unwrap_or_else(|| "openclaw-gateway.service".to_owned()),
        )
    }

    /// Its profile: `OPENCLAW_PROFILE`, else the suffix of a `.openclaw-<profile>` state dir,
    /// else `default`.
    #[must_use]
    pub fn profile(&self) -> String {
        let env = self.environ.known();
        if let Some(p) = env
            .and_then(|e| e.get("OPENCLAW_PROFILE"))
            .filter(|p| !p.is_empty())
        {
            return p.clone();
        }
        let dir = env
            .and_then(|e| e.get("OPENCLAW_STATE_DIR").cloned())
            .or_else(|| {
                self.locks
                    .known()
                    .and_then(|l| l.iter().find_map(|l| l.state_dir.clone()))
            });
        dir.and_then(|d| {
            d.trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|leaf| leaf.strip_prefix(".openclaw-"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".to_owned())
    }
}

/// One of OpenClaw's gateway lock files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenClawLock {
    /// The file.
    pub path: String,
    /// The gateway port it records.
    pub port: Option<u16>,
    /// The config file it records.
    pub config_path: Option<String>,
    /// The state dir it records.
    pub state_dir: Option<String>,
    /// Whether its recorded start time is the process's own (`/proc/PID/stat` field 22): the
    /// lock is this process's, not a recycled pid's.
    pub start_time_matches: bool,
}

/// What the Docker engine holds under the exact names the file refers to. A name that was looked
/// up maps to `null` when the object does not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerFacts {
    /// The engine's version.
    pub server_version: String,
    /// Containers by exact name.
    pub containers: BTreeMap<String, Option<ContainerFacts>>,
    /// Volumes by exact name.
    pub volumes: BTreeMap<String, Option<VolumeFacts>>,
    /// Networks by exact name.
    pub networks: BTreeMap<String, Option<NetworkFacts>>,
    /// Images by reference.
    pub images: BTreeMap<String, Option<ImageFacts>>,
    /// Containers labelled `openshell.ai/managed-by=openshell` (Docker-driver sandboxes), when
    /// looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_containers: Option<Vec<SandboxContainer>>,
}

/// A Docker-driver sandbox container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxContainer {
    /// Container name.
    pub name: String,
    /// Container id.
    pub id: String,
    /// `openshell.ai/sandbox-name`.
    pub sandbox: String,
    /// `openshell.ai/sandbox-id`.
    pub sandbox_id: String,
    /// Container status.
    pub status: String,
    /// Whether it runs.
    pub running: bool,
}

/// What the `openshell` CLI reports. `installed: false` is a known absence: steps that need the
/// CLI are blocked, everything else plans as usual.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliFacts {
    /// Whether an `openshell` binary was found.
    pub installed: bool,
    /// The binary.
    pub binary: Option<String>,
    /// `openshell --version`: `0.0.72`.
    #[serde(default = "not_observed")]
    pub version: Observation<String>,
    /// The long flags `openshell sandbox create --help` lists (`from`, `policy`, `gpu`, `cpu`,
    /// …): what this CLI accepts, observed rather than guessed from its version.
    #[serde(default = "not_observed")]
    pub create_flags: Observation<Vec<String>>,
    /// Whether `openshell sandbox list --help` lists `--output` (machine-readable JSON).
    #[serde(default)]
    pub list_json: bool,
    /// `openshell status`: the active gateway and whether it is connected.
    pub status: Observation<CliStatus>,
    /// `openshell sandbox list` (`-o json` where the CLI has it).
    pub sandboxes: Observation<Vec<SandboxRow>>,
    /// `openshell sandbox get <name>` for registered sandboxes missing from the list.
    pub lookups: BTreeMap<String, Lookup>,
    /// `openshell forward list`.
    pub forwards: Observation<Vec<ForwardRow>>,
    /// `openshell gateway list`: the gateways the CLI knows by name.
    #[serde(default = "not_observed")]
    pub gateways: Observation<Vec<GatewayRegistration>>,
}

fn not_observed<T>() -> Observation<T> {
    Observation::Unknown {
        reason: "not observed (a snapshot from an older engine)".to_owned(),
    }
}

/// `openshell status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliStatus {
    /// The active gateway's name.
    pub gateway: Option<String>,
    /// Its endpoint (`Server:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Whether it reports `Connected` (and the command exited 0).
    pub connected: bool,
    /// Whether any gateway is configured (`Status: No gateway configured.` says not).
    #[serde(default = "yes")]
    pub configured: bool,
    /// Why it is not connected: the CLI's error, as one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn yes() -> bool {
    true
}

/// One gateway the CLI has registered (`openshell gateway list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRegistration {
    /// Its name.
    pub name: String,
    /// Its endpoint URL.
    pub endpoint: String,
    /// Whether it is the active (selected) gateway.
    pub active: bool,
}

/// One row of `openshell sandbox list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRow {
    /// Sandbox name.
    pub name: String,
    /// Phase (`Ready`, `Provisioning`, `Error`, ...).
    pub phase: String,
    /// Its id, where the CLI prints one (`sandbox list -o json`): what a forward's
    /// `ProxyCommand` names it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The result of `openshell sandbox get <name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Lookup {
    /// It exists.
    Present {
        /// Its phase.
        phase: String,
    },
    /// The gateway said it does not exist.
    NotFound,
    /// Anything else: gateway errors, timeouts. Never read as "gone".
    Error {
        /// What happened.
        reason: String,
    },
}

/// One row of `openshell forward list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRow {
    /// Sandbox.
    pub sandbox: String,
    /// Bind address.
    pub bind: String,
    /// Port.
    pub port: u16,
    /// Pid.
    pub pid: Option<u32>,
    /// `running`, `active` or `dead`.
    pub status: String,
}

/// One container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    /// Container id: with the name, its identity.
    pub id: String,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    /// Whether it runs.
    pub running: bool,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// When it last started (RFC 3339).
    pub started_at: Option<String>,
    /// When it last stopped (RFC 3339).
    pub finished_at: Option<String>,
    /// `started_at` in milliseconds since the epoch.
    pub started_at_ms: Option<u64>,
    /// The image reference it was created from.
    pub image_ref: String,
    /// The image id it runs.
    pub image_id: String,
    /// Published ports.
    pub published: Vec<PublishedPort>,
    /// Mounts.
    pub mounts: Vec<MountFacts>,
    /// Whether it asks Docker for GPUs (`HostConfig.DeviceRequests`).
    #[serde(default)]
    pub gpu: bool,
    /// Whether it runs privileged.
    #[serde(default)]
    pub privileged: bool,
}

/// One published port: `host_ip:host_port -> container_port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedPort {
    /// `30051/tcp`.
    pub container_port: String,
    /// Host address (may be empty for all).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
}

/// One mount of a container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MountFacts {
    /// `volume` or `bind`.
    pub kind: String,
    /// Volume name, for volumes.
    pub name: Option<String>,
    /// Where it is mounted in the container.
    pub destination: String,
}

/// One volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFacts {
    /// Driver.
    pub driver: String,
    /// Where its data lives on the host.
    pub mountpoint: String,
    /// Containers (by name) that mount it, running or not.
    pub used_by: Vec<String>,
}

/// One network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFacts {
    /// Network id.
    pub id: String,
    /// Driver.
    pub driver: String,
}

/// One image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// Image id.
    pub id: String,
}

/// Probes of the gateway port on 127.0.0.1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether a TCP connection was accepted.
    pub tcp_open: bool,
    /// HTTP status of `GET /`, when one came back.
    pub http_status: Option<u16>,
    /// Whether anything came back at all (an HTTP status, or the alert a TLS port answers a
    /// plaintext request with).
    #[serde(default)]
    pub answered: bool,
    /// What went wrong, when something did.
    pub detail: Option<String>,
}

impl Health {
    /// Alive means it answers: any reply on the connection. An accepted connection alone is not
    /// enough (Docker's userland proxy accepts for a container that is not listening), and the
    /// status does not matter (the real 0.0.72 gateway answers `GET /` with 404, a TLS port with
    /// an alert).
    #[must_use]
    pub fn alive(&self) -> bool {
        self.answered
    }
}

/// The `docker-driver` gateway on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverFacts {
    /// Its state directory (pid file, log, database, `runtime.json`).
    pub state_dir: String,
    /// The pid in `openshell-gateway.pid`: known `null` when there is no pid file.
    pub pid_file: Observation<Option<u32>>,
    /// `runtime.json`, NemoClaw's marker of the last start: known `null` when absent.
    #[serde(default = "absent_marker")]
    pub runtime_marker: Observation<Option<RuntimeMarker>>,
    /// The binary that would be started, or `null` when none was found.
    pub binary: Option<String>,
    /// Where the binary was looked for.
    pub binary_candidates: Vec<String>,
    /// The live gateway process, found through the pid file or the port's listener.
    pub process: Option<DriverProcess>,
    /// `<binary> --version`: `0.0.72`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_version: Option<String>,
    /// The sandbox supervisor next to the binary (`openshell-sandbox`), which the gateway
    /// mounts into sandboxes instead of pulling an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_binary: Option<String>,
    /// The id of the key the environment's fingerprints were made with
    /// ([`crate::model::fingerprint_key_id`]); absent: plain SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_key_id: Option<String>,
}

/// A live `openshell-gateway` process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverProcess {
    /// Identity, owner, command line.
    pub info: ProcessInfo,
    /// `pid-file` or `port-listener` (adopted).
    pub found_via: String,
    /// Its environment, restricted to the keys the engine manages plus the file's keys.
    pub environ: Observation<BTreeMap<String, String>>,
    /// `/proc/<pid>/exe`; ends in ` (deleted)` when the binary was replaced on disk.
    pub exe: Observation<String>,
    /// The systemd service its cgroup names (the OpenShell package's `openshell-gateway.service`),
    /// if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How long it has run, when that could be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

/// Facts about the observing process and the user it acts for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The user the engine acts for: `SUDO_UID` under sudo, else the real uid.
    pub invoking_uid: u32,
    /// That user's name, when it resolves.
    pub invoking_user: Option<String>,
    /// Pid of the observing process.
    pub engine_pid: u32,
    /// Its ancestors, parent first, up to pid 1. Never signalled.
    pub engine_ancestors: Vec<u32>,
    /// When the observation was taken, in milliseconds since the epoch. The planner compares
    /// container start times to it (a clock read here, as data, keeps the planner pure).
    #[serde(default)]
    pub observed_at_ms: u64,
    /// How listeners were read: `netlink` (sock_diag) or `proc-net` (`/proc/net/tcp{,6}`).
    pub listener_source: String,
    /// NVIDIA GPU device nodes (`/dev/nvidia0`, …): what `gpu: auto` decides on.
    #[serde(default = "not_observed")]
    pub nvidia_gpus: Observation<Vec<String>>,
}

/// A tri-state observation: known, or unknown with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Observation<T> {
    /// The value was read.
    Known {
        /// What was read.
        value: T,
    },
    /// The value could not be read; nothing may be concluded from it.
    Unknown {
        /// Why it could not be read.
        reason: String,
    },
}

impl<T> Observation<T> {
    /// Returns the value if it is known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known { value } => Some(value),
            Self::Unknown { .. } => None,
        }
    }
}

/// One listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// Port it listens on.
    pub port: u16,
    /// Local address it is bound to.
    pub address: IpAddr,
    /// Socket inode, which links it to the fds of the processes holding it.
    pub inode: u64,
    /// Owner uid of the socket as the kernel records it (the creator's).
    pub socket_uid: u32,
    /// The processes holding it.
    pub holders: Holders,
}

/// Which processes hold a socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Holders {
    /// Found through `/proc/<pid>/fd`.
    Known {
        /// The pids, ascending.
        pids: Vec<u32>,
    },
    /// Not found: a process outside our view, or one whose fds we could not read.
    Unknown {
        /// Why not.
        reason: String,
    },
}

/// A process that holds a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22); with `pid`, its identity.
    pub start_time: u64,
    /// Real uid.
    pub uid: u32,
    /// Name of that user, when it resolves.
    pub user: Option<String>,
    /// Full command line (never the 15-character kernel name).
    pub cmdline: Vec<String>,
}

impl ProcessInfo {
    /// Returns the command line joined by spaces, as markers are matched against it.
    #[must_use]
    pub fn command(&self) -> String {
        self.cmdline.join(" ")
    }
}

/// The sandbox registry file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Where it was read from.
    pub path: String,
    /// False when the file does not exist (no sandboxes registered).
    pub present: bool,
    /// Entries by sandbox name.
    pub sandboxes: BTreeMap<String, RegistryEntry>,
    /// The default sandbox, if set.
    pub default_sandbox: Option<String>,
}

/// The fields of a registry entry the engine reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// Sandbox name.
    pub name: String,
    /// Recorded dashboard port.
    pub dashboard_port: Option<u16>,
    /// Recorded gateway name (newer NemoClaw).
    pub gateway_name: Option<String>,
    /// Recorded gateway port (newer NemoClaw).
    pub gateway_port: Option<u16>,
}

/// One dashboard forward pid file, `<sandbox>-<port>.pid` holding `<pid>\t<sandbox_id>\t<bind>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPidFile {
    /// The file.
    pub path: String,
    /// Sandbox name, from the file name.
    pub sandbox: String,
    /// Forwarded port, from the file name.
    pub port: u16,
    /// Contents, or why they could not be read.
    pub content: Observation<ForwardContent>,
}

/// What a forward pid file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardContent {
    /// Pid of the forward process.
    pub pid: u32,
    /// OpenShell's id of the sandbox.
    pub sandbox_id: String,
    /// Bind address of the forward.
    pub bind: String,
}

/// The fields of `runtime.json` the engine reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeMarker {
    /// Pid recorded at start.
    pub pid: Option<u32>,
    /// Binary recorded at start.
    pub gateway_binary: Option<String>,
    /// Endpoint recorded at start.
    pub endpoint: Option<String>,
}

fn absent_marker() -> Observation<Option<RuntimeMarker>> {
    Observation::Known { value: None }
}

/// The k3s cluster of a legacy gateway, as far as the engine manages it. Secret values never
/// appear here: only SHA-256 fingerprints and certificate metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Where the API was reached, and through which kubeconfig.
    pub source: String,
    /// Whether namespace `openshell` exists.
    pub namespace: bool,
    /// Whether statefulset `openshell/openshell` exists.
    pub statefulset: bool,
    /// The four bootstrap secrets by name.
    pub secrets: BTreeMap<String, SecretFacts>,
    /// PVCs in namespace `openshell`.
    pub pvcs: Vec<PvcFacts>,
    /// Fingerprints of the CLI's copy of the client bundle
    /// (`~/.config/openshell/gateways/<gw>/mtls/{ca.crt,tls.crt,tls.key}`), `null` when missing.
    pub cli_bundle: BTreeMap<String, Option<String>>,
    /// When the three TLS secrets are each valid: how they fit together, `openshell` (one CA signs
    /// both certificates) or `nemoclaw-repair` (a self-signed server certificate and a separate
    /// client CA, as NemoClaw's #3306 repair makes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_layout: Option<String>,
    /// When they are each valid but do not work together: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_problem: Option<String>,
}

/// One bootstrap secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SecretFacts {
    /// Not there.
    Missing,
    /// There and usable.
    Valid {
        /// SHA-256 of each key's value.
        fingerprints: BTreeMap<String, String>,
        /// The certificate, for TLS secrets.
        cert: Option<CertFacts>,
    },
    /// There but unusable.
    Malformed {
        /// Why.
        reason: String,
        /// SHA-256 of each key's value.
        fingerprints: BTreeMap<String, String>,
    },
}

impl SecretFacts {
    /// The fingerprints, when the secret exists.
    #[must_use]
    pub fn fingerprints(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Missing => None,
            Self::Valid { fingerprints, .. } | Self::Malformed { fingerprints, .. } => {
                Some(fingerprints)
            }
        }
    }
}

/// Certificate metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    /// Subject.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// Not after (RFC 3339).
    pub not_after: String,
    /// Subject alternative names.
    pub sans: Vec<String>,
}

/// One PVC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvcFacts {
    /// Name.
    pub name: String,
    /// Phase (`Bound`, `Pending`, ...).
    pub phase: String,
    /// Bound volume.
    pub volume: Option<String>,
    /// Requested or bound capacity.
    pub capacity: Option<String>,
    /// The sandbox it belongs to (label `openshell.ai/sandbox-name`, else its name).
    pub sandbox: Option<String>,
}
