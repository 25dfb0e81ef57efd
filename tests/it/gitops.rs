//! Saved plans that refuse to go stale, consent bound to the plan, the journal across a SIGKILL,
//! `history`, `init --from-host`, and the CI example — against real processes (and Docker, where
//! the private engine is up).

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{code, text};
use crate::support::{nemoclaw_cmd, next_range};

/// A listener on `argv[2]`. Modes: `term` (dies on SIGTERM), `ignore-term` (SIGTERM does
/// nothing), `fork-ignore-term` (as `ignore-term`, and a forked child shares the socket until the
/// parent is gone). With `argv[3]`, each SIGTERM is appended there as `<pid> <epoch seconds>`.
const SCRIPT: &str = r#"
import os, signal, socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
record = sys.argv[3] if len(sys.argv) > 3 else None
def on_term(*_):
    if record:
        with open(record, "a") as f:
            f.write("%d %f\n" % (os.getpid(), time.time()))
    if mode == "term":
        sys.exit(0)
if mode.endswith("ignore-term"):
    signal.signal(signal.SIGTERM, on_term)
elif record:
    signal.signal(signal.SIGTERM, on_term)
s = socket.create_server(("127.0.0.1", port))
if mode == "fork-ignore-term":
    parent = os.getpid()
    if os.fork() == 0:
        while os.getppid() == parent:
            time.sleep(0.2)
        sys.exit(0)
print("ready", flush=True)
while True:
    signal.pause()
"#;

pub(crate) struct Listener(Child);

impl Listener {
    pub(crate) fn spawn(mode: &str, port: u16) -> Self {
        Self::spawn_named("openclaw-gateway", mode, port)
    }

    fn spawn_named(arg0: &str, mode: &str, port: u16) -> Self {
        Self::spawn_with(arg0, &[mode, &port.to_string()])
    }

    /// A listener whose SIGTERMs are appended to `record`.
    pub(crate) fn spawn_recording(mode: &str, port: u16, record: &Path) -> Self {
        Self::spawn_with(
            "openclaw-gateway",
            &[mode, &port.to_string(), &record.display().to_string()],
        )
    }

    fn spawn_with(arg0: &str, args: &[&str]) -> Self {
        let mut child = Command::new("/usr/bin/python3")
            .arg0(arg0)
            .args(["-c", SCRIPT])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Self(child)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
    start: u16,
    /// The `openshell` stand-in's active gateway, reachable while the site lives.
    _gateway: std::net::TcpListener,
}

impl Site {
    pub(crate) fn new(extra: &str) -> Self {
        let range = next_range();
        let dir = tempfile::tempdir().unwrap();
        let _gateway = crate::support::standin_gateway(dir.path(), "nemoclaw");
        let s = Self {
            dir,
            start: range.start,
            _gateway,
        };
        s.write(extra);
        s
    }

    pub(crate) fn write(&self, extra: &str) {
        let text = format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{}-{}\"\ncleanup:\n  termGrace: 1500ms\n  killGrace: 1s\n{extra}",
            self.start,
            self.start + 10
        );
        std::fs::write(self.dir.path().join("nemoclaw.yaml"), text).unwrap();
    }

    pub(crate) fn port(&self, i: u16) -> u16 {
        self.start + i
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = nemoclaw_cmd(self.dir.path());
        c.env("XDG_STATE_HOME", self.dir.path().join("state"));
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub(crate) fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/nemoclaw/journal.jsonl"))
            .unwrap_or_default()
    }
}

#[test]
fn a_saved_plan_applies_exactly_and_refuses_an_edited_file() {
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(1));
    let out = s.run(&["plan", "--out", "plan.json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let saved = std::fs::read_to_string(s.dir.path().join("plan.json")).unwrap();
    assert!(
        saved.contains("\"kind\": \"nemoclaw-plan\"") && saved.contains("\"start_time\""),
        "facts are in the plan"
    );

    // Edit the file: the whole plan is refused, nothing runs.
    s.write("  protectedPorts: []\n");
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("changed since the plan was saved"),
        "{}",
        text(&out)
    );
    assert!(l.alive());

    // Restore it: the saved plan applies.
    s.write("");
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!l.alive());
}

#[test]
fn a_saved_plan_refuses_a_process_that_was_replaced() {
    let s = Site::new("");
    let first = Listener::spawn("term", s.port(2));
    assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    // The listener restarts: another process, another start time, the same port.
    drop(first);
    let mut second = Listener::spawn("term", s.port(2));
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("gone or was replaced since the plan"),
        "{}",
        text(&out)
    );
    assert!(second.alive(), "the new process was not signalled");
}

#[test]
fn a_tampered_saved_plan_is_rejected() {
    let s = Site::new("");
    let _l = Listener::spawn("term", s.port(3));
    assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    let path = s.dir.path().join("plan.json");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"term_grace\": 1500", "\"term_grace\": 1");
    std::fs::write(&path, edited).unwrap();
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("modified after it was saved"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_apply_killed_mid_step_is_reported_by_the_next_run_and_converges() {
    let s = Site::new("");
    // Three listeners that ignore SIGTERM: each stop step spends 1.5s in its TERM wait, a window
    // in which the apply is killed with SIGKILL, one step further each round.
    let mut ls: Vec<Listener> = (4..7)
        .map(|i| Listener::spawn("ignore-term", s.port(i)))
        .collect();
    for round in 1..=3 {
        // Count only this apply's intents: round k dies inside its k-th step, after k-1 steps
        // completed.
        let before = s.journal().lines().count();
        // One step at a time, so "the k-th step" is well defined (`parallel::…_killed_mid_way_…`
        // kills a parallel one).
        let mut apply = s
            .cmd()
            .args(["apply", "--yes", "--parallelism", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let intents = s
                .journal()
                .lines()
                .skip(before)
                .filter(|l| l.contains("\"event\":\"intent\""))
                .count();
            if intents >= round {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no intent written"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        apply.kill().unwrap(); // SIGKILL
        apply.wait().unwrap();
        let report = s.run(&["plan"]);
        let t = text(&report);
        assert!(
            t.contains("An earlier apply was interrupted mid-step"),
            "round {round}: {t}"
        );
        assert!(
            t.contains(": not done: pid"),
            "round {round}: the TERM-ignoring process still listens: {t}"
        );
        let history = text(&s.run(&["history"]));
        assert!(history.contains("killed mid-step"), "{history}");
        let stopped = ls
            .iter_mut()
            .map(|l| !l.alive())
            .filter(|gone| *gone)
            .count();
        assert_eq!(
            stopped,
            round - 1,
            "round {round}: the steps before the kill completed"
        );
        // Bring the stopped ones back, so the next round faces three steps again.
        for (i, l) in ls.iter_mut().enumerate() {
            if !l.alive() {
                *l = Listener::spawn("ignore-term", s.port(4 + u16::try_from(i).unwrap()));
            }
        }
        // The next apply judges and records it, so it is reported once.
        if round == 3 {
            let out = s.run(&["apply", "--yes"]);
            assert_eq!(code(&out), 0, "{}", text(&out));
            assert!(text(&out).contains("An earlier apply was interrupted"));
            assert!(
                !text(&s.run(&["plan"])).contains("interrupted"),
                "reported once"
            );
        }
    }
    assert!(ls.iter_mut().all(|l| !l.alive()), "a re-apply converged");
    assert_eq!(code(&s.run(&["plan", "--detailed-exitcode"])), 0);
}

#[test]
fn consent_binds_to_the_plan_and_to_one_address() {
    if !crate::support::docker_engine() {
        return;
    }
    let id = std::process::id();
    let (a, b) = (format!("nemoclaw-t{id}-a"), format!("nemoclaw-t{id}-b"));
    let docker = |args: &[&str]| Command::new("docker").args(args).output().unwrap();
    docker(&["volume", "create", &a]);
    docker(&["volume", "create", &b]);
    let s = Site::new(&format!("destroy:\n  volumes: [{a}, {b}]\n"));
    assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    let out = s.run(&[
        "apply",
        "plan.json",
        "--yes",
        "--allow",
        &format!("destroy=volume.{a}"),
    ]);
    assert_eq!(code(&out), 3, "one step stays blocked: {}", text(&out));
    assert!(
        !docker(&["volume", "inspect", &a]).status.success(),
        "the consented volume is gone"
    );
    assert!(
        docker(&["volume", "inspect", &b]).status.success(),
        "the other one is kept"
    );
    let bad = s.run(&["apply", "plan.json", "--yes", "--allow", "nuke"]);
    assert_eq!(code(&bad), 1);
    docker(&["volume", "rm", "-f", &a, &b]);
}

#[test]
fn a_saved_plan_refuses_a_recreated_container() {
    if !crate::support::docker_engine() {
        return;
    }
    let range = next_range();
    let name = format!("r{}", std::process::id());
    let c = format!("openshell-cluster-{name}");
    let docker = |args: &[&str]| Command::new("docker").args(args).output().unwrap();
    let port = (range.end + 1).to_string();
    let create = |docker: &dyn Fn(&[&str]) -> Output| {
        docker(&[
            "create",
            "--name",
            &c,
            "--network",
            &c,
            "-p",
            &format!("127.0.0.1:{port}:30051"),
            "-v",
            &format!("{c}:/var/lib/rancher/k3s"),
            "nemoclaw-test/busybox:1",
            "server",
        ])
    };
    docker(&["network", "create", &c]);
    assert!(create(&docker).status.success());
    let s = Site::new(&format!(
        "gateway:\n  name: {name}\n  runtime: legacy-k3s\n  privileged: false\n  port: {port}\n  image: nemoclaw-test/busybox:1\n  healthTimeout: 20s\n"
    ));
    assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    docker(&["rm", "-f", &c]);
    assert!(
        create(&docker).status.success(),
        "recreated: same name, new id"
    );
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("recreated since the plan"),
        "{}",
        text(&out)
    );
    let running = docker(&["inspect", "--format", "{{.State.Running}}", &c]);
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        "false",
        "the new container was not started"
    );
    docker(&["rm", "-f", &c]);
    docker(&["volume", "rm", "-f", &c]);
    docker(&["network", "rm", &c]);
}

#[test]
fn init_from_host_describes_the_host_so_that_planning_it_changes_nothing() {
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(8));
    let reg = s.dir.path().join(".nemoclaw");
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(reg.join("sandboxes.json"), r#"{"sandboxes":{"alice":{"name":"alice","dashboardPort":18790}},"defaultSandbox":"alice"}"#).unwrap();
    let out = s.run(&["init", "--from-host"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        yaml.contains("Registered but not live") && yaml.contains("alice"),
        "a registry entry alone is not declared: {yaml}"
    );
    std::fs::write(s.dir.path().join("init.yaml"), &yaml).unwrap();
    assert_eq!(code(&s.run(&["validate", "-f", "init.yaml"])), 0);
    let plan = s.run(&["plan", "-f", "init.yaml", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0, "{yaml}\n{}", text(&plan));
    assert!(l.alive());
}

#[test]
fn ci_review_script_runs_the_documented_commands() {
    let s = Site::new("sandboxes:\n  - name: my-assistant\n    from: img:1\n");
    let _l = Listener::spawn("term", s.port(9));
    let snapshot = s.run(&["observe", "-f", "nemoclaw.yaml", "-o", "json"]);
    std::fs::write(s.dir.path().join("host.json"), &snapshot.stdout).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/review.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["nemoclaw.yaml", "host.json", "review"])
        .current_dir(s.dir.path())
        .env("NEMOCLAW", env!("CARGO_BIN_EXE_nemoclaw"))
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "changes to review: {}", text(&out));
    let md = std::fs::read_to_string(s.dir.path().join("review/plan.md")).unwrap();
    assert!(
        md.starts_with("### nemoclaw plan for `nemoclaw.yaml`")
            && md.contains("> [!WARNING]")
            && md.contains("plan sha256"),
        "{md}"
    );
    assert!(s.dir.path().join("review/plan.json").is_file());
    // The offline plan is the plan the host would get: byte for byte.
    let offline = s.run(&["plan", "--observed", "host.json", "-o", "json"]);
    let online = s.run(&["plan", "-o", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&offline.stdout),
        String::from_utf8_lossy(&online.stdout)
    );
}

#[test]
fn an_apply_killed_inside_a_docker_step_is_judged_and_converges_with_the_volume_intact() {
    if !crate::support::docker_engine() {
        return;
    }
    let name = format!("k{}", std::process::id());
    let c = format!("openshell-cluster-{name}");
    let docker = |args: &[&str]| Command::new("docker").args(args).output().unwrap();
    let s = Site::new("");
    let port = (s.start + 11).to_string();
    docker(&["network", "create", &c]);
    docker(&["volume", "create", &c]);
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{c}:/d"),
        "nemoclaw-test/busybox:1",
        "sh",
        "-c",
        "echo precious > /d/workspace.txt",
    ]);
    // A stopped gateway whose server needs 2s to answer: the start step waits in that window.
    let created = docker(&[
        "create",
        "--name",
        &c,
        "--network",
        &c,
        "-p",
        &format!("127.0.0.1:{port}:30051"),
        "-v",
        &format!("{c}:/var/lib/rancher/k3s"),
        "nemoclaw-test/busybox:slow",
        "server",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    s.write(&format!(
        "gateway:\n  name: {name}\n  runtime: legacy-k3s\n  privileged: false\n  port: {port}\n  image: nemoclaw-test/busybox:slow\n  healthTimeout: 20s\n"
    ));
    let mut l = Listener::spawn("ignore-term", s.port(7));

    let mut apply = s
        .cmd()
        .args(["apply", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s
        .journal()
        .contains(&format!("\"step\":\"start:gateway.{name}\""))
    {
        assert!(
            Instant::now() < deadline,
            "no intent for the container start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    apply.kill().unwrap();
    apply.wait().unwrap();

    let report = text(&s.run(&["plan"]));
    let running =
        String::from_utf8_lossy(&docker(&["inspect", "--format", "{{.State.Running}}", &c]).stdout)
            .trim()
            == "true";
    let verdict = if running {
        ": done: container"
    } else {
        ": not done: container"
    };
    assert!(
        report.contains(&format!("start gateway.{name}")) && report.contains(verdict),
        "running={running}: {report}"
    );

    let out = s.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!l.alive());
    let file = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{c}:/d"),
        "nemoclaw-test/busybox:1",
        "cat",
        "/d/workspace.txt",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&file.stdout).trim(),
        "precious",
        "the volume's data survived"
    );
    docker(&["rm", "-f", &c]);
    docker(&["volume", "rm", "-f", &c]);
    docker(&["network", "rm", &c]);
}

#[test]
fn a_first_ctrl_c_finishes_the_running_step_and_starts_nothing_new() {
    interrupt_mid_apply(nix::sys::signal::Signal::SIGINT);
}

/// `systemctl stop`, `kill` and a CI runner's cancel send SIGTERM: it means what Ctrl-C means.
#[test]
fn sigterm_finishes_the_running_step_and_starts_nothing_new() {
    interrupt_mid_apply(nix::sys::signal::Signal::SIGTERM);
}

fn interrupt_mid_apply(signal: nix::sys::signal::Signal) {
    let s = Site::new("");
    let mut a = Listener::spawn("ignore-term", s.port(0));
    let mut b = Listener::spawn("ignore-term", s.port(10));
    // The serial walk (the parallel one is `parallel::a_first_ctrl_c_…`).
    let apply = s
        .cmd()
        .args(["apply", "--yes", "--parallelism", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.journal().contains("\"event\":\"intent\"") {
        assert!(Instant::now() < deadline, "no intent written");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(apply.id()).unwrap()),
        signal,
    )
    .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    assert!(text(&out).contains("Apply interrupted"), "{}", text(&out));
    assert!(
        !a.alive(),
        "the running step finished (SIGKILL after its grace)"
    );
    assert!(b.alive(), "nothing new was started");
    let journal = s.journal();
    assert!(
        journal.contains("\"event\":\"outcome\"") && journal.contains("\"event\":\"end\""),
        "the journal was written"
    );
}

#[test]
fn an_unreadable_journal_holds_back_destructive_steps_in_every_output() {
    if !crate::support::docker_engine() {
        return;
    }
    let volume = format!("nemoclaw-h{}", std::process::id());
    let docker = |args: &[&str]| Command::new("docker").args(args).output().unwrap();
    docker(&["volume", "create", &volume]);
    let s = Site::new(&format!("destroy:\n  volumes: [{volume}]\n"));
    // A directory where the journal file should be: it cannot be read.
    std::fs::create_dir_all(s.dir.path().join("state/nemoclaw/journal.jsonl")).unwrap();
    for output in ["human", "json", "markdown"] {
        let out = s.run(&[
            "plan",
            "-o",
            output,
            "--allow",
            "destroy",
            "--detailed-exitcode",
        ]);
        assert_eq!(code(&out), 3, "{output}: {}", text(&out));
        assert!(
            text(&out).contains("journal cannot be read"),
            "{output}: {}",
            text(&out)
        );
    }
    docker(&["volume", "rm", "-f", &volume]);
}

/// Rewrites the saved plan at `path` with `edit` and puts its hash back, as a forger would.
fn forge(path: &Path, edit: impl FnOnce(&mut nemoclaw::plan::Plan)) {
    let mut saved: nemoclaw::plan::saved::SavedPlan =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut saved.plan);
    saved.plan_sha256 = saved.plan.sha256();
    std::fs::write(path, serde_json::to_string_pretty(&saved).unwrap()).unwrap();
}

fn stop_target(plan: &mut nemoclaw::plan::Plan) -> &mut nemoclaw::plan::StopProcess {
    plan.steps
        .iter_mut()
        .find_map(|s| match &mut s.target {
            nemoclaw::plan::Target::Process(p) => Some(p),
            _ => None,
        })
        .expect("a stop step")
}

/// A process the engine must never signal, kept to check it still runs.
fn bystander(uid: Option<u32>) -> Child {
    let mut c = Command::new("/bin/sleep");
    c.arg("300");
    if let Some(uid) = uid {
        c.uid(uid);
    }
    c.spawn().unwrap()
}

fn alive(c: &mut Child) -> bool {
    c.try_wait().unwrap().is_none()
}

/// Saved plans are re-derived: a step edited (hash put back) to signal another user's process,
/// a process without a marker, a protected port's holder, the engine's own ancestor, to wait
/// forever or to run a foreign gateway binary is refused (exit 1) before anything runs; one
/// pointed at a process the planner would not stop is stale (exit 4). The hash is never printed.
#[test]
fn forged_saved_plans_are_refused_and_nothing_is_signalled() {
    let s = Site::new("  protectedPorts: [9]\n");
    let mut l = Listener::spawn("term", s.port(4));
    let path = s.dir.path().join("plan.json");
    let saved = |s: &Site| {
        assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    };
    let mut nobody = bystander(Some(65534));
    let mut plain = bystander(None);
    let apply = |s: &Site| s.run(&["apply", "plan.json", "--yes"]);
    type Edit = Box<dyn Fn(&mut nemoclaw::plan::Plan)>;
    let (nobody_pid, plain_pid) = (nobody.id(), plain.id());
    let cases: Vec<(&str, Edit, i32, &str)> = vec![
        (
            "foreign owner",
            Box::new(move |p| {
                let t = stop_target(p);
                t.pid = nobody_pid;
                t.uid = 65534;
            }),
            1,
            "is owned by uid 65534, not by you",
        ),
        (
            "foreign process with this user's uid written in",
            Box::new(move |p| stop_target(p).pid = nobody_pid),
            4,
            "`target.pid` was",
        ),
        (
            "no marker",
            Box::new(move |p| {
                let t = stop_target(p);
                t.pid = plain_pid;
                t.cmdline = vec!["/bin/sleep".into(), "300".into()];
            }),
            1,
            "holds none of the file's cleanup markers",
        ),
        (
            "protected port",
            Box::new(|p| stop_target(p).ports.push(9)),
            1,
            "port 9 is in `cleanup.protectedPorts`",
        ),
        (
            "huge grace",
            Box::new(|p| {
                stop_target(p).term_grace = nemoclaw::model::Millis(1_000_000_000_000_000)
            }),
            1,
            "its term grace is 1000000000000000 ms; the file says 1500 ms",
        ),
        (
            "id that does not name its action",
            Box::new(|p| p.steps[0].action = nemoclaw::plan::Action::Delete),
            1,
            "its id is not `delete:",
        ),
    ];
    for (what, edit, want, says) in cases {
        saved(&s);
        forge(&path, edit);
        let out = apply(&s);
        let all = text(&out);
        assert_eq!(code(&out), want, "{what}: {all}");
        assert!(all.contains(says), "{what}: {all}");
        assert!(all.contains("nothing was applied"), "{what}: {all}");
        let hash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let hash = hash["plan_sha256"].as_str().unwrap().to_owned();
        assert!(
            !all.contains(&hash[..16]),
            "{what}: no hash is printed: {all}"
        );
        assert!(
            l.alive() && alive(&mut nobody) && alive(&mut plain),
            "{what}: nothing was signalled"
        );
    }

    // The engine's own ancestor: a shell that runs apply, named in the forged step.
    saved(&s);
    let sh = Command::new("/bin/sh")
        .args([
            "-c",
            "sleep 1; \"$0\" apply plan.json --yes; code=$?; exit $code",
            env!("CARGO_BIN_EXE_nemoclaw"),
        ])
        .envs(
            s.cmd()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    let start = std::fs::read_to_string(format!("/proc/{sh_pid}/stat")).unwrap();
    let start_time: u64 = start
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    forge(&path, |p| {
        let t = stop_target(p);
        t.pid = sh_pid;
        t.start_time = start_time;
    });
    let out = sh.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "ancestor: {}", text(&out));
    assert!(
        text(&out).contains("is this engine or one of its ancestors"),
        "{}",
        text(&out)
    );

    // The saved plan as it was still applies: the checks refuse forgeries, not plans.
    saved(&s);
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!l.alive());
    for mut c in [nobody, plain] {
        assert!(alive(&mut c));
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_forged_gateway_start_with_another_binary_is_refused() {
    let s = Site::new("");
    s.write(&format!(
        "gateway:\n  runtime: docker-driver\n  port: {}\n  binary: /usr/bin/true\n",
        s.port(11)
    ));
    let _l = Listener::spawn("term", s.port(5));
    assert_eq!(code(&s.run(&["plan", "--out", "plan.json"])), 0);
    let path = s.dir.path().join("plan.json");
    let evil = s.dir.path().join("evil");
    forge(&path, |p| {
        let t = p
            .steps
            .iter_mut()
            .find_map(|s| match &mut s.target {
                nemoclaw::plan::Target::GatewayProcess(g) => Some(g),
                _ => None,
            })
            .expect("a gateway start is planned");
        t.binary = evil.display().to_string();
    });
    let out = s.run(&["apply", "plan.json", "--yes"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("not the file's gateway binary `/usr/bin/true`"),
        "{}",
        text(&out)
    );
}

/// Another user's command line can hold escape sequences (clear the screen, set the title, forge
/// a line): the plan shows them escaped, never raw.
#[test]
fn escape_sequences_in_a_command_line_are_shown_not_obeyed() {
    let s = Site::new("");
    let _l = Listener::spawn_named("openclaw-gateway\x1b[2J\x1b]0;pwned\x07", "term", s.port(6));
    let out = s.run(&["plan"]);
    let all = text(&out);
    assert!(
        !all.contains('\x1b') && !all.contains('\x07'),
        "raw control characters: {all:?}"
    );
    assert!(
        all.contains("openclaw-gateway\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
        "{all}"
    );
}

/// `HOME` unset: the invoking user's passwd entry, never `/tmp` (where any user could plant the
/// registry the plan reads).
#[test]
fn home_unset_means_the_passwd_home_never_tmp() {
    let s = Site::new("");
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap();
    let out = s
        .cmd()
        .env_remove("HOME")
        .args(["observe", "-f", "nemoclaw.yaml", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let registry = o["registry"]["value"]["path"]
        .as_str()
        .or_else(|| o["registry"]["reason"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        registry.starts_with(&format!("{}/.nemoclaw", me.dir.display())),
        "{registry}"
    );
}

/// A run killed mid-step stays "killed mid-step" in `history` after the next run judged it.
#[test]
fn history_keeps_a_killed_run_labelled_after_it_was_judged() {
    let s = Site::new("");
    let state = s.dir.path().join("state/nemoclaw");
    std::fs::create_dir_all(&state).unwrap();
    let journal = [
        r#"{"event":"start","run":"1-1","at_ms":1,"plan_sha256":"aaaaaaaaaaaaaaaa","desired_path":"nemoclaw.yaml","desired_sha256":"b","steps":1}"#,
        r#"{"event":"intent","run":"1-1","at_ms":2,"step":"stop:process.1","address":"process.1","action":"stop","risk":"disrupt","plan_sha256":"aaaaaaaaaaaaaaaa","target":{"kind":"port","port":1,"holders":[]}}"#,
        r#"{"event":"recovered","run":"2-2","at_ms":3,"of_run":"1-1","step":"stop:process.1","verdict":"done","detail":"gone"}"#,
    ]
    .join("\n")
        + "\n";
    std::fs::write(state.join("journal.jsonl"), journal).unwrap();
    let out = s.run(&["history"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("killed mid-step: stop:process.1 (judged done later)"),
        "{}",
        text(&out)
    );
}
