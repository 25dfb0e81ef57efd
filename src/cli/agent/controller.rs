//! The long-running agent: a kube-runtime `Controller` over the namespace's NemoClawHosts.
//!
//! The controller's reflector keeps the namespace's resources in a watch cache, and its
//! scheduler runs one reconcile per resource: when the resource appears or changes, again every
//! `--interval` after the last one, and with exponential backoff (1 s doubling, at most the
//! interval) after a failure. Each reconcile plans from the cached object — no list per round —
//! under the host's Lease, one at a time (they share the host lock). Resources for another host
//! wait for a change. The agent's own status writes come back through the watch; a reconcile
//! triggered by one (the spec unchanged, the next one not yet due) only keeps the schedule, so
//! writing status never loops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;

use super::{is_for, lease::HostLease, reconcile, resource, serve::metrics, spec_hash};
use crate::cli::{CliError, Exit, ui};
use crate::spec::crd;

/// What an agent reconciles, and how.
pub struct Scope {
    pub api: Api<DynamicObject>,
    pub namespace: String,
    /// `--selector`: the labels the API server selects the watched resources by.
    pub selector: Option<String>,
    pub host: String,
    /// Plan against this snapshot instead of the host (`--observed`): nothing is applied.
    pub snapshot: Option<crate::model::Observed>,
    pub interval: Duration,
    pub lease: HostLease,
}

/// The controller's context: the scope, and when each resource is next due.
struct Ctx {
    scope: Scope,
    schedule: Mutex<HashMap<String, Due>>,
}

/// One resource's place in the schedule.
struct Due {
    /// The spec its last reconcile planned from.
    spec: String,
    /// When it is reconciled again if nothing changes.
    at: Instant,
    /// Failures in a row (for the backoff).
    failures: u32,
}

/// A failed reconcile, as the controller reports it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl Ctx {
    /// How long until `name` is due, when its spec is the one last reconciled and it is not due
    /// yet: the trigger was the agent's own status write (or a resync), not a change.
    fn not_due(&self, name: &str, spec: &str, now: Instant) -> Option<Duration> {
        let schedule = self.schedule.lock().ok()?;
        let due = schedule.get(name)?;
        (due.spec == spec && due.at > now).then(|| due.at - now)
    }

    /// Records a reconcile's outcome; returns how long until the next one.
    fn record(&self, name: &str, spec: String, ok: bool) -> Duration {
        let Ok(mut schedule) = self.schedule.lock() else {
            return self.scope.interval;
        };
        let failures = match (ok, schedule.get(name)) {
            (true, _) => 0,
            (false, Some(d)) => d.failures.saturating_add(1),
            (false, None) => 1,
        };
        let wait = backoff(failures, self.scope.interval);
        schedule.insert(
            name.to_owned(),
            Due {
                spec,
                at: Instant::now() + wait,
                failures,
            },
        );
        wait
    }

    /// How long until `name` is due (the error policy's requeue).
    fn wait(&self, name: &str) -> Duration {
        self.schedule
            .lock()
            .ok()
            .and_then(|s| {
                s.get(name)
                    .map(|d| d.at.saturating_duration_since(Instant::now()))
            })
            .unwrap_or(self.scope.interval)
    }

    /// Forgets a resource that is gone or no longer for this host.
    fn forget(&self, name: &str) {
        if let Ok(mut schedule) = self.schedule.lock() {
            schedule.remove(name);
        }
        let key = format!("{}/{name}", self.scope.namespace);
        metrics(|m| {
            m.converged.remove(&key);
        });
    }
}

/// The wait after `failures` failures in a row: the interval after a success, else 1 s doubling,
/// never more than the interval.
fn backoff(failures: u32, interval: Duration) -> Duration {
    if failures == 0 {
        return interval;
    }
    let exp = Duration::from_secs(1u64 << (failures - 1).min(16));
    exp.min(interval.max(Duration::from_secs(1)))
}

/// Runs the controller until SIGINT or SIGTERM; running reconciles finish first (an apply in
/// flight finishes its running steps and starts none), the lease is given up, then exit 130.
pub fn run(rt: &tokio::runtime::Runtime, scope: Scope) -> Result<Exit, CliError> {
    let selected = scope
        .selector
        .as_ref()
        .map(|l| format!(" labelled `{l}`"))
        .unwrap_or_default();
    ui::print(&format!(
        "Watching {} resources{selected} for host `{}` in namespace `{}` (on each change, every {:?}, backing off after errors).\n",
        crd::KIND,
        scope.host,
        scope.namespace,
        scope.interval
    ));
    let ctx = Arc::new(Ctx {
        scope,
        schedule: Mutex::new(HashMap::new()),
    });
    let shutdown = rt.block_on(async { shutdown_signal() })?;
    rt.block_on(async {
        let api = ctx.scope.api.clone();
        let mut watched = watcher::Config::default();
        if let Some(labels) = &ctx.scope.selector {
            watched = watched.labels(labels);
        }
        Controller::new_with(api, watched, resource())
            // One reconcile at a time: they share the host (its lock, its processes).
            .with_config(controller::Config::default().concurrency(1))
            .graceful_shutdown_on(shutdown)
            .run(reconcile_async, error_policy, Arc::clone(&ctx))
            .for_each(|result| {
                report(&ctx, result);
                std::future::ready(())
            })
            .await;
        // A standby agent for this host need not wait for the lease to expire.
        ctx.scope.lease.release().await;
    });
    Ok(Exit::Interrupted)
}

/// Resolves at the first SIGINT or SIGTERM. Registered before the controller starts, so an early
/// signal is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + Sync, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers =
        signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
    let (mut int, mut term) =
        handlers.map_err(|e| CliError::from_error("cannot handle signals", &e))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        ui::eprint("\nStopping: the running reconcile finishes, no new one starts.\n");
        let _ = tx.send(());
    });
    Ok(async move {
        let _ = rx.await;
    })
}

/// What the controller's stream says besides successful reconciles: a watch that failed (the
/// API server unreachable), a resource that was deleted before its turn.
fn report(
    ctx: &Ctx,
    result: Result<
        (kube::runtime::reflector::ObjectRef<DynamicObject>, Action),
        controller::Error<Failed, watcher::Error>,
    >,
) {
    match result {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(controller::Error::ObjectNotFound(object)) => ctx.forget(&object.name),
        Err(e) => {
            metrics(|m| m.errors += 1);
            ui::eprint(&format!("error: {e}\n"));
        }
    }
}

fn error_policy(obj: Arc<DynamicObject>, _: &Failed, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.wait(obj.metadata.name.as_deref().unwrap_or_default()))
}

async fn reconcile_async(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    if !is_for(&obj, &ctx.scope.host) {
        ctx.forget(&name);
        return Ok(Action::await_change());
    }
    let spec = spec_hash(&obj);
    if let Some(wait) = ctx.not_due(&name, &spec, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let outcome = match ctx.scope.lease.acquire().await {
        Ok(()) => {
            let renewing = ctx
                .scope
                .lease
                .keep_renewed(&tokio::runtime::Handle::current());
            let handle = tokio::runtime::Handle::current();
            let inner = Arc::clone(&ctx);
            let cached = Arc::clone(&obj);
            // Observe, plan and apply are synchronous (they block on the runtime themselves).
            let done =
                tokio::task::spawn_blocking(move || reconcile_one(&handle, &inner.scope, &cached))
                    .await;
            renewing.abort();
            done.unwrap_or_else(|e| Err(format!("the reconcile panicked: {e}")))
        }
        Err(e) => {
            let message = format!("{}/{name}: waiting: {}", ctx.scope.namespace, e.message);
            ui::eprint(&format!("{message}\n"));
            Err(message)
        }
    };
    let wait = ctx.record(&name, spec, outcome.is_ok());
    // Counted when done, with its error, so a scrape never sees one without the other.
    metrics(|m| m.reconciles += 1);
    match outcome {
        Ok(()) => Ok(Action::requeue(wait)),
        Err(message) => {
            metrics(|m| m.errors += 1);
            Err(Failed(message))
        }
    }
}

/// Reconciles one resource and prints its line (`ns/name: ...`).
pub fn reconcile_one(
    rt: &tokio::runtime::Handle,
    scope: &Scope,
    obj: &DynamicObject,
) -> Result<(), String> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let shown = format!("{}/{name}", scope.namespace);
    match reconcile::reconcile(rt, &scope.api, obj, &shown, scope.snapshot.as_ref()) {
        Ok(line) => {
            ui::print(&format!("{shown}: {line}\n"));
            Ok(())
        }
        Err(e) => {
            ui::eprint(&format!("{shown}: error: {}\n", e.message));
            Err(e.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_interval() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (0..9).map(|n| backoff(n, minute).as_secs()).collect();
        assert_eq!(waits, [60, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, minute), minute);
        // A sub-second interval still waits a second after a failure.
        assert_eq!(
            backoff(3, Duration::from_millis(200)),
            Duration::from_secs(1)
        );
    }
}
