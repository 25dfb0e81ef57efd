//! The executor: carries out a [`Plan`], independent steps in parallel, conflicting ones in order.
//!
//! # Guarantees
//! - A step runs only if it is not blocked and every step it depends on is done.
//! - A step never does more than it says: a stop is SIGTERM → wait → SIGKILL → wait, nothing else.
//! - Before acting, a step re-checks the facts it was planned against (a process's pid, start
//!   time, uid and command line; that it still listens) and refuses as *stale* if they moved.
//! - Once interrupted, no new step starts; the running ones finish.
//! - Steps that touch the same address, port, pid, container, volume or sandbox never overlap, and
//!   run in plan order (least risky first).
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

    /// What happened, in words.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Done(m) | Self::Skipped(m) | Self::Stale(m) | Self::Failed(m) => m,
        }
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

/// Runs the plan's steps: up to `context.parallelism` at once, each as soon as every step it
/// depends on is done and no earlier step that touches the same thing ([`resources`]: its
/// address, a port, a pid, a container, a volume, a sandbox) is still pending or running — so
/// conflicting steps keep the plan's order, least risky first, and `1` is the plain serial walk.
/// `interrupted` is checked before each start: once set, nothing new starts and the running steps
/// finish. Outcomes are reported in plan order.
pub async fn execute(
    plan: &Plan,
    context: &ApplyContext,
    reporter: &dyn Reporter,
    interrupted: &AtomicBool,
) -> ApplyReport {
    use futures_util::StreamExt as _;
    let steps = &plan.steps;
    let limit = context.parallelism.max(1);
    let position: std::collections::HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let keys: Vec<Vec<String>> = steps.iter().map(resources).collect();
    let mut outcomes: Vec<Option<StepOutcome>> = vec![None; steps.len()];
    let mut started = vec![false; steps.len()];
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut report = ApplyReport::default();
    let settle = |i: usize,
                  outcome: StepOutcome,
                  elapsed: Duration,
                  outcomes: &mut Vec<Option<StepOutcome>>| {
        let step = &steps[i];
        tracing::info!(
            step = %step.id,
            outcome = outcome_kind(&outcome),
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "step finished"
        );
        reporter.finished(step, &outcome, elapsed);
        outcomes[i] = Some(outcome);
    };
    loop {
        if !interrupted.load(Ordering::SeqCst) {
            for i in 0..steps.len() {
                if running.len() >= limit {
                    break;
                }
                if started[i] {
                    continue;
                }
                let step = &steps[i];
                if let Some(b) = &step.blocked {
                    started[i] = true;
                    let why = StepOutcome::Skipped(format!("blocked: {}", b.reason));
                    settle(i, why, Duration::ZERO, &mut outcomes);
                    continue;
                }
                let mut waiting = false;
                let mut failed_dep = None;
                for d in &step.depends_on {
                    match position.get(d.as_str()).map(|&j| &outcomes[j]) {
                        Some(Some(o)) if o.is_done() => {}
                        Some(None) => waiting = true,
                        _ => {
                            failed_dep = Some(d);
                            break;
                        }
                    }
                }
                if let Some(dep) = failed_dep {
                    started[i] = true;
                    let why = StepOutcome::Skipped(format!("{dep} did not complete"));
                    settle(i, why, Duration::ZERO, &mut outcomes);
                    continue;
                }
                let conflict = (0..i)
                    .any(|j| outcomes[j].is_none() && keys[j].iter().any(|k| keys[i].contains(k)));
                if waiting || conflict {
                    continue;
                }
                started[i] = true;
                reporter.started(step);
                running.push(async move {
                    let t = Instant::now();
                    let progress = |m: &str| reporter.progress(step, m);
                    let outcome = run_journaled(plan, step, context, &progress, reporter).await;
                    (i, outcome, t.elapsed())
                });
            }
        }
        let Some((i, outcome, elapsed)) = running.next().await else {
            break;
        };
        settle(i, outcome, elapsed, &mut outcomes);
    }
    for (i, step) in steps.iter().enumerate() {
        let outcome = outcomes[i].take().unwrap_or_else(|| {
            report.interrupted = true;
            let o = StepOutcome::Skipped("interrupted before it started".to_owned());
            reporter.finished(step, &o, Duration::ZERO);
            o
        });
        report.outcomes.push((step.id.clone(), outcome));
    }
    report
}

/// What a step touches, as keys two steps conflict on when they share one.
fn resources(step: &Step) -> Vec<String> {
    let mut k = vec![format!("address:{}", step.address)];
    let port = |p: &u16| format!("port:{p}");
    match &step.target {
        Target::Process(p) => {
            k.push(format!("pid:{}", p.pid));
            k.extend(p.ports.iter().chain(&p.wait_free).map(port));
        }
        Target::GatewayProcess(g) => {
            k.push("gateway".to_owned());
            k.push(port(&g.wait.port));
            if let Some(s) = &g.stop {
                k.push(format!("pid:{}", s.pid));
            }
        }
        Target::Container(c) => {
            k.push(format!("container:{}", c.name));
            if let Some(spec) = &c.spec {
                k.push(port(&spec.host_port));
                k.push(format!("volume:{}", spec.volume));
                k.push(format!("network:{}", spec.network));
            }
        }
        Target::Volume { name, .. } => k.push(format!("volume:{name}")),
        Target::Sandbox(s) => {
            k.push(format!("sandbox:{}", s.name));
            if s.port != 0 {
                k.push(port(&s.port));
            }
        }
        Target::Registry(r) => k.push(format!("sandbox:{}", r.name)),
        Target::Forward(f) => {
            k.push(format!("sandbox:{}", f.sandbox));
            k.push(port(&f.port));
        }
        Target::Port { port: p, .. } => k.push(port(p)),
        Target::Ports { range } => k.push(format!("ports:{range}")),
        Target::CliGateway(_) => k.push("cli-gateway".to_owned()),
        Target::Secrets(_) | Target::CliBundle { .. } | Target::StatefulSet { .. } => {
            k.push("cluster-secrets".to_owned());
        }
    }
    k
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
    /// How many steps may run at once (`--parallelism`; 0 and 1 both mean one at a time).
    pub parallelism: usize,
    /// The plan's hash, computed once per apply for every journal intent.
    pub plan_sha256: String,
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
            plan_sha256: if context.plan_sha256.is_empty() {
                plan.sha256()
            } else {
                context.plan_sha256.clone()
            },
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
        let _ = j.record(&journal::Event::Outcome {
            run: j.run().to_owned(),
            at_ms: now(),
            step: step.id.clone(),
            outcome: outcome_kind(&outcome).to_owned(),
            message: outcome.message().to_owned(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
    outcome
}

/// The outcome's name in the journal, logs and the agent's events: `done`, `skipped`, `stale`,
/// `failed`.
#[must_use]
pub fn outcome_kind(o: &StepOutcome) -> &'static str {
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
