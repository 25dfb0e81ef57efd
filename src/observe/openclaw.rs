//! What a real OpenClaw gateway says about itself, beyond a command line that is the same for
//! every gateway (`process.title` makes it just `openclaw-gateway`).
//!
//! For each listener process whose command line is an OpenClaw gateway: the identifying part of
//! its environment (profile, state dir, the service markers OpenClaw's systemd unit exports,
//! systemd's `INVOCATION_ID`), the systemd unit its cgroup names, its parent when that is an
//! OpenClaw wrapper, the client connections established to its ports (a gateway in use), whether
//! `/healthz` answers, and OpenClaw's own lock files that name it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::model::{Listener, Observation, OpenClawFacts, OpenClawLock, ProcessInfo};

use super::files::read_regular;

/// The environment keys kept: they identify, none is a credential. OpenClaw 2026.9.6 puts its
/// own keys (profile, state dir, and its token) only into its children's environment; the
/// gateway's holds what its launcher passed: the service markers its systemd unit sets
/// (`dist/service-env-*.mjs` `buildServiceEnvironment`) and systemd's own
/// (`dist/supervisor-markers-*.mjs`: `OPENCLAW_SYSTEMD_UNIT`, `INVOCATION_ID`, `SYSTEMD_EXEC_PID`,
/// `JOURNAL_STREAM`).
pub const ENV_KEYS: [&str; 11] = [
    "OPENCLAW_PROFILE",
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_SERVICE_MARKER",
    "OPENCLAW_SERVICE_KIND",
    "OPENCLAW_SYSTEMD_UNIT",
    "OPENCLAW_SERVICE_VERSION",
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "JOURNAL_STREAM",
];

/// Whether a command line is an OpenClaw gateway's, as OpenClaw itself decides it
/// (`dist/gateway-process-argv-*.mjs` `isGatewayArgv`): the `openclaw-gateway` process title
/// (the plain `openclaw gateway run`), or node running OpenClaw's entry point with a `gateway`
/// argument (its systemd unit runs `node … dist/index.js gateway --port P`, whose title is not
/// rewritten).
#[must_use]
pub fn is_gateway(p: &ProcessInfo) -> bool {
    let Some(first) = p.cmdline.first() else {
        return false;
    };
    if first == "openclaw-gateway" || first.ends_with("/openclaw-gateway") {
        return true;
    }
    let entry = p.cmdline.iter().position(|a| {
        a.ends_with("openclaw.mjs")
            || (a.contains("openclaw")
                && (a.ends_with("dist/index.js") || a.ends_with("dist/entry.js")))
    });
    entry.is_some_and(|i| p.cmdline[i + 1..].iter().any(|a| a == "gateway"))
}

/// Facts for every OpenClaw gateway among the listeners' holders. Blocking.
#[must_use]
pub fn observe(
    listeners: &Observation<Vec<Listener>>,
    processes: &BTreeMap<u32, ProcessInfo>,
    home_of: &dyn Fn(u32) -> Option<std::path::PathBuf>,
) -> BTreeMap<u32, OpenClawFacts> {
    let Observation::Known { value: listeners } = listeners else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    // The established-connection table is read once for every gateway, and only if there is one.
    let mut clients: Option<Result<BTreeMap<u16, u32>, String>> = None;
    let gateways: Vec<(&ProcessInfo, BTreeSet<u16>)> = processes
        .values()
        .filter(|p| is_gateway(p))
        .map(|p| {
            let ports = listeners
                .iter()
                .filter(|l| {
                    matches!(&l.holders, crate::model::Holders::Known { pids } if pids.contains(&p.pid))
                })
                .map(|l| l.port)
                .collect();
            (p, ports)
        })
        .collect();
    // `/healthz` of every gateway at once: a gateway that does not answer costs its 500 ms once,
    // not once per gateway.
    let healthz: Vec<Option<u16>> = std::thread::scope(|scope| {
        let probes: Vec<_> = gateways
            .iter()
            .map(|(_, ports)| {
                let first = ports.iter().next().copied();
                scope.spawn(move || {
                    first.and_then(|port| {
                        super::health::probe_path(port, "/healthz", Duration::from_millis(500))
                            .http_status
                    })
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    for ((p, ports), healthz) in gateways.iter().zip(healthz) {
        let p = *p;
        let environ =
            super::procfs::environ(p.pid, |k, v| ENV_KEYS.contains(&k).then(|| v.to_owned()));
        let home = home_of(p.uid);
        let state_dirs = state_dirs(home.as_deref(), environ.known());
        let locks = if home.is_none() && state_dirs.is_empty() {
            Observation::Unknown {
                reason: format!("the home directory of uid {} is unknown", p.uid),
            }
        } else {
            read_locks(&state_dirs, p)
        };
        out.insert(
            p.pid,
            OpenClawFacts {
                environ,
                unit: super::procfs::cgroup_unit(p.pid),
                wrapper: wrapper(p.pid),
                established: established(ports, clients.get_or_insert_with(clients_by_local_port)),
                healthz,
                locks,
            },
        );
    }
    out
}

/// The parent, when it is an OpenClaw launcher holding the gateway as its child (with
/// `NODE_COMPILE_CACHE` the CLI re-executes itself under a wrapper).
fn wrapper(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
    let parent = super::procfs::read_process(ppid)?;
    // openclaw.mjs `respawnWithPackagedCompileCacheIfNeeded` → `runRespawnedChild`: node running
    // OpenClaw's entry point, or the `openclaw` launcher itself.
    let launcher = parent.cmdline.iter().any(|a| {
        a.ends_with("/openclaw.mjs")
            || a.ends_with("/bin/openclaw")
            || a.contains("/openclaw/dist/")
    }) || parent.cmdline.first().is_some_and(|a| a == "openclaw");
    launcher.then_some(ppid)
}

/// Client connections established to `ports` (the server side: local port in `ports`).
fn established(
    ports: &BTreeSet<u16>,
    clients: &Result<BTreeMap<u16, u32>, String>,
) -> Observation<u32> {
    if ports.is_empty() {
        return Observation::Known { value: 0 };
    }
    match clients {
        Ok(by_port) => Observation::Known {
            value: ports.iter().filter_map(|p| by_port.get(p)).sum(),
        },
        Err(reason) => Observation::Unknown {
            reason: reason.clone(),
        },
    }
}

/// ESTABLISHED sockets counted by local port: through netlink `sock_diag` (the kernel filters by
/// state), else `/proc/net/tcp{,6}`.
fn clients_by_local_port() -> Result<BTreeMap<u16, u32>, String> {
    let mut out = BTreeMap::new();
    if let Ok(sockets) = super::sockets::netlink_established() {
        for s in sockets {
            *out.entry(s.port).or_insert(0) += 1;
        }
        return Ok(out);
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{table}: {e}")),
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st …; st 01 = ESTABLISHED.
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (true, Some(p)) = (*state == "01", port) {
                *out.entry(p).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

/// Where OpenClaw state dirs may be: `OPENCLAW_STATE_DIR` when the launcher set it, and the
/// home's `.openclaw` and `.openclaw-<profile>` (`--profile` moves the state dir there,
/// `dist/profile-*.mjs`).
fn state_dirs(
    home: Option<&Path>,
    env: Option<&BTreeMap<String, String>>,
) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = env
        .and_then(|e| e.get("OPENCLAW_STATE_DIR"))
        .map(std::path::PathBuf::from)
        .into_iter()
        .collect();
    if let Some(home) = home
        && let Ok(entries) = std::fs::read_dir(home)
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name == ".openclaw" || name.starts_with(".openclaw-")) && !out.contains(&e.path()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// OpenClaw's gateway lock files (`<stateDir>/tmp/openclaw-<uid>/gateway.<hash>.lock` and
/// `gateway.state.lock`, `dist/gateway-lock-*.mjs`: JSON `{pid, createdAt, configPath, stateDir,
/// port, startTime}` then a whitespace ownership token) that name `p`.
fn read_locks(
    state_dirs: &[std::path::PathBuf],
    p: &ProcessInfo,
) -> Observation<Vec<OpenClawLock>> {
    let mut out = Vec::new();
    for state in state_dirs {
        let dir = state.join("tmp").join(format!("openclaw-{}", p.uid));
        match std::fs::read_dir(&dir) {
            Ok(entries) => read_lock_dir(entries, p, &mut out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Observation::Unknown {
                    reason: format!("{}: {e}", dir.display()),
                };
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Observation::Known { value: out }
}

fn read_lock_dir(entries: std::fs::ReadDir, p: &ProcessInfo, out: &mut Vec<OpenClawLock>) {
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("gateway.") && name.ends_with(".lock")) {
            continue;
        }
        let path = e.path();
        let Ok(bytes) = read_regular(&path, 64 * 1024) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("pid").and_then(serde_json::Value::as_u64) != Some(u64::from(p.pid)) {
            continue;
        }
        let text = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let start_time = v.get("startTime").and_then(serde_json::Value::as_u64);
        out.push(OpenClawLock {
            path: path.display().to_string(),
            port: v
                .get("port")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u16::try_from(n).ok()),
            config_path: text("configPath"),
            state_dir: text("stateDir"),
            start_time_matches: start_time == Some(p.start_time),
        });
    }
}
