//! `nemoclaw history`.

use std::collections::BTreeMap;

use super::{CliError, Exit, context, ui};
use crate::apply::journal::{self, Event};
use crate::observe::time::format_rfc3339;

/// List past applies on this host from the journal (`$XDG_STATE_HOME/nemoclaw/journal.jsonl`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Human)]
    output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Default, serde::Serialize)]
struct Run {
    run: String,
    started: String,
    plan_sha256: String,
    desired_path: String,
    steps: usize,
    outcomes: BTreeMap<String, usize>,
    interrupted_steps: Vec<String>,
    exit: Option<u8>,
}

pub fn run(args: &Args) -> Result<Exit, CliError> {
    let path = context::state_dir()?.join("journal.jsonl");
    // The rotated generation first, then the live journal: runs in the order they happened.
    let mut events = journal::read(&journal::rotated(&path))
        .map_err(|why| CliError::new(format!("cannot read the journal: {why}")))?;
    events.extend(
        journal::read(&path)
            .map_err(|why| CliError::new(format!("cannot read the journal: {why}")))?,
    );
    // One pass, indexed by run: a journal of 100,000 applies is read in linear time. A step is
    // "killed mid-step" when its run recorded an intent and no outcome — also after a later run
    // judged it (the verdict is shown beside it).
    let mut runs: Vec<Run> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut open: std::collections::HashMap<(&str, &str), ()> = std::collections::HashMap::new();
    let mut verdicts: std::collections::HashMap<(&str, &str), &'static str> =
        std::collections::HashMap::new();
    for e in &events {
        match e {
            Event::Start {
                run,
                at_ms,
                plan_sha256,
                desired_path,
                steps,
                ..
            } => {
                index.insert(run.as_str(), runs.len());
                runs.push(Run {
                    run: run.clone(),
                    started: format_rfc3339(*at_ms),
                    plan_sha256: plan_sha256.clone(),
                    desired_path: desired_path.clone(),
                    steps: *steps,
                    ..Run::default()
                });
            }
            Event::Intent { run, step, .. } => {
                open.insert((run.as_str(), step.as_str()), ());
            }
            Event::Outcome {
                run, step, outcome, ..
            } => {
                open.remove(&(run.as_str(), step.as_str()));
                if let Some(&r) = index.get(run.as_str()) {
                    *runs[r].outcomes.entry(outcome.clone()).or_default() += 1;
                }
            }
            Event::End { run, exit, .. } => {
                if let Some(&r) = index.get(run.as_str()) {
                    runs[r].exit = Some(*exit);
                }
            }
            Event::Recovered {
                of_run,
                step,
                verdict,
                ..
            } => {
                verdicts.insert((of_run.as_str(), step.as_str()), verdict.as_str());
            }
        }
    }
    let mut killed: Vec<(&str, &str)> = open.into_keys().collect();
    killed.sort_unstable();
    for (run, step) in killed {
        if let Some(&r) = index.get(run) {
            runs[r]
                .interrupted_steps
                .push(match verdicts.get(&(run, step)) {
                    Some(v) => format!("{step} (judged {v} later)"),
                    None => step.to_owned(),
                });
        }
    }
    if args.output == Format::Json {
        let text = serde_json::to_string_pretty(&runs)
            .map_err(|e| CliError::from_error("cannot render history", &e))?;
        ui::print(&format!("{text}\n"));
        return Ok(Exit::Ok);
    }
    if runs.is_empty() {
        ui::print(&format!("No applies recorded in {}.\n", path.display()));
        return Ok(Exit::Ok);
    }
    let mut out =
        String::from("STARTED               RUN                    PLAN          STEPS  RESULT\n");
    for r in &runs {
        let counts: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let result = match r.exit {
            Some(0) => "converged".to_owned(),
            Some(code) => format!("exit {code} ({})", meaning(code)),
            None if !r.interrupted_steps.is_empty() => {
                format!("killed mid-step: {}", r.interrupted_steps.join(", "))
            }
            None => "no end recorded (killed between steps?)".to_owned(),
        };
        out.push_str(&format!(
            "{:<21} {:<22} {:<13} {:<6} {result}{}\n",
            r.started,
            r.run,
            &r.plan_sha256[..r.plan_sha256.len().min(12)],
            r.steps,
            if counts.is_empty() {
                String::new()
            } else {
                format!(" [{}]", counts.join(", "))
            }
        ));
    }
    out.push_str(&format!(
        "\n{} appl{} in {}\n",
        runs.len(),
        if runs.len() == 1 { "y" } else { "ies" },
        path.display()
    ));
    ui::print(&out);
    Ok(Exit::Ok)
}

fn meaning(code: u8) -> &'static str {
    match code {
        1 => "error",
        3 => "blocked steps left",
        4 => "stale: the host moved since the plan",
        5 => "not converged",
        130 => "interrupted",
        _ => "see `nemoclaw --help`",
    }
}
