//! Saved plans (`nemoclaw plan --out FILE`): self-contained, hashed, and refused when stale.
//!
//! A saved plan holds the desired file's path and SHA-256 and every step with the facts it was
//! planned against (a process's pid and start time, a container's id and status, ...). `apply
//! FILE` refuses the whole plan when the desired file changed, and each step refuses itself when
//! its facts moved. It holds no secret values: environment values are referenced by key and hash.

use serde::{Deserialize, Serialize};

use super::Plan;

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
        let actual = saved.plan.sha256();
        if actual != saved.plan_sha256 {
            return Err(format!(
                "the plan was modified after it was saved (sha256 {actual}, recorded {}); plan again",
                saved.plan_sha256
            ));
        }
        Ok(saved)
    }
}
