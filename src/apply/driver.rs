//! Starting the `docker-driver` gateway process: detached, with its log and pid file, then
//! waiting until it accepts TCP on its port. A child that dies is noticed at the next poll (every
//! 50 ms), with its exit status, not after the whole budget (#3378).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt as _;
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
    file_env_fingerprint: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    if file_env_fingerprint != t.file_env_sha256 {
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
    if let Err(e) = super::files::private_dir(dir) {
        return StepOutcome::Failed(format!("creating {}: {e}", dir.display()));
    }
    let log_path = dir.join("openshell-gateway.log");
    let log = match super::files::open_append(&log_path) {
        Ok(f) => f,
        Err(e) => return StepOutcome::Failed(format!("opening {}: {e}", log_path.display())),
    };
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err_log = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return StepOutcome::Failed(format!("opening {}: {e}", log_path.display())),
    };
    if let Some(config) = &t.config
        && let Err(e) = write_config(dir, t, config)
    {
        return StepOutcome::Failed(e);
    }
    let user = match run_as(t.run_as_uid) {
        Ok(u) => u,
        Err(e) => return StepOutcome::Failed(e),
    };
    progress(&format!("starting `{}`", t.binary));
    let mut cmd = Command::new(&t.binary);
    cmd.envs(&t.managed_env)
        .envs(file_env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        // Its own process group, so a Ctrl-C at the engine's terminal does not reach it.
        .process_group(0);
    if let Some(u) = &user {
        // Under sudo the gateway is the invoking user's, as it would be without sudo: the next
        // plan must not disown it, and its files must stay the user's.
        cmd.uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .env("HOME", &u.dir)
            .env("USER", &u.name);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return StepOutcome::Failed(format!("cannot run `{}`: {e}", t.binary)),
    };
    let pid = child.id();
    if let Err(e) = super::files::write_private(&dir.join(PID_FILE), format!("{pid}\n").as_bytes())
    {
        return StepOutcome::Failed(format!("writing the pid file: {e}"));
    }
    let _ = super::files::write_private(
        &dir.join("runtime.json"),
        format!("{:#}\n", runtime_marker(t, pid, file_env)).as_bytes(),
    );
    if let Some(u) = &user {
        chown_state(dir, u);
    }

    progress(&format!(
        "pid {pid}; waiting up to {} for port {port} to accept connections",
        t.wait.timeout
    ));
    let started = Instant::now();
    let deadline = started + t.wait.timeout.duration();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return StepOutcome::Failed(format!(
                "`{}` exited with {} after {} ms, before answering on port {port}; last log lines:\n{}",
                t.binary,
                exit_text(status),
                started.elapsed().as_millis(),
                redact(&log_tail(&log_path, log_start), file_env)
            ));
        }
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            let answered = started.elapsed();
            // A gateway that answers and then dies (a bad config it reads late, a port clash on
            // its SSH side) is reported as died, not as started.
            tokio::time::sleep(SETTLE).await;
            if let Ok(Some(status)) = child.try_wait() {
                return StepOutcome::Failed(format!(
                    "`{}` answered on port {port} after {} ms, then died ({}); last log lines:\n{}",
                    t.binary,
                    answered.as_millis(),
                    exit_text(status),
                    redact(&log_tail(&log_path, log_start), file_env)
                ));
            }
            return StepOutcome::Done(format!(
                "pid {pid} accepts connections on port {port} after {} ms",
                answered.as_millis()
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

/// How long a gateway that answered is watched before the start counts as done.
const SETTLE: Duration = Duration::from_secs(1);

fn exit_text(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// The log as shown to people: the file's `gateway.env` values (credentials, for all the engine
/// knows) replaced by `<redacted>`.
fn redact(text: &str, file_env: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    let mut values: Vec<&String> = file_env.values().filter(|v| v.len() >= 4).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v.as_str(), "<redacted>");
    }
    out
}

/// `runtime.json` as NemoClaw writes it (9708c264
/// `src/lib/onboard/docker-driver-gateway-runtime-marker.ts:10-84`), so each tool reads the
/// other's: the launch environment's hash is sha256 of the JSON of its sorted `[key, value]`
/// pairs (`:38-43`), over the managed keys and the file's.
fn runtime_marker(
    t: &ProcessTarget,
    pid: u32,
    file_env: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut env: BTreeMap<&str, &str> = t
        .managed_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend(file_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let pairs: Vec<[&str; 2]> = env.into_iter().map(|(k, v)| [k, v]).collect();
    let hash =
        crate::model::sha256_hex(serde_json::to_string(&pairs).unwrap_or_default().as_bytes());
    let gateway_bin =
        fs::canonicalize(&t.binary).map_or_else(|_| t.binary.clone(), |p| p.display().to_string());
    serde_json::json!({
        "version": 1,
        "pid": pid,
        "driver": "docker",
        // Node's names, as NemoClaw records them.
        "platform": match std::env::consts::OS { "macos" => "darwin", os => os },
        "arch": match std::env::consts::ARCH { "x86_64" => "x64", "aarch64" => "arm64", a => a },
        "endpoint": format!("http://127.0.0.1:{}", t.wait.port),
        "desiredEnvHash": hash,
        "gatewayBin": gateway_bin,
        "openshellVersion": t.version,
        "dockerHost": std::env::var("DOCKER_HOST").ok(),
        "createdAt": crate::observe::time::format_rfc3339(crate::observe::now_ms()),
    })
}

/// The user to run the gateway as, when the engine runs as root for another user (sudo).
fn run_as(uid: u32) -> Result<Option<nix::unistd::User>, String> {
    if !nix::unistd::geteuid().is_root() || uid == 0 {
        return Ok(None);
    }
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .map_err(|e| format!("cannot look up uid {uid}: {e}"))?
        .map(Some)
        .ok_or_else(|| format!("uid {uid} has no passwd entry; the gateway is not started as root"))
}

/// The state dir's files made by root for the user are the user's.
fn chown_state(dir: &Path, u: &nix::unistd::User) {
    let mut paths = vec![dir.to_path_buf()];
    for leaf in [
        "openshell-gateway.log",
        PID_FILE,
        "runtime.json",
        crate::plan::gateway::CONFIG_FILE,
        "jwt",
        "jwt/signing.pem",
        "jwt/public.pem",
        "jwt/kid",
    ] {
        paths.push(dir.join(leaf));
    }
    for p in paths.iter().filter(|p| p.exists()) {
        let _ = std::os::unix::fs::chown(p, Some(u.uid.as_raw()), Some(u.gid.as_raw()));
    }
}

/// Writes the gateway's config file, making its JWT keys first if they are missing: an Ed25519
/// key pair (PKCS#8 and SPKI PEM) and a key id, 0600 in a 0700 directory. Existing keys are kept,
/// so tokens the gateway issued stay valid across restarts.
fn write_config(dir: &Path, t: &ProcessTarget, config: &str) -> Result<(), String> {
    let jwt = dir.join("jwt");
    super::files::private_dir(&jwt).map_err(|e| format!("creating {}: {e}", jwt.display()))?;
    let files = ["signing.pem", "public.pem", "kid"].map(|f| jwt.join(f));
    if !files.iter().all(|f| f.is_file()) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| format!("generating the gateway's JWT key: {e}"))?;
        let kid = &crate::model::sha256_hex(kp.public_key_pem().as_bytes())[..16];
        for (path, text) in
            files
                .iter()
                .zip([kp.serialize_pem(), kp.public_key_pem(), format!("{kid}\n")])
        {
            super::files::write_private(path, text.as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }
    let path = t.managed_env.get("OPENSHELL_GATEWAY_CONFIG").map_or_else(
        || dir.join(crate::plan::gateway::CONFIG_FILE),
        std::path::PathBuf::from,
    );
    super::files::write_private(&path, config.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The last lines the child wrote to the log during this start.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK)
                .bits()
                .cast_signed(),
        )
        .open(path)
        && f.metadata().is_ok_and(|m| m.is_file())
    {
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
