//! Sandboxes, the registry and forwards: the planner on fixtures (snapshots), the registry writer
//! against a second writer following NemoClaw's lock protocol, and the `openshell` stand-in and a
//! labelled container against the real engine. The real `openshell` CLI is not available here:
//! `tests/support/openshell-standin` records its arguments so the exact commands can be checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use nemoclaw::model::{CliFacts, CliStatus, Lookup, Observation, Observed, SandboxRow};
use nemoclaw::plan::{Action, PlanOptions, Risk, Target, plan, render};

use crate::snap;
use crate::support::text;
use crate::support::{Host, ME, desired, nemoclaw_cmd};

const HEAD: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";

fn cli(
    rows: &[(&str, &str)],
    lookups: &[(&str, Lookup)],
    gateway: Option<&str>,
    connected: bool,
) -> CliFacts {
    CliFacts {
        installed: true,
        binary: Some("/usr/bin/openshell".to_owned()),
        status: Observation::Known {
            value: CliStatus {
                gateway: gateway.map(str::to_owned),
                connected,
            },
        },
        sandboxes: Observation::Known {
            value: rows
                .iter()
                .map(|(n, p)| SandboxRow {
                    name: (*n).to_owned(),
                    phase: (*p).to_owned(),
                })
                .collect(),
        },
        lookups: lookups
            .iter()
            .map(|(n, l)| ((*n).to_owned(), l.clone()))
            .collect::<BTreeMap<_, _>>(),
        forwards: Observation::Known { value: Vec::new() },
    }
}

fn with_cli(mut o: Observed, c: CliFacts) -> Observed {
    o.openshell = Some(c);
    o
}

fn ids(p: &nemoclaw::plan::Plan) -> Vec<String> {
    p.steps.iter().map(|s| s.id.clone()).collect()
}

fn planned(name: &str, text: &str, o: &Observed) -> nemoclaw::plan::Plan {
    let p = plan(&desired(text), o, &PlanOptions::default());
    snap!(
        format!("sandboxes-{name}-human"),
        render::render_human(&p, render::Style { color: false })
    );
    snap!(format!("sandboxes-{name}-json"), render::render_json(&p));
    p
}

#[test]
fn a_missing_sandbox_is_created_on_the_lowest_free_port_then_forwarded() {
    let text = format!(
        "{HEAD}sandboxes:\n  - name: alice\n    inference:\n      provider: build\n      model: nvidia/nemotron\n    policy:\n      tier: restricted\n      presets: [github]\n"
    );
    let o = with_cli(
        Host::new()
            .process(300, 0, "nginx")
            .listen(18789, &[300])
            .build(),
        cli(&[], &[], None, true),
    );
    let p = planned("create", &text, &o);
    assert_eq!(
        ids(&p),
        vec!["create:sandbox.alice", "forward:forward.alice"]
    );
    let Target::Sandbox(t) = &p.steps[0].target else {
        panic!()
    };
    assert_eq!(
        t.port, 18790,
        "18789 is held by a foreign process; the lowest free one is chosen"
    );
    assert_eq!(
        t.argv.join(" "),
        "sandbox create --name alice --provider nvidia-prod --policy github -- env CHAT_UI_URL=http://127.0.0.1:18790 NEMOCLAW_DASHBOARD_PORT=18790 NEMOCLAW_AGENT=openclaw NEMOCLAW_MODEL=nvidia/nemotron nemoclaw-start"
    );
    assert_eq!(
        p.steps[1].depends_on,
        vec!["create:sandbox.alice".to_owned()]
    );
}

#[test]
fn port_assignment_prefers_the_recorded_port_and_is_deterministic() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n  - name: bob\n");
    let o = with_cli(
        Host::new().registered("bob", Some(18795)).build(),
        cli(&[], &[], None, true),
    );
    let d = desired(&text);
    let a = nemoclaw::plan::sandboxes::assign_ports(&d, &o, &[]);
    assert_eq!(
        a["bob"].as_ref().unwrap().port,
        18795,
        "the registry's recorded port"
    );
    assert_eq!(
        a["alice"].as_ref().unwrap().port,
        18789,
        "the lowest free port"
    );
    for _ in 0..3 {
        assert_eq!(nemoclaw::plan::sandboxes::assign_ports(&d, &o, &[]), a);
    }
}

#[test]
fn a_port_held_by_a_stale_listener_is_claimed_after_the_stop() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n");
    let o = with_cli(
        Host::new()
            .process(4242, ME, "openclaw-gateway")
            .listen(18789, &[4242])
            .build(),
        cli(&[], &[], None, true),
    );
    let p = planned("stale-port", &text, &o);
    assert_eq!(
        ids(&p),
        vec![
            "stop:process.4242",
            "create:sandbox.alice",
            "forward:forward.alice"
        ]
    );
    assert_eq!(
        p.steps[1].depends_on,
        vec!["stop:process.4242".to_owned()],
        "the port is freed before anything is built"
    );
}

#[test]
fn a_full_range_blocks_the_sandbox() {
    let mut h = Host::new();
    for (i, port) in (18789..=18799).enumerate() {
        let pid = 100 + u32::try_from(i).unwrap();
        h = h.process(pid, 0, "nginx").listen(port, &[pid]);
    }
    let p = planned(
        "range-full",
        &format!("{HEAD}sandboxes:\n  - name: alice\n"),
        &with_cli(h.build(), cli(&[], &[], None, true)),
    );
    assert!(p.is_blocked() && !p.has_changes());
}

#[test]
fn a_registry_entry_is_removed_only_on_notfound_from_the_selected_gateway() {
    let text = format!("{HEAD}gateway:\n  runtime: docker-driver\n");
    let base = || {
        Host::new()
            .registered("gone", Some(18791))
            .driver(None, Some("/usr/local/bin/openshell-gateway"))
            .health(Some(200))
    };
    // NotFound from the connected, selected gateway: removed.
    let o = with_cli(
        base().build(),
        cli(&[], &[("gone", Lookup::NotFound)], Some("nemoclaw"), true),
    );
    let p = planned("unregister", &text, &o);
    assert!(
        ids(&p).contains(&"unregister:registry.gone".to_owned()),
        "{:?}",
        ids(&p)
    );
    // Anything else keeps it: another gateway selected (#2276), not connected, an error.
    for (name, c) in [
        (
            "other-gateway",
            cli(&[], &[("gone", Lookup::NotFound)], Some("elsewhere"), true),
        ),
        (
            "disconnected",
            cli(&[], &[("gone", Lookup::NotFound)], Some("nemoclaw"), false),
        ),
        (
            "lookup-error",
            cli(
                &[],
                &[(
                    "gone",
                    Lookup::Error {
                        reason: "transport error".into(),
                    },
                )],
                Some("nemoclaw"),
                true,
            ),
        ),
    ] {
        let p = planned(&format!("keep-{name}"), &text, &with_cli(base().build(), c));
        assert!(
            !ids(&p).iter().any(|i| i.starts_with("unregister")),
            "{name}: {:?}",
            ids(&p)
        );
        assert!(
            p.findings.iter().any(|f| f.address == "registry.gone"),
            "{name}"
        );
    }
}

#[test]
fn an_undeclared_live_sandbox_is_a_finding_unless_pruned_with_consent() {
    let o = || {
        with_cli(
            Host::new().registered("old", Some(18792)).build(),
            cli(&[("old", "Ready")], &[], None, true),
        )
    };
    let p = planned("undeclared", HEAD, &o());
    assert!(p.steps.is_empty());
    assert_eq!(p.findings[0].kind.as_str(), "undeclared-sandbox");
    let p = planned(
        "prune",
        &format!("{HEAD}prune:\n  sandboxes: [old]\n"),
        &o(),
    );
    assert_eq!(ids(&p), vec!["delete:sandbox.old"]);
    assert_eq!(
        (
            p.steps[0].risk,
            p.steps[0].blocked.as_ref().and_then(|b| b.allow.clone())
        ),
        (
            Risk::Destroy,
            Some("--allow destroy=sandbox.old".to_owned())
        )
    );
}

#[test]
fn without_the_cli_only_its_steps_are_blocked() {
    let mut c = cli(&[], &[], None, true);
    c.installed = false;
    let mut o = with_cli(
        Host::new()
            .process(4242, ME, "openclaw-gateway")
            .listen(18795, &[4242])
            .build(),
        c,
    );
    // A docker-driver host: the engine sees no labelled sandbox container, so `alice` is absent.
    o.docker = Some(Observation::Known {
        value: nemoclaw::model::DockerFacts {
            sandbox_containers: Some(Vec::new()),
            ..Default::default()
        },
    });
    let p = planned(
        "no-cli",
        &format!("{HEAD}sandboxes:\n  - name: alice\n"),
        &o,
    );
    let stop = p.steps.iter().find(|s| s.action == Action::Stop).unwrap();
    assert!(stop.blocked.is_none(), "the listener sweep still runs");
    let create = p.steps.iter().find(|s| s.action == Action::Create).unwrap();
    assert!(
        create
            .blocked
            .as_ref()
            .unwrap()
            .reason
            .contains("not installed")
    );
}

#[test]
fn an_unreadable_registry_is_never_written() {
    let o = with_cli(
        Host::new().registry_unknown().build(),
        cli(&[("alice", "Ready")], &[], None, true),
    );
    let p = planned(
        "registry-unknown",
        &format!("{HEAD}sandboxes:\n  - name: alice\n    dashboardPort: 18789\n"),
        &o,
    );
    let register = p
        .steps
        .iter()
        .find(|s| s.action == Action::Register)
        .unwrap();
    assert!(
        register
            .blocked
            .as_ref()
            .unwrap()
            .reason
            .contains("never written while unreadable")
    );
}

/// A second writer following NemoClaw's lock protocol, as NemoClaw's CLI would.
const OTHER_WRITER: &str = r#"
import json, os, sys, time
path, prefix, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = path + ".lock"
for i in range(rounds):
    for _ in range(1200):
        try:
            os.mkdir(lock, 0o700)
            break
        except FileExistsError:
            time.sleep(0.005)
    else:
        sys.exit("lock never free")
    open(lock + "/owner.tmp", "w").write(str(os.getpid()))
    os.rename(lock + "/owner.tmp", lock + "/owner")
    doc = json.load(open(path)) if os.path.exists(path) else {"sandboxes": {}, "defaultSandbox": None}
    doc["sandboxes"]["%s-%d" % (prefix, i)] = {"name": "%s-%d" % (prefix, i), "dashboardPort": 18789}
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)
    os.remove(lock + "/owner")
    os.rmdir(lock)
"#;

#[test]
fn concurrent_writers_following_the_lock_protocol_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".nemoclaw/sandboxes.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let rounds = 60;
    let mut other = Command::new("/usr/bin/python3")
        .args(["-c", OTHER_WRITER])
        .arg(&file)
        .args(["cli", &rounds.to_string()])
        .spawn()
        .unwrap();
    let fields = |p: u16| nemoclaw::plan::RegistryFields {
        dashboard_port: p,
        agent: "openclaw".into(),
        provider: None,
        model: None,
        policies: vec![],
        gateway_name: None,
        gateway_port: None,
    };
    for i in 0..rounds {
        nemoclaw::apply::registry::update(
            dir.path(),
            &file,
            &format!("engine-{i}"),
            Some(&fields(18790)),
            "2026-11-23T00:00:00Z",
        )
        .unwrap();
    }
    assert!(other.wait().unwrap().success());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let names = doc["sandboxes"].as_object().unwrap();
    for i in 0..rounds {
        assert!(
            names.contains_key(&format!("engine-{i}")) && names.contains_key(&format!("cli-{i}")),
            "round {i} lost an entry"
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[test]
fn a_stale_lock_of_a_dead_owner_is_broken_and_symlinks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".nemoclaw/sandboxes.json");
    let lock = dir.path().join(".nemoclaw/sandboxes.json.lock");
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("owner"), "999999\n").unwrap(); // no such process
    let f = nemoclaw::plan::RegistryFields {
        dashboard_port: 18789,
        agent: "openclaw".into(),
        provider: None,
        model: None,
        policies: vec![],
        gateway_name: None,
        gateway_port: None,
    };
    nemoclaw::apply::registry::update(dir.path(), &file, "alice", Some(&f), "t").unwrap();
    assert!(!lock.exists());

    let elsewhere = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), home.path().join(".nemoclaw")).unwrap();
    let err = nemoclaw::apply::registry::update(
        home.path(),
        &home.path().join(".nemoclaw/sandboxes.json"),
        "alice",
        Some(&f),
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing written through the link"
    );
}

fn run(dir: &Path, args: &[&str]) -> Output {
    nemoclaw_cmd(dir).args(args).output().unwrap()
}

#[test]
fn a_corrupt_registry_is_reported_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let range = crate::support::next_range();
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!("{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:\n  - name: alice\n"),
    )
    .unwrap();
    let reg = dir.path().join(".nemoclaw/sandboxes.json");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    let corrupt = b"{\"sandboxes\": {\"alice\": ";
    std::fs::write(&reg, corrupt).unwrap();
    let out = run(dir.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("never written while unreadable")
            || text(&out).contains("could not be read"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&reg).unwrap(), corrupt);
    crate::support::kill_forwards(dir.path());
}

#[test]
fn the_cli_gets_the_exact_commands_in_order_and_a_second_apply_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let range = crate::support::next_range();
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!("{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:\n  - name: alice\n  - name: bob\n    policy:\n      tier: open\n    gpu: on\n    resources:\n      cpu: \"2\"\n      memory: 4g\n"),
    )
    .unwrap();
    let out = run(dir.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let calls = std::fs::read_to_string(dir.path().join(".openshell-standin/calls.log")).unwrap();
    let mutating: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("create") || l.contains("start"))
        .collect();
    let (a, b) = (range.start, range.start + 1);
    // Each sandbox is created, then forwarded, before the next (lowest port first).
    assert_eq!(
        mutating,
        vec![
            format!(
                "sandbox create --name alice --policy npm --policy pypi --policy huggingface --policy brew --policy brave -- env CHAT_UI_URL=http://127.0.0.1:{a} NEMOCLAW_DASHBOARD_PORT={a} NEMOCLAW_AGENT=openclaw nemoclaw-start"
            ),
            format!("forward start --background {a} alice"),
            format!(
                "sandbox create --name bob --policy npm --policy pypi --policy huggingface --policy brew --policy brave --policy slack --policy discord --policy telegram --policy wechat --policy whatsapp --policy jira --policy outlook --gpu --cpu 2 --memory 4g -- env CHAT_UI_URL=http://127.0.0.1:{b} NEMOCLAW_DASHBOARD_PORT={b} NEMOCLAW_AGENT=openclaw nemoclaw-start"
            ),
            format!("forward start --background {b} bob"),
        ]
    );
    let reg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".nemoclaw/sandboxes.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(reg["sandboxes"]["alice"]["dashboardPort"], a);
    assert_eq!(reg["sandboxes"]["bob"]["dashboardPort"], b);
    assert_eq!(reg["defaultSandbox"], "alice");
    let again = run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    crate::support::kill_forwards(dir.path());
}

#[test]
fn a_stopped_sandbox_container_is_started() {
    if !crate::support::docker_engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let range = crate::support::next_range();
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
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!("{HEAD}dashboard:\n  portRange: \"{range}\"\nsandboxes:\n  - name: {name}\n"),
    )
    .unwrap();
    let out = run(dir.path(), &["plan", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let start = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "start")
        .expect("a start step");
    assert_eq!(start["container"], container);
    let out = run(dir.path(), &["apply", "--yes"]);
    let running = String::from_utf8_lossy(
        &docker(&["inspect", "--format", "{{.State.Running}}", &container]).stdout,
    )
    .trim()
    .to_owned();
    docker(&["rm", "-f", &container]);
    crate::support::kill_forwards(dir.path());
    assert_eq!(running, "true", "{}", text(&out));
}
