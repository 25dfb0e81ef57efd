//! Observers: read the host into a [`model::Observed`](crate::model::Observed).
//!
//! Each observer runs on its own blocking thread with a time limit, concurrently with the others.
//! A failure or timeout makes that part of the observation unknown, with the reason; it never
//! makes it empty.

pub mod cluster;
pub mod docker;
pub mod driver;
pub mod files;
pub mod forwards;
pub mod gpus;
pub mod health;
pub mod openclaw;
pub mod openshell;
pub mod procfs;
pub mod registry;
pub mod sockets;
pub mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{
    ForwardPidFile, Holders, HostFacts, Listener, OBSERVED_FORMAT_VERSION, Observation, Observed,
    PortRange, ProcessInfo, Registry,
};

/// Where and what to observe. Built by the CLI from the environment; observers read no
/// environment themselves.
#[derive(Clone, Debug)]
pub struct ObserveOptions {
    /// The user the engine acts for.
    pub invoking_uid: u32,
    /// Home directory of that user (the registry lives below it).
    pub home: PathBuf,
    /// That user's configuration directory (`$XDG_CONFIG_HOME`, else `~/.config`): OpenShell's
    /// forward pid files and gateway metadata live below it.
    pub config_home: PathBuf,
    /// Ports whose listeners to resolve.
    pub ports: Vec<PortRange>,
    /// Time limit for each observer.
    pub timeout: Duration,
    /// Docker objects to look up; empty when nothing needs Docker.
    pub docker: docker::DockerQuery,
    /// The gateway port to probe, when a gateway is managed.
    pub gateway_port: Option<u16>,
    /// The `docker-driver` gateway, when that is the runtime.
    pub driver: Option<driver::DriverQuery>,
    /// The `openshell` CLI, when sandboxes are declared.
    pub cli: Option<openshell::CliQuery>,
    /// The legacy gateway's cluster, when that is the runtime.
    pub cluster: Option<cluster::ClusterQuery>,
}

impl ObserveOptions {
    /// `$HOME/.nemoclaw/sandboxes.json`.
    #[must_use]
    pub fn registry_path(&self) -> PathBuf {
        self.home.join(".nemoclaw").join("sandboxes.json")
    }

    /// `<config_home>/openshell/forwards`.
    #[must_use]
    pub fn forwards_dir(&self) -> PathBuf {
        self.config_home.join("openshell").join("forwards")
    }
}

/// Listeners on some ports, with the processes holding them.
#[derive(Clone, Debug)]
pub struct ListenerScan {
    /// The listeners, or why they could not be read.
    pub listeners: Observation<Vec<Listener>>,
    /// Holders' details by pid.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// `netlink` or `proc-net`.
    pub source: &'static str,
}

/// Reads the listeners on `ports` and resolves their holders. Blocking.
#[must_use]
pub fn scan_listeners(ports: &[PortRange]) -> ListenerScan {
    let (raw, source) = match sockets::listening(|p| ports.iter().any(|r| r.contains(p))) {
        Ok(found) => found,
        Err(reason) => {
            return ListenerScan {
                listeners: Observation::Unknown { reason },
                processes: BTreeMap::new(),
                source: "none",
            };
        }
    };
    // Nothing listens on the ports of interest (the common case): skip the fd walk entirely.
    let inodes: BTreeSet<u64> = raw.iter().map(|s| s.inode).collect();
    let uids: BTreeSet<u32> = raw.iter().map(|s| s.uid).collect();
    let scan = procfs::find_holders(&inodes, &uids);
    let mut processes = BTreeMap::new();
    let mut listeners = Vec::with_capacity(raw.len());
    for s in raw {
        let holders = match scan.holders.get(&s.inode) {
            Some(pids) => {
                // A process holding several sockets (IPv4 and IPv6, several ports) is read once.
                for pid in pids {
                    if !processes.contains_key(pid)
                        && let Some(info) = procfs::read_process(*pid) {
                            processes.insert(*pid, info);
                        }
                }
                Holders::Known { pids: pids.clone() }
            }
            None if scan.unreadable > 0 => Holders::Unknown {
                reason: format!(
                    "{} processes' file descriptors could not be read; run as root to see every owner",
                    scan.unreadable
                ),
            },
            None => Holders::Unknown {
                reason: "no process in this pid namespace holds it (a container's, or one outside our view)".to_owned(),
            },
        };
        listeners.push(Listener {
            port: s.port,
            address: s.address,
            inode: s.inode,
            socket_uid: s.uid,
            holders,
        });
    }
    listeners.sort();
    ListenerScan {
        listeners: Observation::Known { value: listeners },
        processes,
        source: source.as_str(),
    }
}

/// Observes the host.
pub async fn observe(opts: &ObserveOptions) -> Observed {
    let ports = opts.ports.clone();
    let registry_path = opts.registry_path();
    let forwards_dir = opts.forwards_dir();
    let limit = opts.timeout;
    let gateway_port = opts.gateway_port;
    let docker_query = opts.docker.clone();
    // The registry first (a small file, milliseconds): the CLI looks up the sandboxes it names.
    // Then every observer at once — the CLI's questions, the slowest, beside the socket scan,
    // Docker and the cluster rather than after them.
    let registry: Observation<Registry> =
        blocking(limit, "registry", move || registry::read(&registry_path))
            .await
            .unwrap_or_else(|reason| Observation::Unknown { reason });
    let cli_query = opts.cli.clone().map(|mut q| {
        // Registered sandboxes missing from `sandbox list` are looked up one by one.
        if let Observation::Known { value } = &registry {
            q.registered.extend(value.sandboxes.keys().cloned());
        }
        q
    });
    let (scan, forwards, health, docker, openshell, cluster) = tokio::join!(
        blocking(limit, "listeners", move || scan_listeners(&ports)),
        blocking(limit, "forwards", move || forwards::read(&forwards_dir)),
        async move {
            match gateway_port {
                Some(port) => blocking(limit, "gateway health", move || {
                    health::probe(port, Duration::from_secs(3))
                })
                .await
                .ok(),
                None => None,
            }
        },
        async move {
            if docker_query.is_empty() {
                return None;
            }
            let started = std::time::Instant::now();
            let o = match tokio::time::timeout(limit, docker::observe(&docker_query)).await {
                Ok(o) => o,
                Err(_) => Observation::Unknown {
                    reason: format!(
                        "the Docker engine did not answer within {}s",
                        limit.as_secs()
                    ),
                },
            };
            observed("docker", started, None);
            Some(o)
        },
        async move {
            match cli_query {
                Some(q) => blocking(limit * 3, "openshell", move || openshell::observe(&q))
                    .await
                    .ok(),
                None => None,
            }
        },
        async {
            match &opts.cluster {
                Some(q) => {
                    let now_s = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
                    let started = std::time::Instant::now();
                    let c = cluster::observe(q, now_s).await;
                    observed("cluster", started, None);
                    Some(c)
                }
                None => None,
            }
        },
    );
    let scan = scan.unwrap_or_else(|reason| ListenerScan {
        listeners: Observation::Unknown { reason },
        processes: BTreeMap::new(),
        source: "none",
    });
    let forwards: Observation<Vec<ForwardPidFile>> =
        forwards.unwrap_or_else(|reason| Observation::Unknown { reason });
    let gateway_process = opts
        .driver
        .as_ref()
        .map(|q| driver::observe(q, &scan.listeners, &scan.processes));
    let (invoking, home) = (opts.invoking_uid, opts.home.clone());
    let home_of = move |uid: u32| {
        if uid == invoking {
            Some(home.clone())
        } else {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.dir)
        }
    };
    let openclaw = openclaw::observe(&scan.listeners, &scan.processes, &home_of);
    let engine_pid = std::process::id();
    Observed {
        format_version: OBSERVED_FORMAT_VERSION.to_owned(),
        host: HostFacts {
            invoking_uid: opts.invoking_uid,
            invoking_user: procfs::user_name(opts.invoking_uid),
            engine_pid,
            engine_ancestors: procfs::ancestors(engine_pid),
            listener_source: scan.source.to_owned(),
            observed_at_ms: now_ms(),
            nvidia_gpus: gpus::nvidia(std::path::Path::new("/dev")),
        },
        scanned_ports: opts.ports.clone(),
        listeners: scan.listeners,
        processes: scan.processes,
        registry,
        forwards,
        docker,
        gateway_health: health,
        gateway_process,
        openshell,
        openclaw,
        cluster,
    }
}

/// Milliseconds since the epoch, now.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn blocking<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let started = std::time::Instant::now();
    let out = match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("the {what} observer failed: {e}")),
        Err(_) => Err(format!(
            "the {what} observer timed out after {}s",
            limit.as_secs_f32()
        )),
    };
    observed(what, started, out.as_ref().err());
    out
}

/// Logs one observer's duration (`-v`), and why it failed (never a value it read).
fn observed(what: &str, started: std::time::Instant, error: Option<&String>) {
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match error {
        None => tracing::info!(observer = what, elapsed_ms, "observed"),
        Some(e) => tracing::warn!(observer = what, elapsed_ms, error = %e, "observer failed"),
    }
}

/// What the kernel's socket table says about some ports right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortState {
    /// No LISTEN socket on any of them.
    Free,
    /// Still listening: (port, socket inode).
    Busy(Vec<(u16, u64)>),
    /// The table could not be read. Never to be read as free.
    Inconclusive(String),
}

/// Probes whether `ports` are free of listeners. Cheap: no fd walk.
#[must_use]
pub fn probe_ports(ports: &[u16]) -> PortState {
    match sockets::listening(|p| ports.contains(&p)) {
        Ok((found, _)) if found.is_empty() => PortState::Free,
        Ok((found, _)) => PortState::Busy(found.iter().map(|s| (s.port, s.inode)).collect()),
        Err(reason) => PortState::Inconclusive(reason),
    }
}
