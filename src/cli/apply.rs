//! `nemoclaw apply`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::Consent;
use super::{CliError, Exit, context, recovery, ui};
use crate::apply::{self as executor, journal, lock};
use crate::model::Desired;
use crate::plan::saved::SavedPlan;
use crate::plan::{self as planner, Plan, PlanOptions, render};

/// Carry out the plan for this host: show it, ask, act step by step, then observe again and check
/// the host converged. With PLAN (from `nemoclaw plan --out`), carry out exactly that plan.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A saved plan to apply exactly (from `nemoclaw plan --out PLAN`). Refused when its desired
    /// file changed or, step by step, when the facts a step was planned against moved.
    #[arg(value_name = "PLAN", conflicts_with = "file")]
    plan: Option<PathBuf>,
    /// The desired-state file (when no PLAN is given).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Do not ask for confirmation. Required when stdin is not a terminal.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Consent to riskier steps: `replace` (recreate, rotate) or `destroy` (data loss), or to one
    /// step only: `destroy=volume.openshell-cluster-old`. Repeatable; binds to this apply's plan.
    #[arg(long, value_name = "CLASS[=ADDRESS]", value_parser = super::plan::parse_consent)]
    allow: Vec<Consent>,
    /// How many steps may run at once. Independent steps (stale listeners on different ports,
    /// different sandboxes) run together; steps that touch the same port, process, container or
    /// sandbox never overlap and keep the plan's order. `1` runs one step at a time.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallelism: u16,
}

pub fn run(args: &Args, color: bool) -> Result<Exit, CliError> {
    let saved = match &args.plan {
        Some(path) => Some(load_saved(path)?),
        None => None,
    };
    let file = match &saved {
        Some(s) => PathBuf::from(&s.plan.desired.path),
        None => args
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from("nemoclaw.yaml")),
    };
    let desired = context::load_desired(&file, color)?;
    if let Some(s) = &saved
        && desired.source.sha256 != s.plan.desired.sha256
    {
        ui::print_error(
                &CliError::new(format!(
                    "`{}` changed since the plan was saved (sha256 {}, planned against {}); nothing was applied",
                    file.display(),
                    desired.source.sha256,
                    s.plan.desired.sha256
                ))
                .hint("run `nemoclaw plan --out PLAN` again and review the new plan"),
                color,
            );
        return Ok(Exit::Stale);
    }
    let lock_path = context::lock_path()?;
    let _lock = lock::acquire(&lock_path).map_err(|e| {
        let hint = match &e {
            lock::LockError::Held { .. } => {
                "wait for it to finish; the lock is released when that process exits"
            }
            lock::LockError::Open { .. } => "set NEMOCLAW_LOCK_FILE to a writable path",
        };
        CliError::from_error("cannot take the host lock", &e).hint(hint)
    })?;
    let journal = journal::Journal::open(&context::state_dir()?, crate::observe::now_ms())
        .map_err(|e| CliError::from_error("cannot open the apply journal", &e))?;
    let rt = context::runtime()?;
    let opts = context::observe_options(Some(&desired))?;
    let observed = rt.block_on(crate::observe::observe(&opts));

    // An earlier apply that died mid-step is judged first; an unknown outcome holds back
    // anything destructive.
    let hold = recovery::review(journal.path(), &observed, Some(&journal));
    let options = super::plan::options(&args.allow, hold);
    let fresh = planner::plan(&desired, &observed, &options);
    let plan = match saved {
        Some(s) => match rederive_saved(&s.plan, &fresh, &desired, &observed, color) {
            Ok(plan) => plan,
            Err(exit) => return Ok(exit),
        },
        None => fresh,
    };
    let style = render::Style { color };
    ui::print(&render::render_human(&plan, style));
    if !plan.has_changes() {
        return Ok(if plan.is_blocked() {
            Exit::Blocked
        } else {
            Exit::Ok
        });
    }
    confirm(args.yes)?;
    execute(
        rt.handle(),
        &plan,
        &desired,
        &options,
        journal,
        &opts,
        args.parallelism,
    )
    .map(|r| r.exit)
}

/// A saved plan is never obeyed as written: it is planned afresh, and only steps the fresh plan
/// holds identically run (see [`crate::plan::saved::rederive`]). Anything else refuses the whole
/// plan, naming each step and why: exit 4 when the host moved, 1 when a step could not have come
/// from the planner.
fn rederive_saved(
    saved: &Plan,
    fresh: &Plan,
    desired: &Desired,
    observed: &crate::model::Observed,
    color: bool,
) -> Result<Plan, Exit> {
    use crate::plan::saved::{Mismatch, rederive};
    match rederive(saved, fresh, desired, observed) {
        Ok(r) => {
            if !r.unreviewed.is_empty() {
                ui::eprint(&format!(
                    "Note: a fresh plan also has {} step(s) the saved plan does not ({}); they are not applied. Plan again to review them.\n",
                    r.unreviewed.len(),
                    r.unreviewed.join(", ")
                ));
            }
            Ok(r.plan)
        }
        Err(mismatches) => {
            let forged = mismatches
                .iter()
                .any(|m| matches!(m, Mismatch::Refused { .. }));
            let lines: Vec<String> = mismatches
                .iter()
                .map(|m| match m {
                    Mismatch::Stale { step, why } => format!("  {step}: stale: {why}"),
                    Mismatch::Refused { step, why } => {
                        format!("  {step}: refused: the planner never makes this step: {why}")
                    }
                })
                .collect();
            let (head, hint, exit) = if forged {
                (
                    "the saved plan holds steps no plan of this file could hold; nothing was applied",
                    "the plan was edited or forged: plan again with `nemoclaw plan --out PLAN` and review it",
                    Exit::Error,
                )
            } else {
                (
                    "the host changed since the plan was saved; nothing was applied",
                    "run `nemoclaw plan --out PLAN` again and review the new plan",
                    Exit::Stale,
                )
            };
            ui::print_error(
                &CliError::new(format!("{head}:\n{}", lines.join("\n"))).hint(hint),
                color,
            );
            Err(exit)
        }
    }
}

fn load_saved(path: &std::path::Path) -> Result<SavedPlan, CliError> {
    let bytes =
        crate::observe::files::read_input(path, context::MAX_SNAPSHOT_BYTES).map_err(|e| {
            CliError::from_error(
                format!("cannot read the saved plan `{}`", path.display()),
                &e,
            )
        })?;
    let text = context::utf8(&path.display().to_string(), bytes)?;
    SavedPlan::parse(&text).map_err(|why| {
        CliError::new(format!("`{}` cannot be applied: {why}", path.display()))
            .hint("save a plan with `nemoclaw plan --out PLAN`")
    })
}

/// What one apply did: its exit code and how many steps were done or failed.
pub(super) struct ApplyResult {
    pub exit: Exit,
    pub done: usize,
    pub failed: usize,
    /// Every step that ran or refused: id, `done`/`stale`/`failed`, what happened.
    pub outcomes: Vec<(String, &'static str, String)>,
    /// The host as it was looked at after the steps (convergence was judged on it).
    pub after: crate::model::Observed,
}

/// Carries out `plan` under the caller's host lock: journal start, the steps (in parallel where
/// independent), the legacy gateway's secret follow-up, a fresh look to judge convergence, the
/// closing line, journal end. Also the agent's apply.
pub(super) fn execute(
    rt: &tokio::runtime::Handle,
    plan: &Plan,
    desired: &Desired,
    options: &PlanOptions,
    journal: journal::Journal,
    opts: &crate::observe::ObserveOptions,
    parallelism: u16,
) -> Result<ApplyResult, CliError> {
    let mut apply_context = context::apply_context(desired, opts);
    apply_context.parallelism = usize::from(parallelism);
    // Hashed once: every journal intent carries it.
    apply_context.plan_sha256 = plan.sha256();
    // Recovery has judged every interrupted step by now: a long journal can be moved aside.
    if let Err(e) = journal::rotate_if_large(journal.path()) {
        tracing::warn!(
            "cannot rotate the journal {}: {e}",
            journal.path().display()
        );
    }
    let _ = journal.record(&journal::Event::Start {
        run: journal.run().to_owned(),
        at_ms: crate::observe::now_ms(),
        plan_sha256: apply_context.plan_sha256.clone(),
        desired_path: plan.desired.path.clone(),
        desired_sha256: plan.desired.sha256.clone(),
        steps: plan.steps.len(),
    });
    apply_context.journal = Some(journal.clone());
    let interrupted = Arc::new(AtomicBool::new(false));
    let reporter = ui::TtyReporter::for_stdout();
    let report = rt.block_on(async {
        // Registered before the first step (a handler installed lazily misses an early signal,
        // whose default action kills the process mid-step). SIGTERM means what Ctrl-C means.
        let signals = interrupt_signals();
        let flag = Arc::clone(&interrupted);
        tokio::spawn(async move {
            let Ok((mut int, mut term)) = signals else {
                return;
            };
            let mut count = 0;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                count += 1;
                if count == 1 {
                    flag.store(true, Ordering::SeqCst);
                    ui::eprint(
                        "\nInterrupt received: finishing the running step and starting nothing new. Press Ctrl-C again to abort at once.\n",
                    );
                } else {
                    ui::eprint("\nAborted.\n");
                    std::process::exit(Exit::Interrupted as i32);
                }
            }
        });
        executor::execute(plan, &apply_context, reporter.as_ref(), &interrupted).await
    });
    let mut report = report;
    // An interrupt during the last step started nothing less, but it still arrived: exit 130.
    report.interrupted |= interrupted.load(Ordering::SeqCst);
    if let Some(more) = rt.block_on(follow_up(
        plan,
        desired,
        options,
        opts,
        &report,
        &interrupted,
    )) {
        apply_context.plan_sha256 = more.sha256();
        let extra = rt.block_on(executor::execute(
            &more,
            &apply_context,
            reporter.as_ref(),
            &interrupted,
        ));
        report.interrupted |= extra.interrupted;
        report.outcomes.extend(extra.outcomes);
    }

    // Convergence is judged by looking again, never by trusting the steps' own reports.
    let after_observed = rt.block_on(crate::observe::observe(opts));
    let after = planner::plan(desired, &after_observed, options);
    let exit = exit_for(plan, &report, &after);
    ui::print(&format!(
        "\n{}\n",
        closing_line(plan, &report, &after, exit)
    ));
    let _ = journal.record(&journal::Event::End {
        run: journal.run().to_owned(),
        at_ms: crate::observe::now_ms(),
        exit: exit as u8,
    });
    Ok(ApplyResult {
        exit,
        done: report.done(),
        failed: report
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, executor::StepOutcome::Failed(_)))
            .count(),
        outcomes: report
            .outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, executor::StepOutcome::Skipped(_)))
            .map(|(id, o)| {
                (
                    id.clone(),
                    executor::outcome_kind(o),
                    o.message().to_owned(),
                )
            })
            .collect(),
        after: after_observed,
    })
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

fn interrupt_signals() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    ))
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

/// The legacy gateway's bootstrap secrets cannot be observed while its k3s is down, so a plan
/// that starts (or creates) the container cannot plan them: OpenShell's own start reconciles them
/// once namespace `openshell` exists. So does apply: after the gateway's steps succeeded, it waits
/// for the cluster (up to `gateway.healthTimeout`), plans again, and runs the secret steps that
/// plan holds — creating missing secrets and writing the CLI's bundle; a `replace` still needs its
/// `--allow`. `None` when there is nothing to follow up.
async fn follow_up(
    plan: &Plan,
    desired: &Desired,
    options: &PlanOptions,
    opts: &crate::observe::ObserveOptions,
    report: &executor::ApplyReport,
    interrupted: &AtomicBool,
) -> Option<Plan> {
    let Some(crate::model::GatewayRuntime::LegacyK3s { cluster: true, .. }) =
        &desired.gateway.runtime
    else {
        return None;
    };
    let gateway = format!("gateway.{}", desired.gateway.name);
    let touched = plan.steps.iter().any(|s| {
        s.address == gateway
            && matches!(
                s.action,
                planner::Action::Create
                    | planner::Action::Start
                    | planner::Action::Restart
                    | planner::Action::Replace
            )
    });
    if !touched || report.any_failed() || report.any_stale() || report.interrupted {
        return None;
    }
    let secrets = |s: &planner::Step| {
        s.address.starts_with("secrets.openshell")
            || s.address.starts_with("secret.openshell/")
            || s.address.starts_with("mtls.")
    };
    if plan.steps.iter().any(|s| secrets(s) && s.blocked.is_none()) {
        return None; // The secrets were planned already (the cluster was reachable).
    }
    let deadline = std::time::Instant::now() + desired.gateway.health_timeout.duration();
    ui::eprint("waiting for the gateway's cluster to bootstrap, to reconcile its secrets\n");
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return None;
        }
        let observed = crate::observe::observe(opts).await;
        let ready = matches!(
            &observed.cluster,
            Some(crate::model::Observation::Known { value }) if value.namespace && value.statefulset
        );
        if ready {
            let mut next = planner::plan(desired, &observed, options);
            next.steps
                .retain(|s| secrets(s) || s.id.starts_with("restart:statefulset"));
            return (!next.steps.is_empty()).then_some(next);
        }
        if std::time::Instant::now() >= deadline {
            ui::eprint("the cluster did not bootstrap in time; plan again once it has\n");
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The exit code of an apply, from what ran and what a fresh plan shows.
fn exit_for(plan: &Plan, report: &executor::ApplyReport, after: &Plan) -> Exit {
    let mut codes = vec![Exit::Ok];
    if report.interrupted {
        codes.push(Exit::Interrupted);
    }
    if report.any_stale() {
        codes.push(Exit::Stale);
    }
    // Changes left that a fresh plan would run: not converged, whether or not anything ran.
    if report.any_failed() || after.has_changes() {
        codes.push(Exit::NotConverged);
    }
    if after.is_blocked() || plan.is_blocked() {
        codes.push(Exit::Blocked);
    }
    Exit::first_of(codes)
}

/// The closing line, from the same facts as the exit code, so the two never disagree.
fn closing_line(plan: &Plan, report: &executor::ApplyReport, after: &Plan, exit: Exit) -> String {
    let done = report.done();
    let total = report.outcomes.len().max(plan.steps.len());
    let ran = format!(
        "{done} of {total} step{} done",
        if total == 1 { "" } else { "s" }
    );
    if report.interrupted {
        return format!("Apply interrupted: {ran}. Run `nemoclaw plan` to see what is left.");
    }
    if report.any_stale() {
        return format!(
            "Apply stopped: {ran}; the host moved since the plan (see above). Plan again and review it."
        );
    }
    if report.any_failed() {
        let failed = report
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, executor::StepOutcome::Failed(_)))
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>();
        return format!(
            "Apply failed: {ran}; {} failed ({}), see above.",
            if failed.len() == 1 {
                "one step"
            } else {
                "steps"
            },
            failed.join(", ")
        );
    }
    if after.is_converged() && exit == Exit::Ok {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::StepOutcome;
    use crate::model::DesiredSource;
    use crate::plan::{Action, Blocked, Risk, Step, Target};

    fn step(id: &str, blocked: bool) -> Step {
        Step {
            id: id.to_owned(),
            address: id.to_owned(),
            action: Action::Forward,
            risk: Risk::Create,
            reason: String::new(),
            depends_on: Vec::new(),
            blocked: blocked.then(|| Blocked {
                reason: "x".into(),
                allow: None,
            }),
            target: Target::Ports {
                range: String::new(),
            },
        }
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            desired: DesiredSource {
                path: "nemoclaw.yaml".into(),
                sha256: String::new(),
            },
            steps,
            findings: Vec::new(),
        }
    }

    #[test]
    fn the_closing_line_and_the_exit_code_never_disagree() {
        let one = || plan(vec![step("a", false)]);
        let outcomes = [
            StepOutcome::Done("ok".into()),
            StepOutcome::Failed("boom".into()),
            StepOutcome::Stale("moved".into()),
            StepOutcome::Skipped("blocked".into()),
        ];
        let afters = [plan(vec![]), one(), plan(vec![step("b", true)])];
        for outcome in &outcomes {
            for interrupted in [false, true] {
                for after in &afters {
                    for before in [one(), plan(vec![step("a", true)])] {
                        let report = executor::ApplyReport {
                            outcomes: vec![("a".into(), outcome.clone())],
                            interrupted,
                        };
                        let exit = exit_for(&before, &report, after);
                        let line = closing_line(&before, &report, after, exit);
                        let expected = match exit {
                            Exit::Ok => "Apply complete",
                            Exit::Interrupted => "Apply interrupted",
                            Exit::Stale => "Apply stopped",
                            Exit::NotConverged if report.any_failed() => "Apply failed",
                            Exit::NotConverged => "did not converge",
                            Exit::Blocked => "blocked steps remain",
                            other => panic!("apply never exits {other:?}"),
                        };
                        assert!(
                            line.contains(expected),
                            "exit {exit:?} with `{line}` ({outcome:?}, interrupted {interrupted})"
                        );
                        assert_eq!(
                            line.starts_with("Apply complete"),
                            exit == Exit::Ok,
                            "{line}"
                        );
                    }
                }
            }
        }
    }
}
