//! Sandboxes, the registry and forwards in the planner, on observations whose CLI facts are the
//! real OpenShell CLI's output parsed (the recorded fixtures under `tests/fixtures/openshell/`),
//! and the registry writer against a second writer following NemoClaw's lock protocol. The CLI
//! itself, through the byte-exact stand-in, is exercised in `openshell.rs`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::process::Command;

use nemoclaw::model::{
    CliFacts, CliStatus, ForwardRow, GatewayRegistration, Lookup, Observation, Observed, SandboxRow,
};
use nemoclaw::observe::openshell::parse;
use nemoclaw::plan::{Action, FindingKind, PlanOptions, Risk, Target, plan, render};

use crate::snap;
use crate::support::{Host, ME, desired};

const HEAD: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";
const IMG: &str = "    from: ghcr.io/nvidia/nemoclaw/sandbox:latest\n";

/// A recorded fixture of the real CLI.
pub fn fixture(version: &str, name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/openshell/{version}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// What the engine observes of an OpenShell `version` CLI whose active, connected gateway is
/// `gateway` (registered at `http://127.0.0.1:8080`): flags from its real `--help`.
pub fn cli_at(
    version: &str,
    rows: &[(&str, &str)],
    lookups: &[(&str, Lookup)],
    gateway: Option<&str>,
    connected: bool,
) -> CliFacts {
    CliFacts {
        installed: true,
        binary: Some("/usr/bin/openshell".to_owned()),
        version: Observation::Known {
            value: version.to_owned(),
        },
        create_flags: Observation::Known {
            value: parse::help_flags(&fixture(version, "sandbox-create-help.stdout")),
        },
        list_json: parse::help_flags(&fixture(version, "sandbox-list-help.stdout"))
            .contains(&"output".to_owned()),
        status: Observation::Known {
            value: CliStatus {
                gateway: gateway.map(str::to_owned),
                server: gateway.map(|_| "http://127.0.0.1:8080".to_owned()),
                connected,
                configured: gateway.is_some(),
                detail: None,
            },
        },
        sandboxes: Observation::Known {
            value: rows
                .iter()
                .map(|(n, p)| SandboxRow {
                    name: (*n).to_owned(),
                    phase: (*p).to_owned(),
                    id: Some(format!("id-{n}")),
                })
                .collect(),
        },
        lookups: lookups
            .iter()
            .map(|(n, l)| ((*n).to_owned(), l.clone()))
            .collect::<BTreeMap<_, _>>(),
        forwards: Observation::Known { value: Vec::new() },
        gateways: Observation::Known {
            value: gateway
                .map(|g| GatewayRegistration {
                    name: g.to_owned(),
                    endpoint: "http://127.0.0.1:8080".to_owned(),
                    active: true,
                })
                .into_iter()
                .collect(),
        },
    }
}

fn cli(
    rows: &[(&str, &str)],
    lookups: &[(&str, Lookup)],
    gateway: Option<&str>,
    connected: bool,
) -> CliFacts {
    cli_at("0.0.72", rows, lookups, gateway, connected)
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

fn argv(p: &nemoclaw::plan::Plan, id: &str) -> String {
    match &p.steps.iter().find(|s| s.id == id).unwrap().target {
        Target::Sandbox(t) => t.argv.join(" "),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_sandbox_is_created_as_nemoclaw_creates_it_then_forwarded() {
    let text = format!(
        "{HEAD}sandboxes:\n  - name: alice\n{IMG}    policy: /etc/nemoclaw/policy.yaml\n    gpu: off\n    resources:\n      cpu: 500m\n      memory: 4Gi\n"
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
    // One --policy FILE, --from, no --no-gpu, resources in the CLI's syntax; the port baked in;
    // NemoClaw's OpenClaw runtime environment (onboard/openclaw-runtime-env.ts).
    assert_eq!(
        t.argv.join(" "),
        "sandbox create --name alice --from ghcr.io/nvidia/nemoclaw/sandbox:latest --policy /etc/nemoclaw/policy.yaml --cpu 500m --memory 4Gi -- env CHAT_UI_URL=http://127.0.0.1:18790 NEMOCLAW_DASHBOARD_PORT=18790 OPENCLAW_HOME=/sandbox OPENCLAW_STATE_DIR=/sandbox/.openclaw OPENCLAW_WORKSPACE_DIR=/sandbox/.openclaw/workspace nemoclaw-start"
    );
    assert_eq!(
        p.steps[1].depends_on,
        vec!["create:sandbox.alice".to_owned()]
    );
}

#[test]
fn gpu_is_asked_for_only_when_wanted_and_auto_follows_the_devices() {
    let text = |gpu: &str| format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    gpu: {gpu}\n");
    let host = |gpus: Option<&[&str]>| {
        let mut o = with_cli(Host::new().build(), cli(&[], &[], None, true));
        o.host.nvidia_gpus = match gpus {
            Some(g) => Observation::Known {
                value: g.iter().map(|s| (*s).to_owned()).collect(),
            },
            None => Observation::Unknown {
                reason: "/dev: permission denied".into(),
            },
        };
        o
    };
    let run = |gpu: &str, gpus| plan(&desired(&text(gpu)), &host(gpus), &PlanOptions::default());
    assert!(argv(&run("on", Some(&[])), "create:sandbox.alice").contains(" --gpu "));
    assert!(!argv(&run("off", Some(&["/dev/nvidia0"])), "create:sandbox.alice").contains("gpu"));
    assert!(
        argv(
            &run("auto", Some(&["/dev/nvidia0"])),
            "create:sandbox.alice"
        )
        .contains(" --gpu ")
    );
    assert!(!argv(&run("auto", Some(&[])), "create:sandbox.alice").contains("gpu"));
    let unknown = run("auto", None);
    let create = &unknown.steps[0];
    assert!(
        create.blocked.as_ref().unwrap().reason.contains("gpu: on"),
        "{create:?}"
    );
}

#[test]
fn flags_the_installed_cli_lacks_block_the_create_and_say_so() {
    let text =
        format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    resources:\n      cpu: \"2\"\n");
    let mut c = cli(&[], &[], None, true);
    c.create_flags = Observation::Known {
        value: ["name", "from", "policy", "gpu"].map(String::from).to_vec(),
    };
    let p = planned("no-cpu-flag", &text, &with_cli(Host::new().build(), c));
    let reason = &p.steps[0].blocked.as_ref().unwrap().reason;
    assert!(reason.contains("no `sandbox create --cpu`"), "{reason}");
}

#[test]
fn a_cli_outside_the_supported_versions_blocks_every_cli_step() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}");
    for v in ["0.0.37", "0.0.99"] {
        let mut c = cli(&[], &[], None, true);
        c.version = Observation::Known { value: v.into() };
        let o = with_cli(Host::new().build(), c);
        let p = plan(&desired(&text), &o, &PlanOptions::default());
        assert!(!p.steps.is_empty());
        for s in &p.steps {
            let b = s.blocked.as_ref().unwrap();
            assert!(
                b.reason.contains(v) && b.reason.contains("0.0.44 through 0.0.72"),
                "{}",
                b.reason
            );
        }
    }
    let mut c = cli(&[], &[], None, true);
    c.version = Observation::Known {
        value: "0.0.99".into(),
    };
    planned(
        "version-out-of-range",
        &text,
        &with_cli(Host::new().build(), c),
    );
}

#[test]
fn both_supported_versions_plan_the_same_create() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    gpu: on\n");
    let a = |v: &str| {
        argv(
            &plan(
                &desired(&text),
                &with_cli(Host::new().build(), cli_at(v, &[], &[], None, true)),
                &PlanOptions::default(),
            ),
            "create:sandbox.alice",
        )
    };
    assert_eq!(a("0.0.44"), a("0.0.72"));
}

#[test]
fn port_assignment_prefers_the_recorded_port_and_is_deterministic() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}  - name: bob\n{IMG}");
    let o = with_cli(
        Host::new().registered("bob", Some(18795)).build(),
        cli(&[], &[], None, true),
    );
    let d = desired(&text);
    let none = BTreeSet::new();
    let a = nemoclaw::plan::sandboxes::assign_ports(&d, &o, &[], &none);
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
        assert_eq!(
            nemoclaw::plan::sandboxes::assign_ports(&d, &o, &[], &none),
            a
        );
    }
}

#[test]
fn a_live_sandbox_keeps_the_port_baked_into_it() {
    // alice was created with 18790 baked in; the file now asks for 18789.
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    dashboardPort: 18789\n");
    let o = with_cli(
        Host::new().registered("alice", Some(18790)).build(),
        cli(&[("alice", "Ready")], &[], None, true),
    );
    let p = planned("port-baked", &text, &o);
    let f = p
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::SandboxPortBaked)
        .expect("a finding with the fix");
    assert!(
        f.message.contains("openshell sandbox delete alice"),
        "{}",
        f.message
    );
    let Target::Forward(fw) = &p
        .steps
        .iter()
        .find(|s| s.action == Action::Forward)
        .unwrap()
        .target
    else {
        panic!()
    };
    assert_eq!(fw.port, 18790, "the forward goes to the baked-in port");
    assert!(!p.steps.iter().any(|s| s.action == Action::Register));
}

#[test]
fn a_port_held_by_a_stale_listener_is_claimed_after_the_stop_and_forwarded_after_it() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}");
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
    assert!(
        p.steps[2]
            .depends_on
            .contains(&"stop:process.4242".to_owned()),
        "the forward waits for the stop that frees its port"
    );
}

#[test]
fn a_live_sandboxs_forward_is_a_forward_for_it_even_without_a_pid_file() {
    // The real forward: ssh with OpenShell's ProxyCommand, no pid file; its sandbox id is a live
    // declared sandbox's (from `sandbox list -o json`).
    let ssh = "ssh -o ProxyCommand=/usr/bin/openshell ssh-proxy --gateway http://127.0.0.1:8080 --sandbox-id id-alice --token <redacted> --gateway-name nemoclaw -o StrictHostKeyChecking=no -N -o ExitOnForwardFailure=yes -L 127.0.0.1:18789:127.0.0.1:18789 sandbox";
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}");
    let o = with_cli(
        Host::new()
            .registered("alice", Some(18789))
            .process_argv(4242, ME, &proxy_argv(ssh))
            .listen(18789, &[4242])
            .build(),
        cli(&[("alice", "Ready")], &[], None, true),
    );
    let p = planned("live-forward-no-pid-file", &text, &o);
    assert!(p.steps.is_empty(), "{:?}", ids(&p));
    // The same forward whose sandbox is gone (the list shows other ids): stale.
    let o = with_cli(
        Host::new()
            .process_argv(4242, ME, &proxy_argv(ssh))
            .listen(18789, &[4242])
            .build(),
        cli(&[("bob", "Ready")], &[], None, true),
    );
    let p = plan(&desired(HEAD), &o, &PlanOptions::default());
    assert_eq!(ids(&p), vec!["stop:process.4242"]);
    assert!(p.steps[0].reason.contains("OpenShell dashboard forward"));
    // A forward of an id nobody can name, while the list cannot say: kept.
    let mut c = cli(&[], &[], None, true);
    c.sandboxes = Observation::Unknown {
        reason: "transport error".into(),
    };
    let o = with_cli(
        Host::new()
            .process_argv(4242, ME, &proxy_argv(ssh))
            .listen(18789, &[4242])
            .build(),
        c,
    );
    let p = plan(&desired(HEAD), &o, &PlanOptions::default());
    assert!(p.steps.is_empty(), "{:?}", ids(&p));
}

/// `ssh -o ProxyCommand=… -o …` as ssh's argv: the ProxyCommand is one argument.
fn proxy_argv(cmd: &str) -> Vec<String> {
    let (head, rest) = cmd.split_once("ProxyCommand=").unwrap();
    let (proxy, tail) = rest.split_once(" -o ").unwrap();
    let mut v: Vec<String> = head.split_whitespace().map(str::to_owned).collect();
    v.push(format!("ProxyCommand={proxy}"));
    v.push("-o".to_owned());
    v.extend(tail.split_whitespace().map(str::to_owned));
    v
}

#[test]
fn forward_list_names_a_live_forward() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}");
    let mut c = cli(&[("alice", "Ready")], &[], None, true);
    c.forwards = Observation::Known {
        value: vec![ForwardRow {
            sandbox: "alice".into(),
            bind: "127.0.0.1".into(),
            port: 18789,
            pid: Some(4242),
            status: "running".into(),
        }],
    };
    let o = with_cli(
        Host::new()
            .registered("alice", Some(18789))
            .process(4242, ME, "openshell forward start 18789 alice")
            .listen(18789, &[4242])
            .build(),
        c,
    );
    let p = plan(&desired(&text), &o, &PlanOptions::default());
    assert!(p.steps.is_empty(), "{:?}", ids(&p));
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
        &format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}"),
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
    // The real CLI's mTLS failure says "not found" too: it is an error, and keeps the entry.
    let mtls = parse::get(&nemoclaw::observe::openshell::Run {
        code: Some(1),
        stdout: String::new(),
        stderr: "Error:   \u{d7} mTLS certificates for gateway 'nemoclaw' were not found.\n".into(),
    });
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
        (
            "mtls-not-found",
            cli(&[], &[("gone", mtls)], Some("nemoclaw"), true),
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
fn a_gateway_unknown_to_the_cli_is_registered_before_any_sandbox_step() {
    let text =
        format!("{HEAD}gateway:\n  runtime: docker-driver\nsandboxes:\n  - name: alice\n{IMG}");
    let base = || {
        Host::new()
            .driver(None, Some("/usr/local/bin/openshell-gateway"))
            .health(Some(200))
    };
    let mut c = cli(&[], &[], Some("nemoclaw"), true);
    c.gateways = Observation::Known { value: vec![] };
    let p = planned("cli-gateway-add", &text, &with_cli(base().build(), c));
    snap!(
        "sandboxes-cli-gateway-add-mermaid",
        render::render_mermaid(&p)
    );
    let add = p
        .steps
        .iter()
        .find(|s| s.id == "register:cli-gateway.nemoclaw")
        .unwrap();
    let Target::CliGateway(g) = &add.target else {
        panic!()
    };
    assert_eq!(
        g.argv.join(" "),
        "gateway add http://127.0.0.1:8080 --local --name nemoclaw"
    );
    let create = p
        .steps
        .iter()
        .find(|s| s.id == "create:sandbox.alice")
        .unwrap();
    assert!(create.depends_on.contains(&add.id));
    // Registered but another gateway is active: selected.
    let mut c = cli(&[], &[], Some("nemoclaw"), true);
    c.gateways = Observation::Known {
        value: vec![
            GatewayRegistration {
                name: "nemoclaw".into(),
                endpoint: "http://127.0.0.1:8080".into(),
                active: false,
            },
            GatewayRegistration {
                name: "other".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                active: true,
            },
        ],
    };
    let p = planned("cli-gateway-select", &text, &with_cli(base().build(), c));
    assert!(ids(&p).contains(&"select:cli-gateway.nemoclaw".to_owned()));
}

#[test]
fn a_sandbox_waits_for_the_gateway_start_in_the_same_plan() {
    let text =
        format!("{HEAD}gateway:\n  runtime: docker-driver\nsandboxes:\n  - name: alice\n{IMG}");
    let mut o = with_cli(
        Host::new()
            .driver(None, Some("/usr/local/bin/openshell-gateway"))
            .build(),
        cli(&[], &[], Some("nemoclaw"), false),
    );
    o.docker = Some(Observation::Known {
        value: nemoclaw::model::DockerFacts {
            sandbox_containers: Some(Vec::new()),
            ..Default::default()
        },
    });
    let p = planned("after-gateway-start", &text, &o);
    let start = p
        .steps
        .iter()
        .find(|s| s.address == "gateway.nemoclaw" && s.action == Action::Start)
        .expect("the gateway is started");
    let create = p
        .steps
        .iter()
        .find(|s| s.id == "create:sandbox.alice")
        .unwrap();
    assert!(
        create.depends_on.contains(&start.id),
        "{:?}",
        create.depends_on
    );
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
        &format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}"),
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
        &format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    dashboardPort: 18789\n"),
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
    // A file the engine writes is private; the directory's mode is NemoClaw's and left as is
    // (a directory others could write would be refused, never silently tightened).
    nemoclaw::apply::registry::update(
        dir.path(),
        &file,
        "engine-last",
        Some(&fields(18791)),
        "2026-11-23T00:00:00Z",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
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

/// A registry directory or file another user can write is neither read nor written: planted
/// entries would steer what the engine deletes. Both say what to run to fix it; nothing changes.
#[test]
fn a_registry_others_can_write_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".nemoclaw");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("sandboxes.json");
    std::fs::write(&file, r#"{"sandboxes":{}}"#).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let f = nemoclaw::plan::RegistryFields {
        dashboard_port: 18789,
        agent: "openclaw".into(),
        gateway_name: None,
        gateway_port: None,
    };
    let err =
        nemoclaw::apply::registry::update(home.path(), &file, "alice", Some(&f), "t").unwrap_err();
    let err = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        err.contains("writable by other users") && err.contains("chmod go-w"),
        "{err}"
    );
    let nemoclaw::model::Observation::Unknown { reason } = nemoclaw::observe::registry::read(&file)
    else {
        panic!("a planted registry was read")
    };
    assert!(reason.contains("writable by other users"), "{reason}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o777,
        "not silently tightened"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        r#"{"sandboxes":{}}"#
    );

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        nemoclaw::observe::registry::read(&file),
        nemoclaw::model::Observation::Unknown { .. }
    ));
}

/// A FIFO at the registry would hang a plain read forever: it is unknown at once.
#[test]
fn a_fifo_at_the_registry_is_unknown_at_once() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("sandboxes.json");
    assert!(
        Command::new("mkfifo")
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    let nemoclaw::model::Observation::Unknown { reason } = nemoclaw::observe::registry::read(&file)
    else {
        panic!("a FIFO was read as a registry")
    };
    assert!(reason.contains("not a regular file"), "{reason}");
}

fn openclaw_facts(connections: u32) -> nemoclaw::model::OpenClawFacts {
    nemoclaw::model::OpenClawFacts {
        environ: Observation::Known {
            value: BTreeMap::new(),
        },
        unit: None,
        wrapper: None,
        established: Observation::Known { value: connections },
        healthz: Some(200),
        locks: Observation::Known { value: vec![] },
    }
}

#[test]
fn ports_a_live_openclaw_gateway_derives_are_never_assigned() {
    // An OpenClaw gateway in use on 18789 claims 18791 (browser control) and 18799 (relay).
    let text = format!("{HEAD}sandboxes:\n  - name: a\n{IMG}  - name: b\n{IMG}  - name: c\n{IMG}");
    let mut o = with_cli(
        Host::new()
            .process(4242, ME, "openclaw-gateway")
            .listen(18789, &[4242])
            .build(),
        cli(&[], &[], None, true),
    );
    o.openclaw.insert(4242, openclaw_facts(1));
    let p = planned("openclaw-derived-ports", &text, &o);
    let ports: Vec<u16> = p
        .steps
        .iter()
        .filter_map(|s| match &s.target {
            Target::Sandbox(t) => Some(t.port),
            _ => None,
        })
        .collect();
    assert_eq!(ports, vec![18790, 18792, 18793], "18791 is skipped");
    assert!(
        p.findings
            .iter()
            .any(|f| f.kind == FindingKind::OpenClawDerivedPorts && f.message.contains("18791"))
    );
    assert!(!p.steps.iter().any(|s| s.action == Action::Stop), "in use");
}

#[test]
fn a_stop_that_frees_the_port_of_a_sandbox_of_unknown_existence_is_blocked() {
    let text = format!("{HEAD}sandboxes:\n  - name: alice\n{IMG}    dashboardPort: 18789\n");
    let mut c = cli(&[], &[], None, true);
    c.sandboxes = Observation::Unknown {
        reason: "transport error".into(),
    };
    let o = with_cli(
        Host::new()
            .process(4242, ME, "openclaw-gateway")
            .listen(18789, &[4242])
            .build(),
        c,
    );
    let p = planned("stop-for-unknown-sandbox", &text, &o);
    let stop = p.steps.iter().find(|s| s.action == Action::Stop).unwrap();
    let why = &stop.blocked.as_ref().expect("blocked").reason;
    assert!(why.contains("existence is unknown"), "{why}");
}
