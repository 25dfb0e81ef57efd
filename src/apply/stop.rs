//! Stopping one process: identity re-check, SIGTERM, bounded wait, SIGKILL, bounded wait, then
//! polling the kernel's socket table until its ports are free.
//!
//! Signals go through a pidfd opened *before* the identity check, so once the check passes the
//! signal can only reach that very process: a pid recycled after the plan is never hit.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::StepOutcome;
use crate::observe::{self, PortState, procfs};
use crate::plan::StopProcess;

/// How often the socket table is polled while waiting for a port to be free.
const PORT_POLL: Duration = Duration::from_millis(50);

/// Carries out a stop step.
pub async fn run(p: &StopProcess, progress: &(dyn Fn(&str) + Send + Sync)) -> StepOutcome {
    let Some(pid) = i32::try_from(p.pid).ok().and_then(Pid::from_raw) else {
        return StepOutcome::Failed(format!("{} is not a valid pid", p.pid));
    };
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => {
            return already_gone(p, progress);
        }
        Err(e) => {
            return StepOutcome::Failed(format!("cannot open a pidfd for pid {}: {e}", p.pid));
        }
    };
    // The pidfd now pins the process; check it is the one that was planned against.
    let Some(now) = procfs::read_process(p.pid) else {
        return already_gone(p, progress);
    };
    if now.start_time != p.start_time {
        return StepOutcome::Stale(format!(
            "pid {} is now a different process (start time {}, planned against {}); it was not signalled",
            p.pid, now.start_time, p.start_time
        ));
    }
    if now.cmdline != p.cmdline || now.uid != p.uid {
        return StepOutcome::Stale(format!(
            "pid {} changed since the plan (now uid {} `{}`, planned uid {} `{}`); it was not signalled",
            p.pid,
            now.uid,
            now.command(),
            p.uid,
            p.cmdline.join(" ")
        ));
    }
    // Whatever the plan says: never this process or one of its ancestors, as they are now (a
    // shell that runs apply can hold the port it frees), and never a grace beyond the file's limit.
    let me = std::process::id();
    if p.pid == me || procfs::ancestors(me).contains(&p.pid) {
        return StepOutcome::Failed(format!(
            "pid {} is this engine or one of its ancestors; it was not signalled",
            p.pid
        ));
    }
    if [p.term_grace, p.kill_grace, p.port_free_timeout]
        .iter()
        .any(|g| g.0 > crate::model::Millis::MAX.0)
    {
        return StepOutcome::Failed(format!(
            "a wait of more than {} ms is not a plan the engine makes; pid {} was not signalled",
            crate::model::Millis::MAX.0,
            p.pid
        ));
    }
    // A process planned without ports (a gateway that never listened) has no listener to check.
    if !p.ports.is_empty()
        && let Some(stale) = still_listening(p)
    {
        return stale;
    }

    let waiter = Arc::new(pidfd);
    progress("sending SIGTERM");
    if let Err(e) = pidfd_send_signal(&*waiter, Signal::TERM) {
        return signal_error(p, e, "SIGTERM").await;
    }
    progress(&format!(
        "waiting up to {} for pid {} to exit after SIGTERM",
        p.term_grace, p.pid
    ));
    let how = if exited_within(&waiter, p.term_grace.duration()).await {
        "exited after SIGTERM".to_owned()
    } else {
        progress(&format!(
            "still running after {}; sending SIGKILL",
            p.term_grace
        ));
        if let Err(e) = pidfd_send_signal(&*waiter, Signal::KILL) {
            return signal_error(p, e, "SIGKILL").await;
        }
        if !exited_within(&waiter, p.kill_grace.duration()).await {
            return StepOutcome::Failed(format!(
                "pid {} was still running {} after SIGKILL (stuck in the kernel?)",
                p.pid, p.kill_grace
            ));
        }
        format!(
            "was still running {} after SIGTERM; exited after SIGKILL",
            p.term_grace
        )
    };
    wait_ports_free(p, &how).await
}

async fn signal_error(p: &StopProcess, e: rustix::io::Errno, which: &str) -> StepOutcome {
    if e == rustix::io::Errno::SRCH {
        return wait_ports_free(p, "the process exited before it was signalled").await;
    }
    StepOutcome::Failed(format!("{which} to pid {} failed: {e}", p.pid))
}

/// The plan stopped this process because it listened on `ports`; if it no longer does, the facts
/// moved and the step must not guess.
fn still_listening(p: &StopProcess) -> Option<StepOutcome> {
    let state = observe::probe_ports(&p.ports);
    let PortState::Busy(sockets) = state else {
        return match state {
            PortState::Free => Some(StepOutcome::Stale(format!(
                "pid {} no longer listens on {:?}; it was not signalled",
                p.pid, p.ports
            ))),
            PortState::Inconclusive(why) => Some(StepOutcome::Failed(format!(
                "cannot read the socket table to confirm pid {} still listens: {why}",
                p.pid
            ))),
            PortState::Busy(_) => None,
        };
    };
    let inodes = sockets.iter().map(|(_, inode)| *inode).collect();
    let scan = procfs::find_holders(&inodes, &std::iter::once(p.uid).collect());
    let holds = scan.holders.values().any(|pids| pids.contains(&p.pid));
    (!holds).then(|| {
        StepOutcome::Stale(format!(
            "pid {} no longer holds a listener on {:?} (someone else does); it was not signalled",
            p.pid, p.ports
        ))
    })
}

/// Waits until the pidfd reports the process exited (it turns readable), or the time is up.
async fn exited_within(pidfd: &Arc<OwnedFd>, limit: Duration) -> bool {
    let fd = Arc::clone(pidfd);
    tokio::task::spawn_blocking(move || procfs::pidfd_exited_within(&*fd, limit))
        .await
        .unwrap_or(false)
}

/// The planned process is gone. If its ports are free the step's goal holds; if something else
/// listens there now, the facts moved and the plan no longer describes the host.
fn already_gone(p: &StopProcess, progress: &(dyn Fn(&str) + Send + Sync)) -> StepOutcome {
    progress("already exited");
    match observe::probe_ports(&p.ports) {
        PortState::Free => StepOutcome::Done(format!(
            "pid {} had already exited; {:?} free",
            p.pid, p.ports
        )),
        PortState::Busy(_) => StepOutcome::Stale(format!(
            "pid {} exited since the plan and {:?} is held by another listener now; it was not signalled",
            p.pid, p.ports
        )),
        PortState::Inconclusive(why) => StepOutcome::Failed(format!(
            "pid {} had already exited, but whether {:?} is free cannot be read: {why}",
            p.pid, p.ports
        )),
    }
}

/// Polls the socket table until every port in `wait_free` shows no listener. Inconclusive reads
/// keep polling and are never taken as free.
async fn wait_ports_free(p: &StopProcess, how: &str) -> StepOutcome {
    if p.wait_free.is_empty() {
        return StepOutcome::Done(how.to_owned());
    }
    let started = Instant::now();
    let deadline = started + p.port_free_timeout.duration();
    loop {
        let state = observe::probe_ports(&p.wait_free);
        if state == PortState::Free {
            let ms = started.elapsed().as_millis();
            return StepOutcome::Done(format!("{how}; {:?} free after {ms} ms", p.wait_free));
        }
        if Instant::now() >= deadline {
            return StepOutcome::Failed(match state {
                PortState::Busy(s) => format!(
                    "{how}, but {:?} still had a listener after {} (inodes {:?}); something else holds or re-bound it",
                    p.wait_free,
                    p.port_free_timeout,
                    s.iter().map(|(_, i)| *i).collect::<Vec<_>>()
                ),
                PortState::Inconclusive(why) => {
                    format!(
                        "{how}, but whether {:?} is free could not be confirmed within {}: {why}",
                        p.wait_free, p.port_free_timeout
                    )
                }
                PortState::Free => unreachable!("handled above"),
            });
        }
        tokio::time::sleep(PORT_POLL).await;
    }
}
