//! Shared test helpers: observations built in code, desired files from text, snapshot settings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nemoclaw::model::{
    Desired, ForwardContent, ForwardPidFile, Holders, Listener, OBSERVED_FORMAT_VERSION,
    Observation, Observed, PortRange, ProcessInfo, Registry, RegistryEntry,
};

/// The `nemoclaw` binary in a hermetic environment: `dir` is the working directory and HOME, the
/// lock file lives in it, no colour, no sudo identity.
pub fn nemoclaw_cmd(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nemoclaw"));
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("HOME", dir)
        .env("NEMOCLAW_LOCK_FILE", dir.join("apply.lock"))
        // The real `openshell` CLI is not installable here; every test gets the stand-in, which
        // records its calls under `dir` (tests/support/openshell-standin).
        .env("NEMOCLAW_OPENSHELL_BIN", STANDIN)
        .env("OPENSHELL_STANDIN_DIR", dir.join(".openshell-standin"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("OPENSHELL_GATEWAY")
        .env_remove("SUDO_UID")
        .stdin(std::process::Stdio::null());
    cmd
}

/// The uid the engine acts for in fixtures.
pub const ME: u32 = 1000;

/// Snapshots live in the top-level `snapshots/` folder.
#[macro_export]
macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// Parses a desired-state file or panics with its diagnostics.
pub fn desired(yaml: &str) -> Desired {
    nemoclaw::spec::load("nemoclaw.yaml", yaml)
        .unwrap_or_else(|d| panic!("invalid test file: {d:#?}"))
}

/// A desired file with the default range and the given sandboxes and cleanup lines.
pub fn desired_with(sandboxes: &str, cleanup: &str) -> Desired {
    desired(&format!(
        "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\nsandboxes:\n{sandboxes}\ncleanup:\n{cleanup}\n"
    ))
}

/// An observation being built.
pub struct Host(pub Observed);

impl Host {
    /// An idle host: nothing listens, no registry, no forwards; the engine is pid 1.
    pub fn new() -> Self {
        Self(Observed {
            format_version: OBSERVED_FORMAT_VERSION.to_owned(),
            host: crate::generate::host_facts(),
            scanned_ports: vec![
                PortRange::DASHBOARD_DEFAULT,
                PortRange {
                    start: 8080,
                    end: 8080,
                },
            ],
            listeners: Observation::Known { value: Vec::new() },
            processes: BTreeMap::new(),
            registry: Observation::Known {
                value: Registry {
                    path: "/home/alice/.nemoclaw/sandboxes.json".to_owned(),
                    present: false,
                    sandboxes: BTreeMap::new(),
                    default_sandbox: None,
                },
            },
            forwards: Observation::Known { value: Vec::new() },
            docker: None,
            gateway_health: None,
            gateway_process: None,
            openshell: None,
            openclaw: BTreeMap::new(),
            cluster: None,
        })
    }

    /// A process.
    pub fn process(mut self, pid: u32, uid: u32, cmdline: &str) -> Self {
        let user = match uid {
            ME => Some("alice".to_owned()),
            0 => Some("root".to_owned()),
            65534 => Some("nobody".to_owned()),
            _ => None,
        };
        self.0.processes.insert(
            pid,
            ProcessInfo {
                pid,
                start_time: 5000 + u64::from(pid),
                uid,
                user,
                cmdline: cmdline.split(' ').map(str::to_owned).collect(),
            },
        );
        self
    }

    /// A process whose argv is given whole (arguments may hold spaces).
    pub fn process_argv(mut self, pid: u32, uid: u32, argv: &[String]) -> Self {
        self = self.process(pid, uid, "x");
        if let Some(p) = self.0.processes.get_mut(&pid) {
            p.cmdline = argv.to_vec();
        }
        self
    }

    /// A listening socket on 127.0.0.1 held by `pids`.
    pub fn listen(self, port: u16, pids: &[u32]) -> Self {
        self.listen_at("127.0.0.1", port, pids)
    }

    /// A listening socket on `address` held by `pids`.
    pub fn listen_at(mut self, address: &str, port: u16, pids: &[u32]) -> Self {
        let uid = pids
            .first()
            .and_then(|p| self.0.processes.get(p))
            .map_or(ME, |p| p.uid);
        let address: IpAddr = address.parse().unwrap();
        self.push(Listener {
            port,
            address,
            inode: 70_000 + u64::from(port) * 10 + u64::from(address.is_ipv6()),
            socket_uid: uid,
            holders: Holders::Known {
                pids: pids.to_vec(),
            },
        });
        self
    }

    /// A listening socket whose holder could not be found.
    pub fn listen_unknown(mut self, port: u16, socket_uid: u32) -> Self {
        self.push(Listener {
            port,
            address: "0.0.0.0".parse().unwrap(),
            inode: 90_000 + u64::from(port),
            socket_uid,
            holders: Holders::Unknown {
                reason: "no process in this pid namespace holds it".to_owned(),
            },
        });
        self
    }

    fn push(&mut self, l: Listener) {
        let Observation::Known { value } = &mut self.0.listeners else {
            panic!("listeners unknown")
        };
        value.push(l);
        value.sort();
    }

    /// A registry entry.
    pub fn registered(mut self, name: &str, port: Option<u16>) -> Self {
        let Observation::Known { value } = &mut self.0.registry else {
            panic!("registry unknown")
        };
        value.present = true;
        value.sandboxes.insert(
            name.to_owned(),
            RegistryEntry {
                name: name.to_owned(),
                dashboard_port: port,
                gateway_name: None,
                gateway_port: None,
            },
        );
        self
    }

    /// An unreadable registry.
    pub fn registry_unknown(mut self) -> Self {
        self.0.registry = Observation::Unknown {
            reason:
                "/home/alice/.nemoclaw/sandboxes.json:1:2: not valid JSON: key must be a string"
                    .to_owned(),
        };
        self
    }

    /// A forward pid file.
    pub fn forward(mut self, sandbox: &str, port: u16, pid: u32) -> Self {
        let Observation::Known { value } = &mut self.0.forwards else {
            panic!("forwards unknown")
        };
        value.push(ForwardPidFile {
            path: format!("/home/alice/.config/openshell/forwards/{sandbox}-{port}.pid"),
            sandbox: sandbox.to_owned(),
            port,
            content: Observation::Known {
                value: ForwardContent {
                    pid,
                    sandbox_id: format!("id-{sandbox}"),
                    bind: "127.0.0.1".to_owned(),
                },
            },
        });
        self
    }

    /// Listeners could not be read at all.
    pub fn listeners_unknown(mut self) -> Self {
        self.0.listeners = Observation::Unknown {
            reason: "netlink sock_diag failed (EPERM) and so did /proc/net/tcp (EACCES)".to_owned(),
        };
        self
    }

    /// The finished observation.
    pub fn build(self) -> Observed {
        self.0
    }
}

/// A free port range of 11 ports for one test, plus a 12th (`end + 1`) for its gateway. Never
/// 18789-18799, so tests never fight the host.
pub fn next_range() -> PortRange {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let base =
            42_000 + (std::process::id() % 40) as u16 * 200 + NEXT.fetch_add(12, Ordering::SeqCst);
        let range = PortRange {
            start: base,
            end: base + 10,
        };
        let ports: Vec<u16> = (base..=base + 11).collect();
        if nemoclaw::observe::probe_ports(&ports) == nemoclaw::observe::PortState::Free {
            return range;
        }
    }
}

/// A container as Docker reports it, for planner fixtures.
pub fn container(
    status: &str,
    image: &str,
    image_id: &str,
    port: u16,
) -> nemoclaw::model::ContainerFacts {
    nemoclaw::model::ContainerFacts {
        id: "c0ffee00c0ffee00c0ffee00".to_owned(),
        status: status.to_owned(),
        running: status == "running",
        exit_code: (status == "exited").then_some(137),
        started_at: Some("2026-11-23T10:00:00Z".to_owned()),
        finished_at: (status == "exited").then(|| "2026-11-23T11:00:00Z".to_owned()),
        started_at_ms: Some(1_795_000_000_000 - 3_600_000),
        image_ref: image.to_owned(),
        image_id: image_id.to_owned(),
        published: vec![nemoclaw::model::PublishedPort {
            container_port: "30051/tcp".to_owned(),
            host_ip: "127.0.0.1".to_owned(),
            host_port: port,
        }],
        mounts: vec![nemoclaw::model::MountFacts {
            kind: "volume".to_owned(),
            name: Some("openshell-cluster-nemoclaw".to_owned()),
            destination: "/var/lib/rancher/k3s".to_owned(),
        }],
        privileged: true,
        gpu: false,
    }
}

impl Host {
    /// A host whose legacy gateway matches the file exactly: running the desired image on port
    /// 8080 and answering HTTP 200.
    pub fn legacy_converged() -> Self {
        Host::new()
            .legacy(
                Some(container(
                    "running",
                    "img:2",
                    "sha256:2222222222222222",
                    8080,
                )),
                &[],
            )
            .health(Some(200))
    }

    /// Docker facts for the legacy gateway `nemoclaw`: the container (or none), its volume and
    /// network, and the desired image `img:2` (id `sha256:2222…`).
    pub fn legacy(
        mut self,
        c: Option<nemoclaw::model::ContainerFacts>,
        volume_used_by: &[&str],
    ) -> Self {
        let name = "openshell-cluster-nemoclaw".to_owned();
        let mut facts = nemoclaw::model::DockerFacts {
            server_version: "20.10.24".to_owned(),
            ..Default::default()
        };
        facts.containers.insert(name.clone(), c);
        facts.volumes.insert(
            name.clone(),
            Some(nemoclaw::model::VolumeFacts {
                driver: "local".to_owned(),
                mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
                used_by: volume_used_by.iter().map(|s| (*s).to_owned()).collect(),
            }),
        );
        facts.networks.insert(
            name.clone(),
            Some(nemoclaw::model::NetworkFacts {
                id: "n1".to_owned(),
                driver: "bridge".to_owned(),
            }),
        );
        facts.images.insert(
            "img:2".to_owned(),
            Some(nemoclaw::model::ImageFacts {
                id: "sha256:2222222222222222".to_owned(),
            }),
        );
        self.0.docker = Some(Observation::Known { value: facts });
        self
    }

    /// The Docker engine could not be asked.
    pub fn docker_unknown(mut self) -> Self {
        self.0.docker = Some(Observation::Unknown {
            reason:
                "cannot reach the Docker engine at /var/run/docker.sock: No such file or directory"
                    .to_owned(),
        });
        self
    }

    /// The gateway port's probe result.
    pub fn health(mut self, http: Option<u16>) -> Self {
        self.0.gateway_health = Some(nemoclaw::model::Health {
            tcp_open: http.is_some(),
            http_status: http,
            answered: http.is_some(),
            detail: http
                .is_none()
                .then(|| "connect: Connection refused (os error 111)".to_owned()),
        });
        self
    }

    /// The docker-driver gateway's facts, with an optional live process and its environment.
    pub fn driver(
        mut self,
        process: Option<(u32, BTreeMap<String, String>)>,
        binary: Option<&str>,
    ) -> Self {
        let state_dir = "/home/alice/.local/state/nemoclaw/openshell-docker-gateway".to_owned();
        self.0.gateway_process = Some(nemoclaw::model::DriverFacts {
            state_dir,
            pid_file: Observation::Known {
                value: process.as_ref().map(|(p, _)| *p),
            },
            runtime_marker: Observation::Known { value: None },
            binary: binary.map(str::to_owned),
            fingerprint_key_id: None,
            binary_candidates: vec![
                "/usr/local/bin/openshell-gateway".to_owned(),
                "/usr/bin/openshell-gateway".to_owned(),
            ],
            process: process.map(|(pid, environ)| nemoclaw::model::DriverProcess {
                info: ProcessInfo {
                    pid,
                    start_time: 7000,
                    uid: ME,
                    user: Some("alice".to_owned()),
                    cmdline: vec!["/usr/local/bin/openshell-gateway".to_owned()],
                },
                found_via: "pid-file".to_owned(),
                environ: Observation::Known { value: environ },
                exe: Observation::Known {
                    value: "/usr/local/bin/openshell-gateway".to_owned(),
                },
                unit: None,
                age_ms: Some(3_600_000),
            }),
            binary_version: None,
            supervisor_binary: None,
        });
        self
    }
}

/// The `openshell` stand-in's path.
pub const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/openshell-standin"
);

/// A reachable gateway registered with the `openshell` stand-in below `home` as `name` (and made
/// active, as `gateway add` does): a listener the stand-in's connect reaches, kept open for as
/// long as the returned value lives.
pub fn standin_gateway(home: &std::path::Path, name: &str) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let out = std::process::Command::new(STANDIN)
        .args(["gateway", "add", &endpoint, "--local", "--name", name])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("OPENSHELL_STANDIN_DIR", home.join(".openshell-standin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    l
}

/// Kills the forwards the `openshell` stand-in started below `home` (they are detached, as real
/// forwards are).
pub fn kill_forwards(home: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(home.join(".config/openshell/forwards")) else {
        return;
    };
    for e in entries.flatten() {
        let pid = std::fs::read_to_string(e.path()).ok().and_then(|t| {
            t.split('\t')
                .next()
                .and_then(|p| p.trim().parse::<i32>().ok())
        });
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The exit code of a finished command (-1 when killed by a signal).
pub fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Stdout then stderr, for assertion messages and greps.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether the private Docker engine is there. Under CI its absence fails the test (scripts/test
/// starts it); elsewhere the test is skipped with a message.
pub fn docker_engine() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the Docker tests against the private engine: run them through scripts/test"
    );
    eprintln!("skipped: DOCKER_HOST is not set (scripts/test starts a private Docker engine)");
    false
}

/// `nemoclaw plan -o json [extra]` in `dir`, which must succeed; the parsed plan.
pub fn plan_json(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["plan", "-o", "json"];
    args.extend_from_slice(extra);
    let out = nemoclaw_cmd(dir).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first step of a JSON plan with `action`, if any.
pub fn step_with_action<'a>(
    plan: &'a serde_json::Value,
    action: &str,
) -> Option<&'a serde_json::Value> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == action)
}

/// The ids of a JSON plan's steps, in order.
pub fn step_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}
