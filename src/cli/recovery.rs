//! Reporting (and, during apply, recording) the fate of steps an earlier apply left mid-way.

use std::path::Path;

use super::ui;
use crate::apply::journal::{self, Dangling, Event, Journal};
use crate::model::Observed;
use crate::plan::recovery::{Verdict, judge};

/// Every interrupted step of the journal at `path`, judged against `observed`.
fn judged(path: &Path, observed: &Observed) -> Result<Vec<(Dangling, Verdict, String)>, String> {
    let events = journal::read(path)?;
    Ok(journal::dangling(&events)
        .into_iter()
        .map(|d| {
            let (verdict, detail) = judge(d.action, &d.target, observed);
            (d, verdict, detail)
        })
        .collect())
}

/// Why destructive steps must wait, if they must: an unreadable journal, or an outcome unknown.
fn hold(judged: &Result<Vec<(Dangling, Verdict, String)>, String>) -> Option<String> {
    match judged {
        Err(why) => Some(format!("the apply journal cannot be read ({why})")),
        Ok(all) => {
            let unknown: Vec<&str> = all
                .iter()
                .filter(|(_, v, _)| *v == Verdict::Unknown)
                .map(|(d, _, _)| d.address.as_str())
                .collect();
            (!unknown.is_empty()).then(|| {
                format!(
                    "an interrupted apply left {} in an unknown state; nothing `replace` or riskier runs until the host can be observed fully",
                    unknown.join(", ")
                )
            })
        }
    }
}

/// Judges every interrupted step of the journal at `path` against `observed` and prints what it
/// finds. With `record`, writes each verdict so it is reported once. Returns the reason to hold
/// back destructive steps, if any.
pub fn review(path: &Path, observed: &Observed, record: Option<&Journal>) -> Option<String> {
    let all = judged(path, observed);
    match &all {
        Err(why) => ui::eprint(&format!(
            "warning: the apply journal cannot be read ({why}); destructive steps are held back\n"
        )),
        Ok(steps) if !steps.is_empty() => {
            let mut text = String::from(
                "An earlier apply was interrupted mid-step; judged from what the host shows now:\n",
            );
            for (d, verdict, detail) in steps {
                text.push_str(&format!(
                    "  - {} {} (run {}): {}: {detail}\n",
                    d.action.as_str(),
                    d.address,
                    d.run,
                    verdict.as_str()
                ));
                if let Some(j) = record {
                    let _ = j.record(&Event::Recovered {
                        run: j.run().to_owned(),
                        at_ms: crate::observe::now_ms(),
                        of_run: d.run.clone(),
                        step: d.step.clone(),
                        verdict: *verdict,
                        detail: detail.clone(),
                    });
                }
            }
            text.push('\n');
            ui::print(&text);
        }
        Ok(_) => {}
    }
    hold(&all)
}

/// Like [`review`] but silent (for JSON and markdown output): only whether destructive steps
/// must be held back, by the same rule.
pub fn hold_only(path: &Path, observed: &Observed) -> Option<String> {
    hold(&judged(path, observed))
}
