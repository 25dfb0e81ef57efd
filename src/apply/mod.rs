//! The executor: carries out a [`Plan`] step by step, in order.
//!
//! # Guarantees
//! - A step runs only if it is not blocked and every step it depends on is done.
//! - A step never does more than it says: a stop is SIGTERM → wait → SIGKILL → wait, nothing else.
//! - Before acting, a step re-checks the facts it was planned against (a process's pid, start
//!   time, uid and command line; that it still listens) and refuses as *stale* if they moved.
//! - Once interrupted, no new step starts; the running one finishes.
//!
//! # Caveats
//! The executor decides nothing: convergence is judged by the caller, by observing and planning
//! again.

pub mod container;
pub mod driver;
pub mod files;
pub mod journal;
pub mod lock;
pub mod registry;
pub mod sandbox;
pub mod secrets;
pub mod stop;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::plan::{Action, Plan, Step, Target};

/// How one step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// It did what it said.
    Done(String),
    /// It did not run: blocked, a dependency did not complete, or the apply was interrupted.
    Skipped(String),
    /// Its facts moved since the plan; nothing was done.
    Stale(String),
    /// It ran and failed.
    Failed(String),
}

impl StepOutcome {
    /// Returns whether the step completed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }
}

/// Receives progress while a plan is applied. The executor never prints.
pub trait Reporter: Send + Sync {
    /// A step is about to run.
    fn started(&self, step: &Step);
    /// Something happened inside a running step.
    fn progress(&self, step: &Step, message: &str);
    /// A step ended (or was skipped).
    fn finished(&self, step: &Step, outcome: &StepOutcome, elapsed: Duration);
}

/// What an apply did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Every step of the plan with its outcome, in plan order.
    pub outcomes: Vec<(String, StepOutcome)>,
    /// Whether an interrupt stopped it early.
    pub interrupted: bool,
}

impl ApplyReport {
    /// Number of steps that did something.
    #[must_use]
    pub fn done(&self) -> usize {
        self.outcomes.iter().filter(|(_, o)| o.is_done()).count()
    }

    /// Returns whether any step refused because its facts moved.
    #[must_use]
    pub fn any_stale(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, StepOutcome::Stale(_)))
    }

    /// Returns whether any step failed.
    #[must_use]
    pub fn any_failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, StepOutcome::Failed(_)))
    }
}

/// Runs the plan's steps in order. `interrupted` is checked before each step.
pub async fn execute(
    plan: &Plan,
    context: &ApplyContext,
    reporter: &dyn Reporter,
    interrupted: &AtomicBool,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    for step in &plan.steps {
        let started = Instant::now();
        let outcome = if interrupted.load(Ordering::SeqCst) {
            report.interrupted = true;
            StepOutcome::Skipped("interrupted before it started".to_owned())
        } else if let Some(b) = &step.blocked {
            StepOutcome::Skipped(format!("blocked: {}", b.reason))
        } else if let Some(dep) = step.depends_on.iter().find(|d| {
            !report
                .outcomes
                .iter()
                .any(|(id, o)| id == *d && o.is_done())
        }) {
            StepOutcome::Skipped(format!("{dep} did not complete"))
        } else {
            reporter.started(step);
            let progress = |m: &str| reporter.progress(step, m);
            run_journaled(plan, step, context, &progress, reporter).await
        };
        tracing::info!(
            step = %step.id,
            outcome = outcome_kind(&outcome),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "step finished"
        );
        reporter.finished(step, &outcome, started.elapsed());
        report.outcomes.push((step.id.clone(), outcome));
    }
    report
}

/// What steps need beyond the plan: where Docker is, and the file's secret-bearing values, which
/// plans never contain.
#[derive(Clone, Debug, Default)]
pub struct ApplyContext {
    /// `DOCKER_HOST`, or `None` for the default socket.
    pub docker_endpoint: Option<String>,
    /// The file's `gateway.env`.
    pub gateway_env: BTreeMap<String, String>,
    /// Its fingerprint as the planner made it ([`crate::model::Desired::secret_fingerprints`]).
    pub gateway_env_fingerprint: String,
    /// Where intents and outcomes are recorded; `None` runs without a journal.
    pub journal: Option<journal::Journal>,
    /// The invoking user's home: registry writes refuse symlinks below it.
    pub home: std::path::PathBuf,
    /// How to reach the legacy gateway's cluster.
    pub cluster: Option<crate::observe::cluster::ClusterQuery>,
}

/// Runs one step between its journal intent and outcome, reporting progress while it runs.
async fn run_journaled(
    plan: &Plan,
    step: &Step,
    context: &ApplyContext,
    progress: &(dyn Fn(&str) + Send + Sync),
    reporter: &dyn Reporter,
) -> StepOutcome {
    let now = || crate::observe::now_ms();
    if let Some(j) = &context.journal {
        let intent = journal::Event::Intent {
            run: j.run().to_owned(),
            at_ms: now(),
            step: step.id.clone(),
            address: step.address.clone(),
            action: step.action,
            risk: step.risk,
            plan_sha256: plan.sha256(),
            target: Box::new(step.target.clone()),
        };
        // No intent on disk, no action: an unrecorded mutation could not be recovered.
        if let Err(e) = j.record(&intent) {
            return StepOutcome::Failed(format!(
                "cannot write the journal {}: {e}",
                j.path().display()
            ));
        }
    }
    let started = Instant::now();
    let work = run_step(step, context, progress);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = tick.tick() => reporter.progress(step, &format!("still running... [{}s elapsed]", started.elapsed().as_secs())),
        }
    };
    if let Some(j) = &context.journal {
        let (kind, message) = match &outcome {
            StepOutcome::Done(m) => ("done", m),
            StepOutcome::Skipped(m) => ("skipped", m),
            StepOutcome::Stale(m) => ("stale", m),
            StepOutcome::Failed(m) => ("failed", m),
        };
        let _ = j.record(&journal::Event::Outcome {
            run: j.run().to_owned(),
            at_ms: now(),
            step: step.id.clone(),
            outcome: kind.to_owned(),
            message: message.clone(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
    outcome
}

fn outcome_kind(o: &StepOutcome) -> &'static str {
    match o {
        StepOutcome::Done(_) => "done",
        StepOutcome::Skipped(_) => "skipped",
        StepOutcome::Stale(_) => "stale",
        StepOutcome::Failed(_) => "failed",
    }
}

async fn run_step(
    step: &Step,
    context: &ApplyContext,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let docker = || container::connect(context.docker_endpoint.as_deref());
    match (step.action, &step.target) {
        (Action::Stop, Target::Process(p)) => stop::run(p, progress).await,
        (Action::Start | Action::Restart, Target::GatewayProcess(p)) => {
            driver::start(
                p,
                &context.gateway_env,
                &context.gateway_env_fingerprint,
                progress,
            )
            .await
        }
        (Action::Create, Target::Container(c)) => match docker().await {
            Ok(d) => container::create(&d, c, progress).await,
            Err(e) => e,
        },
        (Action::Start, Target::Container(c)) => match docker().await {
            Ok(d) => container::start(&d, c, progress).await,
            Err(e) => e,
        },
        (Action::Restart, Target::Container(c)) => match docker().await {
            Ok(d) => container::restart(&d, c, progress).await,
            Err(e) => e,
        },
        (Action::Replace, Target::Container(c)) => match docker().await {
            Ok(d) => container::replace(&d, c, progress).await,
            Err(e) => e,
        },
        (Action::Create | Action::Delete, Target::Sandbox(s)) => {
            sandbox::sandbox(s, step.action, &context.home, progress).await
        }
        (Action::Register | Action::Unregister, Target::Registry(r)) => {
            sandbox::register(r, &context.home)
        }
        (Action::Forward, Target::Forward(f)) => sandbox::forward(f, progress).await,
        (Action::Register | Action::Select, Target::CliGateway(g)) => {
            sandbox::cli_gateway(g, progress).await
        }
        (Action::Create | Action::Replace, Target::Secrets(t)) => match &context.cluster {
            Some(q) => secrets::write(t, q, progress).await,
            None => StepOutcome::Failed("no way to reach the cluster was configured".to_owned()),
        },
        (Action::Write, Target::CliBundle { dir }) => match &context.cluster {
            Some(q) => secrets::copy_bundle(dir, &context.home, q).await,
            None => StepOutcome::Failed("no way to reach the cluster was configured".to_owned()),
        },
        (Action::Restart, Target::StatefulSet { .. }) => match &context.cluster {
            Some(q) => {
                let now = crate::observe::time::format_rfc3339(crate::observe::now_ms());
                secrets::restart_rollout(q, &now).await
            }
            None => StepOutcome::Failed("no way to reach the cluster was configured".to_owned()),
        },
        (Action::Delete, Target::Volume { name, .. }) => match docker().await {
            Ok(d) => container::delete_volume(&d, name).await,
            Err(e) => e,
        },
        // FreePort and Observe are only ever planned blocked; reaching here means a hand-edited plan.
        (action, _) => StepOutcome::Failed(format!(
            "`{}` has no executor for this target; it needs a person",
            action.as_str()
        )),
    }
}
