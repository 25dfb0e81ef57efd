//! One resource's reconcile: `spec.desired` read as a file, the host observed and planned,
//! applied when `spec.apply: auto` or an approval allows (exactly as `nemoclaw apply`), and the
//! outcome written as the resource's status. Synchronous: the controller runs it on a blocking
//! thread, `--once` on the main one.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{events, metrics, reviewed};
use crate::cli::{CliError, context};
use crate::fleet::status::{Applied, carry_over, same_status, status};
use crate::spec::crd;

/// Plans one resource, applies it when `spec.apply: auto` or an approval allows, and writes its
/// status. Returns the line to print.
pub(super) fn reconcile(
    rt: &tokio::runtime::Handle,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    shown: &str,
    snapshot: Option<&crate::model::Observed>,
) -> Result<String, CliError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = || crate::observe::time::format_rfc3339(crate::observe::now_ms());
    let desired = match desired_of(obj, shown) {
        Ok(d) => d,
        Err(why) => {
            let status = json!({
                "observedGeneration": generation,
                "conditions": [{
                    "type": "Planned", "status": "False", "reason": "InvalidDesired",
                    "message": why, "lastTransitionTime": now(), "observedGeneration": generation,
                }],
                "agentVersion": env!("CARGO_PKG_VERSION"),
            });
            rt.block_on(write_status(api, &name, status))?;
            return Err(CliError::new(format!("spec.desired is invalid: {why}")));
        }
    };
    let opts = context::observe_options(Some(&desired))?;
    let started = std::time::Instant::now();
    let observed = match snapshot {
        Some(o) => o.clone(),
        None => rt.block_on(crate::observe::observe(&opts)),
    };
    let observe_seconds = started.elapsed().as_secs_f64();
    let journal_path = context::state_dir()?.join("journal.jsonl");
    let hold = crate::cli::recovery::hold_only(&journal_path, &observed);
    let options = crate::cli::plan::options(&[], hold);
    let started = std::time::Instant::now();
    let plan = crate::plan::plan(&desired, &observed, &options);
    let plan_seconds = started.elapsed().as_secs_f64();
    metrics(|m| {
        m.observe_seconds = observe_seconds;
        m.plan_seconds = plan_seconds;
    });
    let spec = &obj.data["spec"];
    let decision = match (decide(spec, &obj.data["status"], &plan), snapshot) {
        // A snapshot is not this host: report what would run, run nothing.
        (Decision::Apply(_), Some(_)) => Decision::PlanOnly,
        (d, _) => d,
    };
    let mut line = crate::plan::render::summary(&plan);
    let (applied, after) = match decision {
        Decision::PlanOnly => (Applied::PlanOnly, None),
        Decision::Stale(approved) => {
            let moved = reviewed::explain(
                &context::state_dir()?,
                &approved,
                &plan,
                &desired,
                &observed,
            );
            let why = format!(
                "spec.approve.planSha256 is {approved}, but a fresh plan of this host is {}: {moved}",
                plan.sha256()
            );
            events::record(rt, api, obj, "approval", "refused", &why);
            (Applied::Stale(why), None)
        }
        Decision::Apply(allow) => {
            let mut consented = options.clone();
            consented.allow.extend(allow);
            let to_apply = crate::plan::plan(&desired, &observed, &consented);
            if !to_apply.has_changes() {
                return finish(
                    rt,
                    api,
                    obj,
                    &name,
                    generation,
                    &plan,
                    &observed,
                    &Applied::PlanOnly,
                    line,
                );
            }
            let result = apply(rt, &to_apply, &desired, &consented, &opts, &observed)?;
            line = format!("applied: exit {}", result.exit as u8);
            for (step, outcome, message) in &result.outcomes {
                events::record(rt, api, obj, step, outcome, message);
                let action = step.split(':').next().unwrap_or_default().to_owned();
                metrics(|m| {
                    *m.steps.entry((action, (*outcome).to_owned())).or_default() += 1;
                });
            }
            // The look apply took afterwards, planned without consent: what a reviewer approves.
            let again = result.after;
            let after = crate::plan::plan(&desired, &again, &options);
            (
                Applied::Ran {
                    // The reviewed plan's hash (what an approval names), not the consented one's.
                    plan_sha256: plan.sha256(),
                    exit: result.exit as u8,
                    done: result.done,
                    failed: result.failed,
                },
                Some((after, again)),
            )
        }
    };
    let (plan, observed) = after.unwrap_or((plan, observed));
    finish(
        rt, api, obj, &name, generation, &plan, &observed, &applied, line,
    )
}

/// Writes the round's status and returns its line.
#[allow(clippy::too_many_arguments)]
fn finish(
    rt: &tokio::runtime::Handle,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    generation: Option<i64>,
    plan: &crate::plan::Plan,
    observed: &crate::model::Observed,
    applied: &Applied,
    line: String,
) -> Result<String, CliError> {
    let now = crate::observe::time::format_rfc3339(crate::observe::now_ms());
    let resource = format!(
        "{}/{name}",
        obj.metadata.namespace.as_deref().unwrap_or_default()
    );
    metrics(|m| {
        m.converged.insert(resource, u8::from(plan.is_converged()));
    });
    let mut status = status(generation, plan, observed, applied, &now);
    let previous = &obj.data["status"];
    carry_over(&mut status, previous);
    // What a reviewer may approve next: kept so that a stale approval can say what moved.
    reviewed::keep(&context::state_dir()?, plan);
    // Nothing moved: no write, so no watch event for every agent of the namespace.
    if same_status(&status, previous) {
        return Ok(line + " (status unchanged)");
    }
    rt.block_on(write_status(api, name, status))?;
    Ok(line + " (status written)")
}

/// What a round does with the fresh plan.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Report it.
    PlanOnly,
    /// Report that the approval names another plan (this hash).
    Stale(String),
    /// Apply it, with consent to these classes beyond `disrupt`.
    Apply(Vec<crate::plan::Risk>),
}

/// `spec.approve` with the fresh plan's hash runs that plan with its consent; with another hash
/// nothing runs (stale). An approval runs once: when `lastApply` is the plan it names, it is
/// done, and the resource is as if it had none. Otherwise `spec.apply: auto` runs what needs no
/// consent; `never` plans.
fn decide(spec: &Value, previous: &Value, plan: &crate::plan::Plan) -> Decision {
    let approve = spec.get("approve").filter(|a| !a.is_null());
    let done = approve.is_some_and(|a| {
        a["planSha256"].is_string() && a["planSha256"] == previous["lastApply"]["planSha256"]
    });
    if let Some(approve) = approve.filter(|_| !done) {
        let approved = approve["planSha256"].as_str().unwrap_or_default();
        let fresh = plan.sha256();
        if approved != fresh {
            return Decision::Stale(approved.to_owned());
        }
        let allow = approve["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| match a.as_str() {
                Some("replace") => Some(crate::plan::Risk::Replace),
                Some("destroy") => Some(crate::plan::Risk::Destroy),
                _ => None,
            })
            .collect();
        return Decision::Apply(allow);
    }
    if spec["apply"].as_str() == Some("auto") && plan.has_changes() {
        return Decision::Apply(Vec::new());
    }
    Decision::PlanOnly
}

/// Applies `plan` exactly as `nemoclaw apply` does: under the host lock and the journal, judging
/// any interrupted earlier apply first.
fn apply(
    rt: &tokio::runtime::Handle,
    plan: &crate::plan::Plan,
    desired: &crate::model::Desired,
    options: &crate::plan::PlanOptions,
    opts: &crate::observe::ObserveOptions,
    observed: &crate::model::Observed,
) -> Result<crate::cli::apply::ApplyResult, CliError> {
    let _lock = crate::apply::lock::acquire(&context::lock_path()?)
        .map_err(|e| CliError::from_error("cannot take the host lock", &e))?;
    let journal =
        crate::apply::journal::Journal::open(&context::state_dir()?, crate::observe::now_ms())
            .map_err(|e| CliError::from_error("cannot open the apply journal", &e))?;
    // Judged against the look the plan was made from, as `nemoclaw apply` does.
    let _ = crate::cli::recovery::review(journal.path(), observed, Some(&journal));
    crate::cli::apply::execute(rt, plan, desired, options, journal, opts, 10)
}

/// `spec.desired` as a desired-state file, checked as `-f` checks one.
pub(super) fn desired_of(
    obj: &DynamicObject,
    shown: &str,
) -> Result<crate::model::Desired, String> {
    let Some(Value::Object(body)) = obj.data["spec"].get("desired") else {
        return Err("there is no `spec.desired` mapping".to_owned());
    };
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".to_owned(), json!(crate::spec::API_VERSION));
    doc.insert("kind".to_owned(), json!("Host"));
    doc.extend(
        body.iter()
            .filter(|(k, _)| *k != "apiVersion" && *k != "kind")
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    // JSON is YAML: the same bounded front end and checks as a file.
    let text = serde_json::to_string_pretty(&Value::Object(doc)).map_err(|e| e.to_string())?;
    let mut desired = crate::spec::load(shown, &text).map_err(|diags| {
        diags
            .iter()
            .take(3)
            .map(|d| format!("`{}`: {}", d.path, d.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    context::finish_desired(&mut desired, shown).map_err(|e| e.message)?;
    Ok(desired)
}

async fn write_status(api: &Api<DynamicObject>, name: &str, status: Value) -> Result<(), CliError> {
    let patch = json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": crd::KIND,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(crate::fleet::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| CliError::from_error(format!("cannot write the status of `{name}`"), &e))
}
