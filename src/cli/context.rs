//! Everything read from the environment, in one place, turned into plain options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CliError;
use crate::model::GatewayRuntime;
use crate::model::{Desired, Observed, PortRange};
use crate::observe::ObserveOptions;
use crate::observe::docker::DockerQuery;
use crate::observe::driver::DriverQuery;
use crate::spec;
use crate::spec::semantic::MANAGED_GATEWAY_ENV;
use std::collections::BTreeSet;

/// The user the engine acts for: under sudo (`SUDO_UID` set while root) that user, else the real
/// uid. Processes of other users are never signalled.
pub fn invoking_uid() -> u32 {
    let uid = nix::unistd::getuid().as_raw();
    if uid == 0
        && let Some(sudo) = std::env::var("SUDO_UID").ok().and_then(|s| s.parse().ok())
    {
        return sudo;
    }
    uid
}

/// The invoking user's home: their passwd entry under sudo, else `$HOME`, else — `HOME` unset or
/// empty — their passwd entry again. Never `/tmp`: a directory every user can write would let
/// any of them plant the registry, journal or gateway state the engine then acts on.
pub fn home_dir(invoking: u32) -> Result<PathBuf, CliError> {
    let passwd = || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(invoking))
            .ok()
            .flatten()
            .map(|u| u.dir)
            .filter(|d| d.is_absolute())
    };
    if invoking != nix::unistd::getuid().as_raw()
        && let Some(dir) = passwd()
    {
        return Ok(dir);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    passwd().ok_or_else(|| {
        CliError::new(format!(
            "`HOME` is not set and uid {invoking} has no home directory in the passwd database"
        ))
        .hint("set `HOME` to your home directory")
    })
}

/// The invoking user's configuration directory, where OpenShell keeps its gateways and forward
/// pid files: `$XDG_CONFIG_HOME` (OpenShell's `xdg_config_dir`), else `~/.config`. Under sudo the
/// variable is root's, so the invoking user's `~/.config` is used.
pub fn config_home(invoking: u32, home: &Path) -> PathBuf {
    if invoking == nix::unistd::getuid().as_raw()
        && let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty())
        && Path::new(&dir).is_absolute()
    {
        return PathBuf::from(dir);
    }
    home.join(".config")
}

/// The host lock file for apply: `NEMOCLAW_LOCK_FILE`, else for root `/run/nemoclaw/apply.lock`,
/// else `$XDG_RUNTIME_DIR/nemoclaw/apply.lock`, else `apply.lock` in the state directory —
/// always where only its user (or root) can write, never a shared directory like `/run/lock`.
pub fn lock_path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("NEMOCLAW_LOCK_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/run/nemoclaw/apply.lock"));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(dir).join("nemoclaw/apply.lock"));
    }
    Ok(state_dir()?.join("apply.lock"))
}

/// Options for observing what `desired` manages.
pub fn observe_options(desired: Option<&Desired>) -> Result<ObserveOptions, CliError> {
    let uid = invoking_uid();
    let home = home_dir(uid)?;
    let config = config_home(uid, &home);
    let (range, gateway) = desired.map_or((PortRange::DASHBOARD_DEFAULT, 8080), |d| {
        (d.dashboard, d.gateway.port)
    });
    let mut docker = DockerQuery {
        endpoint: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
        ..DockerQuery::default()
    };
    let mut driver = None;
    let mut gateway_port = None;
    let mut cluster_query = None;
    if let Some(d) = desired {
        docker.volumes.extend(d.destroy_volumes.iter().cloned());
        match &d.gateway.runtime {
            Some(GatewayRuntime::LegacyK3s {
                image,
                kubeconfig,
                cluster: manage,
                ..
            }) => {
                let cluster = d.gateway.cluster_name();
                cluster_query = manage.then(|| crate::observe::cluster::ClusterQuery {
                    kubeconfig: kubeconfig.clone().map(PathBuf::from).or_else(|| {
                        std::env::var_os("KUBECONFIG")
                            .filter(|k| !k.is_empty())
                            .map(PathBuf::from)
                    }),
                    container: cluster.clone(),
                    docker_endpoint: docker.endpoint.clone(),
                    mtls_dir: mtls_dir(&config, &d.gateway.name),
                    timeout: Duration::from_secs(5),
                });
                docker.containers.push(cluster.clone());
                if !docker.volumes.contains(&cluster) {
                    docker.volumes.push(cluster.clone());
                }
                docker.networks.push(cluster);
                docker.images.push(image.clone());
                gateway_port = Some(d.gateway.port);
            }
            Some(GatewayRuntime::DockerDriver { binary, env }) => {
                let mut env_keys: BTreeSet<String> = MANAGED_GATEWAY_ENV
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect();
                env_keys.extend(env.keys().cloned());
                let clear_keys = MANAGED_GATEWAY_ENV
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect();
                driver = Some(DriverQuery {
                    clear_keys,
                    state_dir: driver_state_dir(&home, d.gateway.port),
                    binary_candidates: binary_candidates(binary.as_deref(), &home),
                    port: d.gateway.port,
                    env_keys,
                    fingerprint_key: fingerprint_key(),
                });
                gateway_port = Some(d.gateway.port);
            }
            None => {}
        }
    }
    if let Some(d) = desired {
        docker.sandbox_containers = !d.sandboxes.is_empty() || !d.prune_sandboxes.is_empty();
    }
    let cli = desired.map(|d| crate::observe::openshell::CliQuery {
        candidates: openshell_candidates(),
        registered: Vec::new(),
        gateway: d.gateway.runtime.as_ref().map(|_| d.gateway.name.clone()),
        timeout: Duration::from_secs(15),
    });
    Ok(ObserveOptions {
        cluster: cluster_query,
        cli,
        invoking_uid: uid,
        config_home: config,
        home,
        ports: vec![
            range,
            PortRange {
                start: gateway,
                end: gateway,
            },
        ],
        timeout: Duration::from_secs(10),
        docker,
        gateway_port,
        driver,
    })
}

/// The CLI's copy of a gateway's client bundle: `<config>/openshell/gateways/<gw>/mtls`.
pub fn mtls_dir(config: &Path, gateway: &str) -> PathBuf {
    config.join("openshell/gateways").join(gateway).join("mtls")
}

/// `NEMOCLAW_OPENSHELL_BIN`, else `openshell` on `PATH`.
pub fn openshell_candidates() -> Vec<PathBuf> {
    if let Some(b) = std::env::var_os("NEMOCLAW_OPENSHELL_BIN").filter(|b| !b.is_empty()) {
        return vec![PathBuf::from(b)];
    }
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("openshell"))
                .collect()
        })
        .unwrap_or_default()
}

/// `NEMOCLAW_OPENSHELL_GATEWAY_STATE_DIR`, else
/// `~/.local/state/nemoclaw/openshell-docker-gateway[-<port>]` (NemoClaw's layout; the port suffix
/// keeps two gateways apart, #4422).
fn driver_state_dir(home: &Path, port: u16) -> PathBuf {
    if let Some(dir) =
        std::env::var_os("NEMOCLAW_OPENSHELL_GATEWAY_STATE_DIR").filter(|d| !d.is_empty())
    {
        return PathBuf::from(dir);
    }
    let leaf = if port == 8080 {
        "openshell-docker-gateway".to_owned()
    } else {
        format!("openshell-docker-gateway-{port}")
    };
    home.join(".local/state/nemoclaw").join(leaf)
}

/// The file's binary, else `NEMOCLAW_OPENSHELL_GATEWAY_BIN`, else next to `openshell` on `PATH`,
/// else `~/.local/bin`, `/usr/local/bin`, `/usr/bin`.
fn binary_candidates(explicit: Option<&str>, home: &Path) -> Vec<PathBuf> {
    if let Some(b) = explicit {
        return vec![PathBuf::from(b)];
    }
    let mut out = Vec::new();
    if let Some(b) = std::env::var_os("NEMOCLAW_OPENSHELL_GATEWAY_BIN").filter(|b| !b.is_empty()) {
        out.push(PathBuf::from(b));
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| d.join("openshell").is_file())
    {
        out.push(dir.join("openshell-gateway"));
    }
    out.push(home.join(".local/bin/openshell-gateway"));
    out.push(PathBuf::from("/usr/local/bin/openshell-gateway"));
    out.push(PathBuf::from("/usr/bin/openshell-gateway"));
    out
}

/// `$XDG_STATE_HOME/nemoclaw`, else `~/.local/state/nemoclaw`: the journal's home.
pub fn state_dir() -> Result<PathBuf, CliError> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("nemoclaw"));
    }
    Ok(home_dir(invoking_uid())?.join(".local/state/nemoclaw"))
}

/// The host's fingerprint key (`<state dir>/fingerprint.key`, 32 random bytes, 0600), made on
/// first use. Secret values are kept in observations, plans and the journal only as HMACs
/// under it, so a snapshot that travels to CI does not let a short secret be guessed. `None`
/// (plain SHA-256, with a warning) when it can be neither read nor made.
pub fn fingerprint_key() -> Option<Vec<u8>> {
    let dir = state_dir().ok()?;
    let path = dir.join("fingerprint.key");
    let read = || {
        crate::observe::files::read_regular(&path, 64)
            .ok()
            .filter(|k| k.len() == 32)
    };
    if let Some(key) = read() {
        return Some(key);
    }
    let made = (|| {
        use std::io::Read as _;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        crate::apply::files::private_dir(&dir)?;
        crate::apply::files::write_private(&path, &key)
    })();
    match (made, read()) {
        (_, Some(key)) => Some(key),
        (Err(e), None) => {
            tracing::warn!(
                "cannot make the fingerprint key {}: {e}; secrets are fingerprinted with plain SHA-256",
                path.display()
            );
            None
        }
        (Ok(()), None) => None,
    }
}

/// What apply needs beyond the plan, from the same options the host was observed with.
pub fn apply_context(desired: &Desired, opts: &ObserveOptions) -> crate::apply::ApplyContext {
    crate::apply::ApplyContext {
        docker_endpoint: opts.docker.endpoint.clone(),
        gateway_env: match &desired.gateway.runtime {
            Some(GatewayRuntime::DockerDriver { env, .. }) => env.clone(),
            _ => Default::default(),
        },
        gateway_env_fingerprint: desired.secret_fingerprints.env_map.clone(),
        journal: None,
        home: opts.home.clone(),
        cluster: opts.cluster.clone(),
        parallelism: 1,
        plan_sha256: String::new(),
    }
}

/// Reads and validates a desired-state file; on failure prints every diagnostic.
pub fn load_desired(path: &Path, color: bool) -> Result<Desired, CliError> {
    let shown = path.display().to_string();
    let bytes = crate::observe::files::read_input(path, spec::MAX_FILE_BYTES).map_err(|e| {
        CliError::from_error(format!("cannot read the desired-state file `{shown}`"), &e)
            .hint("pass the file with `-f FILE`; `examples/` has a starting point")
    })?;
    let text = utf8(&shown, bytes)?;
    let mut desired = spec::load(&shown, &text).map_err(|diags| {
        // Enough to fix the file by; a file of 40,000 wrong keys does not flood the terminal.
        const SHOWN: usize = 20;
        for d in diags.iter().take(SHOWN) {
            super::ui::eprint(&d.render(&shown, &text, color));
        }
        if diags.len() > SHOWN {
            super::ui::eprint(&format!("... and {} more problems\n", diags.len() - SHOWN));
        }
        let n = diags.len();
        CliError::new(format!(
            "`{shown}` is invalid ({n} problem{}); nothing was observed or changed",
            if n == 1 { "" } else { "s" }
        ))
    })?;
    finish_desired(&mut desired, &shown)?;
    Ok(desired)
}

/// What every loaded desired state goes through after its checks: paths made absolute, policy
/// files hashed, secret values fingerprinted under the host's key.
pub fn finish_desired(desired: &mut Desired, shown: &str) -> Result<(), CliError> {
    resolve_files(desired, shown)?;
    // Only a docker-driver gateway has secret values to compare; no key file is made otherwise.
    if matches!(
        desired.gateway.runtime,
        Some(GatewayRuntime::DockerDriver { .. })
    ) {
        let key = fingerprint_key();
        desired.fingerprint_secrets(key.as_deref());
    }
    Ok(())
}

/// Makes the file's paths absolute (the CLI runs them from wherever apply runs) and reads each
/// policy file's SHA-256, so the plan shows what will be applied and apply can refuse a file that
/// changed since.
fn resolve_files(desired: &mut Desired, shown: &str) -> Result<(), CliError> {
    for (i, sb) in desired.sandboxes.iter_mut().enumerate() {
        if let Some(from) = sb.create.from.as_mut()
            && spec::semantic::is_path(from)
        {
            *from = absolute(from);
            check_build_source(Path::new(from)).map_err(|why| {
                CliError::new(format!(
                    "`{shown}`: `sandboxes[{i}].from` of sandbox `{}` names `{from}`, {why}",
                    sb.name
                ))
                .hint("`from` is a Dockerfile, a directory holding a `Dockerfile` (relative to the desired-state file), or an image reference such as `registry.example.com/img:tag`")
            })?;
        }
        if let Some(p) = sb.create.policy.as_mut() {
            p.path = absolute(&p.path);
            let bytes = crate::observe::files::read_regular(Path::new(&p.path), 1 << 20)
                .map_err(|e| {
                    CliError::from_error(
                        format!(
                            "`{shown}`: `sandboxes[{i}].policy` of sandbox `{}` names `{}`, which cannot be read",
                            sb.name, p.path
                        ),
                        &e,
                    )
                    .hint("the path is relative to the desired-state file; it must be a regular file (no symlink) of at most 1 MiB")
                })?;
            p.sha256 = Some(crate::model::fingerprint_bytes(&bytes));
        }
    }
    Ok(())
}

/// What OpenShell's CLI accepts as a local `--from` (`resolve_from`, v0.0.72
/// `crates/openshell-cli/src/run.rs:2394`): a file whose name looks like a Dockerfile, or a
/// directory holding a `Dockerfile`.
fn check_build_source(path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && name.contains("dockerfile") => Ok(()),
        Ok(m) if m.is_file() => Err("which is not a Dockerfile".to_owned()),
        Ok(m) if m.is_dir() && path.join("Dockerfile").is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err("a directory without a `Dockerfile`".to_owned()),
        Ok(_) => Err("which is not a regular file or directory".to_owned()),
        Err(e) => Err(format!("which cannot be read: {e}")),
    }
}

fn absolute(path: &str) -> String {
    std::path::absolute(path).map_or_else(|_| path.to_owned(), |p| p.display().to_string())
}

/// The largest snapshot read: 256 MiB (a host of 100,000 listeners is some 30 MiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// Text from a named input file, or an error pointing at the first byte that is not UTF-8.
pub fn utf8(shown: &str, bytes: Vec<u8>) -> Result<String, CliError> {
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        CliError::new(format!(
            "`{shown}`:{line}:{column}: not UTF-8 text (byte 0x{:02x})",
            e.as_bytes()[good.len()]
        ))
        .hint("save the file as UTF-8")
    })
}

/// Reads a saved observation (`nemoclaw observe -o json|yaml`).
pub fn load_observed(path: &Path) -> Result<Observed, CliError> {
    let shown = path.display().to_string();
    let bytes = crate::observe::files::read_input(path, MAX_SNAPSHOT_BYTES)
        .map_err(|e| CliError::from_error(format!("cannot read the observation `{shown}`"), &e))?;
    let text = utf8(&shown, bytes)?;
    parse_observed(&shown, &text)
}

/// Parses a saved observation's text (JSON, or YAML within [`spec::yaml::Limits::SNAPSHOT`]) and
/// checks its format version. `shown` labels errors.
pub fn parse_observed(shown: &str, text: &str) -> Result<Observed, CliError> {
    let observed: Observed = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| {
            CliError::new(format!(
                "`{shown}`:{}:{}: not an observation: {e}",
                e.line(),
                e.column()
            ))
            .hint("create one with `nemoclaw observe -f nemoclaw.yaml -o json > host.json`")
        })?
    } else {
        // The same bounded parser as the desired file (depth, size, alias budget), then serde.
        let (root, diags) =
            spec::yaml::parse_with(text, spec::yaml::Limits::SNAPSHOT).map_err(|d| {
                let at = d.span.map(|s| format!(":{s}")).unwrap_or_default();
                CliError::new(format!("`{shown}`{at}: not an observation: {}", d.message))
                    .hint("create one with `nemoclaw observe -f nemoclaw.yaml -o json > host.json`")
            })?;
        if let Some(d) = diags.first() {
            let at = d.span.map(|s| format!(":{s}")).unwrap_or_default();
            return Err(CliError::new(format!(
                "`{shown}`{at}: not an observation: {}",
                d.message
            )));
        }
        serde_json::from_value(root.to_json()).map_err(|e| {
            CliError::new(format!("`{shown}`: not an observation: {e}"))
                .hint("create one with `nemoclaw observe -f nemoclaw.yaml -o json > host.json`")
        })?
    };
    let major = observed.format_version.split('.').next().unwrap_or("");
    if major
        != crate::model::OBSERVED_FORMAT_VERSION
            .split('.')
            .next()
            .unwrap_or("1")
    {
        return Err(CliError::new(format!(
            "`{shown}` has observation format {}, which this nemoclaw cannot read (it reads {}.x)",
            observed.format_version,
            crate::model::OBSERVED_FORMAT_VERSION
                .split('.')
                .next()
                .unwrap_or("1")
        )));
    }
    Ok(observed)
}

/// Builds a current-thread runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::from_error("cannot start the async runtime", &e))
}
