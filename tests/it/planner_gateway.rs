//! The planner on every gateway and volume scenario (pure, fixtures built in code): snapshots of
//! the human and JSON renderings with structural asserts after each.

use std::collections::BTreeMap;

use nemoclaw::model::{Desired, Observed};
use nemoclaw::plan::{Action, Plan, PlanOptions, Risk, plan, render};

use crate::snap;
use crate::support::{Host, container, desired};

const LEGACY: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  runtime: legacy-k3s\n  image: img:2\n  healthTimeout: 60s\n";
const DRIVER: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  runtime: docker-driver\n  binary: /usr/local/bin/openshell-gateway\n";

fn planned(name: &str, d: &Desired, o: &Observed, allow: &[Risk]) -> Plan {
    let p = plan(
        d,
        o,
        &PlanOptions {
            allow: allow.iter().copied().collect(),
            ..PlanOptions::default()
        },
    );
    snap!(
        format!("gateway-{name}-human"),
        render::render_human(&p, render::Style { color: false })
    );
    snap!(format!("gateway-{name}-json"), render::render_json(&p));
    p
}

fn actions(p: &Plan) -> Vec<(Action, Risk, bool)> {
    p.steps
        .iter()
        .map(|s| (s.action, s.risk, s.blocked.is_some()))
        .collect()
}

// See: NVIDIA/NemoClaw#4187/#4210.
#[test]
fn stopped_container_is_started_never_replaced() {
    let o = Host::new()
        .legacy(
            Some(container("exited", "img:1", "sha256:1111", 8080)),
            &["openshell-cluster-nemoclaw"],
        )
        .health(None)
        .build();
    let p = planned(
        "stopped",
        &desired(LEGACY),
        &o,
        &[Risk::Replace, Risk::Destroy],
    );
    assert_eq!(
        actions(&p),
        vec![(Action::Start, Risk::Create, false)],
        "even with --allow replace"
    );
    assert_eq!(p.findings.len(), 1, "the drift is noted for a later plan");
}

#[test]
fn missing_container_is_created_then_started() {
    let o = Host::new().legacy(None, &[]).health(None).build();
    let p = planned("missing", &desired(LEGACY), &o, &[]);
    assert_eq!(
        actions(&p),
        vec![
            (Action::Create, Risk::Create, false),
            (Action::Start, Risk::Create, false)
        ]
    );
    assert_eq!(p.steps[1].depends_on, vec![p.steps[0].id.clone()]);
    assert!(
        p.steps[0].reason.contains("existing volume"),
        "{}",
        p.steps[0].reason
    );
}

#[test]
fn running_healthy_on_the_desired_image_is_converged() {
    // Converged, answering 401 (the gateway wants a token) instead of 200.
    let o = Host::legacy_converged().health(Some(401)).build();
    let p = planned("healthy", &desired(LEGACY), &o, &[]);
    assert!(p.is_converged());
}

#[test]
fn image_drift_is_a_blocked_replace() {
    let o = Host::new()
        .legacy(
            Some(container("running", "img:1", "sha256:1111", 8080)),
            &[],
        )
        .health(Some(200))
        .build();
    let p = planned("drift", &desired(LEGACY), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Replace, Risk::Replace, true)]);
    assert_eq!(
        p.steps[0].blocked.as_ref().unwrap().allow.as_deref(),
        Some("--allow replace")
    );
}

#[test]
fn running_but_never_answering_is_restarted() {
    let o = Host::new()
        .legacy(
            Some(container(
                "running",
                "img:2",
                "sha256:2222222222222222",
                8080,
            )),
            &[],
        )
        .health(None)
        .build();
    let p = planned("unhealthy", &desired(LEGACY), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Restart, Risk::Disrupt, false)]);
}

#[test]
fn unknown_docker_is_blocked_and_does_nothing() {
    let text = format!("{LEGACY}destroy:\n  volumes: [openshell-cluster-old]\n");
    let o = Host::new().docker_unknown().health(None).build();
    let p = planned(
        "docker-unknown",
        &desired(&text),
        &o,
        &[Risk::Replace, Risk::Destroy],
    );
    assert!(!p.has_changes());
    assert!(
        p.steps
            .iter()
            .all(|s| s.action == Action::Observe && s.blocked.is_some())
    );
}

#[test]
fn destroy_names_the_volume_and_needs_consent() {
    let text = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndestroy:\n  volumes: [openshell-cluster-nemoclaw, openshell-cluster-gone]\n";
    let mut o = Host::new().legacy(None, &[]).build();
    if let Some(nemoclaw::model::Observation::Known { value }) = &mut o.docker {
        value
            .volumes
            .insert("openshell-cluster-gone".to_owned(), None);
    }
    let p = planned("destroy", &desired(text), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Delete, Risk::Destroy, true)]);
    assert!(p.steps[0].reason.contains("every sandbox workspace"));
    let allowed = plan(
        &desired(text),
        &o,
        &PlanOptions {
            allow: [Risk::Destroy].into(),
            ..PlanOptions::default()
        },
    );
    assert_eq!(
        actions(&allowed),
        vec![(Action::Delete, Risk::Destroy, false)]
    );
}

fn managed(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let g = desired(DRIVER).gateway;
    let mut env = nemoclaw::plan::managed_env(
        &g,
        "/home/alice/.local/state/nemoclaw/openshell-docker-gateway",
        None,
        None,
    );
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

#[test]
fn driver_missing_is_started() {
    let o = Host::new()
        .driver(None, Some("/usr/local/bin/openshell-gateway"))
        .health(None)
        .build();
    let p = planned("driver-missing", &desired(DRIVER), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Start, Risk::Create, false)]);
}

#[test]
fn driver_without_binary_is_blocked() {
    let o = Host::new().driver(None, None).health(None).build();
    let p = planned("driver-no-binary", &desired(DRIVER), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Start, Risk::Create, true)]);
}

#[test]
fn driver_env_drift_is_a_restart() {
    let o = Host::new()
        .process(4000, crate::support::ME, "/usr/local/bin/openshell-gateway")
        .listen(8080, &[4000])
        .driver(
            Some((4000, managed(&[("OPENSHELL_SERVER_PORT", "9999")]))),
            Some("/usr/local/bin/openshell-gateway"),
        )
        .health(Some(200))
        .build();
    let p = planned("driver-drift", &desired(DRIVER), &o, &[]);
    assert_eq!(actions(&p), vec![(Action::Restart, Risk::Disrupt, false)]);
    assert!(p.steps[0].reason.contains("OPENSHELL_SERVER_PORT"));
}

#[test]
fn driver_matching_is_converged() {
    let o = Host::new()
        .process(4000, crate::support::ME, "/usr/local/bin/openshell-gateway")
        .listen(8080, &[4000])
        .driver(
            Some((4000, managed(&[]))),
            Some("/usr/local/bin/openshell-gateway"),
        )
        .health(Some(200))
        .build();
    let p = planned("driver-converged", &desired(DRIVER), &o, &[]);
    assert!(p.is_converged());
}

#[test]
fn driver_port_with_an_unseen_owner_keeps_whatever_serves_there() {
    let o = Host::new()
        .listen_unknown(8080, 0)
        .driver(None, Some("/usr/local/bin/openshell-gateway"))
        .health(Some(200))
        .build();
    let p = planned("driver-port-unknown", &desired(DRIVER), &o, &[]);
    assert!(
        p.steps.is_empty(),
        "never start a second gateway or tear down a live one on a guess"
    );
    assert_eq!(p.findings.len(), 1);
}

#[test]
fn markdown_comments_carry_a_banner_and_the_plan_hash() {
    let drift = plan(
        &desired(LEGACY),
        &Host::new()
            .legacy(
                Some(container("running", "img:1", "sha256:1111", 8080)),
                &[],
            )
            .health(Some(200))
            .build(),
        &PlanOptions::default(),
    );
    let md = render::render_markdown(&drift);
    snap!("markdown-replace", md.clone());
    assert!(md.contains("> [!WARNING]") && md.contains(&drift.sha256()));

    let text = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndestroy:\n  volumes: [openshell-cluster-nemoclaw]\n";
    let destroy = plan(
        &desired(text),
        &Host::new().legacy(None, &[]).build(),
        &PlanOptions::default(),
    );
    let md = render::render_markdown(&destroy);
    snap!("markdown-destroy", md.clone());
    assert!(md.contains("> [!CAUTION]") && md.contains("deletes data"));

    let quiet = plan(
        &desired(LEGACY),
        &Host::legacy_converged().build(),
        &PlanOptions::default(),
    );
    let md = render::render_markdown(&quiet);
    snap!("markdown-no-changes", md.clone());
    assert!(!md.contains("[!") && md.contains("**No changes.**"));
}

#[test]
fn legacy_gpus_follow_the_file_and_the_hosts_devices() {
    use nemoclaw::plan::Target;
    let spec = |p: &Plan| match &p.steps[0].target {
        Target::Container(c) => c.spec.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    // `auto` with an NVIDIA device: GPUs asked for, and the cluster told (GPU_ENABLED).
    let mut o = Host::new().legacy(None, &[]).health(None).build();
    o.host.nvidia_gpus = nemoclaw::model::Observation::Known {
        value: vec!["/dev/nvidia0".into()],
    };
    let p = plan(&desired(LEGACY), &o, &PlanOptions::default());
    let s = spec(&p);
    assert!(
        s.gpu && s.env.contains(&"GPU_ENABLED=true".to_owned()),
        "{s:?}"
    );
    assert!(s.env.contains(&"IMAGE_TAG=2".to_owned()), "{s:?}");
    // `auto` without: none.
    let o = Host::new().legacy(None, &[]).health(None).build();
    assert!(!spec(&plan(&desired(LEGACY), &o, &PlanOptions::default())).gpu);
    // A running container without GPUs when the file says `on`: drift, a replace.
    let o = Host::legacy_converged().build();
    let on = format!("{LEGACY}  gpu: on\n");
    let p = planned("legacy-gpu-drift", &desired(&on), &o, &[]);
    assert_eq!(p.steps[0].action, Action::Replace, "{:?}", p.steps);
    assert!(p.steps[0].reason.contains("GPUs"), "{}", p.steps[0].reason);
    // `auto` and a container with GPUs on a host whose devices are not seen: left as is.
    let mut c = container("running", "img:2", "sha256:2222222222222222", 8080);
    c.gpu = true;
    let o = Host::new().legacy(Some(c), &[]).health(Some(200)).build();
    assert!(
        plan(&desired(LEGACY), &o, &PlanOptions::default())
            .steps
            .is_empty()
    );
}
