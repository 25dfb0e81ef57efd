//! The planner on every stale-listener scenario: snapshots of the human and JSON renderings,
//! each followed by structural assertions so intent survives a careless snapshot update.

use nemoclaw::model::{Desired, Observed};
use nemoclaw::plan::{Action, FindingKind, Plan, PlanOptions, Risk, Target, plan, render};

use crate::snap;
use crate::support::{Host, ME, desired, desired_with};

const ONE_SANDBOX: &str = "  - name: my-assistant\n    dashboardPort: 18789";
const DEFAULT_CLEANUP: &str = "  staleListeners: true";

fn planned(name: &str, d: &Desired, o: &Observed) -> Plan {
    let p = plan(d, o, &PlanOptions::default());
    snap!(
        format!("plan-{name}-human"),
        render::render_human(&p, render::Style { color: false })
    );
    snap!(format!("plan-{name}-json"), render::render_json(&p));
    p
}

fn stop_pids(p: &Plan) -> Vec<u32> {
    p.changes()
        .filter_map(|s| match &s.target {
            Target::Process(t) if s.action == Action::Stop => Some(t.pid),
            _ => None,
        })
        .collect()
}

fn finding_kinds(p: &Plan) -> Vec<FindingKind> {
    p.findings.iter().map(|f| f.kind).collect()
}

// See: NVIDIA/NemoClaw#3397 — a stale openclaw-gateway holds the port the new sandbox needs.
#[test]
fn stale_listener_on_a_declared_sandbox_port_is_stopped_first() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(4242, ME, "openclaw-gateway --port 18789")
        .listen(18789, &[4242])
        .build();
    let p = planned("needed-port", &d, &o);
    assert_eq!(stop_pids(&p), vec![4242]);
    let step = &p.steps[0];
    assert_eq!((step.risk, step.blocked.is_none()), (Risk::Disrupt, true));
    assert!(
        step.reason
            .contains("sandbox `my-assistant` needs port 18789"),
        "{}",
        step.reason
    );
    assert!(p.findings.is_empty());
}

#[test]
fn one_process_on_two_ports_ipv4_and_ipv6_gives_one_step() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(4242, ME, "openclaw-gateway")
        .listen(18790, &[4242])
        .listen_at("::1", 18791, &[4242])
        .build();
    let p = planned("two-ports", &d, &o);
    assert_eq!(stop_pids(&p), vec![4242]);
    let Target::Process(t) = &p.steps[0].target else {
        panic!()
    };
    assert_eq!(t.ports, vec![18790, 18791]);
    assert_eq!(t.wait_free, vec![18790, 18791]);
}

#[test]
fn foreign_owner_is_a_finding_and_blocks_the_needed_port() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(77, 65534, "openclaw-gateway")
        .listen(18789, &[77])
        .build();
    let p = planned("foreign-owner", &d, &o);
    assert!(stop_pids(&p).is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::ForeignOwner]);
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.steps[0].action, Action::FreePort);
    assert!(
        p.steps[0]
            .blocked
            .as_ref()
            .is_some_and(|b| b.allow.is_none())
    );
}

#[test]
fn cmdline_without_marker_is_left_alone() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    // The kernel's 15-character name would be "openclaw-gatewa"; only the full cmdline counts.
    let o = Host::new()
        .process(88, ME, "python3 -m http.server 18795")
        .listen(18795, &[88])
        .build();
    let p = planned("cmdline-mismatch", &d, &o);
    assert!(p.steps.is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::CmdlineMismatch]);
}

#[test]
fn protected_port_is_never_touched() {
    let d = desired_with(ONE_SANDBOX, "  protectedPorts: [18796]");
    let o = Host::new()
        .process(96, ME, "openclaw-gateway")
        .listen(18796, &[96])
        .build();
    let p = planned("protected-port", &d, &o);
    assert!(p.steps.is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::ProtectedPort]);
}

#[test]
fn unknown_owner_is_never_signalled() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .listen_unknown(18789, ME)
        .listen_unknown(18793, 0)
        .build();
    let p = planned("owner-unknown", &d, &o);
    assert!(stop_pids(&p).is_empty());
    assert_eq!(
        finding_kinds(&p),
        vec![FindingKind::OwnerUnknown, FindingKind::ForeignOwner]
    );
    // 18789 is needed by the sandbox, so the unknown stands in the way: blocked.
    assert!(p.is_blocked());
}

#[test]
fn unreadable_registry_blocks_the_whole_sweep() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .registry_unknown()
        .process(4242, ME, "openclaw-gateway")
        .listen(18789, &[4242])
        .process(4243, ME, "openshell forward start 18792 bob")
        .listen(18792, &[4243])
        .build();
    let p = planned("registry-unknown", &d, &o);
    assert!(!p.has_changes());
    assert_eq!(p.steps.len(), 2);
    assert!(p.steps.iter().all(|s| s.blocked.is_some()));
    assert_eq!(finding_kinds(&p), vec![FindingKind::RegistryUnknown]);
}

#[test]
fn live_forward_of_a_declared_sandbox_is_kept() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(555, ME, "openshell forward start 18789 my-assistant")
        .listen(18789, &[555])
        .forward("my-assistant", 18789, 555)
        .build();
    let p = planned("declared-forward", &d, &o);
    assert!(
        p.steps.is_empty(),
        "the sandbox's own forward is what the file wants"
    );
    assert_eq!(finding_kinds(&p), vec![FindingKind::DeclaredForward]);
}

#[test]
fn port_of_a_registered_but_undeclared_sandbox_is_a_finding() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .registered("bob", Some(18794))
        .process(600, ME, "openclaw-gateway")
        .listen(18794, &[600])
        .build();
    let p = planned("registered-sandbox", &d, &o);
    assert!(p.steps.is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::RegisteredSandbox]);
}

#[test]
fn dead_forward_pid_file_does_not_protect_a_stale_listener() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    // The pid file names pid 555, but 4242 holds the port: the file is stale, the listener too.
    let o = Host::new()
        .process(4242, ME, "openclaw-gateway")
        .listen(18789, &[4242])
        .forward("my-assistant", 18789, 555)
        .build();
    let p = plan(&d, &o, &PlanOptions::default());
    assert_eq!(stop_pids(&p), vec![4242]);
}

#[test]
fn the_engine_and_its_ancestors_are_never_signalled() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(90, ME, "openclaw-gateway wrapper")
        .listen(18797, &[90])
        .build();
    let p = planned("engine-ancestor", &d, &o);
    assert!(p.steps.is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::EngineProcess]);
}

#[test]
fn processes_sharing_a_socket_are_stopped_together_and_the_last_waits() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(700, ME, "openclaw-gateway")
        .process(701, ME, "openclaw-gateway worker")
        .listen(18798, &[700, 701])
        .build();
    let p = planned("shared-socket", &d, &o);
    assert_eq!(stop_pids(&p), vec![700, 701]);
    assert_eq!(p.steps[1].depends_on, vec![p.steps[0].id.clone()]);
    let (Target::Process(a), Target::Process(b)) = (&p.steps[0].target, &p.steps[1].target) else {
        panic!()
    };
    assert!(a.wait_free.is_empty());
    assert_eq!(b.wait_free, vec![18798]);
}

#[test]
fn a_shared_socket_with_one_protected_holder_keeps_both() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(700, ME, "openclaw-gateway")
        .process(701, 65534, "openclaw-gateway")
        .listen(18798, &[700, 701])
        .build();
    let p = plan(&d, &o, &PlanOptions::default());
    assert!(p.steps.is_empty());
    assert_eq!(finding_kinds(&p), vec![FindingKind::ForeignOwner]);
}

#[test]
fn cleanup_disabled_turns_stale_listeners_into_findings() {
    let d = desired_with(ONE_SANDBOX, "  staleListeners: false");
    let o = Host::new()
        .process(4242, ME, "openclaw-gateway")
        .listen(18789, &[4242])
        .build();
    let p = planned("cleanup-disabled", &d, &o);
    assert!(!p.has_changes());
    assert_eq!(finding_kinds(&p), vec![FindingKind::CleanupDisabled]);
    assert!(p.is_blocked(), "the sandbox's port stays taken");
}

#[test]
fn unreadable_socket_table_blocks_with_an_observe_step() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new().listeners_unknown().build();
    let p = planned("listeners-unknown", &d, &o);
    assert!(!p.has_changes());
    assert_eq!(p.steps.len(), 1);
    assert_eq!(
        (p.steps[0].action, p.steps[0].risk),
        (Action::Observe, Risk::Read)
    );
    assert!(p.is_blocked());
}

#[test]
fn a_snapshot_that_did_not_scan_the_range_is_not_read_as_empty() {
    let d = desired(
        "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"41000-41010\"\n",
    );
    let o = Host::new().build();
    let p = plan(&d, &o, &PlanOptions::default());
    assert!(p.is_blocked());
    assert!(
        p.steps[0]
            .blocked
            .as_ref()
            .unwrap()
            .reason
            .contains("did not scan")
    );
}

#[test]
fn listeners_outside_the_range_are_ignored() {
    let d = desired_with(ONE_SANDBOX, DEFAULT_CLEANUP);
    let o = Host::new()
        .process(1, 0, "/sbin/init")
        .process(4242, ME, "openclaw-gateway")
        .listen(8080, &[4242])
        .build();
    let p = planned("clean-host", &d, &o);
    assert!(p.is_converged());
}

#[test]
fn everything_at_once() {
    let d = desired_with(ONE_SANDBOX, "  protectedPorts: [18796]");
    let o = Host::new()
        .registered("bob", Some(18794))
        .process(4242, ME, "openclaw-gateway --port 18789")
        .listen(18789, &[4242])
        .listen_at("::", 18790, &[4242])
        .process(77, 65534, "openclaw-gateway")
        .listen(18791, &[77])
        .process(88, ME, "nginx: master process")
        .listen(18792, &[88])
        .process(600, ME, "openclaw-gateway")
        .listen(18794, &[600])
        .process(96, ME, "openshell-forward")
        .listen(18796, &[96])
        .process(97, ME, "openshell forward start 18797 old-sandbox")
        .listen(18797, &[97])
        .listen_unknown(18799, 0)
        .build();
    let p = planned("mixed-host", &d, &o);
    assert_eq!(stop_pids(&p), vec![4242, 97], "the sandbox's port first");
    assert_eq!(p.findings.len(), 5);
}
