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
    /// How listeners were read: `netlink` (sock_diag) or `proc-net` (`/proc/net/tcp{,6}`).
    pub listener_source: String,
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
