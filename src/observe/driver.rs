//! The `docker-driver` gateway: its state directory, pid file, and live process.
//!
//! The live process is the pid file's when that pid is alive and is a gateway; otherwise a gateway
//! found listening on the gateway port is adopted (NemoClaw does the same). Its environment is
//! read only for the keys the engine compares, so no other variable (a token, say) ever reaches an
//! observation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::procfs;
use crate::model::{
    DriverFacts, DriverProcess, Holders, Listener, Observation, ProcessInfo, RuntimeMarker,
};

/// Where to look.
#[derive(Clone, Debug)]
pub struct DriverQuery {
    /// The state directory.
    pub state_dir: PathBuf,
    /// Binary paths to try, in order.
    pub binary_candidates: Vec<PathBuf>,
    /// The gateway port.
    pub port: u16,
    /// Environment keys to read from the live process.
    pub env_keys: BTreeSet<String>,
    /// Of those, the keys whose values are kept in clear (the engine's own settings); every other
    /// value is kept only as a fingerprint.
    pub clear_keys: BTreeSet<String>,
    /// The host's fingerprint key: other values are kept as HMACs under it.
    pub fingerprint_key: Option<Vec<u8>>,
}

/// The name every gateway process carries in its command line.
pub const GATEWAY_MARKER: &str = "openshell-gateway";

/// Pid file name inside the state directory.
pub const PID_FILE: &str = "openshell-gateway.pid";

/// A small state file (pid file, `runtime.json`): regular, no symlink, at most 64 KiB.
fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    super::files::read_regular(path, 64 * 1024).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Observes the gateway, given the listeners already read.
#[must_use]
pub fn observe(
    q: &DriverQuery,
    listeners: &Observation<Vec<Listener>>,
    processes: &BTreeMap<u32, ProcessInfo>,
) -> DriverFacts {
    let pid_path = q.state_dir.join(PID_FILE);
    let pid_file = match read_text(&pid_path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) if pid > 0 => Observation::Known { value: Some(pid) },
            _ => Observation::Unknown {
                reason: format!("{}: not a pid: `{}`", pid_path.display(), text.trim()),
            },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::Known { value: None },
        Err(e) => Observation::Unknown {
            reason: format!("{}: {e}", pid_path.display()),
        },
    };
    let marker_path = q.state_dir.join("runtime.json");
    let runtime_marker = match read_text(&marker_path) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => Observation::Known {
                value: Some(RuntimeMarker {
                    pid: v
                        .get("pid")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|p| u32::try_from(p).ok()),
                    // NemoClaw's name (`gatewayBin`), or the engine's before it wrote NemoClaw's.
                    gateway_binary: v
                        .get("gatewayBin")
                        .or_else(|| v.get("gatewayBinary"))
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                    endpoint: v
                        .get("endpoint")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                }),
            },
            Err(e) => Observation::Unknown {
                reason: format!("{}: not JSON: {e}", marker_path.display()),
            },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::Known { value: None },
        Err(e) => Observation::Unknown {
            reason: format!("{}: {e}", marker_path.display()),
        },
    };
    let binary = q
        .binary_candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.display().to_string());
    let is_gateway = |p: &ProcessInfo| {
        p.command().contains(GATEWAY_MARKER)
            || binary.as_deref().is_some_and(|b| p.command().contains(b))
    };

    let from_pid_file = pid_file
        .known()
        .copied()
        .flatten()
        .and_then(procfs::read_process)
        .filter(is_gateway)
        .map(|info| (info, "pid-file"));
    let from_port = || {
        listeners
            .known()?
            .iter()
            .filter(|l| l.port == q.port)
            .find_map(|l| match &l.holders {
                // The listener scan already read its holders.
                Holders::Known { pids } => pids
                    .iter()
                    .filter_map(|p| processes.get(p).cloned())
                    .find(is_gateway),
                Holders::Unknown { .. } => None,
            })
    };
    let process = from_pid_file
        .or_else(|| from_port().map(|info| (info, "port-listener")))
        .map(|(info, via)| {
            let environ = read_environ(
                info.pid,
                &q.env_keys,
                &q.clear_keys,
                q.fingerprint_key.as_deref(),
            );
            let exe = match std::fs::read_link(format!("/proc/{}/exe", info.pid)) {
                Ok(p) => Observation::Known {
                    value: p.display().to_string(),
                },
                Err(e) => Observation::Unknown {
                    reason: format!("/proc/{}/exe: {e}", info.pid),
                },
            };
            DriverProcess {
                unit: procfs::cgroup_unit(info.pid),
                age_ms: procfs::age_ms(info.start_time),
                info,
                found_via: via.to_owned(),
                environ,
                exe,
            }
        });
    let binary_version = binary.as_deref().and_then(version_of);
    let supervisor_binary = binary.as_deref().and_then(|b| {
        let s = std::path::Path::new(b).with_file_name("openshell-sandbox");
        s.is_file().then(|| s.display().to_string())
    });
    DriverFacts {
        state_dir: q.state_dir.display().to_string(),
        pid_file,
        runtime_marker,
        binary,
        binary_candidates: q
            .binary_candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        binary_version,
        supervisor_binary,
        process,
        fingerprint_key_id: q
            .fingerprint_key
            .as_deref()
            .map(crate::model::fingerprint_key_id),
    }
}

/// `openshell-gateway --version` → `0.0.72`.
fn version_of(binary: &str) -> Option<String> {
    let r = super::openshell::run(
        binary,
        &["--version".to_owned()],
        &super::openshell::CliEnv::default(),
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    let text = super::openshell::parse::strip_ansi(&r.stdout);
    let v = text.split_whitespace().nth(1)?;
    super::openshell::parse::parse_version(v).map(|_| v.to_owned())
}

/// Reads `/proc/<pid>/environ`, keeping only `keys`, and only fingerprints of values outside
/// `clear`.
fn read_environ(
    pid: u32,
    keys: &BTreeSet<String>,
    clear: &BTreeSet<String>,
    key: Option<&[u8]>,
) -> Observation<BTreeMap<String, String>> {
    procfs::environ(pid, |k, v| {
        keys.contains(k).then(|| {
            if clear.contains(k) {
                v.to_owned()
            } else {
                crate::model::fingerprint_with(key, v.as_bytes())
            }
        })
    })
}
