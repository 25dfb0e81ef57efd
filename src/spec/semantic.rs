//! Checks that need more than the schema: port rules, uniqueness, names, durations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::diagnostic::{Diagnostic, DocPath};
use super::types::{BindAddress, RESERVED_GATEWAY_PORTS, RuntimeSpec, Spec};
use super::yaml::Node;
use crate::model::{
    Cleanup, Desired, DesiredSource, GatewayDesired, GatewayRuntime, Millis, PolicyFile, PortRange,
    SandboxCreate, SandboxDesired,
};

/// Environment keys the engine sets (or, for the last two, reads to tell whose gateway it is)
/// for a `docker-driver` gateway; the file may not override them. NemoClaw's launch environment
/// (3aa9a59f `src/lib/onboard.ts:3740-3775`, drift keys `:3850-3863`) plus the 0.0.72 config file.
pub const MANAGED_GATEWAY_ENV: [&str; 14] = [
    "OPENSHELL_DRIVERS",
    "OPENSHELL_BIND_ADDRESS",
    "OPENSHELL_SERVER_PORT",
    "OPENSHELL_DISABLE_TLS",
    "OPENSHELL_DISABLE_GATEWAY_AUTH",
    "OPENSHELL_DB_URL",
    "OPENSHELL_GRPC_ENDPOINT",
    "OPENSHELL_SSH_GATEWAY_HOST",
    "OPENSHELL_SSH_GATEWAY_PORT",
    "OPENSHELL_DOCKER_NETWORK_NAME",
    "OPENSHELL_DOCKER_SUPERVISOR_IMAGE",
    "OPENSHELL_DOCKER_SUPERVISOR_BIN",
    "OPENSHELL_GATEWAY_CONFIG",
    "OPENSHELL_LOCAL_TLS_DIR",
];

/// Resolves a structurally valid [`Spec`] into a [`Desired`], or returns every semantic problem.
pub fn resolve(
    spec: &Spec,
    root: &Node,
    source: DesiredSource,
) -> Result<Desired, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut err = |path: &str, message: String, expected: &str, hint: &str| {
        let path = DocPath::parse(path);
        let mut d = Diagnostic::error(path.clone(), message).with_span(root.span_of(&path));
        if !expected.is_empty() {
            d = d.with_expected(expected);
        }
        if !hint.is_empty() {
            d = d.with_hint(hint);
        }
        diags.push(d);
    };

    // Paths in the file are relative to the file's own directory.
    let base = Path::new(&source.path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let range = match PortRange::parse(&spec.dashboard.port_range) {
        Ok(r) if r.start < 1024 => {
            err(
                "dashboard.portRange",
                format!(
                    "`dashboard.portRange` starts at {}, a privileged port",
                    r.start
                ),
                "a range inside 1024-65535, such as `18789-18799`",
                "",
            );
            r
        }
        Ok(r) => r,
        Err(e) => {
            err(
                "dashboard.portRange",
                format!("`dashboard.portRange` is not a port range: {e}"),
                "`START-END`, inclusive, such as `18789-18799`",
                "",
            );
            PortRange::DASHBOARD_DEFAULT
        }
    };

    let gw = spec.gateway.as_ref().map_or(8080, |g| g.port);
    if range.contains(gw) {
        err(
            "gateway.port",
            format!("`gateway.port` {gw} is inside the dashboard range {range}"),
            &format!("a port outside {range}"),
            "the gateway and the dashboards share no ports; the default gateway port is 8080",
        );
    }
    if RESERVED_GATEWAY_PORTS.contains(&gw) {
        err(
            "gateway.port",
            format!(
                "`gateway.port` {gw} is reserved for local inference (vLLM/NIM 8000, Ollama 11434, its proxy 11435, Bedrock adapter 11436)"
            ),
            "a port other than 8000, 11434, 11435 and 11436",
            "the default gateway port is 8080",
        );
    }

    let protected: BTreeSet<u16> = spec.cleanup.protected_ports.iter().copied().collect();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, sb) in spec.sandboxes.iter().enumerate() {
        let at = format!("sandboxes[{i}]");
        if let Some(problem) = name_problem(&sb.name) {
            err(
                &format!("{at}.name"),
                format!("sandbox name `{}` is not valid: {problem}", sb.name),
                "1-63 characters: a lowercase letter first, then lowercase letters, digits and inner hyphens",
                "for example `my-assistant`",
            );
        }
        if let Some(first) = names.insert(&sb.name, i) {
            err(
                &format!("{at}.name"),
                format!("sandbox `{}` is declared twice", sb.name),
                "unique sandbox names",
                &format!("it is first declared at `sandboxes[{first}]`; remove or rename one"),
            );
            names.insert(&sb.name, first);
        }
        if let Some(t) = &sb.ready_timeout {
            match Millis::parse(t) {
                Ok(m) if m.0 > 0 && m.0 <= 3_600_000 => {}
                _ => err(
                    &format!("{at}.readyTimeout"),
                    format!("`{at}.readyTimeout` {t} is not a duration between 1ms and 1h"),
                    "a duration such as `180s` or `10m`",
                    "",
                ),
            }
        }
        if let Some(r) = &sb.resources {
            if let Some(problem) = r.cpu.as_deref().and_then(cpu_problem) {
                err(
                    &format!("{at}.resources.cpu"),
                    format!("`{at}.resources.cpu` is not a CPU limit: {problem}"),
                    "cores or millicores, for example `2`, `0.5` or `500m`",
                    "OpenShell's CLI rejects anything else (`invalid --cpu value`)",
                );
            }
            if let Some(problem) = r.memory.as_deref().and_then(memory_problem) {
                err(
                    &format!("{at}.resources.memory"),
                    format!("`{at}.resources.memory` is not a memory limit: {problem}"),
                    "bytes, or a number with one of Ki, Mi, Gi, Ti, Pi, Ei, K, M, G, T, P, E: `512Mi`, `4Gi`, `8G`",
                    "suffixes are case-sensitive: `8g` is rejected by OpenShell's CLI, write `8G` or `8Gi`",
                );
            }
        }
        let Some(port) = sb.dashboard_port else {
            continue;
        };
        let path = format!("{at}.dashboardPort");
        if !range.contains(port) {
            err(
                &path,
                format!("`{path}` {port} is outside `dashboard.portRange` {range}"),
                &format!("a port in {range}"),
                "pick a port inside the range, or widen `dashboard.portRange`",
            );
        }
        if port == gw {
            err(
                &path,
                format!("`{path}` {port} is the gateway port"),
                "a port other than `gateway.port`",
                "",
            );
        }
        if protected.contains(&port) {
            err(
                &path,
                format!("`{path}` {port} is listed in `cleanup.protectedPorts`"),
                "a dashboard port that the engine may claim",
                "a protected port is never touched, so no sandbox can claim it; remove it from `cleanup.protectedPorts` or pick another port",
            );
        }
        if let Some(first) = ports.insert(port, i) {
            err(
                &path,
                format!("dashboard port {port} is claimed twice"),
                "one sandbox per dashboard port",
                &format!(
                    "`sandboxes[{first}]` (`{}`) already claims it",
                    spec.sandboxes[first].name
                ),
            );
            ports.insert(port, first);
        }
    }

    if protected.contains(&gw) {
        err(
            "cleanup.protectedPorts",
            format!("`cleanup.protectedPorts` lists the gateway port {gw}"),
            "ports the engine never manages",
            "the gateway port is managed by the engine; remove it from `cleanup.protectedPorts`",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, port) in spec.cleanup.protected_ports.iter().enumerate() {
        if !seen.insert(*port) {
            err(
                &format!("cleanup.protectedPorts[{i}]"),
                format!("port {port} is listed twice in `cleanup.protectedPorts`"),
                "each port once",
                "",
            );
        }
    }
    for (i, marker) in spec.cleanup.markers.iter().enumerate() {
        if marker.trim().chars().count() < 3 {
            err(
                &format!("cleanup.markers[{i}]"),
                format!("marker `{marker}` is too short to identify a process safely"),
                "at least 3 non-blank characters, such as `openclaw-gateway`",
                "a marker is matched as a substring of the whole command line",
            );
        }
    }

    let mut duration = |key: &str, text: &str, max_ms: u64| -> Millis {
        let path = format!("cleanup.{key}");
        match Millis::parse(text) {
            Ok(m) if m.0 == 0 => {
                err(
                    &path,
                    format!("`{path}` is zero"),
                    "a positive duration such as `1s`",
                    "",
                );
                m
            }
            Ok(m) if m.0 > max_ms => {
                err(
                    &path,
                    format!(
                        "`{path}` {text} is longer than the limit of {}",
                        Millis(max_ms)
                    ),
                    &format!("at most {}", Millis(max_ms)),
                    "",
                );
                m
            }
            Ok(m) => m,
            Err(e) => {
                err(
                    &path,
                    format!("`{path}` is not a duration: {e}"),
                    "a duration such as `500ms`, `1s` or `1.5s`",
                    "",
                );
                Millis(1000)
            }
        }
    };
    let term_grace = duration("termGrace", &spec.cleanup.term_grace, 60_000);
    let kill_grace = duration("killGrace", &spec.cleanup.kill_grace, 60_000);
    let port_free_timeout = duration("portFreeTimeout", &spec.cleanup.port_free_timeout, 60_000);

    let gateway = resolve_gateway(spec, gw, &mut err);
    for (i, name) in spec.destroy.volumes.iter().enumerate() {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            err(
                &format!("destroy.volumes[{i}]"),
                format!("`{name}` is not a Docker volume name"),
                "an exact volume name: letters, digits, `_`, `.`, `-`; no patterns",
                "`docker volume ls` lists the names",
            );
        }
    }

    if !diags.is_empty() {
        diags.sort_by_key(|d| d.span);
        return Err(diags);
    }
    let mut desired = Desired {
        source,
        gateway,
        dashboard: range,
        sandboxes: spec
            .sandboxes
            .iter()
            .map(|s| resolve_sandbox(s, &base))
            .collect(),
        cleanup: Cleanup {
            stale_listeners: spec.cleanup.stale_listeners,
            markers: spec.cleanup.markers.clone(),
            protected_ports: protected,
            term_grace,
            kill_grace,
            port_free_timeout,
            keep_openclaw_profiles: spec
                .cleanup
                .openclaw
                .keep_profiles
                .iter()
                .cloned()
                .collect(),
        },
        destroy_volumes: spec.destroy.volumes.iter().cloned().collect(),
        prune_sandboxes: spec.prune.sandboxes.iter().cloned().collect(),
        secret_fingerprints: crate::model::desired::SecretFingerprints::default(),
    };
    desired.fingerprint_secrets(None);
    Ok(desired)
}

fn resolve_sandbox(s: &super::types::SandboxSpec, base: &Path) -> SandboxDesired {
    SandboxDesired {
        name: s.name.clone(),
        dashboard_port: s.dashboard_port,
        dashboard_bind: match s.dashboard_bind {
            BindAddress::Loopback => "127.0.0.1",
            BindAddress::Any => "0.0.0.0",
        }
        .parse()
        .expect("literal address"),
        create: SandboxCreate {
            agent: s.agent.clone(),
            from: s.from.as_ref().map(|f| {
                if is_path(f) {
                    relative_to(base, f)
                } else {
                    f.clone()
                }
            }),
            policy: s.policy.as_ref().map(|p| PolicyFile {
                path: relative_to(base, p),
                sha256: None,
            }),
            gpu: match s.gpu {
                super::types::GpuSpec::Auto => "auto",
                super::types::GpuSpec::On => "on",
                super::types::GpuSpec::Off => "off",
            }
            .to_owned(),
            cpu: s.resources.as_ref().and_then(|r| r.cpu.clone()),
            memory: s.resources.as_ref().and_then(|r| r.memory.clone()),
            ready_timeout: s
                .ready_timeout
                .as_deref()
                .and_then(|t| Millis::parse(t).ok())
                .unwrap_or(READY_TIMEOUT),
        },
    }
}

/// NemoClaw's `NEMOCLAW_SANDBOX_READY_TIMEOUT` default.
pub const READY_TIMEOUT: Millis = Millis(180_000);

/// Whether a `from:` names a local path (`/…`, `./…`, `../…`) rather than an image reference.
#[must_use]
pub fn is_path(from: &str) -> bool {
    from.starts_with('/')
        || from.starts_with("./")
        || from.starts_with("../")
        || from == "."
        || from == ".."
}

/// `path` taken relative to `base` (the desired file's directory) unless it is absolute.
fn relative_to(base: &Path, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() || base.as_os_str().is_empty() {
        path.to_owned()
    } else {
        base.join(p).display().to_string()
    }
}

/// What is wrong with a `--cpu` value, judged as OpenShell's CLI judges it
/// (`validate_cpu_quantity`, v0.0.72 `crates/openshell-cli/src/run.rs:1686`): millicores `500m`
/// (digits, > 0) or positive finite cores (`2`, `0.5`).
#[must_use]
pub fn cpu_problem(value: &str) -> Option<String> {
    if value.trim() != value || value.is_empty() {
        return Some("it is empty or has surrounding spaces".to_owned());
    }
    if let Some(milli) = value.strip_suffix('m') {
        return match milli.parse::<u64>() {
            Ok(0) => Some("it must be greater than zero".to_owned()),
            Ok(_) if milli.bytes().all(|b| b.is_ascii_digit()) => None,
            _ => Some("millicores are digits followed by `m`".to_owned()),
        };
    }
    if !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some("cores are a plain decimal number".to_owned());
    }
    match value.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => None,
        Ok(_) => Some("it must be greater than zero".to_owned()),
        Err(_) => Some("it is not a number".to_owned()),
    }
}

/// What is wrong with a `--memory` value, judged as OpenShell's CLI judges it
/// (`validate_memory_quantity`, v0.0.72 `crates/openshell-cli/src/run.rs:1716`): digits, then
/// nothing or one of `Ki Mi Gi Ti Pi Ei K M G T P E`, greater than zero.
#[must_use]
pub fn memory_problem(value: &str) -> Option<String> {
    let end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(end);
    if number.is_empty()
        || !matches!(
            suffix,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "K" | "M" | "G" | "T" | "P" | "E"
        )
    {
        return Some(format!(
            "`{value}` is not bytes or a quantity the OpenShell CLI accepts"
        ));
    }
    match number.parse::<u128>() {
        Ok(0) => Some("it must be greater than zero".to_owned()),
        Ok(_) => None,
        Err(_) => Some("the number is too large".to_owned()),
    }
}

/// Resolves the `gateway` section: name, runtime and the fields each runtime allows.
fn resolve_gateway(
    spec: &Spec,
    port: u16,
    err: &mut impl FnMut(&str, String, &str, &str),
) -> GatewayDesired {
    let default_name = GatewayDesired::default_name(port);
    let Some(g) = &spec.gateway else {
        return GatewayDesired {
            port,
            name: default_name,
            bind_address: "127.0.0.1".parse().expect("literal address"),
            runtime: None,
            health_timeout: Millis(60_000),
            stop_grace: Millis(30_000),
        };
    };
    let name = g.name.clone().unwrap_or_else(|| default_name.clone());
    if let Some(problem) = name_problem(&name) {
        err(
            "gateway.name",
            format!("gateway name `{name}` is not valid: {problem}"),
            "a DNS label such as `nemoclaw`",
            "",
        );
    } else if name == "nemoclaw-8080" {
        err(
            "gateway.name",
            "`nemoclaw-8080` is not the canonical name of the gateway on port 8080".to_owned(),
            "`nemoclaw`",
            "the gateway on port 8080 is `nemoclaw`; other ports are `nemoclaw-<port>`",
        );
    }
    let bind_address = match g.bind_address {
        BindAddress::Loopback => "127.0.0.1",
        BindAddress::Any => "0.0.0.0",
    }
    .parse()
    .expect("literal address");
    let health_timeout = match Millis::parse(&g.health_timeout) {
        Ok(m) if m.0 > 0 && m.0 <= 600_000 => m,
        Ok(_) => {
            err(
                "gateway.healthTimeout",
                "`gateway.healthTimeout` must be more than zero and at most 10m".to_owned(),
                "a duration such as `60s`",
                "",
            );
            Millis(60_000)
        }
        Err(e) => {
            err(
                "gateway.healthTimeout",
                format!("`gateway.healthTimeout` is not a duration: {e}"),
                "a duration such as `60s`",
                "",
            );
            Millis(60_000)
        }
    };
    let runtime = match g.runtime {
        RuntimeSpec::LegacyK3s => {
            if g.binary.is_some() {
                err(
                    "gateway.binary",
                    "`gateway.binary` is only used by the `docker-driver` runtime".to_owned(),
                    "no `binary` with `runtime: legacy-k3s`",
                    "remove it, or set `runtime: docker-driver`",
                );
            }
            if !g.env.is_empty() {
                err(
                    "gateway.env",
                    "`gateway.env` is only used by the `docker-driver` runtime".to_owned(),
                    "no `env` with `runtime: legacy-k3s`",
                    "remove it, or set `runtime: docker-driver`",
                );
            }
            let image = g.image.clone().unwrap_or_default();
            if image.trim().is_empty() {
                err(
                    "gateway.runtime",
                    "`runtime: legacy-k3s` needs `gateway.image`".to_owned(),
                    "`image: ghcr.io/nvidia/openshell/cluster:<openshell version>`",
                    "the cluster image must match the installed `openshell --version`",
                );
            }
            GatewayRuntime::LegacyK3s {
                image,
                privileged: g.privileged,
                cluster: g.cluster.is_some(),
                kubeconfig: g.cluster.as_ref().and_then(|c| c.kubeconfig.clone()),
                gpu: match g.gpu {
                    super::types::GpuSpec::Auto => "auto",
                    super::types::GpuSpec::On => "on",
                    super::types::GpuSpec::Off => "off",
                }
                .to_owned(),
            }
        }
        RuntimeSpec::DockerDriver => {
            if g.cluster.is_some() {
                err(
                    "gateway.cluster",
                    "`gateway.cluster` is only used by the `legacy-k3s` runtime".to_owned(),
                    "no `cluster` with `runtime: docker-driver`",
                    "remove it, or set `runtime: legacy-k3s`",
                );
            }
            if g.image.is_some() {
                err(
                    "gateway.image",
                    "`gateway.image` is only used by the `legacy-k3s` runtime".to_owned(),
                    "no `image` with `runtime: docker-driver`",
                    "remove it, or set `runtime: legacy-k3s`",
                );
            }
            for key in g.env.keys() {
                if MANAGED_GATEWAY_ENV.contains(&key.as_str()) {
                    err(
                        &format!("gateway.env.{key}"),
                        format!("`{key}` is set by the engine from the gateway settings"),
                        "environment keys other than the managed ones",
                        "set `gateway.port` or `gateway.bindAddress` instead",
                    );
                }
            }
            if let Some(b) = &g.binary
                && !b.starts_with('/')
            {
                err(
                    "gateway.binary",
                    format!("`gateway.binary` `{b}` is not an absolute path"),
                    "an absolute path such as `/usr/local/bin/openshell-gateway`",
                    "",
                );
            }
            GatewayRuntime::DockerDriver {
                binary: g.binary.clone(),
                env: g.env.clone(),
            }
        }
    };
    let stop_grace = match Millis::parse(&g.stop_grace) {
        Ok(m) if m.0 > 0 && m.0 <= 600_000 => m,
        _ => {
            err(
                "gateway.stopGrace",
                format!(
                    "`gateway.stopGrace` {} is not a duration between 1ms and 10m",
                    g.stop_grace
                ),
                "a duration such as `30s`",
                "",
            );
            Millis(30_000)
        }
    };
    GatewayDesired {
        port,
        name,
        bind_address,
        runtime: Some(runtime),
        health_timeout,
        stop_grace,
    }
}

/// Returns what is wrong with a sandbox name, if anything.
#[must_use]
pub fn name_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Some("it is empty");
    }
    if bytes.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    if !bytes[0].is_ascii_lowercase() {
        return Some("it must start with a lowercase letter");
    }
    if bytes
        .iter()
        .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'))
    {
        return Some("it may hold only lowercase letters, digits and hyphens");
    }
    if bytes.ends_with(b"-") {
        return Some("it must not end with a hyphen");
    }
    None
}
