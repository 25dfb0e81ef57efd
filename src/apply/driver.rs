//! Starting the `docker-driver` gateway process: detached, with its log and pid file, then
//! waiting until it accepts TCP on its port. A child that dies is noticed at the next poll (every
//! 50 ms), with its exit status, not after the whole budget (#3378).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{StepOutcome, stop};
use crate::observe::{self, PortState, driver::PID_FILE};
use crate::plan::ProcessTarget;

/// Starts (or, with `t.stop`, restarts) the gateway. `file_env` is the file's `gateway.env`,
/// checked against the plan's fingerprint.
pub async fn start(
    t: &ProcessTarget,
    file_env: &BTreeMap<String, String>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    if crate::plan::env_map_sha256(file_env) != t.file_env_sha256 {
        return StepOutcome::Stale("`gateway.env` changed since the plan".to_owned());
    }
    if let Some(s) = &t.stop {
        match stop::run(s, progress).await {
            StepOutcome::Done(_) => {}
            other => return other,
        }
    }
    let port = t.wait.port;
    if let PortState::Busy(_) = observe::probe_ports(&[port]) {
        return StepOutcome::Stale(format!("port {port} is held now; it was free when planned"));
    }
    let dir = Path::new(&t.state_dir);
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return StepOutcome::Failed(format!("creating {}: {e}", dir.display()));
    }
    let log_path = dir.join("openshell-gateway.log");
    let log = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => return StepOutcome::Failed(format!("opening {}: {e}", log_path.display())),
    };
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err_log = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return StepOutcome::Failed(format!("opening {}: {e}", log_path.display())),
    };
    progress(&format!("starting `{}`", t.binary));
    let mut child = match Command::new(&t.binary)
        .envs(&t.managed_env)
        .envs(file_env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        // Its own process group, so a Ctrl-C at the engine's terminal does not reach it.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return StepOutcome::Failed(format!("cannot run `{}`: {e}", t.binary)),
    };
    let pid = child.id();
    if let Err(e) = super::files::write_private(&dir.join(PID_FILE), format!("{pid}\n").as_bytes())
    {
        return StepOutcome::Failed(format!("writing the pid file: {e}"));
    }
    let marker = serde_json::json!({
        "version": 1,
        "pid": pid,
        "driver": "docker",
        "platform": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "endpoint": format!("http://127.0.0.1:{port}"),
        "desiredEnvHash": crate::plan::env_map_sha256(&t.managed_env),
        "gatewayBinary": t.binary,
    });
    let _ = super::files::write_private(
        &dir.join("runtime.json"),
        format!("{marker:#}\n").as_bytes(),
    );

    progress(&format!(
        "pid {pid}; waiting up to {} for port {port} to accept connections",
        t.wait.timeout
    ));
    let started = Instant::now();
    let deadline = started + t.wait.timeout.duration();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => status.to_string(),
            };
            return StepOutcome::Failed(format!(
                "`{}` exited with {how} after {} ms, before answering on port {port}; last log lines:\n{}",
                t.binary,
                started.elapsed().as_millis(),
                log_tail(&log_path, log_start)
            ));
        }
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return StepOutcome::Done(format!(
                "pid {pid} accepts connections on port {port} after {} ms",
                started.elapsed().as_millis()
            ));
        }
        if Instant::now() >= deadline {
            return StepOutcome::Failed(format!(
                "pid {pid} runs but did not accept connections on port {port} within {}; see {}",
                t.wait.timeout,
                log_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines the child wrote to the log during this start.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        "  (nothing)".to_owned()
    } else {
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
