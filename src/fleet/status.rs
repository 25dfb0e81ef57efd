//! `NemoClawHost.status` from a plan: conditions `Observed`, `Planned`, `Converged`, `Blocked`
//! (each with reason and message), the plan's hash, counts and steps, and the versions seen.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::Observed;
use crate::plan::Plan;

/// What the agent did with the plan this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: `spec.apply` is `never` and there is no approval (plan only), or nothing to do.
    PlanOnly,
    /// Nothing: `spec.approve.planSha256` is not the fresh plan's; the message says what moved.
    Stale(String),
    /// It applied the plan with this hash.
    Ran {
        /// The applied plan's sha256.
        plan_sha256: String,
        /// The apply's exit code.
        exit: u8,
        /// Steps done.
        done: usize,
        /// Steps failed.
        failed: usize,
    },
}

/// The status for a resource of `generation` whose plan is `plan`, observed as `observed`, at
/// `now` (RFC 3339). `applied` says what happened besides planning.
#[must_use]
pub fn status(
    generation: Option<i64>,
    plan: &Plan,
    observed: &Observed,
    applied: &Applied,
    now: &str,
) -> Value {
    let to_change = plan.changes().count();
    let blocked = plan.steps.iter().filter(|s| s.blocked.is_some()).count();
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_risk: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &plan.steps {
        *by_action.entry(s.action.as_str()).or_default() += 1;
        *by_risk.entry(s.risk.as_str()).or_default() += 1;
    }
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| {
            json!({
                "address": s.address,
                "action": s.action.as_str(),
                "risk": s.risk.as_str(),
                "blocked": s.blocked.as_ref().map(|b| b.reason.clone()),
            })
        })
        .collect();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": generation,
        })
    };
    let converged = plan.is_converged();
    let mut conditions = vec![
        condition(
            "Observed",
            true,
            "Observed",
            format!(
                "{} listeners, registry {}",
                observed.listeners.known().map_or(0, Vec::len),
                if observed.registry.known().is_some() {
                    "read"
                } else {
                    "unknown"
                }
            ),
        ),
        condition(
            "Planned",
            true,
            "Planned",
            format!(
                "{to_change} to change, {blocked} blocked, {} findings",
                plan.findings.len()
            ),
        ),
        condition(
            "Converged",
            converged,
            if converged {
                "Converged"
            } else {
                "ChangesPending"
            },
            if converged {
                "the host matches spec.desired".to_owned()
            } else {
                format!("{} steps would run", to_change)
            },
        ),
        condition(
            "Blocked",
            blocked > 0,
            if blocked > 0 {
                "StepsBlocked"
            } else {
                "NothingBlocked"
            },
            plan.steps
                .iter()
                .filter_map(|s| {
                    s.blocked
                        .as_ref()
                        .map(|b| format!("{}: {}", s.address, b.reason))
                })
                .take(3)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ];
    let mut last_apply = Value::Null;
    match applied {
        Applied::PlanOnly => {}
        Applied::Stale(why) => {
            conditions.push(condition("Stale", true, "ApprovalStale", why.clone()));
        }
        Applied::Ran {
            plan_sha256,
            exit,
            done,
            failed,
        } => {
            conditions.push(condition("Stale", false, "Fresh", String::new()));
            last_apply = json!({
                "time": now,
                "planSha256": plan_sha256,
                "exitCode": exit,
                "stepsDone": done,
                "stepsFailed": failed,
            });
        }
    }
    json!({
        "lastApply": last_apply,
        "observedGeneration": generation,
        "conditions": conditions,
        "plan": {
            "sha256": plan.sha256(),
            "toChange": to_change,
            "blocked": blocked,
            "findings": plan.findings.len(),
            "byAction": by_action,
            "byRisk": by_risk,
            "steps": steps,
        },
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "openshellVersion": observed.openshell.as_ref().and_then(|c| c.version.known().cloned()),
    })
}
