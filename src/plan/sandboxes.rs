//! Sandboxes, the registry and dashboard forwards.
//!
//! Live state wins over the registry, and the registry is never trusted blindly nor wiped: an
//! entry is removed only when `openshell sandbox get` said NotFound while the file's gateway was
//! connected and selected (#952, #2276); anything else keeps it and says why. A dashboard port is
//! claimed before the sandbox is created and baked into it (#3397, #2174). An undeclared live
//! sandbox is a finding, deleted only when `prune.sandboxes` names it, with `--allow destroy`.

use std::collections::{BTreeMap, BTreeSet};

use super::Builder;
use super::step::{
    Action, Blocked, ContainerTarget, FindingKind, ForwardTarget, RegistryFields, RegistryTarget,
    Risk, SandboxTarget, Step, Target,
};
use crate::model::{
    CliFacts, Desired, GatewayRuntime, Holders, Lookup, Millis, Observation, Observed,
    SandboxContainer, SandboxDesired,
};

/// How long a created sandbox may take to report `Ready` (NemoClaw's default, 180 s).
pub const READY_TIMEOUT: Millis = Millis(180_000);

/// A dashboard port chosen for a sandbox, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The port.
    pub port: u16,
    /// Why this one.
    pub why: String,
}

/// Chooses every declared sandbox's dashboard port, in file order: the file's, else the
/// registry's recorded one, else the lowest free port of the range. A port is free when nothing
/// listens on it or only listeners this plan stops (provably stale) do, and no other sandbox
/// claims it. `Err` says why no port could be chosen.
#[must_use]
pub fn assign_ports(
    desired: &Desired,
    observed: &Observed,
    steps: &[Step],
) -> BTreeMap<String, Result<Assigned, String>> {
    let range = desired.dashboard;
    let mut claimed: BTreeSet<u16> = desired
        .sandboxes
        .iter()
        .filter_map(|s| s.dashboard_port)
        .collect();
    let registry = observed.registry.known();
    if let Some(r) = registry {
        claimed.extend(
            r.sandboxes
                .values()
                .filter(|e| !desired.declares(&e.name))
                .filter_map(|e| e.dashboard_port),
        );
    }
    let freed: BTreeSet<u16> = steps
        .iter()
        .filter(|s| s.action == Action::Stop && s.blocked.is_none())
        .filter_map(|s| match &s.target {
            Target::Process(p) => Some(p.ports.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let listeners = observed.listeners.known();
    let own_forward = |name: &str, port: u16| {
        observed
            .forwards
            .known()
            .is_some_and(|fs| fs.iter().any(|f| f.sandbox == name && f.port == port))
    };
    let free = |port: u16| -> bool {
        !desired.cleanup.protected_ports.contains(&port)
            && listeners
                .is_some_and(|ls| !ls.iter().any(|l| l.port == port) || freed.contains(&port))
    };
    let mut out = BTreeMap::new();
    for sb in &desired.sandboxes {
        if let Some(p) = sb.dashboard_port {
            out.insert(
                sb.name.clone(),
                Ok(Assigned {
                    port: p,
                    why: "the file's dashboardPort".to_owned(),
                }),
            );
            continue;
        }
        if listeners.is_none() {
            out.insert(
                sb.name.clone(),
                Err("listening sockets could not be read, so no port is provably free".to_owned()),
            );
            continue;
        }
        let recorded = registry
            .and_then(|r| r.sandboxes.get(&sb.name))
            .and_then(|e| e.dashboard_port);
        let choice = match recorded {
            Some(p)
                if range.contains(p)
                    && !claimed.contains(&p)
                    && (free(p) || own_forward(&sb.name, p)) =>
            {
                Some(Assigned {
                    port: p,
                    why: "assigned: the port the registry records for it".to_owned(),
                })
            }
            _ => range
                .ports()
                .find(|p| !claimed.contains(p) && free(*p))
                .map(|p| Assigned {
                    port: p,
                    why: format!("assigned: the lowest free port of {range}"),
                }),
        };
        match choice {
            Some(a) => {
                claimed.insert(a.port);
                out.insert(sb.name.clone(), Ok(a));
            }
            None => {
                out.insert(sb.name.clone(), Err(format!("every port of {range} is taken or held by something the engine cannot prove stale")));
            }
        }
    }
    out
}

enum Live<'a> {
    Running(String),
    Stopped(&'a SandboxContainer),
    Absent,
    Unknown(String),
}

pub(super) fn plan(desired: &Desired, observed: &Observed, b: &mut Builder) {
    // Without the CLI's section the observation was not made for sandboxes (a snapshot from
    // before they were observed): nothing is planned for them rather than a guess.
    if observed.openshell.is_none() {
        return;
    }
    let registry = observed.registry.known();
    let registered: Vec<&str> = registry
        .map(|r| r.sandboxes.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if desired.sandboxes.is_empty() && registered.is_empty() && desired.prune_sandboxes.is_empty() {
        return;
    }
    let cli = observed.openshell.as_ref().filter(|c| c.installed);
    let no_cli = || {
        Blocked {
        reason: "the `openshell` CLI is not installed (it was not found on PATH or at NEMOCLAW_OPENSHELL_BIN); install OpenShell and plan again".to_owned(),
        allow: None,
    }
    };
    let gateway = desired
        .gateway
        .runtime
        .as_ref()
        .map(|_| desired.gateway.name.clone());
    let binary = cli
        .and_then(|c| c.binary.clone())
        .unwrap_or_else(|| "openshell".to_owned());
    let registry_path = registry.map_or_else(
        || "~/.nemoclaw/sandboxes.json".to_owned(),
        |r| r.path.clone(),
    );
    let registry_blocked = match &observed.registry {
        Observation::Unknown { reason } => Some(Blocked {
            reason: format!(
                "the sandbox registry cannot be read ({reason}); it is never written while unreadable: move the broken file aside (it is kept as is) and plan again"
            ),
            allow: None,
        }),
        Observation::Known { .. } => None,
    };
    let assigned = assign_ports(desired, observed, &b.steps);
    let containers = match &observed.docker {
        Some(Observation::Known { value }) => value.sandbox_containers.as_ref(),
        _ => None,
    };
    let legacy = matches!(
        desired.gateway.runtime,
        Some(GatewayRuntime::LegacyK3s { .. })
    );

    for sb in &desired.sandboxes {
        let addr = format!("sandbox.{}", sb.name);
        let port = match assigned.get(&sb.name) {
            Some(Ok(a)) => a,
            other => {
                let why = match other {
                    Some(Err(w)) => w.clone(),
                    _ => "no dashboard port was assigned".to_owned(),
                };
                blocked(
                    b,
                    &addr,
                    Action::Create,
                    Risk::Create,
                    format!("sandbox `{}` needs a dashboard port", sb.name),
                    why,
                );
                continue;
            }
        };
        let live = live_state(sb, containers, cli, legacy);
        // A stop step that frees this port must come first: the port is claimed before anything
        // is built (#3397).
        let frees: Vec<String> = b
            .steps
            .iter()
            .filter(|s| {
                s.action == Action::Stop
                    && matches!(&s.target, Target::Process(p) if p.ports.contains(&port.port))
            })
            .map(|s| s.id.clone())
            .collect();
        // Held by something this plan does not stop, and not by the sandbox's own forward: nothing
        // is built on a port that cannot be claimed (#3397).
        let stopped: BTreeSet<u32> = b
            .steps
            .iter()
            .filter(|s| s.action == Action::Stop && s.blocked.is_none())
            .filter_map(|s| match &s.target {
                Target::Process(p) => Some(p.pid),
                _ => None,
            })
            .collect();
        let held_by_other = observed.listeners.known().is_some_and(|ls| {
            ls.iter()
                .filter(|l| l.port == port.port)
                .any(|l| match &l.holders {
                    Holders::Known { pids } => !pids.iter().all(|p| stopped.contains(p)),
                    Holders::Unknown { .. } => true,
                })
        }) && !own_forward_live(observed, &sb.name, port.port);
        let port_blocked = held_by_other.then(|| Blocked {
            reason: format!(
                "its dashboard port {} is held by a listener this plan does not stop (see `port.{}` and the findings); the port is claimed before anything is built",
                port.port, port.port
            ),
            allow: None,
        });
        let fields = RegistryFields {
            dashboard_port: port.port,
            agent: sb.create.agent.clone(),
            provider: sb.create.provider.clone(),
            model: sb.create.model.clone(),
            policies: sb.create.presets.clone(),
            gateway_name: gateway.clone(),
            gateway_port: gateway.as_ref().map(|_| desired.gateway.port),
        };
        let upsert = RegistryTarget {
            path: registry_path.clone(),
            name: sb.name.clone(),
            entry: Some(fields),
        };
        let mut after: Vec<String> = Vec::new();
        match &live {
            Live::Unknown(why) => {
                b.step(Step {
                    id: format!("observe:{addr}"),
                    address: addr,
                    action: Action::Observe,
                    risk: Risk::Read,
                    reason: format!(
                        "whether sandbox `{}` exists must be known before it is created or started",
                        sb.name
                    ),
                    depends_on: Vec::new(),
                    blocked: Some(Blocked {
                        reason: why.clone(),
                        allow: None,
                    }),
                    target: Target::Ports {
                        range: port.port.to_string(),
                    },
                });
                continue;
            }
            Live::Stopped(c) => {
                let id = format!("start:{addr}");
                b.step(Step {
                    id: id.clone(),
                    address: addr.clone(),
                    action: Action::Start,
                    risk: Risk::Create,
                    reason: format!("sandbox container `{}` is `{}`; start it (its writable layer holds the sandbox's state)", c.name, c.status),
                    depends_on: frees.clone(),
                    blocked: None,
                    target: Target::Container(ContainerTarget { name: c.name.clone(), id: Some(c.id.clone()), status: Some(c.status.clone()), spec: None, wait: None }),
                });
                after.push(id);
            }
            Live::Absent => {
                let id = format!("create:{addr}");
                let argv = create_argv(sb, port.port);
                b.step(Step {
                    id: id.clone(),
                    address: addr.clone(),
                    action: Action::Create,
                    risk: Risk::Create,
                    reason: format!(
                        "sandbox `{}` does not exist; create it with dashboard port {} ({}) baked in, wait until it is Ready, then register it",
                        sb.name, port.port, port.why
                    ),
                    depends_on: frees.clone(),
                    blocked: if cli.is_none() {
                        Some(no_cli())
                    } else {
                        port_blocked.clone().or_else(|| registry_blocked.clone())
                    },
                    target: Target::Sandbox(SandboxTarget {
                        name: sb.name.clone(),
                        port: port.port,
                        cli: binary.clone(),
                        gateway: gateway.clone(),
                        argv,
                        ready_timeout: READY_TIMEOUT,
                        registry: upsert.clone(),
                    }),
                });
                after.push(id);
            }
            Live::Running(phase) => {
                if !matches!(phase.as_str(), "Ready" | "Running" | "running") {
                    b.finding(
                        &addr,
                        FindingKind::SandboxNotReady,
                        format!(
                            "sandbox `{}` exists but is `{phase}`; it is left as is",
                            sb.name
                        ),
                    );
                }
            }
        }
        // The registry follows what is live (a create registers on its own, once Ready).
        if !matches!(live, Live::Absent) {
            let entry = registry.and_then(|r| r.sandboxes.get(&sb.name));
            if entry.is_none_or(|e| e.dashboard_port != Some(port.port)) || registry.is_none() {
                let now = entry
                    .and_then(|e| e.dashboard_port)
                    .map_or("no entry".to_owned(), |p| format!("dashboardPort {p}"));
                let id = format!("register:registry.{}", sb.name);
                b.step(Step {
                    id: id.clone(),
                    address: format!("registry.{}", sb.name),
                    action: Action::Register,
                    risk: Risk::Create,
                    reason: format!("sandbox `{}` is live but the registry has {now}; record dashboardPort {} (metadata only)", sb.name, port.port),
                    depends_on: after.clone(),
                    blocked: registry_blocked.clone(),
                    target: Target::Registry(upsert.clone()),
                });
            }
        }
        if port_blocked.is_none() {
            forward(
                observed,
                sb,
                port.port,
                &binary,
                gateway.as_ref(),
                cli.is_none(),
                &after,
                b,
            );
        }
    }

    // Registered but not declared.
    for name in registered {
        if desired.declares(name) {
            continue;
        }
        let addr = format!("sandbox.{name}");
        let in_list = cli
            .and_then(|c| c.sandboxes.known())
            .is_some_and(|rows| rows.iter().any(|r| r.name == name));
        let in_docker = containers.is_some_and(|cs| cs.iter().any(|c| c.sandbox == name));
        let remove = RegistryTarget {
            path: registry_path.clone(),
            name: name.to_owned(),
            entry: None,
        };
        if in_list || in_docker {
            if desired.prune_sandboxes.contains(name) {
                prune(b, name, &binary, gateway.as_ref(), remove, cli.is_none());
            } else {
                b.finding(&addr, FindingKind::UndeclaredSandbox, format!("sandbox `{name}` is registered and live but not declared; it is kept: declare it, or list it under `prune.sandboxes` to delete it"));
            }
            continue;
        }
        match gone(cli, name, gateway.as_deref()) {
            Ok(why) => b.step(Step {
                id: format!("unregister:registry.{name}"),
                address: format!("registry.{name}"),
                action: Action::Unregister,
                risk: Risk::Create,
                reason: format!("sandbox `{name}` is definitely gone ({why}); remove its registry entry (metadata only)"),
                depends_on: Vec::new(),
                blocked: registry_blocked.clone(),
                target: Target::Registry(remove),
            }),
            Err(why) => b.finding(&format!("registry.{name}"), FindingKind::RegistryEntryKept, format!("the registry entry for `{name}` is kept: {why}")),
        }
    }

    // Live sandbox containers nobody declared or registered.
    for c in containers.into_iter().flatten() {
        if desired.declares(&c.sandbox)
            || registry.is_some_and(|r| r.sandboxes.contains_key(&c.sandbox))
        {
            continue;
        }
        if desired.prune_sandboxes.contains(&c.sandbox) {
            let remove = RegistryTarget {
                path: registry_path.clone(),
                name: c.sandbox.clone(),
                entry: None,
            };
            prune(
                b,
                &c.sandbox,
                &binary,
                gateway.as_ref(),
                remove,
                cli.is_none(),
            );
        } else {
            b.finding(&format!("sandbox.{}", c.sandbox), FindingKind::UndeclaredSandbox, format!("sandbox container `{}` (sandbox `{}`) is neither declared nor registered; it is kept", c.name, c.sandbox));
        }
    }
}

/// Whether a forward pid file of `sandbox` on `port` names a process that holds the port.
fn own_forward_live(observed: &Observed, sandbox: &str, port: u16) -> bool {
    let holders: Vec<u32> = observed
        .listeners
        .known()
        .map(|ls| {
            ls.iter()
                .filter(|l| l.port == port)
                .filter_map(|l| match &l.holders {
                    Holders::Known { pids } => Some(pids.clone()),
                    Holders::Unknown { .. } => None,
                })
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    observed.forwards.known().is_some_and(|fs| {
        fs.iter().any(|f| {
            f.sandbox == sandbox
                && f.port == port
                && f.content.known().is_some_and(|c| holders.contains(&c.pid))
        })
    })
}

fn blocked(b: &mut Builder, addr: &str, action: Action, risk: Risk, reason: String, why: String) {
    b.step(Step {
        id: format!("{}:{addr}", action.as_str()),
        address: addr.to_owned(),
        action,
        risk,
        reason,
        depends_on: Vec::new(),
        blocked: Some(Blocked {
            reason: why,
            allow: None,
        }),
        target: Target::Ports {
            range: String::new(),
        },
    });
}

fn live_state<'a>(
    sb: &SandboxDesired,
    containers: Option<&'a Vec<SandboxContainer>>,
    cli: Option<&CliFacts>,
    legacy: bool,
) -> Live<'a> {
    let mine: Option<Vec<&SandboxContainer>> =
        containers.map(|cs| cs.iter().filter(|c| c.sandbox == sb.name).collect());
    let rows = cli.and_then(|c| c.sandboxes.known());
    if let Some(cs) = &mine {
        match cs.as_slice() {
            [] => {}
            [c] if c.running => return Live::Running("running".to_owned()),
            [c] => return Live::Stopped(c),
            many => {
                return Live::Unknown(format!(
                    "{} containers carry the label of sandbox `{}`; which one is the sandbox is ambiguous",
                    many.len(),
                    sb.name
                ));
            }
        }
    }
    if let Some(row) = rows.and_then(|rows| rows.iter().find(|r| r.name == sb.name)) {
        return Live::Running(row.phase.clone());
    }
    match (mine.is_some(), rows.is_some(), legacy) {
        // Docker-driver sandboxes are containers: none labelled, and the CLI (if any) agrees.
        (true, _, false) if cli.is_none() || rows.is_some() => Live::Absent,
        (_, true, _) => Live::Absent,
        _ => Live::Unknown(match cli.map(|c| &c.sandboxes) {
            Some(Observation::Unknown { reason }) => {
                format!("`openshell sandbox list` failed: {reason}")
            }
            _ => "neither the Docker engine nor the `openshell` CLI could say whether it exists"
                .to_owned(),
        }),
    }
}

/// `openshell sandbox create` with the port baked in (`CHAT_UI_URL`, `NEMOCLAW_DASHBOARD_PORT`).
fn create_argv(sb: &SandboxDesired, port: u16) -> Vec<String> {
    let c = &sb.create;
    let mut a: Vec<String> = ["sandbox", "create", "--name", &sb.name]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(p) = &c.provider {
        a.extend(["--provider".to_owned(), p.clone()]);
    }
    for preset in &c.presets {
        a.extend(["--policy".to_owned(), preset.clone()]);
    }
    match c.gpu.as_str() {
        "on" => a.push("--gpu".to_owned()),
        "off" => a.push("--no-gpu".to_owned()),
        _ => {}
    }
    if let Some(cpu) = &c.cpu {
        a.extend(["--cpu".to_owned(), cpu.clone()]);
    }
    if let Some(m) = &c.memory {
        a.extend(["--memory".to_owned(), m.clone()]);
    }
    a.extend([
        "--".to_owned(),
        "env".to_owned(),
        format!("CHAT_UI_URL=http://127.0.0.1:{port}"),
        format!("NEMOCLAW_DASHBOARD_PORT={port}"),
    ]);
    a.push(format!("NEMOCLAW_AGENT={}", c.agent));
    if let Some(m) = &c.model {
        a.push(format!("NEMOCLAW_MODEL={m}"));
    }
    if let Some(e) = &c.endpoint_url {
        a.push(format!("NEMOCLAW_ENDPOINT_URL={e}"));
    }
    a.push("nemoclaw-start".to_owned());
    a
}

#[allow(clippy::too_many_arguments)]
fn forward(
    observed: &Observed,
    sb: &SandboxDesired,
    port: u16,
    binary: &str,
    gateway: Option<&String>,
    no_cli: bool,
    after: &[String],
    b: &mut Builder,
) {
    let files: Vec<_> = observed
        .forwards
        .known()
        .map(|fs| {
            fs.iter()
                .filter(|f| f.sandbox == sb.name && f.port == port)
                .collect()
        })
        .unwrap_or_default();
    if own_forward_live(observed, &sb.name, port) {
        return;
    }
    if observed.forwards.known().is_none() {
        return; // The listener planner already reported the unreadable forward directory.
    }
    let dead = files.first().map(|f| f.path.clone());
    let bind = if sb.dashboard_bind.is_unspecified() {
        format!("0.0.0.0:{port}")
    } else {
        port.to_string()
    };
    let addr = format!("forward.{}", sb.name);
    let cleanup = dead.as_ref().map_or(String::new(), |p| {
        format!(" after removing the dead pid file {p}")
    });
    b.step(Step {
        id: format!("forward:{addr}"),
        address: addr,
        action: Action::Forward,
        risk: Risk::Create,
        reason: format!(
            "sandbox `{}` has no live dashboard forward on port {port}; start one{cleanup}",
            sb.name
        ),
        depends_on: after.to_vec(),
        blocked: no_cli.then(|| Blocked {
            reason: "the `openshell` CLI is not installed; install OpenShell and plan again"
                .to_owned(),
            allow: None,
        }),
        target: Target::Forward(ForwardTarget {
            sandbox: sb.name.clone(),
            port,
            cli: binary.to_owned(),
            gateway: gateway.cloned(),
            argv: vec![
                "forward".to_owned(),
                "start".to_owned(),
                "--background".to_owned(),
                bind,
                sb.name.clone(),
            ],
            dead_pid_file: dead,
        }),
    });
}

fn prune(
    b: &mut Builder,
    name: &str,
    binary: &str,
    gateway: Option<&String>,
    remove: RegistryTarget,
    no_cli: bool,
) {
    let addr = format!("sandbox.{name}");
    b.step(Step {
        id: format!("delete:{addr}"),
        address: addr,
        action: Action::Delete,
        risk: Risk::Destroy,
        reason: format!("`prune.sandboxes` names `{name}`, which is not declared: delete it and its registry entry. Its workspace goes with it"),
        depends_on: Vec::new(),
        blocked: no_cli.then(|| Blocked { reason: "the `openshell` CLI is not installed; install OpenShell and plan again".to_owned(), allow: None }),
        target: Target::Sandbox(SandboxTarget {
            name: name.to_owned(),
            port: 0,
            cli: binary.to_owned(),
            gateway: gateway.cloned(),
            argv: vec!["sandbox".to_owned(), "delete".to_owned(), name.to_owned()],
            ready_timeout: Millis(0),
            registry: remove,
        }),
    });
}

/// `Ok(why)` only for NotFound from the file's gateway while it is connected and selected.
fn gone(cli: Option<&CliFacts>, name: &str, gateway: Option<&str>) -> Result<String, String> {
    let Some(cli) = cli else {
        return Err(
            "the `openshell` CLI is not installed, so whether the sandbox exists cannot be asked"
                .to_owned(),
        );
    };
    let Some(gateway) = gateway else {
        return Err(
            "the file declares no gateway, so a NotFound cannot be attributed to the right one"
                .to_owned(),
        );
    };
    let lookup = cli.lookups.get(name);
    let status = cli.status.known();
    match (lookup, status) {
        (Some(Lookup::NotFound), Some(s))
            if s.connected && s.gateway.as_deref() == Some(gateway) =>
        {
            Ok(format!(
                "`openshell sandbox get {name}` says NotFound from the connected, selected gateway `{}`",
                gateway
            ))
        }
        (Some(Lookup::NotFound), Some(s)) if !s.connected => Err(
            "NotFound, but the gateway is not connected: the answer cannot be trusted".to_owned(),
        ),
        (Some(Lookup::NotFound), Some(s)) => Err(format!(
            "NotFound, but the selected gateway is `{}`, not the file's `{}` (#2276: select the right gateway first)",
            s.gateway.as_deref().unwrap_or("none"),
            gateway
        )),
        (Some(Lookup::NotFound), None) => {
            Err("NotFound, but `openshell status` could not be read".to_owned())
        }
        (Some(Lookup::Present { phase }), _) => Err(format!("it exists (phase `{phase}`)")),
        (Some(Lookup::Error { reason }), _) => {
            Err(format!("`openshell sandbox get` failed ({reason})"))
        }
        (None, _) => Err("it was not looked up (`openshell sandbox list` failed)".to_owned()),
    }
}
