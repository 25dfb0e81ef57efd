//! The engine against the `openshell` CLI as it really behaves: the recorded output of OpenShell
//! 0.0.72 (and 0.0.44's, from its source) parsed, and whole applies through
//! `tests/support/openshell-standin`, which prints those bytes, rejects what the real CLI's clap
//! rejects, blocks in `sandbox create -- CMD` until killed, and leaves a real ssh-shaped forward
//! holding its output open.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nemoclaw::model::{Lookup, PortRange};
use nemoclaw::observe::openshell::{Run, parse};

use crate::sandboxes::fixture;
use crate::support::{
    STANDIN, kill_forwards, nemoclaw_cmd, next_range, standin_gateway, step_with_action, text,
};

const HEAD: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";

fn ok(stdout: &str, stderr: &str) -> Run {
    Run {
        code: Some(0),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    }
}

fn failed(stderr: &str) -> Run {
    Run {
        code: Some(1),
        stdout: String::new(),
        stderr: stderr.to_owned(),
    }
}

#[test]
fn the_real_clis_coloured_output_parses() {
    for v in ["0.0.44", "0.0.72"] {
        let status = fixture(v, "status-connected.stdout")
            .replace("{{gateway}}", "nemoclaw")
            .replace("{{endpoint}}", "http://127.0.0.1:8080")
            .replace("{{version}}", v);
        assert!(
            status.contains("\u{1b}[32mConnected"),
            "the bytes are coloured"
        );
        let s = parse::status(&ok(&status, ""));
        assert!(s.connected, "{v}");
        assert_eq!(s.gateway.as_deref(), Some("nemoclaw"));
        let down = parse::status(&Run {
            code: Some(1),
            stdout: fixture(v, "status-down.stdout")
                .replace("{{gateway}}", "nemoclaw")
                .replace("{{endpoint}}", "http://127.0.0.1:8080"),
            stderr: fixture(v, "status-down.stderr"),
        });
        assert!(!down.connected && down.configured);
        assert!(down.detail.unwrap().contains("Connection refused"));
        let none = parse::status(&ok(&fixture(v, "status-unconfigured.stdout"), ""));
        assert!(!none.connected && !none.configured);
        assert_eq!(
            parse::get(&failed(&fixture(v, "sandbox-get-notfound.stderr"))),
            Lookup::NotFound
        );
        assert!(matches!(
            parse::get(&failed(&fixture(v, "transport-error.stderr"))),
            Lookup::Error { .. }
        ));
        assert!(matches!(
            parse::get(&failed(
                &fixture(v, "unknown-gateway.stderr").replace("{{gateway}}", "nemoclaw")
            )),
            Lookup::Error { .. }
        ));
        assert_eq!(
            parse::list_table(&fixture(v, "sandbox-list-empty.stdout")),
            Some(vec![])
        );
        let flags = parse::help_flags(&fixture(v, "sandbox-create-help.stdout"));
        for f in ["name", "from", "policy", "gpu", "cpu", "memory", "provider"] {
            assert!(flags.contains(&f.to_owned()), "{v} {f}");
        }
        assert!(!flags.contains(&"no-gpu".to_owned()));
        assert_eq!(flags.contains(&"gpu-device".to_owned()), v == "0.0.44");
        assert_eq!(
            parse::version(&ok(
                &fixture(v, "version.stdout").replace("{{version}}", v),
                ""
            ))
            .as_deref(),
            Some(v)
        );
    }
    let v = "0.0.72";
    let rows = parse::list_table(&fixture(v, "recorded-sandbox-list-two.stdout")).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.phase.as_str()))
            .collect::<Vec<_>>(),
        vec![("bob", "Ready"), ("carol", "Ready")]
    );
    let rows = parse::list_table(&fixture(v, "recorded-sandbox-list-provisioning.stdout")).unwrap();
    assert_eq!(rows[0].phase, "Provisioning");
    assert_eq!(
        parse::get(&ok(&fixture(v, "recorded-sandbox-get-ready.stdout"), "")),
        Lookup::Present {
            phase: "Ready".into()
        }
    );
    let f = parse::forwards(&ok(&fixture(v, "recorded-forward-list.stdout"), "")).unwrap();
    assert_eq!(
        (
            f[0].sandbox.as_str(),
            f[0].port,
            f[0].pid,
            f[0].status.as_str()
        ),
        ("bob", 29521, Some(25864), "running")
    );
    assert_eq!(
        parse::forwards(&ok("", &fixture(v, "forward-list-empty.stderr"))),
        Some(vec![])
    );
    let g = parse::gateways(&ok(&fixture(v, "recorded-gateway-list.stdout"), "")).unwrap();
    assert_eq!(
        (g[0].name.as_str(), g[0].endpoint.as_str(), g[0].active),
        ("nemoclaw-29510", "http://127.0.0.1:29510", true)
    );
}

fn write(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("nemoclaw.yaml"), yaml).unwrap();
}

/// A home with the stand-in's gateway registered (reachable while the listener lives) and a file
/// declaring `sandboxes` (YAML after `sandboxes:`) on the test's own port range.
fn site(sandboxes: &str) -> (tempfile::TempDir, PortRange, std::net::TcpListener) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = standin_gateway(dir.path(), "nemoclaw");
    let range = next_range();
    write(
        dir.path(),
        &format!("{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:{sandboxes}"),
    );
    (dir, range, gateway)
}

fn standin(dir: &Path, version: &str) -> Command {
    let mut c = Command::new(STANDIN);
    c.env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .env("OPENSHELL_STANDIN_DIR", dir.join(".openshell-standin"))
        .env("OPENSHELL_STANDIN_VERSION", version);
    c
}

fn run(dir: &Path, version: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = nemoclaw_cmd(dir);
    c.args(args).env("OPENSHELL_STANDIN_VERSION", version);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(".openshell-standin/calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn creates_whose_cli_never_returns_complete_once_ready_for_both_supported_versions() {
    for version in ["0.0.44", "0.0.72"] {
        let dir = tempfile::tempdir().unwrap();
        let _gateway = standin_gateway(dir.path(), "nemoclaw");
        let range = next_range();
        std::fs::write(dir.path().join("policy.yaml"), "version: 1\n").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        write(
            dir.path(),
            &format!(
                "{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:\n  - name: alice\n    from: ./Dockerfile\n    policy: policy.yaml\n  - name: bob\n    from: registry.example.com/nemoclaw:1\n    gpu: off\n    resources:\n      cpu: \"1.5\"\n      memory: 4Gi\n"
            ),
        );
        let started = Instant::now();
        let out = run(dir.path(), version, &["apply", "--yes"], &[]);
        assert_eq!(out.status.code(), Some(0), "{version}: {}", text(&out));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a create that never returns is ended once Ready"
        );
        let (a, b) = (range.start, range.start + 1);
        let root = dir.path().display().to_string();
        let mutating: Vec<String> = calls(dir.path())
            .into_iter()
            .filter(|l| l.starts_with("sandbox create --name") || l.starts_with("forward start"))
            .collect();
        // The two sandboxes are independent and are created side by side; each one's forward
        // comes after its own create.
        let at = |prefix: &str| mutating.iter().position(|l| l.starts_with(prefix)).unwrap();
        assert!(
            at("sandbox create --name alice")
                < at(&format!("forward start --background {a} alice"))
        );
        assert!(
            at("sandbox create --name bob") < at(&format!("forward start --background {b} bob"))
        );
        let mut mutating = mutating;
        mutating.sort();
        let mut want = vec![
            format!(
                "sandbox create --name alice --from {root}/Dockerfile --policy {root}/policy.yaml -- env CHAT_UI_URL=http://127.0.0.1:{a} NEMOCLAW_DASHBOARD_PORT={a} OPENCLAW_HOME=/sandbox OPENCLAW_STATE_DIR=/sandbox/.openclaw OPENCLAW_WORKSPACE_DIR=/sandbox/.openclaw/workspace nemoclaw-start"
            ),
            format!("forward start --background {a} alice"),
            format!(
                "sandbox create --name bob --from registry.example.com/nemoclaw:1 --cpu 1.5 --memory 4Gi -- env CHAT_UI_URL=http://127.0.0.1:{b} NEMOCLAW_DASHBOARD_PORT={b} OPENCLAW_HOME=/sandbox OPENCLAW_STATE_DIR=/sandbox/.openclaw OPENCLAW_WORKSPACE_DIR=/sandbox/.openclaw/workspace nemoclaw-start"
            ),
            format!("forward start --background {b} bob"),
        ];
        want.sort();
        assert_eq!(mutating, want, "{version}");
        let reg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(".nemoclaw/sandboxes.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(reg["sandboxes"]["alice"]["dashboardPort"], a);
        assert_eq!(reg["sandboxes"]["bob"]["dashboardPort"], b);
        // The forward's session token is in its command line, and nowhere in the engine's output.
        let pid_file = dir
            .path()
            .join(format!(".config/openshell/forwards/alice-{a}.pid"));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let cmdline =
            std::fs::read(format!("/proc/{}/cmdline", pid.split('\t').next().unwrap())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let token = cmdline
            .split("--token ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .unwrap()
            .to_owned();
        let again = run(dir.path(), version, &["plan", "--detailed-exitcode"], &[]);
        assert_eq!(again.status.code(), Some(0), "{version}: {}", text(&again));
        let observed = run(dir.path(), version, &["observe", "-o", "json"], &[]);
        assert!(!text(&observed).contains(&token) && !text(&out).contains(&token));
        kill_forwards(dir.path());
    }
}

#[test]
fn a_sandbox_not_ready_in_time_fails_and_is_kept_with_the_command_that_deletes_it() {
    let (dir, _range, _gateway) =
        site("\n  - name: alice\n    from: img:1\n    readyTimeout: 3s\n");
    let out = run(
        dir.path(),
        "0.0.72",
        &["apply", "--yes"],
        &[("STANDIN_NEVER_READY", "1")],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("not Ready within 3s"), "{}", text(&out));
    assert!(
        text(&out).contains("openshell sandbox delete alice"),
        "{}",
        text(&out)
    );
    assert!(
        !dir.path().join(".nemoclaw/sandboxes.json").exists() || {
            let reg = std::fs::read_to_string(dir.path().join(".nemoclaw/sandboxes.json")).unwrap();
            !reg.contains("alice")
        }
    );
    let list = standin(dir.path(), "0.0.72")
        .args(["sandbox", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("alice"),
        "the half-made sandbox is kept"
    );
}

#[test]
fn a_forward_pid_file_naming_a_reused_pid_converges_in_one_apply() {
    let (dir, range, _gateway) = site("\n  - name: alice\n    from: img:1\n");
    let port = range.start;
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    kill_forwards(dir.path());
    // The pid file now names an unrelated live process that holds no listener.
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    let pid_file = dir
        .path()
        .join(format!(".config/openshell/forwards/alice-{port}.pid"));
    let content = std::fs::read_to_string(&pid_file).unwrap();
    let rest = content.split_once('\t').unwrap().1.to_owned();
    std::fs::write(&pid_file, format!("{}\t{rest}", other.id())).unwrap();
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again = run(dir.path(), "0.0.72", &["plan", "--detailed-exitcode"], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        other.try_wait().unwrap().is_none(),
        "the unrelated process is untouched"
    );
    let _ = other.kill();
    kill_forwards(dir.path());
}

#[test]
fn a_live_forward_whose_pid_file_is_gone_is_never_stopped() {
    let (dir, range, _gateway) = site("\n  - name: alice\n    from: img:1\n");
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid_file = dir.path().join(format!(
        ".config/openshell/forwards/alice-{}.pid",
        range.start
    ));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "the live forward was not stopped: {}",
        text(&out)
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn an_unsupported_cli_blocks_and_names_the_range() {
    let (dir, _range, _gateway) = site("\n  - name: alice\n    from: img:1\n");
    // The stand-in has no fixtures for another version: make one that only answers --version.
    let fake = dir.path().join("openshell-0.0.99");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'openshell 0.0.99'; exit 0; }\nexec \"$REAL\" \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        dir.path(),
        "0.0.72",
        &["plan", "--detailed-exitcode"],
        &[
            ("NEMOCLAW_OPENSHELL_BIN", fake.to_str().unwrap()),
            ("REAL", STANDIN),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("0.0.99") && text(&out).contains("0.0.44 through 0.0.72"),
        "{}",
        text(&out)
    );
}

#[test]
fn gateway_registration_runs_the_real_commands() {
    let dir = tempfile::tempdir().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    // The executor runs the CLI with the engine's environment; this wrapper gives the stand-in
    // the test's home.
    let wrapper = dir.path().join("openshell");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nHOME='{}' OPENSHELL_STANDIN_DIR='{}/.openshell-standin' exec '{STANDIN}' \"$@\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = |argv: &[&str]| nemoclaw::plan::CliGatewayTarget {
        name: "nemoclaw".into(),
        endpoint: endpoint.clone(),
        cli: wrapper.display().to_string(),
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let add = rt.block_on(nemoclaw::apply::sandbox::cli_gateway(
        &target(&["gateway", "add", &endpoint, "--local", "--name", "nemoclaw"]),
        &|_| {},
    ));
    assert!(
        matches!(&add, nemoclaw::apply::StepOutcome::Done(m) if m.contains("added and set as active")),
        "{add:?}"
    );
    let select = rt.block_on(nemoclaw::apply::sandbox::cli_gateway(
        &target(&["gateway", "select", "nemoclaw"]),
        &|_| {},
    ));
    assert!(
        matches!(&select, nemoclaw::apply::StepOutcome::Done(m) if m.contains("Active gateway set to 'nemoclaw'")),
        "{select:?}"
    );
    let list = standin(dir.path(), "0.0.72")
        .args(["gateway", "list"])
        .output()
        .unwrap();
    let g = parse::gateways(&Run {
        code: list.status.code(),
        stdout: String::from_utf8_lossy(&list.stdout).into(),
        stderr: String::new(),
    })
    .unwrap();
    assert_eq!((g[0].name.as_str(), g[0].active), ("nemoclaw", true));
    drop(l);
}

#[test]
fn a_corrupt_registry_is_reported_and_left_byte_for_byte() {
    let (dir, _range, _gateway) = site("\n  - name: alice\n    from: img:1\n");
    let reg = dir.path().join(".nemoclaw/sandboxes.json");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    let corrupt = b"{\"sandboxes\": {\"alice\": ";
    std::fs::write(&reg, corrupt).unwrap();
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("never written while unreadable")
            || text(&out).contains("could not be read"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&reg).unwrap(), corrupt);
    kill_forwards(dir.path());
}

#[test]
fn a_stopped_sandbox_container_is_started() {
    if !crate::support::docker_engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _gateway = standin_gateway(dir.path(), "nemoclaw");
    let range = next_range();
    let name = format!("s{}", std::process::id());
    let container = format!("openshell-{name}-id1");
    let docker = |args: &[&str]| Command::new("docker").args(args).output().unwrap();
    let created = docker(&[
        "create",
        "--name",
        &container,
        "--network",
        "none",
        "--label",
        "openshell.ai/managed-by=openshell",
        "--label",
        &format!("openshell.ai/sandbox-name={name}"),
        "--label",
        "openshell.ai/sandbox-id=id1",
        "nemoclaw-test/busybox:1",
        "sleep",
        "3600",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    write(
        dir.path(),
        &format!(
            "{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:\n  - name: {name}\n    from: img:1\n"
        ),
    );
    let out = run(dir.path(), "0.0.72", &["plan", "-o", "json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let start = step_with_action(&json, "start").expect("a start step");
    assert_eq!(start["container"], container);
    let out = run(dir.path(), "0.0.72", &["apply", "--yes"], &[]);
    let running = String::from_utf8_lossy(
        &docker(&["inspect", "--format", "{{.State.Running}}", &container]).stdout,
    )
    .trim()
    .to_owned();
    docker(&["rm", "-f", &container]);
    kill_forwards(dir.path());
    assert_eq!(running, "true", "{}", text(&out));
}
