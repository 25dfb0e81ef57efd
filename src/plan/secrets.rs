//! The legacy gateway's bootstrap secrets and workspace PVCs (#3306, planned and reviewable).
//!
//! PKI layout: OpenShell's own. One CA (`openshell-ca`) signs the server certificate (CN
//! `openshell-server`, serverAuth) and the client certificate (CN `openshell-client`,
//! clientAuth); the server's client CA is that same CA, and the client bundle's `ca.crt` is it too,
//! so the CLI and sandbox pods verify the server with the CA that also vouches for them. This is
//! what the OpenShell server and CLI expect, and what the engine generates. A set NemoClaw's
//! repair made (a self-signed server certificate and a separate client CA) works too and is kept
//! as it is (`ClusterFacts::tls_layout`): only a set that cannot work — missing, malformed, or
//! not fitting together (`ClusterFacts::tls_problem`) — is regenerated. Because the CA's key is
//! never stored in the cluster, the three TLS secrets can only be regenerated together, and any
//! still-present TLS secret it replaces makes the step a `replace`. The handshake secret is
//! independent.
//!
//! PVCs are never touched: one that belongs to no declared sandbox is a finding.

use std::collections::BTreeMap;

use super::Builder;
use super::step::{Action, FindingKind, Risk, SecretsTarget, Step, Target};
use crate::model::{ClusterFacts, Desired, GatewayRuntime, Observation, Observed, SecretFacts};

/// The TLS secrets, regenerated together.
pub const TLS: [&str; 3] = [
    "openshell-server-tls",
    "openshell-server-client-ca",
    "openshell-client-tls",
];
/// The handshake secret.
pub const HANDSHAKE: &str = "openshell-ssh-handshake";
/// Names the server certificate covers (OpenShell's list).
pub const SERVER_SANS: [&str; 6] = [
    "openshell",
    "openshell.openshell.svc",
    "openshell.openshell.svc.cluster.local",
    "localhost",
    "host.docker.internal",
    "127.0.0.1",
];

pub(super) fn plan(desired: &Desired, observed: &Observed, b: &mut Builder) {
    if !matches!(
        desired.gateway.runtime,
        Some(GatewayRuntime::LegacyK3s { cluster: true, .. })
    ) {
        return;
    }
    let c = match &observed.cluster {
        None => return,
        Some(Observation::Unknown { reason }) => {
            b.finding("cluster", FindingKind::ClusterUnknown, format!("the gateway's k3s API could not be asked ({reason}); no secret is repaired until it can"));
            b.blocked_observe(
                "secrets.openshell".to_owned(),
                "the bootstrap secrets must be observed before they are repaired".to_owned(),
                reason.clone(),
                Target::Ports {
                    range: String::new(),
                },
            );
            return;
        }
        Some(Observation::Known { value }) => value,
    };
    for pvc in &c.pvcs {
        if !pvc.sandbox.as_ref().is_some_and(|s| desired.declares(s)) {
            b.finding(
                &format!("pvc.openshell/{}", pvc.name),
                FindingKind::OrphanedWorkspace,
                format!(
                    "PVC `{}` ({}, {}) belongs to no declared sandbox{}; it is kept: workspaces are only ever deleted by a `destroy` naming them",
                    pvc.name,
                    pvc.phase,
                    pvc.capacity.as_deref().unwrap_or("size unknown"),
                    pvc.sandbox.as_ref().map_or(String::new(), |s| format!(" (`{s}`)"))
                ),
            );
        }
    }
    if !c.namespace || !c.statefulset {
        let missing = if c.namespace {
            "statefulset `openshell/openshell`"
        } else {
            "namespace `openshell`"
        };
        b.finding(
            "secrets.openshell",
            FindingKind::ClusterBootstrapping,
            format!("{missing} does not exist yet: the cluster is still bootstrapping, so no secret is repaired (OpenShell creates them on its first start)"),
        );
        return;
    }
    let mut restart_after = Vec::new();
    let mut replaced = false;
    let state = |name: &str| c.secrets.get(name).cloned().unwrap_or(SecretFacts::Missing);
    let expected = |names: &[&str]| -> BTreeMap<String, Option<BTreeMap<String, String>>> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), state(n).fingerprints().cloned()))
            .collect()
    };
    let describe = |name: &str| match (state(name), &c.tls_problem) {
        (SecretFacts::Missing, _) => format!("`{name}` is missing"),
        (SecretFacts::Malformed { reason, .. }, _) => {
            format!("`{name}` is malformed ({reason})")
        }
        (SecretFacts::Valid { .. }, Some(why)) => {
            format!("`{name}` does not fit the others ({why})")
        }
        (SecretFacts::Valid { .. }, None) => format!("`{name}` is valid"),
    };
    // Each secret on its own, then whether the three work together (a set NemoClaw's #3306
    // repair made works: it is kept, never overwritten by the engine's layout).
    let broken: Vec<&str> = if c.tls_problem.is_some() {
        TLS.to_vec()
    } else {
        TLS.iter()
            .copied()
            .filter(|n| !matches!(state(n), SecretFacts::Valid { .. }))
            .collect()
    };
    let mut tls_id = None;
    if !broken.is_empty() {
        let existing: Vec<&str> = TLS
            .iter()
            .copied()
            .filter(|n| !matches!(state(n), SecretFacts::Missing))
            .collect();
        let (action, risk) = if existing.is_empty() {
            (Action::Create, Risk::Create)
        } else {
            (Action::Replace, Risk::Replace)
        };
        replaced |= !existing.is_empty();
        let id = format!("{}:secrets.openshell/tls", action.as_str());
        let replacing = if existing.is_empty() {
            String::new()
        } else {
            format!(
                "; this replaces {} (the CA key is never stored, so the three TLS secrets are only ever made together)",
                existing
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        b.step(Step {
            id: id.clone(),
            address: "secrets.openshell/tls".to_owned(),
            action,
            risk,
            reason: format!(
                "{}: generate one PKI (CA `openshell-ca` signing the server certificate `openshell-server` and the client certificate `openshell-client`) and write the three TLS secrets{replacing}",
                broken.iter().map(|n| describe(n)).collect::<Vec<_>>().join("; ")
            ),
            depends_on: Vec::new(),
            blocked: None,
            target: Target::Secrets(SecretsTarget {
                names: TLS.iter().map(|n| (*n).to_owned()).collect(),
                expected: expected(&TLS),
                // OpenShell's names plus the gateway's own host name (its k3s node name).
                server_sans: SERVER_SANS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(std::iter::once(desired.gateway.node_name()))
                    .collect(),
            }),
        });
        restart_after.push(id.clone());
        tls_id = Some(id);
    }
    if !matches!(state(HANDSHAKE), SecretFacts::Valid { .. }) {
        let exists = !matches!(state(HANDSHAKE), SecretFacts::Missing);
        replaced |= exists;
        let (action, risk) = if exists {
            (Action::Replace, Risk::Replace)
        } else {
            (Action::Create, Risk::Create)
        };
        let id = format!("{}:secret.openshell/{HANDSHAKE}", action.as_str());
        b.step(Step {
            id: id.clone(),
            address: format!("secret.openshell/{HANDSHAKE}"),
            action,
            risk,
            reason: format!(
                "{}: write a new 32-byte random handshake secret (hex)",
                describe(HANDSHAKE)
            ),
            depends_on: Vec::new(),
            blocked: None,
            target: Target::Secrets(SecretsTarget {
                names: vec![HANDSHAKE.to_owned()],
                expected: expected(&[HANDSHAKE]),
                server_sans: Vec::new(),
            }),
        });
        restart_after.push(id);
    }
    bundle(desired, c, tls_id, b);
    if replaced {
        b.step(Step {
            id: "restart:statefulset.openshell/openshell".to_owned(),
            address: "statefulset.openshell/openshell".to_owned(),
            action: Action::Restart,
            risk: Risk::Disrupt,
            reason: "secrets the running server loaded were replaced: restart its rollout so it picks the new ones up".to_owned(),
            depends_on: restart_after,
            blocked: None,
            target: Target::StatefulSet { name: "openshell/openshell".to_owned() },
        });
    }
}

/// Keeps the CLI's copy of the client bundle equal to the cluster's `openshell-client-tls`.
fn bundle(desired: &Desired, c: &ClusterFacts, tls_id: Option<String>, b: &mut Builder) {
    let dir = format!("~/.config/openshell/gateways/{}/mtls", desired.gateway.name);
    let reason = match (&tls_id, c.secrets.get("openshell-client-tls")) {
        (Some(_), _) => "the client bundle is regenerated: copy it to the CLI".to_owned(),
        (None, Some(SecretFacts::Valid { fingerprints, .. })) => {
            let differs: Vec<&str> = ["ca.crt", "tls.crt", "tls.key"]
                .into_iter()
                .filter(|f| {
                    c.cli_bundle.get(*f).cloned().flatten() != fingerprints.get(*f).cloned()
                })
                .collect();
            if differs.is_empty() {
                return;
            }
            format!(
                "the CLI's copy differs from `openshell-client-tls` ({}): copy the cluster's",
                differs.join(", ")
            )
        }
        _ => return,
    };
    b.step(Step {
        id: format!("write:mtls.{}", desired.gateway.name),
        address: format!("mtls.{}", desired.gateway.name),
        action: Action::Write,
        risk: Risk::Create,
        reason: format!("{reason} into {dir} (0600, atomically)"),
        depends_on: tls_id.into_iter().collect(),
        blocked: None,
        target: Target::CliBundle { dir },
    });
}
