//! Terminal output: stdout carries the command's data, stderr carries errors and prompts.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use super::{CliError, ColorChoice};
use crate::apply::{Reporter, StepOutcome};
use crate::plan::Step;

/// Decides colour: `--color`, then `NO_COLOR`, then whether stdout is a terminal.
pub fn color_enabled(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes to stderr.
pub fn eprint(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Prints `error: …`, each cause as `caused by: …`, then `hint: …`.
pub fn print_error(e: &CliError, color: bool) {
    let (red, reset) = if color {
        ("\x1b[31;1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut s = format!("{red}error{reset}: {}\n", e.message);
    for c in &e.causes {
        s.push_str(&format!("  caused by: {c}\n"));
    }
    if let Some(h) = &e.hint {
        s.push_str(&format!("  hint: {h}\n"));
    }
    eprint(&s);
}

/// Prints apply progress as plain lines: `process.4242: Stopping...`.
pub struct LineReporter;

impl Reporter for LineReporter {
    fn started(&self, step: &Step) {
        print(&format!("{}: {}...\n", step.address, verb(step)));
    }

    fn progress(&self, step: &Step, message: &str) {
        print(&format!("{}: {message}\n", step.address));
    }

    fn finished(&self, step: &Step, outcome: &StepOutcome, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let line = match outcome {
            StepOutcome::Done(how) => format!("{}: done after {secs:.1}s ({how})", step.address),
            StepOutcome::Skipped(why) => format!("{}: skipped: {why}", step.address),
            StepOutcome::Stale(why) => format!(
                "{}: refused, the host moved since the plan: {why}",
                step.address
            ),
            StepOutcome::Failed(why) => format!("{}: failed after {secs:.1}s: {why}", step.address),
        };
        print(&format!("{line}\n"));
    }
}

fn verb(step: &Step) -> &'static str {
    match step.action {
        crate::plan::Action::Stop => "Stopping",
        crate::plan::Action::Create => "Creating",
        crate::plan::Action::Start => "Starting",
        crate::plan::Action::Restart => "Restarting",
        crate::plan::Action::Replace => "Replacing",
        crate::plan::Action::Delete => "Deleting",
        crate::plan::Action::Register => "Registering",
        crate::plan::Action::Unregister => "Unregistering",
        crate::plan::Action::Forward => "Forwarding",
        crate::plan::Action::Write => "Writing",
        crate::plan::Action::FreePort => "Freeing",
        crate::plan::Action::Select => "Selecting",
        crate::plan::Action::Observe => "Observing",
    }
}
