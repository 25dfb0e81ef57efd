//! Sandbox steps through the `openshell` CLI, and registry writes.
//!
//! A create runs the exact command the plan holds — a command that does not return while the
//! sandbox runs, since `sandbox create … -- CMD` waits for CMD inside it and `nemoclaw-start`
//! never exits (recorded against 0.0.72, `46-create-from-local-sleep`). So, as NemoClaw does
//! (`src/lib/sandbox/create-stream.ts`), the engine starts it, polls `sandbox list` until the
//! sandbox is `Ready`, then ends the CLI's process group; a non-zero exit after Ready is success.
//! Only then is the sandbox registered (no phantom entries, #2174). A sandbox that is not Ready
//! in time is kept — never deleted without consent — and reported with the command that deletes
//! it. A forward removes a dead pid file (judged by the same rule as the planner), starts the
//! forward, and waits until its port listens.

use std::path::Path;
use std::time::{Duration, Instant};

use super::StepOutcome;
use super::registry;
use crate::model::{Holders, Lookup, Observation, PortRange};
use crate::observe::openshell::{CliEnv, Run, parse, run, spawn};
use crate::observe::{self, PortState};
use crate::plan::{Action, CliGatewayTarget, ForwardTarget, RegistryTarget, SandboxTarget};

/// Time limit for CLI calls that return (list, delete, forward start, gateway add).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a create polls for Ready.
const READY_POLL: Duration = Duration::from_secs(2);
/// How long the CLI's process group gets to end on SIGTERM before SIGKILL.
const END_GRACE: Duration = Duration::from_secs(3);

fn env(gateway: Option<&str>) -> CliEnv {
    CliEnv {
        gateway: gateway.map(str::to_owned),
    }
}

async fn cli(
    binary: &str,
    argv: &[String],
    gateway: Option<&str>,
    timeout: Duration,
) -> Result<Run, String> {
    let (b, a, e) = (binary.to_owned(), argv.to_vec(), env(gateway));
    tokio::task::spawn_blocking(move || run(&b, &a, &e, timeout))
        .await
        .map_err(|e| e.to_string())?
}

/// The last lines the CLI printed, escapes stripped.
fn tail(stdout: &str, stderr: &str) -> String {
    let text = parse::strip_ansi(&format!("{stdout}{stderr}"));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn shown(argv: &[String]) -> String {
    format!("openshell {}", argv.join(" "))
}

/// Creates (then waits Ready, ends the CLI, registers) or deletes (then unregisters) a sandbox.
pub async fn sandbox(
    t: &SandboxTarget,
    action: Action,
    home: &Path,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let done = match action {
        Action::Create => create(t, progress).await,
        _ => delete(t, progress).await,
    };
    if let Err(outcome) = done {
        return outcome;
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

async fn delete(
    t: &SandboxTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), StepOutcome> {
    progress(&format!("running `{}`", shown(&t.argv)));
    let r = cli(&t.cli, &t.argv, t.gateway.as_deref(), CALL_TIMEOUT)
        .await
        .map_err(StepOutcome::Failed)?;
    if r.code == Some(0) || parse::get(&r) == Lookup::NotFound {
        return Ok(());
    }
    Err(StepOutcome::Failed(format!(
        "`{}` exited {:?}:\n{}",
        shown(&t.argv),
        r.code,
        tail(&r.stdout, &r.stderr)
    )))
}

/// The policy file still has the content the plan was made with.
fn check_policy(t: &SandboxTarget) -> Result<(), StepOutcome> {
    let Some(p) = &t.policy else { return Ok(()) };
    let now = crate::observe::files::read_regular(Path::new(&p.path), 1 << 20)
        .map(|bytes| crate::model::fingerprint_bytes(&bytes));
    match (&now, &p.sha256) {
        (Ok(now), Some(planned)) if now == planned => Ok(()),
        (Ok(now), planned) => Err(StepOutcome::Stale(format!(
            "the policy file {} changed since the plan ({} then, {now} now); plan again to review it",
            p.path,
            planned.as_deref().unwrap_or("not read")
        ))),
        (Err(e), _) => Err(StepOutcome::Stale(format!(
            "the policy file {} cannot be read now: {e}",
            p.path
        ))),
    }
}

/// One look at the sandbox's phase through `sandbox list`.
async fn phase(t: &SandboxTarget) -> Result<Option<String>, String> {
    let argv: Vec<String> = if t.list_json {
        ["sandbox", "list", "-o", "json"]
    } else {
        ["sandbox", "list", "", ""]
    }
    .iter()
    .filter(|a| !a.is_empty())
    .map(|a| (*a).to_owned())
    .collect();
    let r = cli(&t.cli, &argv, t.gateway.as_deref(), CALL_TIMEOUT).await?;
    if r.code != Some(0) {
        return Err(parse::error_text(&r.stderr));
    }
    let rows = if t.list_json {
        parse::list_json(&r.stdout)
    } else {
        parse::list_table(&r.stdout)
    }
    .ok_or_else(|| format!("`{}` printed nothing parseable", shown(&argv)))?;
    Ok(rows.into_iter().find(|r| r.name == t.name).map(|r| r.phase))
}

const FAILED_PHASES: [&str; 3] = ["Error", "Failed", "Deleting"];

async fn create(
    t: &SandboxTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), StepOutcome> {
    check_policy(t)?;
    progress(&format!(
        "running `{}`; it keeps running inside the sandbox, so the engine waits up to {} for Ready and then ends it",
        shown(&t.argv),
        t.ready_timeout
    ));
    let (b, a, e) = (t.cli.clone(), t.argv.clone(), env(t.gateway.as_deref()));
    let mut child = tokio::task::spawn_blocking(move || spawn(&b, &a, &e))
        .await
        .map_err(|e| StepOutcome::Failed(e.to_string()))?
        .map_err(StepOutcome::Failed)?;
    let deadline = Instant::now() + t.ready_timeout.duration();
    let kept = format!(
        "the half-made sandbox `{0}` is kept (it is never deleted without consent): look at it with `openshell sandbox get {0}`, delete it with `openshell sandbox delete {0}`{1}, or apply again once it is Ready",
        t.name,
        t.gateway
            .as_deref()
            .map_or(String::new(), |g| format!(" (gateway `{g}`: add `-g {g}`)"))
    );
    let mut exited: Option<Option<i32>> = None;
    let mut last;
    loop {
        if exited.is_none() {
            let (c, waited) = tokio::task::spawn_blocking(move || {
                let code = child.wait_for(Duration::from_millis(500));
                (child, code)
            })
            .await
            .map_err(|e| StepOutcome::Failed(e.to_string()))?;
            child = c;
            exited = waited;
        }
        match phase(t).await {
            Ok(Some(p)) if p == "Ready" => break,
            Ok(Some(p)) if FAILED_PHASES.contains(&p.as_str()) => {
                let (out, err) = end(child).await;
                return Err(StepOutcome::Failed(format!(
                    "sandbox `{}` reached phase `{p}`; it was not registered, and {kept}\nthe CLI's last lines:\n{}",
                    t.name,
                    tail(&out, &err)
                )));
            }
            Ok(p) => last = p.unwrap_or_else(|| "not listed yet".to_owned()),
            Err(e) => last = format!("`sandbox list` failed: {e}"),
        }
        if let Some(code) = exited
            && code != Some(0)
            && last == "not listed yet"
        {
            // The CLI failed before the sandbox existed: nothing is half-made.
            let (out, err) = child.output();
            return Err(StepOutcome::Failed(format!(
                "`{}` exited {}:\n{}",
                shown(&t.argv),
                code.map_or("by signal".to_owned(), |c| c.to_string()),
                tail(&out, &err)
            )));
        }
        if Instant::now() >= deadline {
            let (out, err) = end(child).await;
            return Err(StepOutcome::Failed(format!(
                "sandbox `{}` was not Ready within {} (last seen: {last}); it was not registered, and {kept}\nthe CLI's last lines:\n{}",
                t.name,
                t.ready_timeout,
                tail(&out, &err)
            )));
        }
        progress(&format!(
            "waiting for sandbox `{}` to be Ready ({last}; {}s of {})",
            t.name,
            child.elapsed().as_secs(),
            t.ready_timeout
        ));
        tokio::time::sleep(READY_POLL).await;
    }
    if exited.is_none() {
        // A non-zero exit caused by ending it after Ready is success.
        progress("Ready; ending the CLI's create session");
        end(child).await;
    }
    Ok(())
}

/// Ends the CLI's process group and returns what it printed.
async fn end(mut child: crate::observe::openshell::Running) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        child.end_group(END_GRACE);
        child.output()
    })
    .await
    .unwrap_or_default()
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

/// Whether `pid` holds a listener on `port` now: the rule the planner judges a forward pid file
/// by (`plan::sandboxes::live_forward`), so plan and apply never disagree about a reused pid.
fn holds_listener(pid: u32, port: u16) -> Result<bool, String> {
    let scan = observe::scan_listeners(&[PortRange {
        start: port,
        end: port,
    }]);
    match scan.listeners {
        Observation::Known { value } => Ok(value.iter().any(|l| {
            l.port == port && matches!(&l.holders, Holders::Known { pids } if pids.contains(&pid))
        })),
        Observation::Unknown { reason } => Err(reason),
    }
}

/// Starts a dashboard forward and waits until its port listens.
pub async fn forward(t: &ForwardTarget, progress: &(dyn Fn(&str) + Send + Sync)) -> StepOutcome {
    if let Some(path) = &t.dead_pid_file {
        let pid = crate::observe::files::read_regular(Path::new(path), 4096)
            .ok()
            .and_then(|b| observe::forwards::parse_content(&String::from_utf8_lossy(&b)))
            .map(|c| c.pid);
        if let Some(pid) = pid {
            match holds_listener(pid, t.port) {
                Ok(true) => {
                    return StepOutcome::Stale(format!(
                        "the forward pid file {path} names pid {pid}, which listens on port {} now; it did not when planned",
                        t.port
                    ));
                }
                Ok(false) => {}
                Err(why) => {
                    return StepOutcome::Failed(format!(
                        "whether pid {pid} of {path} holds port {} cannot be read: {why}",
                        t.port
                    ));
                }
            }
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
    progress(&format!("running `{}`", shown(&t.argv)));
    match cli(&t.cli, &t.argv, t.gateway.as_deref(), CALL_TIMEOUT).await {
        Ok(r) if r.code == Some(0) => {}
        Ok(r) => {
            return StepOutcome::Failed(format!(
                "`{}` exited {:?}:\n{}",
                shown(&t.argv),
                r.code,
                tail(&r.stdout, &r.stderr)
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

/// `openshell gateway add …` or `openshell gateway select …`.
pub async fn cli_gateway(
    g: &CliGatewayTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    progress(&format!("running `{}`", shown(&g.argv)));
    match cli(&g.cli, &g.argv, None, CALL_TIMEOUT).await {
        Ok(r) if r.code == Some(0) => {
            let said = parse::strip_ansi(&r.stderr);
            let first = said
                .lines()
                .map(|l| l.trim().trim_start_matches('✓').trim())
                .find(|l| !l.is_empty())
                .unwrap_or("done")
                .to_owned();
            StepOutcome::Done(first)
        }
        Ok(r) => StepOutcome::Failed(format!(
            "`{}` exited {:?}:\n{}",
            shown(&g.argv),
            r.code,
            tail(&r.stdout, &r.stderr)
        )),
        Err(e) => StepOutcome::Failed(e),
    }
}
