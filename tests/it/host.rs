//! Real processes, real signals, the real socket table. Each test uses its own port range (never
//! 18789-18799, so tests never fight the host), its own HOME and its own lock file.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::code;
use nemoclaw::model::PortRange;
use nemoclaw::observe::{self, ObserveOptions, PortState};

/// A real listening process with a chosen argv[0].
struct Listener {
    child: Child,
}

const SCRIPT: &str = r#"
import signal, socket, sys
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
socks = []
for a in sys.argv[2:]:
    host, port = a.rsplit(":", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks.append(socket.create_server((host.strip("[]"), int(port)), family=fam, reuse_port=sys.argv[1] == "reuseport"))
print("ready", flush=True)
while True:
    signal.pause()
"#;

fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        // Debian's interpreter is readable by `nobody` (a pyenv under /root is not); otherwise the
        // real interpreter behind `python3`, not a pyenv shim that would drop argv[0].
        if Path::new("/usr/bin/python3").exists() {
            return "/usr/bin/python3".to_owned();
        }
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for process tests");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

impl Listener {
    fn spawn(argv0: &str, mode: &str, addrs: &[String], uid: Option<u32>) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg0(argv0)
            .arg("-c")
            .arg(SCRIPT)
            .arg(mode)
            .args(addrs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("spawn listener");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("listener {argv0} {addrs:?} did not start: {err}");
        }
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end and returns the signal that ended it.
    fn ended_by(&mut self) -> Option<i32> {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.signal();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pid {} did not end", self.pid());
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's own ports, HOME and lock.
struct Fixture {
    dir: tempfile::TempDir,
    range: PortRange,
    /// The `openshell` stand-in's active gateway, reachable while the fixture lives.
    _gateway: std::net::TcpListener,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        crate::support::kill_forwards(self.dir.path());
    }
}

impl Fixture {
    fn new(sandboxes: &str, cleanup: &str) -> Self {
        let range = crate::support::next_range();
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{range}\"\nsandboxes:{sandboxes}\ncleanup:\n  termGrace: 500ms\n  killGrace: 1s\n  portFreeTimeout: 2s\n{cleanup}\n"
        );
        // `PORTn` in a test's text is the n-th port of its range.
        for n in (0..=10u16).rev() {
            text = text.replace(&format!("PORT{n}"), &(range.start + n).to_string());
        }
        std::fs::write(dir.path().join("nemoclaw.yaml"), text).unwrap();
        let _gateway = crate::support::standin_gateway(dir.path(), "nemoclaw");
        Self {
            dir,
            range,
            _gateway,
        }
    }

    fn port(&self, i: u16) -> u16 {
        self.range.start + i
    }

    fn addr(&self, host: &str, i: u16) -> String {
        format!("{host}:{}", self.port(i))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        crate::support::nemoclaw_cmd(self.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn plan_json(&self) -> serde_json::Value {
        crate::support::plan_json(self.path(), &[])
    }

    fn desired(&self) -> nemoclaw::model::Desired {
        let text = std::fs::read_to_string(self.path().join("nemoclaw.yaml")).unwrap();
        nemoclaw::spec::load("nemoclaw.yaml", &text).unwrap()
    }

    fn observe_options(&self) -> ObserveOptions {
        ObserveOptions {
            invoking_uid: nix::unistd::getuid().as_raw(),
            home: PathBuf::from(self.path()),
            config_home: PathBuf::from(self.path()).join(".config"),
            ports: vec![self.range],
            timeout: Duration::from_secs(10),
            docker: Default::default(),
            gateway_port: None,
            cli: None,
            cluster: None,
            driver: None,
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn steps(plan: &serde_json::Value) -> &Vec<serde_json::Value> {
    plan["steps"].as_array().unwrap()
}

fn finding_kinds(plan: &serde_json::Value) -> Vec<String> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

#[test]
fn stale_listener_on_ipv4_and_ipv6_is_one_step_stopped_with_sigterm_and_converges() {
    let f = Fixture::new(
        "\n  - name: my-assistant\n    from: img:1\n    dashboardPort: PORT0",
        "",
    );
    let mut l = Listener::spawn(
        "openclaw-gateway",
        "term",
        &[f.addr("127.0.0.1", 0), f.addr("[::1]", 1)],
        None,
    );

    let plan = f.plan_json();
    let ids: Vec<&str> = steps(&plan)
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    // The stale listener first, then the sandbox that needs its port, then its forward.
    assert_eq!(
        ids,
        vec![
            format!("stop:process.{}", l.pid()).as_str(),
            "create:sandbox.my-assistant",
            "forward:forward.my-assistant"
        ],
        "{plan:#}"
    );
    let step = &steps(&plan)[0];
    assert_eq!(step["pid"], l.pid());
    assert_eq!(step["ports"], serde_json::json!([f.port(0), f.port(1)]));
    assert!(
        step["reason"]
            .as_str()
            .unwrap()
            .contains("sandbox `my-assistant` needs port")
    );
    assert_eq!(code(&f.run(&["plan", "--detailed-exitcode"])), 2);

    let out = f.run(&["apply", "--yes"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("exited after SIGTERM"),
        "{}",
        stdout(&out)
    );
    assert_eq!(l.ended_by(), Some(libc_sigterm()));
    assert_eq!(observe::probe_ports(&[f.port(1)]), PortState::Free);
    // The sandbox's own forward now holds its port: claimed by the right process.
    assert!(matches!(
        observe::probe_ports(&[f.port(0)]),
        PortState::Busy(_)
    ));
    let calls = std::fs::read_to_string(f.path().join(".openshell-standin/calls.log")).unwrap();
    let create = calls
        .lines()
        .position(|l| l.starts_with("sandbox create --name my-assistant"))
        .expect("created");
    let forward = calls
        .lines()
        .position(|l| l.starts_with("forward start --background"))
        .expect("forwarded");
    assert!(create < forward, "create before forward: {calls}");
    assert!(
        calls.contains(&format!("NEMOCLAW_DASHBOARD_PORT={}", f.port(0))),
        "the port is baked in: {calls}"
    );

    // A second apply right after has nothing to do.
    assert_eq!(code(&f.run(&["plan", "--detailed-exitcode"])), 0);
    let again = f.run(&["apply", "--yes"]);
    assert_eq!(code(&again), 0);
    assert!(stdout(&again).contains("No changes."));
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[test]
fn a_listener_that_ignores_sigterm_is_killed_after_term_grace() {
    let f = Fixture::new(" []", "");
    let mut l = Listener::spawn(
        "openshell forward",
        "ignore-term",
        &[f.addr("127.0.0.1", 3)],
        None,
    );
    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("sending SIGKILL"), "{}", stdout(&out));
    assert_eq!(l.ended_by(), Some(nix::sys::signal::Signal::SIGKILL as i32));
    assert_eq!(observe::probe_ports(&[f.port(3)]), PortState::Free);
}

#[test]
fn foreign_mismatched_protected_and_forward_listeners_are_untouched() {
    let f = Fixture::new(
        "\n  - name: my-assistant\n    from: img:1\n    dashboardPort: PORT0",
        "  protectedPorts: [PORT4]",
    );

    let mut forward = Listener::spawn("openshell forward", "term", &[f.addr("127.0.0.1", 0)], None);
    let fwd_dir = f.path().join(".config/openshell/forwards");
    std::fs::create_dir_all(&fwd_dir).unwrap();
    std::fs::write(
        fwd_dir.join(format!("my-assistant-{}.pid", f.port(0))),
        format!("{}\tsb-1\t127.0.0.1\n", forward.pid()),
    )
    .unwrap();
    let mut mismatch = Listener::spawn("python3-httpd", "term", &[f.addr("127.0.0.1", 2)], None);
    let mut protected =
        Listener::spawn("openclaw-gateway", "term", &[f.addr("127.0.0.1", 4)], None);
    let mut foreign = is_root().then(|| {
        Listener::spawn(
            "openclaw-gateway",
            "term",
            &[f.addr("127.0.0.1", 5)],
            Some(65534),
        )
    });

    let plan = f.plan_json();
    // Only the declared sandbox itself is missing (its forward is live): no signal anywhere.
    let ids: Vec<&str> = steps(&plan)
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["create:sandbox.my-assistant"], "{plan:#}");
    let mut kinds = finding_kinds(&plan);
    kinds.sort();
    // The protected `openclaw-gateway` is a live gateway: the ports it derives are reserved.
    let mut expected = vec![
        "cmdline-mismatch",
        "declared-forward",
        "protected-port",
        "openclaw-derived-ports",
    ];
    if foreign.is_some() {
        expected.push("foreign-owner");
        expected.push("openclaw-derived-ports");
    } else {
        eprintln!(
            "not root: the foreign-owner case needs a process owned by nobody and is not exercised"
        );
    }
    expected.sort_unstable();
    assert_eq!(kinds, expected);

    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(forward.alive() && mismatch.alive() && protected.alive());
    if let Some(l) = foreign.as_mut() {
        assert!(l.alive());
    }
}

#[test]
fn a_foreign_listener_on_a_needed_port_blocks_with_exit_3_and_survives() {
    if !is_root() {
        eprintln!("skipped: needs root to run a listener as nobody");
        return;
    }
    let f = Fixture::new(
        "\n  - name: my-assistant\n    from: img:1\n    dashboardPort: PORT0",
        "",
    );
    let mut foreign = Listener::spawn(
        "openclaw-gateway",
        "term",
        &[f.addr("127.0.0.1", 0)],
        Some(65534),
    );
    assert_eq!(code(&f.run(&["plan", "--detailed-exitcode"])), 3);
    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(foreign.alive());
}

#[test]
fn a_pid_recycled_between_plan_and_apply_is_refused() {
    let f = Fixture::new(" []", "");
    let mut l = Listener::spawn("openclaw-gateway", "term", &[f.addr("127.0.0.1", 6)], None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut observed = rt.block_on(observe::observe(&f.observe_options()));
    // Same pid, another process: what the kernel would show had the pid been reused.
    observed.processes.get_mut(&l.pid()).unwrap().start_time += 1;
    let plan = nemoclaw::plan::plan(&f.desired(), &observed, &Default::default());
    assert_eq!(plan.changes().count(), 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let report = rt.block_on(nemoclaw::apply::execute(
        &plan,
        &Default::default(),
        &Quiet,
        &stop,
    ));
    assert!(
        matches!(&report.outcomes[0].1, nemoclaw::apply::StepOutcome::Stale(why) if why.contains("different process")),
        "{report:?}"
    );
    assert!(l.alive(), "a recycled pid is never signalled");
}

#[test]
fn a_second_apply_fails_fast_naming_the_holder() {
    let f = Fixture::new(" []", "");
    let _l = Listener::spawn("openclaw-gateway", "term", &[f.addr("127.0.0.1", 7)], None);
    let held = nemoclaw::apply::lock::acquire(&f.path().join("apply.lock")).unwrap();
    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another `nemoclaw apply` is running")
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
}

#[test]
fn apply_without_a_terminal_and_without_yes_refuses_and_changes_nothing() {
    let f = Fixture::new(" []", "");
    let mut l = Listener::spawn("openclaw-gateway", "term", &[f.addr("127.0.0.1", 8)], None);
    let out = f.run(&["apply"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(l.alive());
}

#[test]
fn a_corrupt_registry_blocks_the_sweep_and_is_left_byte_for_byte() {
    let f = Fixture::new(" []", "");
    let mut l = Listener::spawn("openclaw-gateway", "term", &[f.addr("127.0.0.1", 9)], None);
    let reg = f.path().join(".nemoclaw/sandboxes.json");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    let corrupt = b"{\"sandboxes\": {\"bob\": {\"dashboardPort\": 187";
    std::fs::write(&reg, corrupt).unwrap();
    assert_eq!(code(&f.run(&["plan", "--detailed-exitcode"])), 3);
    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(l.alive());
    assert_eq!(std::fs::read(&reg).unwrap(), corrupt);
}

#[test]
fn a_port_that_stays_busy_after_the_stop_is_reported_as_not_converged() {
    let f = Fixture::new(" []", "");
    // Two sockets on one port (SO_REUSEPORT): a stale one, and one the engine must not touch.
    let mut stale = Listener::spawn(
        "openclaw-gateway",
        "reuseport",
        &[f.addr("127.0.0.1", 10)],
        None,
    );
    let mut other = Listener::spawn(
        "python3-httpd",
        "reuseport",
        &[f.addr("127.0.0.1", 10)],
        None,
    );
    let out = f.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("still had a listener"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stale.ended_by(), Some(libc_sigterm()));
    assert!(other.alive());
}

struct Quiet;

impl nemoclaw::apply::Reporter for Quiet {
    fn started(&self, _: &nemoclaw::plan::Step) {}
    fn progress(&self, _: &nemoclaw::plan::Step, _: &str) {}
    fn finished(&self, _: &nemoclaw::plan::Step, _: &nemoclaw::apply::StepOutcome, _: Duration) {}
}
