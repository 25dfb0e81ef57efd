//! The desired-state file as written (`nemoclaw.yaml`, `apiVersion: nemoclaw.io/v1alpha1`).
//!
//! These types define the JSON Schema (`nemoclaw schema`), and the structural checker validates
//! files against that schema, so what the schema says is exactly what the checker enforces. Keys
//! are camelCase like Kubernetes manifests; unknown keys are errors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "nemoclaw.io/v1alpha1";

/// Markers used when `cleanup.markers` is not given.
pub const DEFAULT_MARKERS: [&str; 3] =
    ["openclaw-gateway", "openshell forward", "openshell-forward"];

/// Ports the gateway may never use: vLLM/NIM, Ollama, the Ollama auth proxy, the Bedrock adapter.
pub const RESERVED_GATEWAY_PORTS: [u16; 4] = [8000, 11434, 11435, 11436];

/// Desired state of one NemoClaw host: its gateway, dashboard ports, sandboxes and cleanup policy.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "nemoclaw desired state (nemoclaw.io/v1alpha1)")]
pub struct Spec {
    /// Version of this file format. Always `nemoclaw.io/v1alpha1`.
    pub api_version: ApiVersion,
    /// Kind of document. Always `Host`.
    pub kind: Kind,
    /// The OpenShell gateway. When absent, the engine does not manage a gateway (its port is still
    /// reserved: 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// The dashboard port pool shared by all sandboxes.
    #[serde(default)]
    pub dashboard: DashboardSpec,
    /// The sandboxes this host runs.
    #[serde(default)]
    pub sandboxes: Vec<SandboxSpec>,
    /// How stale dashboard listeners are recognised and stopped.
    #[serde(default)]
    pub cleanup: CleanupSpec,
    /// Data the user asks to delete, by exact name. Nothing is ever deleted otherwise, and these
    /// steps still need `--allow destroy`.
    #[serde(default)]
    pub destroy: DestroySpec,
    /// Undeclared sandboxes that may be deleted.
    #[serde(default)]
    pub prune: PruneSpec,
}

/// Explicit deletions.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestroySpec {
    /// Docker volumes to delete, by exact name (no prefixes, no patterns). A gateway volume such as
    /// `openshell-cluster-nemoclaw` holds the k3s datastore and every sandbox workspace.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// `apiVersion` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first, alpha version of the format.
    #[serde(rename = "nemoclaw.io/v1alpha1")]
    V1Alpha1,
}

/// `kind` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// A whole host.
    Host,
}

/// The OpenShell gateway.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Gateway name. Default: `nemoclaw` for port 8080, `nemoclaw-<port>` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// How the gateway runs: `docker-driver` (a host process `openshell-gateway`) or `legacy-k3s`
    /// (a privileged container `openshell-cluster-<name>` running k3s).
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// Host port of the gateway: 1024-65535, outside the dashboard range, and not 8000, 11434,
    /// 11435 or 11436 (local inference ports).
    #[serde(default = "default_gateway_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
    /// Address the gateway port is published on.
    #[serde(default)]
    pub bind_address: BindAddress,
    /// Run the `legacy-k3s` container privileged, as k3s needs. Set `false` only where the engine
    /// refuses privileged containers (rootless or capability-restricted engines); k3s itself will
    /// not work there.
    #[serde(default = "default_true")]
    pub privileged: bool,
    /// Manage the `legacy-k3s` gateway's k3s bootstrap secrets and report its PVCs. `cluster: {}`
    /// reaches the API through `KUBECONFIG`, else the container's `/etc/rancher/k3s/k3s.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
    /// GPUs for the `legacy-k3s` container (OpenShell's `gateway start --gpu`): `auto` (the
    /// default) asks Docker for the NVIDIA GPUs when an NVIDIA device is observed on the host.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Cluster image (`legacy-k3s` only), e.g. `ghcr.io/nvidia/openshell/cluster:0.0.36`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Gateway binary (`docker-driver` only). Default: `NEMOCLAW_OPENSHELL_GATEWAY_BIN`, else next
    /// to `openshell` on PATH, else `~/.local/bin`, `/usr/local/bin`, `/usr/bin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Extra environment for the `docker-driver` gateway process.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// How long a started gateway may take to answer on its port before the step fails.
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub health_timeout: String,
    /// How long a restart waits for the running `docker-driver` gateway to exit on SIGTERM
    /// before SIGKILL. The gateway stops every sandbox container first (each with Docker's 10 s
    /// stop timeout), so this is its own setting, not `cleanup.termGrace`.
    #[serde(default = "default_stop_grace")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub stop_grace: String,
}

/// Reaching the gateway's k3s cluster.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// A kubeconfig file. Default: `KUBECONFIG`, else the gateway container's
    /// `/etc/rancher/k3s/k3s.yaml`, read through the Docker API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

/// Gateway runtimes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeSpec {
    /// A host process `openshell-gateway` driving Docker sandboxes.
    #[default]
    DockerDriver,
    /// A privileged Docker container running k3s and the OpenShell server.
    LegacyK3s,
}

/// Addresses the gateway may bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BindAddress {
    /// Loopback only.
    #[default]
    #[serde(rename = "127.0.0.1")]
    Loopback,
    /// Every interface.
    #[serde(rename = "0.0.0.0")]
    Any,
}

/// The dashboard port pool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DashboardSpec {
    /// Inclusive range of host ports for sandbox dashboards, as `START-END`.
    #[serde(default = "default_port_range")]
    #[schemars(regex(pattern = r"^[0-9]{1,5}(-[0-9]{1,5})?$"))]
    pub port_range: String,
}

/// One sandbox.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Sandbox name: 1-63 characters, a lowercase letter first, then lowercase letters, digits
    /// and inner hyphens.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Host port of this sandbox's dashboard. Must be inside `dashboard.portRange` and unique.
    /// Omit it to let the planner assign one: the registry's recorded port first, then the
    /// lowest free port of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub dashboard_port: Option<u16>,
    /// Address the dashboard forward binds.
    #[serde(default)]
    pub dashboard_bind: BindAddress,
    /// The agent the sandbox runs (recorded in the registry, as NemoClaw records it).
    #[serde(default = "default_agent")]
    pub agent: String,
    /// Where the sandbox image comes from, passed to `openshell sandbox create --from`: a
    /// Dockerfile or a directory holding one (a path starting with `/`, `./` or `../`, taken
    /// relative to this file; the CLI builds it into the local Docker engine), or an image
    /// reference the CLI accepts (`registry.example.com/img:tag`, a community sandbox name).
    /// NemoClaw's own image is its blueprint's Dockerfile: OpenShell's default image has no
    /// `nemoclaw-start`. Needed only to create the sandbox: without it a missing sandbox is a
    /// blocked step, an existing one is managed as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub from: Option<String>,
    /// A sandbox policy YAML file (relative to this file), passed as the one
    /// `openshell sandbox create --policy FILE`; the plan shows its SHA-256. NemoClaw's tiers and
    /// presets are merged into one such file by NemoClaw; write or export the merged file and
    /// name it here. Omit it for OpenShell's built-in default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub policy: Option<String>,
    /// GPU passthrough: `auto` asks for a GPU when an NVIDIA device is observed on the host.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// CPU and memory limits, passed only to a CLI whose `sandbox create` has `--cpu`/`--memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// How long a new sandbox may take to report `Ready` (NemoClaw's
    /// `NEMOCLAW_SANDBOX_READY_TIMEOUT`, default `180s`, at most `1h`). Past it the create fails
    /// and the half-made sandbox is kept and reported, never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub ready_timeout: Option<String>,
}

/// GPU passthrough.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GpuSpec {
    /// Use a GPU when the host has an NVIDIA device.
    #[default]
    Auto,
    /// Require a GPU (`--gpu`).
    On,
    /// Never use a GPU (no GPU flag: OpenShell has no `--no-gpu`).
    Off,
}

/// Resource limits, in the syntax OpenShell's CLI accepts (`validate_cpu_quantity` and
/// `validate_memory_quantity`, v0.0.72 `crates/openshell-cli/src/run.rs:1686-1741`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// CPU limit: cores (`2`, `0.5`) or millicores (`500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory limit: bytes (`1073741824`) or a quantity with one of the suffixes Ki, Mi, Gi, Ti,
    /// Pi, Ei, K, M, G, T, P, E (`512Mi`, `4Gi`, `8G`; not `8g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Sandboxes the engine may delete.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneSpec {
    /// Live sandboxes not declared above that may be deleted, by exact name, with
    /// `--allow destroy`. Their workspaces go with them.
    #[serde(default)]
    pub sandboxes: Vec<String>,
}

/// Stale-listener cleanup policy.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CleanupSpec {
    /// Stop stale listeners in the dashboard range: processes you own whose command line contains
    /// a marker and that no sandbox accounts for.
    #[serde(default = "default_true")]
    pub stale_listeners: bool,
    /// Substrings of a full command line that mark a listener as a NemoClaw/OpenShell process.
    #[serde(default = "default_markers")]
    pub markers: Vec<String>,
    /// Ports that are never touched, whatever listens there.
    #[serde(default)]
    pub protected_ports: Vec<u16>,
    /// Wait after SIGTERM before SIGKILL (`500ms`, `1s`, `1.5s`, `2m`). The default, 10s, fits
    /// the real OpenClaw gateway, which frees its port within a second of SIGTERM but may take
    /// longer to exit while its browser service shuts down; a SIGKILL mid-shutdown leaves stale
    /// lock files and counts toward its crash-loop breaker.
    #[serde(default = "default_term_grace")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub term_grace: String,
    /// Wait after SIGKILL before giving up on the process.
    #[serde(default = "default_grace")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub kill_grace: String,
    /// How long to poll the kernel's socket table for the port to be free after the process ended.
    #[serde(default = "default_port_free_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub port_free_timeout: String,
    /// OpenClaw gateways: which are wanted.
    #[serde(default)]
    pub openclaw: OpenClawSpec,
}

/// OpenClaw gateways in the dashboard range.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenClawSpec {
    /// Profiles whose gateways are wanted (`default`, or the `--profile`/`OPENCLAW_PROFILE`
    /// name): a gateway of one of these is never stale.
    #[serde(default)]
    pub keep_profiles: Vec<String>,
}

impl Default for DashboardSpec {
    fn default() -> Self {
        Self {
            port_range: default_port_range(),
        }
    }
}

impl Default for CleanupSpec {
    fn default() -> Self {
        Self {
            stale_listeners: true,
            markers: default_markers(),
            protected_ports: Vec::new(),
            term_grace: default_term_grace(),
            kill_grace: default_grace(),
            port_free_timeout: default_port_free_timeout(),
            openclaw: OpenClawSpec::default(),
        }
    }
}

fn default_gateway_port() -> u16 {
    8080
}
fn default_port_range() -> String {
    "18789-18799".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_markers() -> Vec<String> {
    DEFAULT_MARKERS.iter().map(|m| (*m).to_owned()).collect()
}
fn default_grace() -> String {
    "1s".to_owned()
}
fn default_term_grace() -> String {
    "10s".to_owned()
}
fn default_agent() -> String {
    "openclaw".to_owned()
}
fn default_health_timeout() -> String {
    "60s".to_owned()
}
fn default_stop_grace() -> String {
    "30s".to_owned()
}
fn default_port_free_timeout() -> String {
    "2s".to_owned()
}

/// Returns the JSON Schema of the file, as committed in `schemas/nemoclaw.schema.json`.
#[must_use]
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Spec)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".to_owned(),
            serde_json::Value::String(
                "https://nemoclaw.io/schemas/v1alpha1/nemoclaw.schema.json".to_owned(),
            ),
        );
    }
    schema
}
