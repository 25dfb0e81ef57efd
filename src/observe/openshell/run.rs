//! Running the `openshell` CLI.
//!
//! The CLI's `ssh` children (the background forward, the create's session) keep the caller's
//! stdout and stderr open after the CLI itself exits, so a caller that reads pipes to EOF hangs
//! (recorded against 0.0.72: an apply hung 1045 s on a create and 207 s on a forward). The CLI
//! therefore writes into anonymous memory files, never pipes: its exit is awaited through a pidfd,
//! then whatever it wrote is read back, capped. Each run gets its own process group, so a
//! timeout ends the CLI together with whatever it started, and a Ctrl-C at the engine's terminal
//! never reaches a forward the CLI left running.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, memfd_create};
use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open};

/// Output of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// Standard output (lossy UTF-8, at most [`OUTPUT_CAP`] bytes).
    pub stdout: String,
    /// Standard error (likewise).
    pub stderr: String,
}

/// How much of each stream is kept.
pub const OUTPUT_CAP: u64 = 1 << 20;

/// How to run the CLI.
#[derive(Clone, Debug, Default)]
pub struct CliEnv {
    /// `OPENSHELL_GATEWAY` for the child: the gateway the file manages.
    pub gateway: Option<String>,
}

/// A running CLI process whose output goes to memory files.
pub struct Running {
    child: Child,
    pidfd: std::os::fd::OwnedFd,
    stdout: File,
    stderr: File,
    started: Instant,
}

fn memfd(name: &str) -> Result<File, String> {
    memfd_create(name, MemfdFlags::CLOEXEC)
        .map(File::from)
        .map_err(|e| format!("cannot create an output buffer: {e}"))
}

/// Starts `binary args…` in its own process group, stdin from /dev/null.
pub fn spawn(binary: &str, args: &[String], env: &CliEnv) -> Result<Running, String> {
    let stdout = memfd("openshell-stdout")?;
    let stderr = memfd("openshell-stderr")?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(stderr.try_clone().map_err(|e| e.to_string())?))
        .process_group(0);
    if let Some(g) = &env.gateway {
        cmd.env("OPENSHELL_GATEWAY", g);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{binary}`: {e}"))?;
    let pid = Pid::from_child(&child);
    let pidfd = pidfd_open(pid, PidfdFlags::empty())
        .map_err(|e| format!("cannot watch `{binary}` (pid {pid}): {e}"))?;
    Ok(Running {
        child,
        pidfd,
        stdout,
        stderr,
        started: Instant::now(),
    })
}

impl Running {
    /// The CLI's pid (also its process group).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long it has run.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits up to `limit` for the CLI to exit; `Some(code)` once it has (`None` inside: a
    /// signal ended it).
    pub fn wait_for(&mut self, limit: Duration) -> Option<Option<i32>> {
        if !crate::observe::procfs::pidfd_exited_within(&self.pidfd, limit) {
            return None;
        }
        self.child.wait().ok().map(|s| s.code())
    }

    /// Ends the CLI's whole process group: SIGTERM, up to `grace` to exit, then SIGKILL.
    /// Returns the exit code, if it exited by itself before the signal landed.
    pub fn end_group(&mut self, grace: Duration) -> Option<i32> {
        if let Ok(Some(s)) = self.child.try_wait() {
            self.signal_group(Signal::KILL);
            return s.code();
        }
        self.signal_group(Signal::TERM);
        let exited = self.wait_for(grace);
        // Whatever the CLI started in its group goes too, so nothing it began keeps running.
        self.signal_group(Signal::KILL);
        match exited {
            Some(code) => code,
            None => {
                let _ = self.child.wait();
                None
            }
        }
    }

    fn signal_group(&self, sig: Signal) {
        if let Some(pgid) = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)) {
            let _ = kill_process_group(pgid, sig);
        }
    }

    /// What it has written so far.
    #[must_use]
    pub fn output(&self) -> (String, String) {
        (read_all(&self.stdout), read_all(&self.stderr))
    }
}

fn read_all(f: &File) -> String {
    let mut f = f;
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.take(OUTPUT_CAP).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `binary args…` to completion with a time limit; on timeout the whole process group is
/// killed and the run is an error. Blocking.
pub fn run(binary: &str, args: &[String], env: &CliEnv, timeout: Duration) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = spawn(binary, args, env)?;
    let _log = scopeguard(started, args);
    match child.wait_for(timeout) {
        Some(code) => {
            let (stdout, stderr) = child.output();
            Ok(Run {
                code,
                stdout,
                stderr,
            })
        }
        None => {
            child.end_group(Duration::ZERO);
            Err(format!(
                "`openshell {}` did not finish within {}s",
                args.join(" "),
                timeout.as_secs()
            ))
        }
    }
}

/// Logs a CLI call with its duration when it ends (`-vv`): the arguments only (the engine
/// passes no secret on an `openshell` command line), never its output.
struct CallLog<'a> {
    started: Instant,
    args: &'a [String],
}

fn scopeguard(started: Instant, args: &[String]) -> CallLog<'_> {
    CallLog { started, args }
}

impl Drop for CallLog<'_> {
    fn drop(&mut self) {
        tracing::debug!(
            command = %self.args.join(" "),
            elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "openshell"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".to_owned(), script.to_owned()]
    }

    #[test]
    fn a_child_holding_the_output_open_does_not_block_the_caller() {
        // The CLI exits at once, but a background child keeps stdout and stderr open: a pipe
        // reader would wait for it; the memory file does not.
        let t = Instant::now();
        let r = run(
            "/bin/sh",
            &sh("echo out; echo err >&2; (sleep 30 &) ; exit 3"),
            &CliEnv::default(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_timeout_kills_the_group_and_is_an_error() {
        let e = run(
            "/bin/sh",
            &sh("sleep 30"),
            &CliEnv::default(),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
    }
}
