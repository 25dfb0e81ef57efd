//! The `docker-driver` gateway: a real process started, adopted, restarted on drift, and a crash
//! at start reported with its exit status. The real `openshell-gateway` is not installable here,
//! so `tests/support/standin_gateway.rs` (compiled with rustc) stands in: it serves HTTP 200 on
//! the port from its environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nemoclaw::observe::{self, PortState};

use crate::support::text;
use crate::support::{nemoclaw_cmd, next_range, step_ids};

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
        let env: String = env
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        let text = format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"41000-41010\"\ngateway:\n  runtime: docker-driver\n  port: {}\n  binary: {}\n  healthTimeout: 60s\n  env:{}\n",
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
fn a_live_gateway_on_the_port_is_adopted() {
    let g = Driver::new();
    g.write(&[]);
    let state = g.state_dir();
    let mut child = Command::new(standin())
        .env("OPENSHELL_DRIVERS", "docker")
        .env("OPENSHELL_BIND_ADDRESS", "127.0.0.1")
        .env("OPENSHELL_SERVER_PORT", g.port.to_string())
        .env("OPENSHELL_DISABLE_TLS", "true")
        .env("OPENSHELL_DISABLE_GATEWAY_AUTH", "true")
        .env(
            "OPENSHELL_DB_URL",
            format!("sqlite:{}/openshell.db", state.display()),
        )
        .env(
            "OPENSHELL_GRPC_ENDPOINT",
            format!("http://127.0.0.1:{}", g.port),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if matches!(observe::probe_ports(&[g.port]), PortState::Busy(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
