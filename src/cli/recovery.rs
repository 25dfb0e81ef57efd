//! Reporting (and, during apply, recording) the fate of steps an earlier apply left mid-way.

use std::path::Path;

use super::ui;
use crate::apply::journal::{self, Event, Journal};
use crate::model::Observed;
use crate::plan::recovery::{Verdict, judge};

/// Judges every interrupted step of the journal at `path` against `observed` and prints what it
/// finds. With `record`, writes each verdict so it is reported once. Returns the reason to hold
/// back destructive steps when some outcome stays unknown.
pub fn review(path: &Path, observed: &Observed, record: Option<&Journal>) -> Option<String> {
    let events = match journal::read(path) {
        Ok(e) => e,
        Err(why) => {
            ui::eprint(&format!(
                "warning: the apply journal cannot be read ({why}); destructive steps are held back\n"
            ));
            return Some(format!("the apply journal cannot be read ({why})"));
        }
    };
    let dangling = journal::dangling(&events);
    if dangling.is_empty() {
        return None;
    }
    let mut text = String::from(
        "An earlier apply was interrupted mid-step; judged from what the host shows now:\n",
    );
    let mut unknown = Vec::new();
    for d in &dangling {
        let (verdict, detail) = judge(d.action, &d.target, observed);
        text.push_str(&format!(
            "  - {} {} (run {}): {}: {detail}\n",
            d.action.as_str(),
            d.address,
            d.run,
            verdict.as_str()
        ));
        if verdict == Verdict::Unknown {
            unknown.push(d.address.clone());
        }
        if let Some(j) = record {
            let _ = j.record(&Event::Recovered {
                run: j.run().to_owned(),
                at_ms: crate::observe::now_ms(),
                of_run: d.run.clone(),
                step: d.step.clone(),
                verdict,
                detail,
            });
        }
    }
    text.push('\n');
    ui::print(&text);
    (!unknown.is_empty()).then(|| {
        format!(
            "an interrupted apply left {} in an unknown state; nothing `replace` or riskier runs until the host can be observed fully",
            unknown.join(", ")
        )
    })
}

/// Like [`review`] but silent: only whether destructive steps must be held back.
pub fn hold_only(path: &Path, observed: &Observed) -> Option<String> {
    let dangling = journal::dangling(&journal::read(path).ok()?);
    let unknown: Vec<String> = dangling
        .iter()
        .filter(|d| judge(d.action, &d.target, observed).0 == Verdict::Unknown)
        .map(|d| d.address.clone())
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "an interrupted apply left {} in an unknown state; nothing `replace` or riskier runs until the host can be observed fully",
            unknown.join(", ")
        )
    })
}
