//! The planner on the bootstrap-secret scenarios (fixtures; values reduced to fingerprints as the
//! observer reduces them): snapshots of the rendered plans with structural asserts.

use std::collections::BTreeMap;

use nemoclaw::model::{ClusterFacts, Observation, Observed, PvcFacts, SecretFacts};
use nemoclaw::plan::{Action, PlanOptions, Risk, plan, render};

use crate::snap;
use crate::support::{Host, desired};

const LEGACY: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  runtime: legacy-k3s\n  image: img:2\n  cluster: {}\nsandboxes:\n  - name: alice\n    dashboardPort: 18789\n";

fn valid(key: &str) -> SecretFacts {
    SecretFacts::Valid {
        fingerprints: BTreeMap::from([(key.to_owned(), format!("{key}-fp"))]),
        cert: None,
    }
}

fn cluster(secrets: &[(&str, SecretFacts)], namespace: bool, pvcs: Vec<PvcFacts>) -> ClusterFacts {
    let mut all: BTreeMap<String, SecretFacts> = [
        "openshell-server-tls",
        "openshell-server-client-ca",
        "openshell-client-tls",
        "openshell-ssh-handshake",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), valid("k")))
    .collect();
    for (n, s) in secrets {
        all.insert((*n).to_owned(), s.clone());
    }
    let bundle = ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .map(|f| ((*f).to_owned(), None))
        .collect();
    ClusterFacts {
        source: "http://127.0.0.1:6443/".to_owned(),
        namespace,
        statefulset: namespace,
        secrets: all,
        pvcs,
        cli_bundle: bundle,
        tls_layout: None,
        tls_problem: None,
    }
}

fn observed(c: Observation<ClusterFacts>) -> Observed {
    let mut o = Host::legacy_converged().build();
    o.cluster = Some(c);
    o
}

fn planned(name: &str, o: &Observed) -> nemoclaw::plan::Plan {
    let p = plan(&desired(LEGACY), o, &PlanOptions::default());
    snap!(
        format!("secrets-{name}-human"),
        render::render_human(&p, render::Style { color: false })
    );
    snap!(format!("secrets-{name}-json"), render::render_json(&p));
    p
}

fn steps(p: &nemoclaw::plan::Plan) -> Vec<(String, Risk, bool)> {
    p.steps
        .iter()
        .map(|s| (s.id.clone(), s.risk, s.blocked.is_some()))
        .collect()
}

#[test]
fn all_missing_are_created_without_consent() {
    let missing = [
        "openshell-server-tls",
        "openshell-server-client-ca",
        "openshell-client-tls",
        "openshell-ssh-handshake",
    ]
    .map(|n| (n, SecretFacts::Missing));
    let p = planned(
        "all-missing",
        &observed(Observation::Known {
            value: cluster(&missing, true, vec![]),
        }),
    );
    assert_eq!(
        steps(&p),
        vec![
            (
                "create:secret.openshell/openshell-ssh-handshake".to_owned(),
                Risk::Create,
                false
            ),
            (
                "create:secrets.openshell/tls".to_owned(),
                Risk::Create,
                false
            ),
            ("write:mtls.nemoclaw".to_owned(), Risk::Create, false),
        ]
    );
}

#[test]
fn one_tls_secret_missing_replaces_the_group_with_consent_and_restarts() {
    let p = planned(
        "client-missing",
        &observed(Observation::Known {
            value: cluster(
                &[("openshell-client-tls", SecretFacts::Missing)],
                true,
                vec![],
            ),
        }),
    );
    assert_eq!(p.steps[0].action, Action::Replace);
    assert_eq!(
        p.steps[0].blocked.as_ref().unwrap().allow.as_deref(),
        Some("--allow replace")
    );
    assert!(
        p.steps
            .iter()
            .any(|s| s.id == "restart:statefulset.openshell/openshell")
    );
}

#[test]
fn a_malformed_handshake_is_its_own_group() {
    let bad = SecretFacts::Malformed {
        reason: "keys missing or empty: secret".to_owned(),
        fingerprints: BTreeMap::new(),
    };
    let p = planned(
        "handshake-malformed",
        &observed(Observation::Known {
            value: cluster(&[("openshell-ssh-handshake", bad)], true, vec![]),
        }),
    );
    assert_eq!(
        p.steps
            .iter()
            .filter(|s| s.action == Action::Replace)
            .count(),
        1
    );
    assert!(p.steps.iter().all(|s| !s.address.contains("tls")));
}

#[test]
fn bootstrapping_unknown_and_orphans() {
    let orphan = PvcFacts {
        name: "workspace-ghost-0".to_owned(),
        phase: "Bound".to_owned(),
        volume: Some("pv-1".to_owned()),
        capacity: Some("2Gi".to_owned()),
        sandbox: Some("ghost".to_owned()),
    };
    let mine = PvcFacts {
        name: "workspace-alice-0".to_owned(),
        sandbox: Some("alice".to_owned()),
        ..orphan.clone()
    };
    let p = planned(
        "bootstrapping",
        &observed(Observation::Known {
            value: cluster(
                &[("openshell-server-tls", SecretFacts::Missing)],
                false,
                vec![orphan, mine],
            ),
        }),
    );
    assert!(p.steps.is_empty());
    let kinds: Vec<&str> = p.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, vec!["orphaned-workspace", "cluster-bootstrapping"]);
    let p = planned(
        "cluster-unknown",
        &observed(Observation::Unknown {
            reason: "connection refused".to_owned(),
        }),
    );
    assert!(p.is_blocked() && !p.has_changes());
}
