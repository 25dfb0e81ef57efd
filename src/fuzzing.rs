//! What must hold for every input a file can carry, as fuzz targets (`fuzz/`, run by
//! `scripts/fuzz`) and as a test over the seed corpus (`tests/it/fuzz_seeds.rs`): no panic, no
//! unbounded time or memory (the front ends' limits), and whatever is accepted is consistent.

use std::collections::BTreeSet;

use crate::model::Observed;
use crate::plan::saved::SavedPlan;
use crate::plan::{self, PlanOptions};

/// A desired-state file: parsed within its limits; when valid, it plans against an empty host
/// without panicking and every step's dependencies come before it.
pub fn desired(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(desired) = crate::spec::load("fuzz.yaml", text) else {
        return;
    };
    let observed: Observed = serde_json::from_str(EMPTY_HOST).expect("the empty host parses");
    let p = plan::plan(&desired, &observed, &PlanOptions::default());
    dependencies_first(&p);
}

/// A saved observation (JSON or YAML): parsed within its limits; when accepted, it survives a
/// JSON round trip unchanged.
pub fn observed(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(o) = crate::cli::context::parse_observed("fuzz", text) else {
        return;
    };
    let again: Observed =
        serde_json::from_str(&serde_json::to_string(&o).expect("serializes")).expect("parses");
    assert_eq!(o, again, "an accepted observation round-trips");
}

/// A saved plan: parsed; when accepted, re-deriving it against a fresh plan that holds nothing
/// refuses every change (a saved plan is never obeyed on its own word).
pub fn saved_plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(saved) = SavedPlan::parse(text) else {
        return;
    };
    let fresh = plan::Plan {
        desired: saved.plan.desired.clone(),
        steps: Vec::new(),
        findings: Vec::new(),
    };
    let Ok(desired) = crate::spec::load("fuzz.yaml", MINIMAL_FILE) else {
        unreachable!("the minimal file is valid")
    };
    let observed: Observed = serde_json::from_str(EMPTY_HOST).expect("the empty host parses");
    if let Ok(r) = plan::saved::rederive(&saved.plan, &fresh, &desired, &observed) {
        assert!(
            r.plan.steps.is_empty(),
            "a step ran that a fresh plan does not hold"
        );
    }
}

fn dependencies_first(p: &plan::Plan) {
    let mut seen = BTreeSet::new();
    for s in &p.steps {
        for d in &s.depends_on {
            assert!(seen.contains(d.as_str()), "{} depends on a later {d}", s.id);
        }
        seen.insert(s.id.as_str());
    }
}

const MINIMAL_FILE: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";

/// A host with nothing on it, every observer answered.
const EMPTY_HOST: &str = r#"{
  "format_version": "1.0",
  "host": {"invoking_uid": 1000, "invoking_user": "fuzz", "engine_pid": 2, "engine_ancestors": [1], "listener_source": "netlink"},
  "scanned_ports": [],
  "listeners": {"state": "known", "value": []},
  "processes": {},
  "registry": {"state": "known", "value": {"path": "/home/fuzz/.nemoclaw/sandboxes.json", "present": false, "sandboxes": {}}},
  "forwards": {"state": "known", "value": []}
}"#;
