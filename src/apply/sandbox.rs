//! Sandbox steps through the `openshell` CLI, and registry writes.
//!
//! A create runs the exact command the plan holds, waits until `openshell sandbox get` reports
//! `Phase: Ready`, and only then registers the sandbox (no phantom entries, #2174). A forward
//! removes a dead pid file, starts the forward, and waits until its port listens.

use std::path::Path;
use std::time::{Duration, Instant};

use super::StepOutcome;
use super::registry;
use crate::model::Lookup;
use crate::observe::openshell::{classify_get, run};
use crate::observe::{self, PortState};
use crate::plan::{Action, ForwardTarget, RegistryTarget, SandboxTarget};

/// Time limit for `openshell sandbox create` itself (it builds an image).
const CREATE_TIMEOUT: Duration = Duration::from_secs(900);
/// Time limit for other CLI calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

async fn cli(
    binary: &str,
    argv: &[String],
    gateway: Option<&str>,
    timeout: Duration,
) -> Result<crate::observe::openshell::Run, String> {
    let (b, a, g) = (binary.to_owned(), argv.to_vec(), gateway.map(str::to_owned));
    tokio::task::spawn_blocking(move || run(&b, &a, g.as_deref(), timeout))
        .await
        .map_err(|e| e.to_string())?
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Creates (then waits Ready, then registers) or deletes (then unregisters) a sandbox.
pub async fn sandbox(
    t: &SandboxTarget,
    action: Action,
    home: &Path,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    progress(&format!("running `openshell {}`", t.argv.join(" ")));
    let timeout = if action == Action::Create {
        CREATE_TIMEOUT
    } else {
        CALL_TIMEOUT
    };
    let r = match cli(&t.cli, &t.argv, t.gateway.as_deref(), timeout).await {
        Ok(r) => r,
        Err(e) => return StepOutcome::Failed(e),
    };
    if r.code != Some(0) {
        let gone = action == Action::Delete && classify_get(&r) == Lookup::NotFound;
        if !gone {
            return StepOutcome::Failed(format!(
                "`openshell {}` exited {:?}:\n{}",
                t.argv.join(" "),
                r.code,
                tail(&format!("{}{}", r.stdout, r.stderr))
            ));
        }
    }
    if action == Action::Create {
        progress(&format!(
            "waiting up to {} for sandbox `{}` to be Ready",
            t.ready_timeout, t.name
        ));
        let deadline = Instant::now() + t.ready_timeout.duration();
        let get = vec!["sandbox".to_owned(), "get".to_owned(), t.name.clone()];
        loop {
            match cli(&t.cli, &get, t.gateway.as_deref(), CALL_TIMEOUT)
                .await
                .map(|r| classify_get(&r))
            {
                Ok(Lookup::Present { phase }) if phase == "Ready" || phase == "Running" => break,
                Ok(Lookup::Present { phase })
                    if [
                        "Error",
                        "Failed",
                        "CrashLoopBackOff",
                        "ImagePullBackOff",
                        "Evicted",
                    ]
                    .contains(&phase.as_str()) =>
                {
                    return StepOutcome::Failed(format!(
                        "sandbox `{}` reached phase `{phase}`; it was not registered",
                        t.name
                    ));
                }
                _ if Instant::now() >= deadline => {
                    return StepOutcome::Failed(format!(
                        "sandbox `{}` was not Ready within {}; it was not registered",
                        t.name, t.ready_timeout
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    match write(&t.registry, home) {
        Ok(what) => StepOutcome::Done(format!(
            "{}; {what}",
            if action == Action::Create {
                "created and Ready"
            } else {
                "deleted"
            }
        )),
        Err(e) => e,
    }
}

/// Writes or removes one registry entry.
pub fn register(t: &RegistryTarget, home: &Path) -> StepOutcome {
    match write(t, home) {
        Ok(what) => StepOutcome::Done(what),
        Err(e) => e,
    }
}

fn write(t: &RegistryTarget, home: &Path) -> Result<String, StepOutcome> {
    let now = crate::observe::time::format_rfc3339(crate::observe::now_ms());
    registry::update(home, Path::new(&t.path), &t.name, t.entry.as_ref(), &now).map_err(|e| match e
    {
        registry::RegistryError::Corrupt { .. } => StepOutcome::Stale(e.to_string()),
        other => StepOutcome::Failed(other.to_string()),
    })
}

/// Starts a dashboard forward and waits until its port listens.
pub async fn forward(t: &ForwardTarget, progress: &(dyn Fn(&str) + Send + Sync)) -> StepOutcome {
    if let Some(path) = &t.dead_pid_file {
        let pid = std::fs::read_to_string(path).ok().and_then(|s| {
            s.split('\t')
                .next()
                .and_then(|p| p.trim().parse::<i32>().ok())
        });
        let alive = pid
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if alive {
            return StepOutcome::Stale(format!(
                "the forward pid file {path} names a running process now; it was dead when planned"
            ));
        }
        progress(&format!("removing the dead pid file {path}"));
        let _ = std::fs::remove_file(path);
    }
    if let PortState::Busy(_) = observe::probe_ports(&[t.port]) {
        return StepOutcome::Stale(format!(
            "port {} is held now; it was free when planned",
            t.port
        ));
    }
    progress(&format!("running `openshell {}`", t.argv.join(" ")));
    match cli(&t.cli, &t.argv, t.gateway.as_deref(), CALL_TIMEOUT).await {
        Ok(r) if r.code == Some(0) => {}
        Ok(r) => {
            return StepOutcome::Failed(format!(
                "`openshell {}` exited {:?}:\n{}",
                t.argv.join(" "),
                r.code,
                tail(&format!("{}{}", r.stdout, r.stderr))
            ));
        }
        Err(e) => return StepOutcome::Failed(e),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let PortState::Busy(_) = observe::probe_ports(&[t.port]) {
            return StepOutcome::Done(format!(
                "forward for `{}` listens on port {}",
                t.sandbox, t.port
            ));
        }
        if Instant::now() >= deadline {
            return StepOutcome::Failed(format!(
                "the forward for `{}` did not listen on port {} within 15s",
                t.sandbox, t.port
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
