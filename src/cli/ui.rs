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

use crate::model::text::escape_controls as esc;

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
    // Messages carry others' text (lock holders, CLI output, paths): escaped before colour.
    let mut s = format!("{red}error{reset}: {}\n", esc(&e.message));
    for c in &e.causes {
        s.push_str(&format!("  caused by: {}\n", esc(c)));
    }
    if let Some(h) = &e.hint {
        s.push_str(&format!("  hint: {}\n", esc(h)));
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
        print(&format!("{}: {}\n", step.address, esc(message)));
    }

    fn finished(&self, step: &Step, outcome: &StepOutcome, elapsed: Duration) {
        print(&format!("{}\n", esc(&Self::line(step, outcome, elapsed))));
    }
}

impl LineReporter {
    /// The closing line of a step: `process.4242: done after 1.2s (...)`.
    fn line(step: &Step, outcome: &StepOutcome, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        match outcome {
            StepOutcome::Done(how) => format!("{}: done after {secs:.1}s ({how})", step.address),
            StepOutcome::Skipped(why) => format!("{}: skipped: {why}", step.address),
            StepOutcome::Stale(why) => format!(
                "{}: refused, the host moved since the plan: {why}",
                step.address
            ),
            StepOutcome::Failed(why) => format!("{}: failed after {secs:.1}s: {why}", step.address),
        }
    }
}

/// On a terminal: a live spinner per running step — what it is doing now and how long it has
/// run; several at once when steps run in parallel — each replaced by the same closing line
/// [`LineReporter`] prints. Anywhere else, plain lines.
pub struct TtyReporter {
    bars: indicatif::MultiProgress,
    running: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl TtyReporter {
    /// The reporter for this process's stdout.
    #[must_use]
    pub fn for_stdout() -> Box<dyn Reporter> {
        if std::io::stdout().is_terminal() {
            Box::new(Self {
                bars: indicatif::MultiProgress::new(),
                running: std::sync::Mutex::new(std::collections::HashMap::new()),
            })
        } else {
            Box::new(LineReporter)
        }
    }
}

impl Reporter for TtyReporter {
    fn started(&self, step: &Step) {
        let bar = self.bars.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(format!("{}: {}...", step.address, verb(step)));
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut running) = self.running.lock() {
            running.insert(step.id.clone(), bar);
        }
    }

    fn progress(&self, step: &Step, message: &str) {
        // The spinner shows the elapsed time itself; the periodic reminder is for plain output.
        if message.starts_with("still running...") {
            return;
        }
        if let Ok(running) = self.running.lock()
            && let Some(bar) = running.get(&step.id)
        {
            bar.set_message(format!("{}: {}", step.address, esc(message)));
        }
    }

    fn finished(&self, step: &Step, outcome: &StepOutcome, elapsed: Duration) {
        let bar = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&step.id));
        let line = LineReporter::line(step, outcome, elapsed);
        match bar {
            // Printed above the spinners still running, then this one's spinner goes.
            Some(bar) => {
                let _ = self.bars.println(esc(&line));
                bar.finish_and_clear();
                self.bars.remove(&bar);
            }
            None => print(&format!("{}\n", esc(&line))),
        }
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
