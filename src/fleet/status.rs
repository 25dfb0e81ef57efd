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

/// Carries what the previous status says that this one does not: the last apply (through rounds
/// that only plan), and each condition's `lastTransitionTime` while its `status` is unchanged —
/// the Kubernetes convention (a transition time says when the condition last flipped, not when it
/// was last looked at), which also leaves a host that did not move with the very same status.
pub fn carry_over(status: &mut Value, previous: &Value) {
    if status["lastApply"].is_null() {
        match previous.get("lastApply") {
            Some(p) if !p.is_null() => status["lastApply"] = p.clone(),
            _ => {
                status.as_object_mut().map(|o| o.remove("lastApply"));
            }
        }
    }
    let before = previous["conditions"].as_array();
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    for c in conditions {
        let was = before
            .into_iter()
            .flatten()
            .find(|p| p["type"] == c["type"] && p["status"] == c["status"]);
        if let Some(time) = was.map(|p| p["lastTransitionTime"].clone())
            && !time.is_null()
        {
            c["lastTransitionTime"] = time;
        }
    }
}

/// Whether two statuses say the same, a `null` being an absent key: a status written by
/// server-side apply (or a merge patch) is stored without its nulls.
#[must_use]
pub fn same_status(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys());
            keys.into_iter().all(|k| {
                same_status(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same_status(u, v))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::{carry_over, same_status};
    use serde_json::json;

    fn cond(kind: &str, status: &str, time: &str) -> serde_json::Value {
        json!({ "type": kind, "status": status, "lastTransitionTime": time })
    }

    #[test]
    fn a_transition_time_moves_only_when_the_condition_flips() {
        let previous = json!({
            "conditions": [cond("Converged", "False", "t1"), cond("Blocked", "False", "t1")],
            "lastApply": { "time": "t0" },
        });
        let mut now = json!({
            "conditions": [cond("Converged", "True", "t2"), cond("Blocked", "False", "t2"), cond("Stale", "True", "t2")],
            "lastApply": null,
        });
        carry_over(&mut now, &previous);
        let times: Vec<_> = now["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["lastTransitionTime"].as_str().unwrap())
            .collect();
        // Converged flipped, Blocked did not, Stale is new.
        assert_eq!(times, ["t2", "t1", "t2"]);
        assert_eq!(
            now["lastApply"],
            json!({ "time": "t0" }),
            "kept through plan-only rounds"
        );
    }

    #[test]
    fn a_host_that_did_not_move_keeps_the_very_same_status() {
        let previous = json!({ "conditions": [cond("Converged", "True", "t1")] });
        let mut now = json!({ "conditions": [cond("Converged", "True", "t9")], "lastApply": null });
        carry_over(&mut now, &previous);
        assert_eq!(now, previous, "no lastApply key, the old transition time");
        assert!(same_status(
            &json!({ "a": null, "b": [{ "c": 1, "d": null }] }),
            &json!({ "b": [{ "c": 1 }] })
        ));
        assert!(!same_status(&json!({ "a": 1 }), &json!({})));
        assert!(!same_status(&json!([1]), &json!([1, 2])));
        // A first status keeps its own times.
        let mut first =
            json!({ "conditions": [cond("Converged", "True", "t9")], "lastApply": null });
        carry_over(&mut first, &serde_json::Value::Null);
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "t9");
    }
}
