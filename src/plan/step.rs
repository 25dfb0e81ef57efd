//! The vocabulary of a plan: steps, risks, actions, findings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// How much a step can hurt. Ordered: each class is riskier than the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Looks, changes nothing.
    Read,
    /// Adds or starts something; nothing running is disturbed.
    Create,
    /// Stops or restarts a process or container; no persistent data is lost.
    Disrupt,
    /// Recreates a container or rotates secrets.
    Replace,
    /// Deletes volumes, PVCs or sandboxes: data is lost.
    Destroy,
}

impl Risk {
    /// Every class, least risky first.
    pub const ALL: [Self; 5] = [
        Self::Read,
        Self::Create,
        Self::Disrupt,
        Self::Replace,
        Self::Destroy,
    ];

    /// The name used in output and in `--allow`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Disrupt => "disrupt",
            Self::Replace => "replace",
            Self::Destroy => "destroy",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Stop a process: SIGTERM through a pidfd, wait, SIGKILL, wait; then wait for its ports to be
    /// free in the kernel's socket table.
    Stop,
    /// Create a missing object (a gateway container with its network and volume).
    Create,
    /// Start something stopped (a container, a gateway process), then wait until it answers.
    Start,
    /// Restart a running gateway that is drifted or not answering, then wait until it answers.
    Restart,
    /// Recreate a container (stop, remove, create, start), keeping its volume.
    Replace,
    /// Delete an object and its data (a volume named in `destroy`).
    Delete,
    /// Write a sandbox's registry entry (metadata only).
    Register,
    /// Remove a registry entry whose sandbox is definitely gone (metadata only).
    Unregister,
    /// Start a sandbox's dashboard forward.
    Forward,
    /// Write a local file (the CLI's copy of the client bundle).
    Write,
    /// Free a port a declared sandbox needs. Only ever planned blocked: the holder is not the
    /// engine's to stop, so a person must act.
    FreePort,
    /// Make a registered gateway the CLI's active one (`openshell gateway select`).
    Select,
    /// Observe again what could not be observed. Only ever planned blocked.
    Observe,
}

impl Action {
    /// The name used in output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Create => "create",
            Self::Start => "start",
            Self::Restart => "restart",
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Register => "register",
            Self::Unregister => "unregister",
            Self::Forward => "forward",
            Self::Write => "write",
            Self::FreePort => "free-port",
            Self::Select => "select",
            Self::Observe => "observe",
        }
    }
}

/// Why a step will not run, and what would let it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// Why it is blocked.
    pub reason: String,
    /// The `--allow` value that unblocks it, or `None` when a person must change the host or file.
    pub allow: Option<String>,
}

/// One planned step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Stable id: `<action>:<address>`.
    pub id: String,
    /// The resource acted on: `process.4242`, `port.18789`.
    pub address: String,
    /// What is done.
    pub action: Action,
    /// How much it can hurt.
    pub risk: Risk,
    /// Why, citing the observed facts.
    pub reason: String,
    /// Ids of steps that must succeed first.
    pub depends_on: Vec<String>,
    /// Set when the step will not run.
    pub blocked: Option<Blocked>,
    /// What exactly is acted on, with the facts the step was planned against.
    pub target: Target,
}

/// The object of a step, carrying every fact `apply` re-checks before acting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// A process holding listeners.
    Process(StopProcess),
    /// A port.
    Port {
        /// The port.
        port: u16,
        /// Pids seen holding it (empty when unknown).
        holders: Vec<u32>,
    },
    /// A range of ports that could not be observed.
    Ports {
        /// The range, as `A-B`.
        range: String,
    },
    /// A legacy gateway container.
    Container(ContainerTarget),
    /// A Docker volume.
    Volume {
        /// Exact name.
        name: String,
        /// Where its data lives.
        mountpoint: String,
    },
    /// A `docker-driver` gateway process.
    GatewayProcess(ProcessTarget),
    /// A sandbox created or deleted through the `openshell` CLI.
    Sandbox(SandboxTarget),
    /// A registry entry.
    Registry(RegistryTarget),
    /// A dashboard forward.
    Forward(ForwardTarget),
    /// The CLI's registration of the gateway (`openshell gateway add` / `select`).
    CliGateway(CliGatewayTarget),
    /// Bootstrap secrets in namespace `openshell`.
    Secrets(SecretsTarget),
    /// The CLI's copy of the client bundle.
    CliBundle {
        /// The `mtls` directory.
        dir: String,
    },
    /// The `openshell` statefulset (rollout restart).
    StatefulSet {
        /// Namespace/name.
        name: String,
    },
}

/// Bootstrap secrets to generate and write together, with what each looked like when planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsTarget {
    /// Secret names.
    pub names: Vec<String>,
    /// Per name, the SHA-256 fingerprints of its keys when planned (`None`: it was missing).
    /// Apply refuses if any moved.
    pub expected:
        std::collections::BTreeMap<String, Option<std::collections::BTreeMap<String, String>>>,
    /// Names the server certificate covers.
    pub server_sans: Vec<String>,
}

/// `openshell gateway add` or `openshell gateway select` for the file's gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliGatewayTarget {
    /// The gateway's name.
    pub name: String,
    /// Its endpoint.
    pub endpoint: String,
    /// The `openshell` binary.
    pub cli: String,
    /// Arguments after the binary.
    pub argv: Vec<String>,
}

/// A sandbox step through the `openshell` CLI: the exact command, decided at plan time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxTarget {
    /// Sandbox name.
    pub name: String,
    /// Its dashboard port (baked into the sandbox at create).
    pub port: u16,
    /// The `openshell` binary.
    pub cli: String,
    /// `OPENSHELL_GATEWAY` for the CLI.
    pub gateway: Option<String>,
    /// Arguments after the binary.
    pub argv: Vec<String>,
    /// How long to wait for `Phase: Ready` after a create.
    pub ready_timeout: Millis,
    /// Whether `sandbox list -o json` is how Ready is polled (else the table).
    #[serde(default)]
    pub list_json: bool,
    /// The policy file a create passes, with the SHA-256 the plan was made with: apply refuses
    /// the create if the file changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::model::PolicyFile>,
    /// The registry change made once the command succeeded (and, for a create, the sandbox is
    /// Ready).
    pub registry: RegistryTarget,
}

/// A change to one registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryTarget {
    /// The registry file.
    pub path: String,
    /// Sandbox name.
    pub name: String,
    /// The fields to write; `None` removes the entry.
    pub entry: Option<RegistryFields>,
}

/// The registry fields the engine writes; other fields of an existing entry are kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryFields {
    /// `dashboardPort`.
    pub dashboard_port: u16,
    /// `agent`.
    pub agent: String,
    /// `gatewayName`.
    pub gateway_name: Option<String>,
    /// `gatewayPort`.
    pub gateway_port: Option<u16>,
}

/// A dashboard forward to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardTarget {
    /// Sandbox name.
    pub sandbox: String,
    /// Port.
    pub port: u16,
    /// The `openshell` binary.
    pub cli: String,
    /// `OPENSHELL_GATEWAY` for the CLI.
    pub gateway: Option<String>,
    /// Arguments after the binary.
    pub argv: Vec<String>,
    /// A pid file whose process is dead, removed first.
    pub dead_pid_file: Option<String>,
}

/// A container step: which container (by name and, once it exists, id) and what it must become.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerTarget {
    /// Exact container name.
    pub name: String,
    /// The id it had when planned; `None` for a create. Apply refuses if it changed.
    pub id: Option<String>,
    /// The status it had when planned (`exited`, `running`, ...).
    pub status: Option<String>,
    /// The container to create (create and replace).
    pub spec: Option<ContainerSpec>,
    /// Wait for the gateway to answer after starting (start, restart, replace).
    pub wait: Option<HealthWait>,
}

/// Everything needed to create the legacy gateway container, decided at plan time
/// (OpenShell's `openshell-bootstrap` layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference.
    pub image: String,
    /// Environment (`KEY=VALUE`), as OpenShell's bootstrap sets it.
    #[serde(default)]
    pub env: Vec<String>,
    /// Hostname = the k3s node name, stable across recreation.
    pub hostname: String,
    /// Command (k3s arguments).
    pub cmd: Vec<String>,
    /// Host address the gateway port is published on.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port, `30051/tcp`.
    pub container_port: String,
    /// Volume name.
    pub volume: String,
    /// Where the volume is mounted.
    pub volume_target: String,
    /// Whether the volume exists already (it is kept) or is created.
    pub volume_exists: bool,
    /// Network name.
    pub network: String,
    /// Whether the network exists already.
    pub network_exists: bool,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Vec<String>,
    /// Run privileged.
    pub privileged: bool,
    /// Ask Docker for the NVIDIA GPUs (`DeviceRequests`), as OpenShell's `gateway start --gpu`.
    #[serde(default)]
    pub gpu: bool,
}

/// Wait until the gateway answers HTTP 200 or 401 on 127.0.0.1:`port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthWait {
    /// The gateway port.
    pub port: u16,
    /// How long to wait.
    pub timeout: Millis,
}

/// A `docker-driver` gateway process to start (or restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTarget {
    /// The binary to run.
    pub binary: String,
    /// The environment the engine manages (no secrets: ports, addresses, paths, flags).
    pub managed_env: std::collections::BTreeMap<String, String>,
    /// Keys of the file's `gateway.env`; their values are taken from the file at apply time and
    /// never written into a plan.
    pub file_env_keys: Vec<String>,
    /// SHA-256 of the file's `gateway.env`, so apply refuses if it changed since the plan.
    pub file_env_sha256: String,
    /// State directory (pid file, log).
    pub state_dir: String,
    /// Wait for it to answer.
    pub wait: HealthWait,
    /// For a restart: the running process to stop first.
    pub stop: Option<StopProcess>,
    /// The config file to write first (`OPENSHELL_GATEWAY_CONFIG`), for a gateway that takes
    /// one. Paths only; the JWT keys it names are made at apply time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The user it runs as: the invoking user, also when the engine runs under sudo.
    #[serde(default)]
    pub run_as_uid: u32,
    /// The gateway's version, for NemoClaw's `runtime.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Everything needed to stop one process safely, decided at plan time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopProcess {
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks after boot): with the pid, the process's identity.
    pub start_time: u64,
    /// Real uid seen at plan time.
    pub uid: u32,
    /// Full command line seen at plan time.
    pub cmdline: Vec<String>,
    /// Ports it listens on in the managed range.
    pub ports: Vec<u16>,
    /// Ports to confirm free after it ended (empty when another holder of the same socket is
    /// stopped by a later step, which then waits instead).
    pub wait_free: Vec<u16>,
    /// Wait after SIGTERM.
    pub term_grace: Millis,
    /// Wait after SIGKILL.
    pub kill_grace: Millis,
    /// Budget for the port to show free.
    pub port_free_timeout: Millis,
}

/// Something the plan noticed and will not act on. Findings never change the exit code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// The resource it is about.
    pub address: String,
    /// A stable code for scripts.
    pub kind: FindingKind,
    /// What was seen and why it is left alone.
    pub message: String,
}

/// Kinds of findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The listener's process belongs to another user.
    ForeignOwner,
    /// The listener's command line has no cleanup marker.
    CmdlineMismatch,
    /// The port is in `cleanup.protectedPorts`.
    ProtectedPort,
    /// The listener's process could not be identified.
    OwnerUnknown,
    /// The sandbox registry could not be read.
    RegistryUnknown,
    /// The port belongs to a registered sandbox that the file does not declare.
    RegisteredSandbox,
    /// The listener is the live dashboard forward of a declared sandbox.
    DeclaredForward,
    /// The listener is this process or one of its ancestors.
    EngineProcess,
    /// Stale-listener cleanup is turned off in the file.
    CleanupDisabled,
    /// Listening sockets could not be read.
    ListenersUnknown,
    /// Forward pid files could not be read.
    ForwardsUnknown,
    /// The Docker engine could not be asked.
    DockerUnknown,
    /// The gateway was started recently and does not answer yet.
    GatewayStarting,
    /// A change noticed on a stopped gateway waits for a later plan (non-destructive first).
    GatewayDeferred,
    /// Something about the gateway that needs a person but blocks nothing.
    GatewayNotice,
    /// A volume named in `destroy` does not exist.
    NothingToDestroy,
    /// A live sandbox that the file does not declare.
    UndeclaredSandbox,
    /// A registry entry kept because its sandbox is not provably gone.
    RegistryEntryKept,
    /// A sandbox that exists but is not Ready.
    SandboxNotReady,
    /// The cluster API could not be asked.
    ClusterUnknown,
    /// The cluster is still bootstrapping (no namespace or statefulset yet).
    ClusterBootstrapping,
    /// A PVC that belongs to no declared sandbox.
    OrphanedWorkspace,
    /// A live sandbox's dashboard port differs from the file's: it is baked in at create.
    SandboxPortBaked,
    /// The CLI has the gateway's name registered for another endpoint.
    CliGatewayMismatch,
    /// An OpenClaw gateway that is in use or of a kept profile.
    OpenClawWanted,
    /// Ports a live OpenClaw gateway derives from its own, never assigned to a sandbox.
    OpenClawDerivedPorts,
}

impl FindingKind {
    /// The code used in output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForeignOwner => "foreign-owner",
            Self::CmdlineMismatch => "cmdline-mismatch",
            Self::ProtectedPort => "protected-port",
            Self::OwnerUnknown => "owner-unknown",
            Self::RegistryUnknown => "registry-unknown",
            Self::RegisteredSandbox => "registered-sandbox",
            Self::DeclaredForward => "declared-forward",
            Self::EngineProcess => "engine-process",
            Self::CleanupDisabled => "cleanup-disabled",
            Self::ListenersUnknown => "listeners-unknown",
            Self::ForwardsUnknown => "forwards-unknown",
            Self::DockerUnknown => "docker-unknown",
            Self::GatewayStarting => "gateway-starting",
            Self::GatewayDeferred => "gateway-deferred",
            Self::GatewayNotice => "gateway-notice",
            Self::NothingToDestroy => "nothing-to-destroy",
            Self::UndeclaredSandbox => "undeclared-sandbox",
            Self::RegistryEntryKept => "registry-entry-kept",
            Self::SandboxNotReady => "sandbox-not-ready",
            Self::ClusterUnknown => "cluster-unknown",
            Self::ClusterBootstrapping => "cluster-bootstrapping",
            Self::OrphanedWorkspace => "orphaned-workspace",
            Self::SandboxPortBaked => "sandbox-port-baked",
            Self::CliGatewayMismatch => "cli-gateway-mismatch",
            Self::OpenClawWanted => "openclaw-wanted",
            Self::OpenClawDerivedPorts => "openclaw-derived-ports",
        }
    }
}
