//! `nemoclaw apply`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::Consent;
use super::{CliError, Exit, context, ui};
use crate::apply::{self as executor, lock};
use crate::plan::{self as planner, Plan, render};

/// Carry out the plan for this host: show it, ask, act step by step, then observe again and check
/// the host converged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired-state file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "nemoclaw.yaml",
        value_name = "FILE"
    )]
    file: PathBuf,
    /// Do not ask for confirmation. Required when stdin is not a terminal.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Consent to riskier steps: `replace` (recreate, rotate) or `destroy` (data loss).
    #[arg(long, value_enum, value_name = "CLASS")]
    allow: Vec<Consent>,
}

pub fn run(args: &Args, color: bool) -> Result<Exit, CliError> {
    let desired = context::load_desired(&args.file, color)?;
    let lock_path = context::lock_path();
    let _lock = lock::acquire(&lock_path).map_err(|e| {
        let hint = match &e {
            lock::LockError::Held { .. } => {
                "wait for it to finish; the lock is released when that process exits"
            }
            lock::LockError::Open { .. } => "set NEMOCLAW_LOCK_FILE to a writable path",
        };
        CliError::from_error("cannot take the host lock", &e).hint(hint)
    })?;
    let rt = context::runtime()?;
    let opts = context::observe_options(Some(&desired));
    let options = super::plan::options(&args.allow);
    let style = render::Style { color };
    let apply_context = context::apply_context(&desired);

    let observed = rt.block_on(crate::observe::observe(&opts));
    let plan = planner::plan(&desired, &observed, &options);
    ui::print(&render::render_human(&plan, style));
    if !plan.has_changes() {
        return Ok(if plan.is_blocked() {
            Exit::Blocked
        } else {
            Exit::Ok
        });
    }
    confirm(args.yes)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let report = rt.block_on(async {
        let flag = Arc::clone(&interrupted);
        tokio::spawn(async move {
            let mut count = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                count += 1;
                if count == 1 {
                    flag.store(true, Ordering::SeqCst);
                    ui::eprint("\nInterrupt received: finishing the running step and starting nothing new. Press Ctrl-C again to abort at once.\n");
                } else {
                    ui::eprint("\nAborted.\n");
                    std::process::exit(Exit::Interrupted as i32);
                }
            }
        });
        executor::execute(&plan, &apply_context, &ui::LineReporter, &interrupted).await
    });

    // Convergence is judged by looking again, never by trusting the steps' own reports.
    let after = planner::plan(
        &desired,
        &rt.block_on(crate::observe::observe(&opts)),
        &options,
    );
    ui::print(&format!("\n{}\n", closing_line(&plan, &report, &after)));
    let mut codes = vec![Exit::Ok];
    if report.interrupted {
        codes.push(Exit::Interrupted);
    }
    if report.any_stale() {
        codes.push(Exit::Stale);
    }
    if report.any_failed() || (report.done() > 0 && after.has_changes()) {
        codes.push(Exit::NotConverged);
    }
    if after.is_blocked() || plan.is_blocked() {
        codes.push(Exit::Blocked);
    }
    Ok(Exit::first_of(codes))
}

fn confirm(yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            "refusing to apply without confirmation: stdin is not a terminal",
        )
        .hint("review the plan above, then re-run with `--yes`"));
    }
    ui::eprint("\nDo you want to perform these actions? Only `yes` will be accepted: ");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::new("apply cancelled; nothing was changed"))
    }
}

fn closing_line(plan: &Plan, report: &executor::ApplyReport, after: &Plan) -> String {
    let done = report.done();
    let ran = format!(
        "{done} of {} step{} done",
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" }
    );
    if report.interrupted {
        return format!("Apply interrupted: {ran}. Run `nemoclaw plan` to see what is left.");
    }
    if after.is_converged() {
        return format!(
            "Apply complete: {ran}. The host now matches {}.",
            plan.desired.path
        );
    }
    if after.has_changes() {
        return format!(
            "Apply finished but the host did not converge: {ran}; planning again still shows {} change(s): {}",
            after.changes().count(),
            after
                .changes()
                .map(|s| s.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    format!(
        "Apply finished: {ran}; blocked steps remain (see above) and need a person or an `--allow`."
    )
}
