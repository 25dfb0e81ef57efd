//! Saved plans (`nemoclaw plan --out FILE`): self-contained, hashed, and refused when stale.
//!
//! A saved plan holds the desired file's path and SHA-256 and every step with the facts it was
//! planned against (a process's pid and start time, a container's id and status, ...). `apply
//! FILE` refuses the whole plan when the desired file changed, and each step refuses itself when
//! its facts moved. It holds no secret values: environment values are referenced by key and hash.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Action, Plan, Step, StopProcess, Target};
use crate::model::{Desired, Millis, Observed};

/// Version of the saved-plan format. Minor bumps only add keys.
pub const SAVED_PLAN_FORMAT_VERSION: &str = "1.0";

/// The `kind` every saved plan carries.
pub const SAVED_PLAN_KIND: &str = "nemoclaw-plan";

/// A plan as written to disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Format version, see [`SAVED_PLAN_FORMAT_VERSION`].
    pub format_version: String,
    /// Always [`SAVED_PLAN_KIND`].
    pub kind: String,
    /// The nemoclaw that wrote it.
    pub nemoclaw_version: String,
    /// SHA-256 of `plan`'s canonical JSON; a plan edited by hand no longer matches.
    pub plan_sha256: String,
    /// The plan.
    pub plan: Plan,
}

impl SavedPlan {
    /// Wraps a plan for saving.
    #[must_use]
    pub fn new(plan: Plan) -> Self {
        Self {
            format_version: SAVED_PLAN_FORMAT_VERSION.to_owned(),
            kind: SAVED_PLAN_KIND.to_owned(),
            nemoclaw_version: env!("CARGO_PKG_VERSION").to_owned(),
            plan_sha256: plan.sha256(),
            plan,
        }
    }

    /// Reads a saved plan, checking its kind, version and hash.
    pub fn parse(text: &str) -> Result<Self, String> {
        let saved: Self = serde_json::from_str(text).map_err(|e| {
            format!(
                "line {}, column {}: not a saved plan: {e}",
                e.line(),
                e.column()
            )
        })?;
        if saved.kind != SAVED_PLAN_KIND {
            return Err(format!(
                "`kind` is `{}`, not `{SAVED_PLAN_KIND}`",
                saved.kind
            ));
        }
        let major = |v: &str| v.split('.').next().unwrap_or("").to_owned();
        if major(&saved.format_version) != major(SAVED_PLAN_FORMAT_VERSION) {
            return Err(format!(
                "format {} cannot be read by this nemoclaw (it reads {}.x)",
                saved.format_version,
                major(SAVED_PLAN_FORMAT_VERSION)
            ));
        }
        if saved.plan.sha256() != saved.plan_sha256 {
            // Neither hash is printed: the computed one is exactly what a forger would need.
            return Err(
                "the plan was modified after it was saved (its sha256 does not match); plan again"
                    .to_owned(),
            );
        }
        Ok(saved)
    }
}

/// Why a saved step will not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The host moved since the plan was saved: a fresh plan no longer has this step as saved.
    /// Exit 4: plan again.
    Stale {
        /// The saved step's id.
        step: String,
        /// The fact that moved.
        why: String,
    },
    /// The step breaks a rule the planner always keeps: no plan of this file could hold it, so
    /// the saved plan was forged or edited. Exit 1.
    Refused {
        /// The saved step's id.
        step: String,
        /// The rule it breaks.
        why: String,
    },
}

/// The steps to apply for a saved plan, re-derived from a fresh plan of the same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rederived {
    /// The saved plan's steps, each replaced by the fresh plan's identical step (with the fresh
    /// plan's consent and blocks); findings are the fresh plan's.
    pub plan: Plan,
    /// Ids of steps the fresh plan has that the saved one does not: not applied.
    pub unreviewed: Vec<String>,
}

/// Re-derives a saved plan: every saved step must be one the planner can produce ([`admissible`])
/// and the fresh plan — from the same desired file and a fresh observation, with the same
/// consent — must hold the same step: same id, action, risk, address, dependencies and target
/// (every fact it was planned against). Only then is it applied, in the fresh plan's form. Any
/// mismatch refuses the whole saved plan before anything runs: what is applied is exactly what
/// was reviewed, or nothing.
pub fn rederive(
    saved: &Plan,
    fresh: &Plan,
    desired: &Desired,
    observed: &Observed,
) -> Result<Rederived, Vec<Mismatch>> {
    let by_id: HashMap<&str, &Step> = fresh.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut mismatches = Vec::new();
    let mut steps = Vec::with_capacity(saved.steps.len());
    for s in &saved.steps {
        if let Err(why) = admissible(s, desired, observed) {
            mismatches.push(Mismatch::Refused {
                step: s.id.clone(),
                why,
            });
            continue;
        }
        match by_id.get(s.id.as_str()) {
            Some(f) if same_step(s, f) => {
                let mut step = (*f).clone();
                // Consent is this apply's (`--allow`), as the fresh plan applied it. A step saved
                // blocked for want of a person was reviewed as not running: it stays so.
                if step.blocked.is_none()
                    && let Some(b) = s.blocked.as_ref().filter(|b| b.allow.is_none())
                {
                    step.blocked = Some(b.clone());
                }
                steps.push(step);
            }
            Some(f) => mismatches.push(Mismatch::Stale {
                step: s.id.clone(),
                why: moved(s, f),
            }),
            None => mismatches.push(Mismatch::Stale {
                step: s.id.clone(),
                why: vanished(s, fresh, observed),
            }),
        }
    }
    if !mismatches.is_empty() {
        return Err(mismatches);
    }
    let saved_ids: BTreeSet<&str> = saved.steps.iter().map(|s| s.id.as_str()).collect();
    let unreviewed = fresh
        .changes()
        .filter(|f| !saved_ids.contains(f.id.as_str()))
        .map(|f| f.id.clone())
        .collect();
    Ok(Rederived {
        plan: Plan {
            desired: saved.desired.clone(),
            steps,
            findings: fresh.findings.clone(),
        },
        unreviewed,
    })
}

fn same_step(a: &Step, b: &Step) -> bool {
    a.action == b.action
        && a.risk == b.risk
        && a.address == b.address
        && a.depends_on == b.depends_on
        && a.target == b.target
}

/// Rules the planner never breaks, checked against the file and the host as they are now. A
/// saved step that breaks one was not made by the planner from this file.
pub fn admissible(step: &Step, desired: &Desired, observed: &Observed) -> Result<(), String> {
    if step.id != format!("{}:{}", step.action.as_str(), step.address) {
        return Err(format!(
            "its id is not `{}:{}`",
            step.action.as_str(),
            step.address
        ));
    }
    let c = &desired.cleanup;
    match &step.target {
        Target::Process(p) => {
            stoppable(p, observed)?;
            let forward = super::forward_process::forward_process(&p.cmdline).is_some();
            let command = p.cmdline.join(" ");
            if !forward && !c.markers.iter().any(|m| command.contains(m.as_str())) {
                return Err(format!(
                    "the command line of pid {} holds none of the file's cleanup markers",
                    p.pid
                ));
            }
            if let Some(port) = p.ports.iter().find(|p| c.protected_ports.contains(p)) {
                return Err(format!("port {port} is in `cleanup.protectedPorts`"));
            }
            graces(p, c.term_grace, c)
        }
        Target::GatewayProcess(g) => {
            if let Some(crate::model::GatewayRuntime::DockerDriver {
                binary: Some(binary),
                ..
            }) = &desired.gateway.runtime
                && &g.binary != binary
            {
                return Err(format!(
                    "it runs `{}`, not the file's gateway binary `{binary}`",
                    g.binary
                ));
            }
            if g.run_as_uid != observed.host.invoking_uid {
                return Err(format!(
                    "it runs the gateway as uid {}, not as you (uid {})",
                    g.run_as_uid, observed.host.invoking_uid
                ));
            }
            if let Some(stop) = &g.stop {
                stoppable(stop, observed)?;
                graces(stop, desired.gateway.stop_grace, c)?;
            }
            Ok(())
        }
        Target::Volume { name, .. } if !desired.destroy_volumes.contains(name) => Err(format!(
            "volume `{name}` is not named in the file's `destroy`"
        )),
        Target::Container(t) => match (&t.spec, &desired.gateway.runtime) {
            (Some(spec), Some(crate::model::GatewayRuntime::LegacyK3s { image, .. }))
                if &spec.image != image =>
            {
                Err(format!(
                    "it creates the container from `{}`, not the file's image `{image}`",
                    spec.image
                ))
            }
            (Some(_), Some(crate::model::GatewayRuntime::DockerDriver { .. }) | None) => {
                Err("the file declares no legacy gateway container to create".to_owned())
            }
            _ => Ok(()),
        },
        Target::Sandbox(s) if step.action == Action::Create && !desired.declares(&s.name) => {
            Err(format!("sandbox `{}` is not declared in the file", s.name))
        }
        Target::Sandbox(s)
            if step.action == Action::Delete && !desired.prune_sandboxes.contains(&s.name) =>
        {
            Err(format!(
                "sandbox `{}` is not named in the file's prune list",
                s.name
            ))
        }
        _ => Ok(()),
    }
}

/// A process the engine may signal at all: owned by the invoking user and not the engine or one
/// of its ancestors (checked now, not as saved).
fn stoppable(p: &StopProcess, observed: &Observed) -> Result<(), String> {
    let host = &observed.host;
    if p.uid != host.invoking_uid {
        return Err(format!(
            "pid {} is owned by uid {}, not by you (uid {})",
            p.pid, p.uid, host.invoking_uid
        ));
    }
    if p.pid == host.engine_pid || host.engine_ancestors.contains(&p.pid) {
        return Err(format!(
            "pid {} is this engine or one of its ancestors",
            p.pid
        ));
    }
    Ok(())
}

fn graces(p: &StopProcess, term: Millis, c: &crate::model::Cleanup) -> Result<(), String> {
    for (what, saved, file) in [
        ("term grace", p.term_grace, term),
        ("kill grace", p.kill_grace, c.kill_grace),
        (
            "port-free timeout",
            p.port_free_timeout,
            c.port_free_timeout,
        ),
    ] {
        if saved != file {
            return Err(format!(
                "its {what} is {} ms; the file says {} ms",
                saved.0, file.0
            ));
        }
    }
    Ok(())
}

/// The first facts that differ between the saved step and the fresh plan's step of the same id.
fn moved(saved: &Step, fresh: &Step) -> String {
    if let (Target::Container(a), Target::Container(b)) = (&saved.target, &fresh.target)
        && a.id != b.id
    {
        return format!(
            "container `{}` was recreated since the plan (id {} now, {} planned)",
            a.name,
            short(b.id.as_deref()),
            short(a.id.as_deref())
        );
    }
    let mut diffs = Vec::new();
    let (a, b) = (to_value(saved), to_value(fresh));
    differences("", &a, &b, &mut diffs);
    if diffs.is_empty() {
        return "its risk or dependencies differ in a fresh plan".to_owned();
    }
    let more = diffs.len().saturating_sub(3);
    diffs.truncate(3);
    let mut text = format!("since the plan: {}", diffs.join("; "));
    if more > 0 {
        text.push_str(&format!(" (and {more} more)"));
    }
    text
}

fn short(id: Option<&str>) -> String {
    id.map_or_else(|| "none".to_owned(), |i| i.chars().take(12).collect())
}

fn to_value(step: &Step) -> serde_json::Value {
    serde_json::json!({
        "risk": step.risk,
        "depends_on": step.depends_on,
        "target": step.target,
    })
}

fn differences(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!(
            "`{path}` was {} when planned, is {} now",
            brief(a),
            brief(b)
        )),
        _ => {}
    }
}

fn brief(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// Why a fresh plan no longer has the saved step.
fn vanished(saved: &Step, fresh: &Plan, observed: &Observed) -> String {
    let mut why = match &saved.target {
        Target::Process(p) => match observed.processes.get(&p.pid) {
            Some(now) if now.start_time == p.start_time => format!(
                "process {} runs as planned, but a fresh plan does not stop it",
                p.pid
            ),
            _ => format!(
                "process {} (started at tick {}) is gone or was replaced since the plan",
                p.pid, p.start_time
            ),
        },
        _ => format!("a fresh plan has no step `{}`", saved.id),
    };
    let ports: BTreeSet<u16> = match &saved.target {
        Target::Process(p) => p.ports.iter().copied().collect(),
        _ => BTreeSet::new(),
    };
    let instead: Vec<&str> = fresh
        .steps
        .iter()
        .filter(|f| {
            f.address == saved.address
                || matches!(&f.target, Target::Process(p) if p.ports.iter().any(|x| ports.contains(x)))
        })
        .map(|f| f.id.as_str())
        .take(3)
        .collect();
    if !instead.is_empty() {
        why.push_str(&format!(
            "; a fresh plan has `{}` instead",
            instead.join("`, `")
        ));
    } else if let Some(f) = fresh.findings.iter().find(|f| f.address == saved.address) {
        why.push_str(&format!("; now: {}", f.message));
    }
    why
}
