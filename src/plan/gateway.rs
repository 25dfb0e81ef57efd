//! The OpenShell gateway, in both runtimes, and volume deletions.
//!
//! Non-destructive first (#4187/#4210): a stopped container is started, never recreated, in the
//! same plan; image drift on a running container is a `replace` that needs consent and keeps the
//! volume; a volume is deleted only by a `delete` step for a volume the file names exactly under
//! `destroy.volumes`, with `--allow destroy`. An unknown Docker engine yields no action at all.

use std::collections::BTreeMap;

use super::Builder;
use super::step::{
    Action, Blocked, ContainerSpec, ContainerTarget, FindingKind, HealthWait, ProcessTarget, Risk,
    Step, StopProcess, Target,
};
use crate::model::{
    ContainerFacts, Desired, DockerFacts, DriverFacts, GatewayDesired, GatewayRuntime, Holders,
    Observation, Observed,
};

/// Port the OpenShell server listens on inside the legacy container.
pub const CLUSTER_PORT: &str = "30051/tcp";
/// Where the legacy volume is mounted (the k3s datastore and local-path PVs).
pub const VOLUME_TARGET: &str = "/var/lib/rancher/k3s";

pub(super) fn plan(desired: &Desired, observed: &Observed, b: &mut Builder) {
    let docker = observed.docker.as_ref();
    if let Some(Observation::Unknown { reason }) = docker {
        b.finding(
            "docker",
            FindingKind::DockerUnknown,
            format!("the Docker engine could not be asked ({reason}); nothing in Docker is started, stopped or removed until it can"),
        );
    }
    let facts = docker.and_then(Observation::known);
    match &desired.gateway.runtime {
        Some(GatewayRuntime::LegacyK3s {
            image,
            privileged,
            gpu,
            ..
        }) => legacy(desired, observed, facts, image, (*privileged, gpu), b),
        Some(GatewayRuntime::DockerDriver { env, .. }) => driver(desired, observed, env, b),
        None => {}
    }
    for volume in &desired.destroy_volumes {
        destroy_volume(desired, facts, volume, b);
    }
}

fn address(g: &GatewayDesired) -> String {
    format!("gateway.{}", g.name)
}

fn wait(g: &GatewayDesired) -> HealthWait {
    HealthWait {
        port: g.port,
        timeout: g.health_timeout,
    }
}

fn blocked_observe(b: &mut Builder, address: String, target: Target, why: String) {
    let reason = "the gateway's state must be known before anything is done to it".to_owned();
    b.blocked_observe(address, reason, why, target);
}

fn legacy(
    desired: &Desired,
    observed: &Observed,
    facts: Option<&DockerFacts>,
    image: &str,
    (privileged, gpu): (bool, &str),
    b: &mut Builder,
) {
    let g = &desired.gateway;
    // `auto`: the host's NVIDIA devices decide; unknown devices ask for none, and an existing
    // container's GPUs are then not called drift.
    let gpus = match gpu {
        "on" => Some(true),
        "off" => Some(false),
        _ => observed.host.nvidia_gpus.known().map(|d| !d.is_empty()),
    };
    let name = g.cluster_name();
    let addr = address(g);
    let container_target = |id: Option<String>, status: Option<String>, spec, wait| {
        Target::Container(ContainerTarget {
            name: name.clone(),
            id,
            status,
            spec,
            wait,
        })
    };
    let Some(facts) = facts else {
        blocked_observe(
            b,
            addr,
            container_target(None, None, None, None),
            format!(
                "the Docker engine could not be asked about container `{name}`; a container that cannot be seen is never treated as missing"
            ),
        );
        return;
    };
    let Some(found) = facts.containers.get(&name) else {
        blocked_observe(
            b,
            addr,
            container_target(None, None, None, None),
            format!("container `{name}` was not looked up"),
        );
        return;
    };
    let desired_image = facts.images.get(image).cloned().flatten();
    let volume = facts.volumes.get(&name).cloned().flatten();
    let network_exists = matches!(facts.networks.get(&name), Some(Some(_)));
    // OpenShell's create body (`crates/openshell-bootstrap/src/docker.rs:689-810` at the last
    // commit with it): the registry, image and node settings the cluster entrypoint reads.
    let mut env = vec![
        "REGISTRY_MODE=external".to_owned(),
        "REGISTRY_HOST=ghcr.io".to_owned(),
        "REGISTRY_INSECURE=false".to_owned(),
        "IMAGE_REPO_BASE=ghcr.io/nvidia/openshell".to_owned(),
        format!("OPENSHELL_NODE_NAME={}", g.node_name()),
    ];
    if let Some(tag) = image_tag(image) {
        env.push(format!("IMAGE_TAG={tag}"));
    }
    if gpus == Some(true) {
        // The cluster entrypoint deploys the NVIDIA device plugin (`cluster-entrypoint.sh:384`).
        env.push("GPU_ENABLED=true".to_owned());
    }
    let spec = ContainerSpec {
        image: image.to_owned(),
        env,
        hostname: g.node_name(),
        cmd: vec![
            "server".to_owned(),
            "--disable=traefik".to_owned(),
            "--tls-san=127.0.0.1".to_owned(),
            "--tls-san=localhost".to_owned(),
            "--tls-san=host.docker.internal".to_owned(),
        ],
        host_ip: g.bind_address.to_string(),
        host_port: g.port,
        container_port: CLUSTER_PORT.to_owned(),
        volume: name.clone(),
        volume_target: VOLUME_TARGET.to_owned(),
        volume_exists: volume.is_some(),
        network: name.clone(),
        network_exists,
        extra_hosts: vec![
            "host.docker.internal:host-gateway".to_owned(),
            "host.openshell.internal:host-gateway".to_owned(),
        ],
        privileged,
        gpu: gpus == Some(true),
    };
    let image_missing = desired_image.is_none().then(|| Blocked {
        reason: format!("image `{image}` is not present in the Docker engine; the engine does not pull images: run `docker pull {image}` and plan again"),
        allow: None,
    });

    let Some(c) = found else {
        // Missing: create (keeping an existing volume), then start.
        let keeps = if volume.is_some() {
            format!(
                "the existing volume `{name}` is mounted again at {VOLUME_TARGET}, with its data"
            )
        } else {
            format!("a new volume `{name}` is created for {VOLUME_TARGET}")
        };
        let create_id = format!("create:{addr}");
        b.step(Step {
            id: create_id.clone(),
            address: addr.clone(),
            action: Action::Create,
            risk: Risk::Create,
            reason: format!(
                "container `{name}` does not exist; create it from `{image}` (privileged, {CLUSTER_PORT} published on {}:{}, restart unless-stopped, hostname `{}`, network `{name}`{}); {keeps}",
                g.bind_address,
                g.port,
                g.node_name(),
                if network_exists { "" } else { ", created" }
            ),
            depends_on: Vec::new(),
            blocked: image_missing,
            target: container_target(None, None, Some(spec), None),
        });
        b.step(Step {
            id: format!("start:{addr}"),
            address: addr,
            action: Action::Start,
            risk: Risk::Create,
            reason: format!("start the new container `{name}` and wait up to {} for the gateway to answer on port {}", g.health_timeout, g.port),
            depends_on: vec![create_id],
            blocked: None,
            target: container_target(None, None, None, Some(wait(g))),
        });
        return;
    };

    let mut drift = drift(
        c,
        g,
        image,
        desired_image.as_ref().map(|i| i.id.as_str()),
        privileged,
    );
    if let Some(want) = gpus
        && want != c.gpu
        && (gpu != "auto" || want)
    {
        let d = format!(
            "container {} GPUs, the file wants {}",
            if c.gpu { "asks for" } else { "has no" },
            if want {
                "them (`gateway.gpu` and the host's NVIDIA devices)"
            } else {
                "none"
            }
        );
        drift = Some(drift.map_or(d.clone(), |x| format!("{x}; {d}")));
    }
    let want_ip = g.bind_address.to_string();
    if let Some(p) = c
        .published
        .iter()
        .find(|p| p.container_port == CLUSTER_PORT && p.host_port == g.port)
        && p.host_ip != want_ip
        && !(p.host_ip.is_empty() && want_ip == "0.0.0.0")
    {
        b.finding(
            &addr,
            FindingKind::GatewayNotice,
            format!(
                "container `{name}` publishes port {} on {} (as OpenShell's own bootstrap does), the file says {want_ip}; it is not recreated for that alone. Set `gateway.bindAddress` to match, or recreate it yourself",
                g.port,
                if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }
            ),
        );
    }
    match c.status.as_str() {
        "running" => {}
        "exited" | "created" => {
            let how = match (c.exit_code, &c.finished_at) {
                (Some(code), Some(at)) if c.status == "exited" => {
                    format!("it exited with code {code} at {at}")
                }
                _ => format!("its status is `{}`", c.status),
            };
            b.step(Step {
                id: format!("start:{addr}"),
                address: addr.clone(),
                action: Action::Start,
                risk: Risk::Create,
                reason: format!(
                    "container `{name}` is stopped ({how}); start it, keeping its volume `{name}` and every sandbox workspace in it, and wait up to {} for the gateway to answer on port {}",
                    g.health_timeout, g.port
                ),
                depends_on: Vec::new(),
                blocked: None,
                target: container_target(Some(c.id.clone()), Some(c.status.clone()), None, Some(wait(g))),
            });
            if let Some(d) = drift {
                b.finding(
                    &addr,
                    FindingKind::GatewayDeferred,
                    format!("{d}; a stopped gateway is started first, never recreated in the same plan: plan again after it runs to see the replacement"),
                );
            }
            return;
        }
        other => {
            b.step(Step {
                id: format!("start:{addr}"),
                address: addr,
                action: Action::Start,
                risk: Risk::Create,
                reason: format!("container `{name}` is `{other}`"),
                depends_on: Vec::new(),
                blocked: Some(Blocked {
                    reason: format!("a `{other}` container is not started or replaced automatically; look at `docker inspect {name}`"),
                    allow: None,
                }),
                target: container_target(Some(c.id.clone()), Some(c.status.clone()), None, None),
            });
            return;
        }
    }

    if let Some(d) = drift {
        b.step(Step {
            id: format!("replace:{addr}"),
            address: addr,
            action: Action::Replace,
            risk: Risk::Replace,
            reason: format!(
                "{d}; recreate container `{name}`: stop it, remove it (not its volume), create it again with the same volume `{name}` and start it"
            ),
            depends_on: Vec::new(),
            blocked: image_missing,
            target: container_target(Some(c.id.clone()), Some(c.status.clone()), Some(spec), Some(wait(g))),
        });
        return;
    }
    health(observed, g, &addr, c.started_at_ms, b, || {
        container_target(
            Some(c.id.clone()),
            Some(c.status.clone()),
            None,
            Some(wait(g)),
        )
    });
}

/// What differs between a container and the file: image, or how the gateway port is published.
fn drift(
    c: &ContainerFacts,
    g: &GatewayDesired,
    image: &str,
    desired_id: Option<&str>,
    privileged: bool,
) -> Option<String> {
    let mut out = Vec::new();
    if c.privileged != privileged {
        out.push(format!(
            "container runs {}privileged, the file wants it {}privileged",
            if c.privileged { "" } else { "un" },
            if privileged { "" } else { "un" }
        ));
    }
    match desired_id {
        _ if nemoclaw_patched(&c.image_ref, image) => {}
        Some(id) if id != c.image_id => out.push(format!(
            "container runs image `{}` ({}), the file wants `{image}` ({})",
            c.image_ref,
            short(&c.image_id),
            short(id)
        )),
        None if c.image_ref != image => {
            out.push(format!(
                "container runs image `{}`, the file wants `{image}`",
                c.image_ref
            ));
        }
        _ => {}
    }
    // The host address is not compared: OpenShell always publishes on 0.0.0.0 and the engine's
    // default is loopback, so comparing it would replace (and disrupt) every container OpenShell
    // or NemoClaw made. A different address is a notice (`bind_notice`).
    let published = c
        .published
        .iter()
        .any(|p| p.container_port == CLUSTER_PORT && p.host_port == g.port);
    if !published {
        let now: Vec<String> = c
            .published
            .iter()
            .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.container_port))
            .collect();
        out.push(format!(
            "container publishes {}, the file wants port {}->{CLUSTER_PORT}",
            if now.is_empty() {
                "nothing".to_owned()
            } else {
                now.join(", ")
            },
            g.port
        ));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// NemoClaw's locally patched cluster image of the wanted version
/// (`nemoclaw-cluster:<ver>-<snapshotter>-<sha8>`, `src/lib/cluster-image-patch.ts:188-204`) is
/// the wanted image, as far as drift goes: NemoClaw builds it on hosts whose Docker needs it.
fn nemoclaw_patched(running: &str, wanted: &str) -> bool {
    let Some(tag) = running.strip_prefix("nemoclaw-cluster:") else {
        return false;
    };
    let Some((_, want)) = wanted.rsplit_once(':') else {
        return false;
    };
    tag.strip_prefix(want)
        .is_some_and(|rest| rest.starts_with('-') && rest.matches('-').count() >= 2)
}

/// The `IMAGE_TAG` the cluster entrypoint pins the server and supervisor images to (OpenShell
/// `deploy/docker/cluster-entrypoint.sh:464-475`: without it they run `:latest`): the image's
/// tag, or the version a NemoClaw-patched tag carries.
fn image_tag(image: &str) -> Option<String> {
    let (repo, tag) = image.rsplit_once(':')?;
    // `registry:5000/cluster` has a port, not a tag.
    if tag.contains('/') {
        return None;
    }
    if repo.ends_with("nemoclaw-cluster") {
        return tag.split('-').next().map(str::to_owned);
    }
    Some(tag.to_owned())
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// A running gateway that answers is converged; one that has not answered for longer than its
/// health timeout is restarted; one that started recently is given time.
fn health(
    observed: &Observed,
    g: &GatewayDesired,
    addr: &str,
    started_at_ms: Option<u64>,
    b: &mut Builder,
    target: impl FnOnce() -> Target,
) {
    let Some(h) = &observed.gateway_health else {
        return;
    };
    if h.alive() {
        return;
    }
    let detail = h.detail.clone().unwrap_or_else(|| {
        format!(
            "HTTP {}",
            h.http_status.map_or("none".to_owned(), |s| s.to_string())
        )
    });
    let up_ms = started_at_ms.map(|s| observed.host.observed_at_ms.saturating_sub(s));
    match up_ms {
        Some(up) if up < g.health_timeout.0 => b.finding(
            addr,
            FindingKind::GatewayStarting,
            format!("the gateway started {}s ago and does not answer on port {} yet ({detail}); plan again after {} to judge it", up / 1000, g.port, g.health_timeout),
        ),
        _ => b.step(Step {
            id: format!("restart:{addr}"),
            address: addr.to_owned(),
            action: Action::Restart,
            risk: Risk::Disrupt,
            reason: format!(
                "the gateway runs but has not answered on port {} for longer than {} ({detail}); restart it and wait for it to answer",
                g.port, g.health_timeout
            ),
            depends_on: Vec::new(),
            blocked: None,
            target: target(),
        }),
    }
}

/// The config file the engine writes for a gateway that takes one (0.0.72 on).
pub const CONFIG_FILE: &str = "nemoclaw-reconcile-gateway.toml";

/// The first gateway version that reads its settings from `OPENSHELL_GATEWAY_CONFIG` and refuses
/// Docker sandboxes without gateway JWT auth (recorded against 0.0.72, `captures/25`).
const CONFIG_MODE_FROM: (u64, u64, u64) = (0, 0, 72);

/// Whether the gateway binary of `version` is run through a config file.
#[must_use]
pub fn config_mode(version: Option<&str>) -> bool {
    version
        .and_then(crate::observe::openshell::parse::parse_version)
        .is_some_and(|v| v >= CONFIG_MODE_FROM)
}

/// The environment the engine sets for a `docker-driver` gateway: NemoClaw's plaintext launch
/// environment (3aa9a59f `src/lib/onboard.ts:3740-3775`) — supervisor image pinned to the
/// gateway's own version, supervisor binary when one sits next to the gateway — and, for a
/// gateway that takes a config file, that file.
#[must_use]
pub fn managed_env(
    g: &GatewayDesired,
    state_dir: &str,
    version: Option<&str>,
    supervisor_bin: Option<&str>,
) -> BTreeMap<String, String> {
    let port = g.port.to_string();
    let mut env: BTreeMap<String, String> = [
        ("OPENSHELL_DRIVERS", "docker".to_owned()),
        ("OPENSHELL_BIND_ADDRESS", g.bind_address.to_string()),
        ("OPENSHELL_SERVER_PORT", port.clone()),
        ("OPENSHELL_DISABLE_TLS", "true".to_owned()),
        ("OPENSHELL_DISABLE_GATEWAY_AUTH", "true".to_owned()),
        (
            "OPENSHELL_DB_URL",
            format!("sqlite:{state_dir}/openshell.db"),
        ),
        (
            "OPENSHELL_GRPC_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OPENSHELL_SSH_GATEWAY_HOST", "127.0.0.1".to_owned()),
        ("OPENSHELL_SSH_GATEWAY_PORT", port),
        (
            "OPENSHELL_DOCKER_NETWORK_NAME",
            "openshell-docker".to_owned(),
        ),
        (
            "OPENSHELL_DOCKER_SUPERVISOR_IMAGE",
            format!(
                "ghcr.io/nvidia/openshell/supervisor:{}",
                version.unwrap_or("0.0.37")
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(s) = supervisor_bin {
        env.insert("OPENSHELL_DOCKER_SUPERVISOR_BIN".to_owned(), s.to_owned());
    }
    if config_mode(version) {
        env.insert(
            "OPENSHELL_GATEWAY_CONFIG".to_owned(),
            format!("{state_dir}/{CONFIG_FILE}"),
        );
    }
    env
}

/// The config file of a gateway that takes one: plaintext, the Docker driver with the settings
/// above, and gateway JWT auth (which 0.0.72 requires for Docker sandboxes) with unauthenticated
/// CLI users allowed, as a plaintext gateway has no client identity. The JWT keys live in
/// `<state_dir>/jwt` and are made at apply time; no secret is in the plan.
#[must_use]
pub fn gateway_config(
    g: &GatewayDesired,
    state_dir: &str,
    env: &BTreeMap<String, String>,
) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut docker = vec![
        format!(
            "grpc_endpoint = {}",
            q(&format!("http://127.0.0.1:{}", g.port))
        ),
        format!("network_name = {}", q("openshell-docker")),
    ];
    if let Some(s) = env.get("OPENSHELL_DOCKER_SUPERVISOR_BIN") {
        docker.push(format!("supervisor_bin = {}", q(s)));
    }
    if let Some(i) = env.get("OPENSHELL_DOCKER_SUPERVISOR_IMAGE") {
        docker.push(format!("supervisor_image = {}", q(i)));
    }
    format!(
        "# Written by nemoclaw reconcile for the docker-driver gateway on port {port}.\n[openshell]\nversion = 1\n\n[openshell.gateway]\nbind_address = {bind}\ncompute_drivers = [\"docker\"]\ndisable_tls = true\n\n[openshell.gateway.auth]\nallow_unauthenticated_users = true\n\n[openshell.gateway.gateway_jwt]\nsigning_key_path = {sk}\npublic_key_path = {pk}\nkid_path = {kid}\ngateway_id = {id}\nttl_secs = 0\n\n[openshell.drivers.docker]\n{docker}\n",
        port = g.port,
        bind = q(&format!("{}:{}", g.bind_address, g.port)),
        sk = q(&format!("{state_dir}/jwt/signing.pem")),
        pk = q(&format!("{state_dir}/jwt/public.pem")),
        kid = q(&format!("{state_dir}/jwt/kid")),
        id = q(&format!("nemoclaw-{}", g.name)),
        docker = docker.join("\n"),
    )
}

/// A restart of the running gateway: SIGTERM, up to `gateway.stopGrace` for its own shutdown
/// (it stops every sandbox container first), then a start with the file's settings.
#[allow(clippy::too_many_arguments)]
fn restart_step(
    desired: &Desired,
    observed: &Observed,
    p: &crate::model::DriverProcess,
    addr: &str,
    reason: String,
    blocked: Option<Blocked>,
    target: impl Fn(Option<StopProcess>) -> Target,
    b: &mut Builder,
) {
    let g = &desired.gateway;
    // A gateway that never listened is stopped without a listener to re-check; the port must
    // still be free before the new one starts.
    let listening = observed.listeners.known().is_none_or(|ls| {
        ls.iter().any(|l| {
            l.port == g.port
                && matches!(&l.holders, crate::model::Holders::Known { pids } if pids.contains(&p.info.pid))
        })
    });
    let stop = StopProcess {
        pid: p.info.pid,
        start_time: p.info.start_time,
        uid: p.info.uid,
        cmdline: p.info.cmdline.clone(),
        ports: if listening { vec![g.port] } else { Vec::new() },
        wait_free: vec![g.port],
        term_grace: g.stop_grace,
        kill_grace: desired.cleanup.kill_grace,
        port_free_timeout: desired.cleanup.port_free_timeout,
    };
    b.step(Step {
        id: format!("restart:{addr}"),
        address: addr.to_owned(),
        action: Action::Restart,
        risk: Risk::Disrupt,
        reason,
        depends_on: Vec::new(),
        blocked,
        target: target(Some(stop)),
    });
}

/// A gateway NemoClaw's own onboarding runs with TLS (9708c264 on: `OPENSHELL_LOCAL_TLS_DIR`, a
/// config file that is not the engine's): the two tools cannot agree on it, so it is NemoClaw's.
fn nemoclaw_tls_gateway(p: &crate::model::DriverProcess, state_dir: &str) -> Option<String> {
    let env = p.environ.known()?;
    let ours = format!("{state_dir}/{CONFIG_FILE}");
    // The environ keeps managed keys in the clear (observe/driver.rs `clear_keys`).
    if let Some(tls) = env.get("OPENSHELL_LOCAL_TLS_DIR") {
        return Some(format!("`OPENSHELL_LOCAL_TLS_DIR={tls}`"));
    }
    match env.get("OPENSHELL_GATEWAY_CONFIG") {
        Some(c) if *c != ours => Some(format!("`OPENSHELL_GATEWAY_CONFIG={c}`")),
        _ => None,
    }
}

fn driver(
    desired: &Desired,
    observed: &Observed,
    file_env: &BTreeMap<String, String>,
    b: &mut Builder,
) {
    let g = &desired.gateway;
    let addr = address(g);
    let Some(facts) = &observed.gateway_process else {
        blocked_observe(
            b,
            addr,
            Target::Port {
                port: g.port,
                holders: Vec::new(),
            },
            "the gateway process was not observed".to_owned(),
        );
        return;
    };
    let version = facts.binary_version.as_deref();
    let managed = managed_env(
        g,
        &facts.state_dir,
        version,
        facts.supervisor_binary.as_deref(),
    );
    let config = config_mode(version).then(|| gateway_config(g, &facts.state_dir, &managed));
    let target = |stop: Option<StopProcess>| {
        Target::GatewayProcess(ProcessTarget {
            binary: facts.binary.clone().unwrap_or_default(),
            managed_env: managed.clone(),
            file_env_keys: file_env.keys().cloned().collect(),
            file_env_sha256: desired.secret_fingerprints.env_map.clone(),
            state_dir: facts.state_dir.clone(),
            wait: wait(g),
            stop,
            config: config.clone(),
            run_as_uid: observed.host.invoking_uid,
            version: version.map(str::to_owned),
        })
    };
    let no_binary = facts.binary.is_none().then(|| Blocked {
        reason: format!("no `openshell-gateway` binary was found (looked at {}); install OpenShell or set `gateway.binary`", facts.binary_candidates.join(", ")),
        allow: None,
    });

    if let Some(p) = &facts.process {
        let me = observed.host.invoking_uid;
        let drift = driver_drift(facts, &managed, file_env, &desired.secret_fingerprints);
        if p.info.uid != me {
            b.finding(
                &addr,
                FindingKind::GatewayNotice,
                format!(
                    "the gateway process pid {} belongs to uid {}, not you; it is left alone",
                    p.info.pid, p.info.uid
                ),
            );
            return;
        }
        if let Some(unit) = &p.unit {
            b.finding(
                &addr,
                FindingKind::GatewayNotice,
                format!(
                    "gateway pid {} is run by the systemd unit `{unit}` (the OpenShell package's); the engine never kills and respawns it by hand: manage it through the unit (`systemctl --user restart {unit}`, settings in `~/.config/openshell/gateway.env`)",
                    p.info.pid
                ),
            );
            return;
        }
        if let Some(owner) = nemoclaw_tls_gateway(p, &facts.state_dir) {
            b.finding(
                &addr,
                FindingKind::GatewayNotice,
                format!(
                    "gateway pid {} runs with TLS and mTLS client auth as NemoClaw's onboarding sets it up ({owner}); the engine runs plaintext gateways and leaves this one to NemoClaw rather than restart it",
                    p.info.pid
                ),
            );
            return;
        }
        let Some(drift) = drift else {
            let answering = observed.gateway_health.as_ref().is_none_or(|h| h.alive());
            let old = p.age_ms.is_some_and(|a| a > g.health_timeout.0);
            if !answering && old {
                let detail = observed
                    .gateway_health
                    .as_ref()
                    .and_then(|h| h.detail.clone())
                    .unwrap_or_default();
                restart_step(
                    desired,
                    observed,
                    p,
                    &addr,
                    format!(
                        "gateway pid {} runs but has not answered on port {} for longer than {} ({detail}); restart it and wait for it to answer",
                        p.info.pid, g.port, g.health_timeout
                    ),
                    no_binary,
                    target,
                    b,
                );
            } else if !answering {
                b.finding(
                    &addr,
                    FindingKind::GatewayStarting,
                    format!(
                        "gateway pid {} runs but does not answer on port {} yet; it started {} ago, within `gateway.healthTimeout` {}",
                        p.info.pid,
                        g.port,
                        p.age_ms.map_or("an unknown time".to_owned(), |a| crate::model::Millis(a).to_string()),
                        g.health_timeout
                    ),
                );
            }
            return;
        };
        let (blocked, why) = match drift {
            Ok(why) => (no_binary, why),
            Err(unknown) => (
                Some(Blocked {
                    reason: format!("{unknown}; an unreadable process is never restarted"),
                    allow: None,
                }),
                unknown,
            ),
        };
        restart_step(
            desired,
            observed,
            p,
            &addr,
            format!(
                "gateway pid {} (found through its {}) has drifted: {why}; restart it with the file's settings",
                p.info.pid, p.found_via
            ),
            blocked,
            target,
            b,
        );
        return;
    }

    // No live gateway. What holds the port decides whether one can be started.
    let holders = observed.listeners.known().map(|ls| {
        ls.iter()
            .filter(|l| l.port == g.port)
            .map(|l| &l.holders)
            .collect::<Vec<_>>()
    });
    let stale_pid = match facts.pid_file.known() {
        Some(Some(pid)) => format!(
            " (the pid file names pid {pid}, which is not a running gateway; it is rewritten)"
        ),
        _ => String::new(),
    };
    match holders {
        None => blocked_observe(b, addr, Target::Port { port: g.port, holders: Vec::new() }, "listening sockets could not be read, so whether the gateway port is free is unknown".to_owned()),
        Some(hs) if hs.is_empty() => b.step(Step {
            id: format!("start:{addr}"),
            address: addr,
            action: Action::Start,
            risk: Risk::Create,
            reason: format!(
                "no gateway runs and port {} is free{stale_pid}; start `{}` detached with its log in {} and wait up to {} until it answers",
                g.port,
                facts.binary.as_deref().unwrap_or("openshell-gateway"),
                facts.state_dir,
                g.health_timeout
            ),
            depends_on: Vec::new(),
            blocked: no_binary,
            target: target(None),
        }),
        Some(hs) => {
            let known: Vec<u32> = hs.iter().filter_map(|h| match h { Holders::Known { pids } => Some(pids.clone()), Holders::Unknown { .. } => None }).flatten().collect();
            if known.is_empty() {
                // Never tear down (or double-start) a live gateway because a pid file is stale.
                b.finding(&addr, FindingKind::GatewayNotice, format!("port {} is held by a process the engine cannot see; it may be the gateway, so nothing is started or stopped", g.port));
            } else {
                let who: Vec<String> = known
                    .iter()
                    .map(|pid| observed.processes.get(pid).map_or(format!("pid {pid}"), |p| super::listeners::describe_process(p, observed.host.invoking_uid)))
                    .collect();
                b.step(Step {
                    id: format!("start:{addr}"),
                    address: addr,
                    action: Action::Start,
                    risk: Risk::Create,
                    reason: format!("the gateway must run on port {}", g.port),
                    depends_on: Vec::new(),
                    blocked: Some(Blocked { reason: format!("port {} is held by {}, which is not an OpenShell gateway; free the port or change `gateway.port`", g.port, who.join(" and ")), allow: None }),
                    target: target(None),
                });
            }
        }
    }
}

/// `Ok(Some(why))` drifted, `Ok(None)` matches, `Err(why)` cannot tell.
fn driver_drift(
    facts: &DriverFacts,
    managed: &BTreeMap<String, String>,
    file_env: &BTreeMap<String, String>,
    fingerprints: &crate::model::desired::SecretFingerprints,
) -> Option<Result<String, String>> {
    let p = facts.process.as_ref()?;
    let environ = match &p.environ {
        Observation::Known { value } => value,
        Observation::Unknown { reason } => {
            return Some(Err(format!("its environment could not be read ({reason})")));
        }
    };
    let mut why = Vec::new();
    for (k, v) in managed {
        if environ.get(k) != Some(v) {
            why.push(format!(
                "`{k}` is {}, the file wants `{v}`",
                environ
                    .get(k)
                    .map_or("unset".to_owned(), |e| format!("`{e}`"))
            ));
        }
    }
    // Fingerprints made under different keys (a snapshot from another host) cannot be compared.
    if fingerprints.key_id == facts.fingerprint_key_id {
        for k in file_env.keys() {
            if environ.get(k) != fingerprints.env.get(k) {
                why.push(format!("`{k}` differs from the file"));
            }
        }
    }
    match &p.exe {
        Observation::Known { value } if value.ends_with(" (deleted)") => {
            why.push("its binary was replaced on disk".to_owned())
        }
        Observation::Known { value } => {
            if let Some(b) = &facts.binary
                && value != b
            {
                why.push(format!("it runs `{value}`, the file resolves `{b}`"));
            }
        }
        Observation::Unknown { reason } => {
            return Some(Err(format!("its binary could not be read ({reason})")));
        }
    }
    (!why.is_empty()).then(|| Ok(why.join("; ")))
}

fn destroy_volume(desired: &Desired, facts: Option<&DockerFacts>, volume: &str, b: &mut Builder) {
    let addr = format!("volume.{volume}");
    let Some(facts) = facts else {
        blocked_observe(
            b,
            addr,
            Target::Volume {
                name: volume.to_owned(),
                mountpoint: String::new(),
            },
            format!("the Docker engine could not be asked about volume `{volume}`"),
        );
        return;
    };
    let Some(Some(v)) = facts.volumes.get(volume) else {
        b.finding(&addr, FindingKind::NothingToDestroy, format!("volume `{volume}` is listed under `destroy.volumes` but does not exist; nothing to delete"));
        return;
    };
    let gateway_uses = matches!(
        &desired.gateway.runtime,
        Some(GatewayRuntime::LegacyK3s { .. })
    ) && desired.gateway.cluster_name() == volume;
    let blocked = if gateway_uses {
        Some(Blocked {
            reason: format!(
                "the file also declares gateway `{}`, which keeps its data in this volume; remove the `gateway` section first",
                desired.gateway.name
            ),
            allow: None,
        })
    } else if !v.used_by.is_empty() {
        Some(Blocked {
            reason: format!(
                "it is mounted by container(s) {}; remove them first (`docker rm`)",
                v.used_by
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            allow: None,
        })
    } else {
        None
    };
    let what = if volume.starts_with("openshell-cluster-") {
        "the k3s datastore and every sandbox workspace (PVC data) of that gateway"
    } else {
        "all of its data"
    };
    b.step(Step {
        id: format!("delete:{addr}"),
        address: addr,
        action: Action::Delete,
        risk: Risk::Destroy,
        reason: format!("`destroy.volumes` names `{volume}`: delete it and everything in it ({what}), stored at {}. This cannot be undone", v.mountpoint),
        depends_on: Vec::new(),
        blocked,
        target: Target::Volume { name: volume.to_owned(), mountpoint: v.mountpoint.clone() },
    });
}

#[cfg(test)]
mod tests {
    use super::{image_tag, nemoclaw_patched};

    #[test]
    fn nemoclaws_patched_image_of_the_wanted_version_is_the_wanted_image() {
        let want = "ghcr.io/nvidia/openshell/cluster:0.0.36";
        assert!(nemoclaw_patched(
            "nemoclaw-cluster:0.0.36-fuse-overlayfs-0a1b2c3d",
            want
        ));
        assert!(nemoclaw_patched(
            "nemoclaw-cluster:0.0.36-native-0a1b2c3d",
            want
        ));
        assert!(!nemoclaw_patched(
            "nemoclaw-cluster:0.0.35-native-0a1b2c3d",
            want
        ));
        assert!(!nemoclaw_patched(
            "nemoclaw-cluster:0.0.361-native-0a1b2c3d",
            want
        ));
        assert!(!nemoclaw_patched("ghcr.io/x/cluster:0.0.36", want));
        assert_eq!(image_tag(want).as_deref(), Some("0.0.36"));
        assert_eq!(
            image_tag("nemoclaw-cluster:0.0.36-native-0a1b2c3d").as_deref(),
            Some("0.0.36")
        );
        assert_eq!(image_tag("localhost:5000/cluster"), None);
    }
}
