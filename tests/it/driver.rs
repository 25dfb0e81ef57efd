//! The `docker-driver` gateway: a real process started, adopted, restarted on drift, and a crash
//! at start reported with its exit status. The real `openshell-gateway` is not installable here,
//! so `tests/support/standin_gateway.rs` (compiled with rustc) stands in: it serves HTTP 200 on
//! the port from its environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nemoclaw::observe::{self, PortState};

use crate::support::{code, text};
use crate::support::{nemoclaw_cmd, next_range, step_ids, step_with_action};

fn standin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("openshell-gateway");
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/standin_gateway.rs"
        );
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
            .args(["--edition", "2021", "-O", "-o"])
            .arg(&out)
            .arg(src)
            .status()
            .expect("rustc");
        assert!(status.success(), "compiling the stand-in gateway");
        out
    })
}

struct Driver {
    dir: tempfile::TempDir,
    port: u16,
}

impl Driver {
    fn new() -> Self {
        let range = next_range();
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: range.end + 1,
        }
    }

    fn write(&self, env: &[(&str, &str)]) {
        self.write_with(env, "  healthTimeout: 60s\n");
    }

    fn write_with(&self, env: &[(&str, &str)], gateway_extra: &str) {
        let env: String = env
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        let text = format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"41000-41010\"\ngateway:\n  runtime: docker-driver\n  port: {}\n  binary: {}\n{gateway_extra}  env:{}\n",
            self.port,
            standin().display(),
            if env.is_empty() {
                " {}".to_owned()
            } else {
                format!("\n{env}")
            }
        );
        std::fs::write(self.dir.path().join("nemoclaw.yaml"), text).unwrap();
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join(format!(
            ".local/state/nemoclaw/openshell-docker-gateway-{}",
            self.port
        ))
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state_dir().join("openshell-gateway.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn run(&self, args: &[&str]) -> Output {
        nemoclaw_cmd(self.dir.path()).args(args).output().unwrap()
    }

    fn plan(&self) -> serde_json::Value {
        crate::support::plan_json(self.dir.path(), &[])
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The gateway is detached on purpose; a test cleans up only what it started.
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn the_gateway_is_started_then_restarted_when_its_env_drifts() {
    let g = Driver::new();
    g.write(&[]);
    let name = format!("gateway.nemoclaw-{}", g.port);
    assert_eq!(step_ids(&g.plan()), vec![format!("start:{name}")]);

    let out = g.run(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = g.pid().expect("pid file written");
    assert!(alive(first));
    assert!(observe::health::probe(g.port, Duration::from_secs(2)).alive());
    assert!(g.state_dir().join("runtime.json").is_file());
    assert_eq!(
        g.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "converged"
    );

    // A secret-looking value in the file's env: it drives a restart but never appears in output.
    let secret = "s3cr3t-token-0123456789";
    g.write(&[("EXTRA_TOKEN", secret)]);
    let plan = g.plan();
    assert_eq!(step_ids(&plan), vec![format!("restart:{name}")]);
    assert_eq!(plan["steps"][0]["risk"], "disrupt");
    assert!(
        plan["steps"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("`EXTRA_TOKEN` differs")
    );
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let second = g.pid().unwrap();
    assert_ne!(first, second);
    assert!(!alive(first), "the old gateway was stopped");
    assert_eq!(
        g.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    let environ = std::fs::read(format!("/proc/{second}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains(&format!("EXTRA_TOKEN={secret}")),
        "the process got the value"
    );
    for args in [
        &["plan", "-o", "json"][..],
        &["observe", "-f", "nemoclaw.yaml", "-o", "json"],
        &["apply", "--yes"],
    ] {
        let out = g.run(args);
        assert!(
            !text(&out).contains(secret),
            "`{args:?}` printed the env value"
        );
    }
    // Nor can it be guessed from a snapshot: the fingerprint is keyed, not a bare SHA-256.
    let observed: serde_json::Value =
        serde_json::from_slice(&g.run(&["observe", "-f", "nemoclaw.yaml"]).stdout).unwrap();
    let kept = observed["gateway_process"]["process"]["environ"]["value"]["EXTRA_TOKEN"]
        .as_str()
        .unwrap_or_else(|| panic!("{observed:#}"))
        .to_owned();
    assert!(kept.starts_with("hmac-sha256:"), "{kept}");
    assert!(!kept.contains(&nemoclaw::model::sha256_hex(secret.as_bytes())));
}

#[test]
fn a_gateway_that_crashes_at_start_is_reported_at_once_with_its_exit_status() {
    let g = Driver::new();
    g.write(&[("STANDIN_EXIT", "3")]);
    let started = Instant::now();
    let out = g.run(&["apply", "--yes"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("exited with exit code 3"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("standin: exiting with code 3"),
        "the log tail is shown: {}",
        text(&out)
    );
    // The health budget is 60s; a dead child is noticed at the next poll, not at the deadline.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_gateway_nemoclaw_started_is_adopted_as_converged() {
    let g = Driver::new();
    g.write(&[]);
    // No pid file: NemoClaw's own launch, found only by the port it holds.
    let mut child = nemoclaw_launch(&g).spawn().unwrap();
    wait_listening(g.port);
    let plan = g.plan();
    assert!(
        step_ids(&plan).is_empty(),
        "no pid file, but the live gateway on the port is adopted: {plan:#}"
    );
    let observed: serde_json::Value =
        serde_json::from_slice(&g.run(&["observe", "-f", "nemoclaw.yaml"]).stdout).unwrap();
    assert_eq!(
        observed["gateway_process"]["process"]["found_via"],
        "port-listener"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_port_held_by_something_else_blocks_the_start() {
    let g = Driver::new();
    g.write(&[]);
    let other = std::net::TcpListener::bind(("127.0.0.1", g.port)).unwrap();
    let plan = g.plan();
    assert_eq!(plan["steps"][0]["action"], "start");
    assert!(
        plan["steps"][0]["blocked"]["reason"]
            .as_str()
            .unwrap()
            .contains("not an OpenShell gateway"),
        "{plan:#}"
    );
    assert_eq!(g.run(&["apply", "--yes"]).status.code(), Some(3));
    drop(other);
}

/// The stand-in, with the launch environment NemoClaw 3aa9a59f gives the gateway on Linux
/// (`src/lib/onboard.ts:3740-3775`), for a 0.0.37 gateway with no supervisor binary beside it.
fn nemoclaw_launch(g: &Driver) -> Command {
    let state = g.state_dir();
    let port = g.port.to_string();
    let mut cmd = Command::new(standin());
    cmd.env("OPENSHELL_DRIVERS", "docker")
        .env("OPENSHELL_BIND_ADDRESS", "127.0.0.1")
        .env("OPENSHELL_SERVER_PORT", &port)
        .env("OPENSHELL_DISABLE_TLS", "true")
        .env("OPENSHELL_DISABLE_GATEWAY_AUTH", "true")
        .env(
            "OPENSHELL_DB_URL",
            format!("sqlite:{}/openshell.db", state.display()),
        )
        .env(
            "OPENSHELL_GRPC_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OPENSHELL_SSH_GATEWAY_HOST", "127.0.0.1")
        .env("OPENSHELL_SSH_GATEWAY_PORT", &port)
        .env("OPENSHELL_DOCKER_NETWORK_NAME", "openshell-docker")
        .env(
            "OPENSHELL_DOCKER_SUPERVISOR_IMAGE",
            "ghcr.io/nvidia/openshell/supervisor:0.0.37",
        )
        .stderr(Stdio::null());
    cmd
}

/// Waits (up to 2 s) for something to listen on `port`.
fn wait_listening(port: u16) {
    for _ in 0..100 {
        if matches!(observe::probe_ports(&[port]), PortState::Busy(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the stand-in as the gateway the engine would have started (its managed environment,
/// pid file in the state dir), with `extra` on top.
fn started_by_hand(g: &Driver, extra: &[(&str, &str)]) -> std::process::Child {
    let state = g.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let mut cmd = nemoclaw_launch(g);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    std::fs::write(
        state.join("openshell-gateway.pid"),
        format!("{}\n", child.id()),
    )
    .unwrap();
    child
}

#[test]
fn a_gateway_that_runs_but_never_answers_is_restarted_past_its_health_timeout() {
    let g = Driver::new();
    g.write_with(&[], "  healthTimeout: 1s\n");
    let mut wedged = started_by_hand(&g, &[("STANDIN_NO_LISTEN", "1")]);
    std::thread::sleep(Duration::from_millis(1500));
    let plan = g.plan();
    let restart = step_with_action(&plan, "restart")
        .unwrap_or_else(|| panic!("a wedged gateway is restarted: {plan:#}"));
    assert!(
        restart["reason"]
            .as_str()
            .unwrap()
            .contains("has not answered"),
        "{restart:#}"
    );
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        wedged.try_wait().unwrap().is_some(),
        "the wedged one was stopped"
    );
    let again = g.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
}

#[test]
fn a_gateway_that_dies_after_answering_is_reported_with_its_status_and_no_secret() {
    let g = Driver::new();
    g.write(&[
        ("STANDIN_DIE_AFTER_MS", "300"),
        ("STANDIN_API_KEY", "hunter2-very-secret"),
    ]);
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("then died (exit code 3)"), "{t}");
    assert!(
        t.contains("standin: dying as asked"),
        "the log tail is shown: {t}"
    );
    assert!(
        !t.contains("hunter2-very-secret"),
        "the file's values are redacted: {t}"
    );
    assert!(t.contains("STANDIN_API_KEY=<redacted>"), "{t}");
}

#[test]
fn a_restart_waits_for_the_gateways_own_shutdown() {
    // A gateway that takes 5 s to exit on SIGTERM (the real one stops every sandbox container
    // first) is never SIGKILLed under the default `gateway.stopGrace`.
    let g = Driver::new();
    g.write(&[]);
    let state = g.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let script = g.dir.path().join("openshell-gateway-slow");
    std::fs::write(
        &script,
        "import signal, socket, sys, time\ns = socket.create_server(('127.0.0.1', int(sys.argv[1])))\ndef term(*_):\n    time.sleep(5)\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, term)\nwhile True:\n    c, _ = s.accept()\n    c.recv(1024)\n    c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n')\n    c.close()\n",
    )
    .unwrap();
    let mut slow = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(g.port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(
        state.join("openshell-gateway.pid"),
        format!("{}\n", slow.id()),
    )
    .unwrap();
    wait_listening(g.port);
    let plan = g.plan();
    let restart = step_with_action(&plan, "restart")
        .unwrap_or_else(|| panic!("it runs another binary: a restart {plan:#}"));
    assert_eq!(restart["stop_grace_ms"], 30_000, "{restart:#}");
    let started = Instant::now();
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status = slow.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "it exited by itself, not by SIGKILL: {}",
        text(&out)
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(!text(&out).contains("after SIGKILL"), "{}", text(&out));
}

#[test]
fn under_sudo_the_gateway_is_started_as_the_invoking_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the sudo case is not exercised");
        return;
    }
    let g = Driver::new();
    // nobody must be able to run the binary and use the state dir the engine makes.
    let bin_dir = tempfile::Builder::new().prefix("ncgw").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("openshell-gateway");
    std::fs::copy(standin(), &bin).unwrap();
    let state = bin_dir.path().join("state");
    std::fs::write(
        g.dir.path().join("nemoclaw.yaml"),
        format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"41000-41010\"\ngateway:\n  runtime: docker-driver\n  port: {}\n  binary: {}\n",
            g.port,
            bin.display()
        ),
    )
    .unwrap();
    let out = nemoclaw_cmd(g.dir.path())
        .env("SUDO_UID", "65534")
        .env("NEMOCLAW_OPENSHELL_GATEWAY_STATE_DIR", &state)
        .args(["apply", "--yes"])
        .output()
        .unwrap();
    let pid: u32 = std::fs::read_to_string(state.join("openshell-gateway.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid file: {}", text(&out)));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(uid, "65534", "{status}");
}

/// NemoClaw's own acceptance of a running docker-driver gateway, as its code decides it, applied
/// to what the engine started: the environment drift check of 3aa9a59f (`src/lib/onboard.ts`
/// `:3850-3900`: every drift key with a desired value equals the process's, and the executable is
/// the gateway binary) and the `runtime.json` schema of 9708c264
/// (`src/lib/onboard/docker-driver-gateway-runtime-marker.ts:10-113`: every field present with its
/// type, the env hash sha256 of the JSON of the sorted `[key, value]` pairs).
fn nemoclaw_accepts(state: &Path, port: u16, binary: &Path) -> Result<(), String> {
    let pid: u32 = std::fs::read_to_string(state.join("openshell-gateway.pid"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("pid file: {e}"))?;
    let environ: std::collections::BTreeMap<String, String> =
        std::fs::read(format!("/proc/{pid}/environ"))
            .map_err(|e| e.to_string())?
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
    let sd = state.display();
    let desired = [
        ("OPENSHELL_DRIVERS", "docker".to_owned()),
        ("OPENSHELL_BIND_ADDRESS", "127.0.0.1".to_owned()),
        ("OPENSHELL_SERVER_PORT", port.to_string()),
        ("OPENSHELL_DISABLE_TLS", "true".to_owned()),
        ("OPENSHELL_DISABLE_GATEWAY_AUTH", "true".to_owned()),
        ("OPENSHELL_DB_URL", format!("sqlite:{sd}/openshell.db")),
        (
            "OPENSHELL_GRPC_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OPENSHELL_SSH_GATEWAY_HOST", "127.0.0.1".to_owned()),
        ("OPENSHELL_SSH_GATEWAY_PORT", port.to_string()),
        (
            "OPENSHELL_DOCKER_NETWORK_NAME",
            "openshell-docker".to_owned(),
        ),
        (
            "OPENSHELL_DOCKER_SUPERVISOR_IMAGE",
            "ghcr.io/nvidia/openshell/supervisor:0.0.37".to_owned(),
        ),
    ];
    for (k, v) in &desired {
        if environ.get(*k) != Some(v) {
            return Err(format!(
                "drift: {k} is {:?}, NemoClaw wants {v}",
                environ.get(*k)
            ));
        }
    }
    let exe = std::fs::canonicalize(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
    if exe != std::fs::canonicalize(binary).map_err(|e| e.to_string())? {
        return Err(format!("drift: it runs {}", exe.display()));
    }
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("runtime.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let str_or_null = |k: &str| m[k].is_string() || m[k].is_null();
    let ok = m["version"] == 1
        && m["pid"] == pid
        && m["driver"] == "docker"
        && m["platform"] == "linux"
        && m["arch"].is_string()
        && m["endpoint"] == format!("http://127.0.0.1:{port}")
        && m["desiredEnvHash"].is_string()
        && str_or_null("gatewayBin")
        && str_or_null("openshellVersion")
        && str_or_null("dockerHost")
        && m["createdAt"].is_string();
    if !ok {
        return Err(format!("runtime.json is not NemoClaw's: {m:#}"));
    }
    let keys: Vec<&str> = desired.iter().map(|(k, _)| *k).collect();
    let pairs: Vec<[&str; 2]> = environ
        .iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    let hash = nemoclaw::model::sha256_hex(serde_json::to_string(&pairs).unwrap().as_bytes());
    if m["desiredEnvHash"] != hash {
        return Err(format!(
            "desiredEnvHash {} is not {hash}",
            m["desiredEnvHash"]
        ));
    }
    if m["gatewayBin"] != std::fs::canonicalize(binary).unwrap().display().to_string() {
        return Err("gatewayBin is not the binary's real path".to_owned());
    }
    Ok(())
}

#[test]
fn what_the_engine_starts_passes_nemoclaws_own_checks() {
    let g = Driver::new();
    g.write(&[]);
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    nemoclaw_accepts(&g.state_dir(), g.port, standin()).unwrap();
}
