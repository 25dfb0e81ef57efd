//! The plans the agent reported as `status.plan`, kept on this host so that an approval that no
//! longer matches a fresh plan can say which fact moved — the same comparison `nemoclaw apply
//! PLAN` makes with a saved plan (`plan::saved::rederive`). Saved plans in the state directory
//! (`<state>/agent-plans/<sha256>.json`, 0600 in a 0700 directory), the newest few only.

use std::path::{Path, PathBuf};

use crate::model::{Desired, Observed};
use crate::plan::Plan;
use crate::plan::saved::{Mismatch, SavedPlan, rederive};

/// How many reported plans are kept (an approval names one of the latest).
const KEEP: usize = 16;

fn dir(state: &Path) -> PathBuf {
    state.join("agent-plans")
}

/// Keeps `plan`, as reported, for a later approval's comparison. Plans without changes have
/// nothing to approve and are not kept. A plan that cannot be kept is logged: the approval still
/// works, only its refusal says less.
pub fn keep(state: &Path, plan: &Plan) {
    if !plan.has_changes() {
        return;
    }
    let dir = dir(state);
    let saved = SavedPlan::new(plan.clone());
    let path = dir.join(format!("{}.json", saved.plan_sha256));
    let written = crate::apply::files::private_dir(&dir).and_then(|()| {
        let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        crate::apply::files::write_private(&path, &text)
    });
    if let Err(e) = written {
        tracing::warn!("cannot keep the reported plan in {}: {e}", dir.display());
        return;
    }
    prune(&dir);
}

/// Removes all but the newest [`KEEP`] plans.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut plans: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    plans.sort();
    let excess = plans.len().saturating_sub(KEEP);
    for (_, path) in plans.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

/// Why the plan `approved` names is not `fresh`: each reviewed step that moved and the fact that
/// did, or the steps the fresh plan adds; or that this agent never reported that plan.
pub fn explain(
    state: &Path,
    approved: &str,
    fresh: &Plan,
    desired: &Desired,
    observed: &Observed,
) -> String {
    // A hash is a file name only when it is one (no `/`, no `..`).
    let hash = approved.len() == 64 && approved.bytes().all(|b| b.is_ascii_hexdigit());
    let saved = hash
        .then(|| load(&dir(state).join(format!("{approved}.json"))))
        .flatten()
        .filter(|s| s.plan_sha256 == approved);
    let Some(saved) = saved else {
        return "this agent never reported a plan with that hash (or no longer keeps it): review status.plan and approve its sha256".to_owned();
    };
    let moved = match rederive(&saved.plan, fresh, desired, observed) {
        Err(mismatches) => mismatches
            .iter()
            .take(3)
            .map(|m| match m {
                Mismatch::Stale { step, why } | Mismatch::Refused { step, why } => {
                    format!("{step}: {why}")
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        Ok(r) if !r.unreviewed.is_empty() => format!(
            "a fresh plan also has {} step(s) the reviewed one does not: {}",
            r.unreviewed.len(),
            r.unreviewed.join(", ")
        ),
        Ok(_) => {
            "the reviewed steps still hold, but the plan's findings or blocks changed".to_owned()
        }
    };
    format!("{moved}; review status.plan and approve its sha256")
}

fn load(path: &Path) -> Option<SavedPlan> {
    let bytes =
        crate::observe::files::read_regular(path, crate::cli::context::MAX_SNAPSHOT_BYTES).ok()?;
    SavedPlan::parse(std::str::from_utf8(&bytes).ok()?).ok()
}
