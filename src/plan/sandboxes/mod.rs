//! Sandboxes, the registry and dashboard forwards.
//!
//! Live state wins over the registry, and the registry is never trusted blindly nor wiped: an
//! entry is removed only when `openshell sandbox get` said NotFound while the file's gateway was
//! connected and selected (#952, #2276); anything else keeps it and says why. A dashboard port is
//! claimed before the sandbox is created and baked into it (#3397, #2174), and never moved once
//! it is. Every CLI step waits for the gateway's own steps in the same plan (start, restart, its
//! CLI registration), and is blocked when the installed CLI is missing or outside the supported
//! versions. An undeclared live sandbox is a finding, deleted only when `prune.sandboxes` names
//! it, with `--allow destroy`.

pub mod forward;
mod ports;
mod undeclared;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use forward::live_forward;
pub use ports::{Assigned, assign_ports};

use super::Builder;
use super::index::Index;
use super::openshell;
use super::step::{
    Action, Blocked, ContainerTarget, FindingKind, RegistryFields, RegistryTarget, Risk,
    SandboxTarget, Step, Target,
};
use crate::model::{
    CliFacts, Desired, GatewayRuntime, Holders, Observation, Observed, SandboxContainer,
    SandboxDesired,
};

enum Live<'a> {
    Running(String),
    Stopped(&'a SandboxContainer),
    Absent,
    Unknown(String),
}

/// What every sandbox decision consults.
struct Context<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    ix: &'a Index<'a>,
    /// The stop steps planned so far (listeners, gateway), by each port they free.
    stops_by_port: HashMap<u16, Vec<String>>,
    /// The pids those (unblocked) stops end.
    stopped: BTreeSet<u32>,
    /// The CLI, or why it cannot be used.
    cli: Result<&'a CliFacts, Blocked>,
    binary: String,
    /// The gateway the file manages (`OPENSHELL_GATEWAY` for every CLI call).
    gateway: Option<String>,
    registry_path: String,
    registry_blocked: Option<Blocked>,
    containers: Option<&'a Vec<SandboxContainer>>,
    /// Steps every CLI step waits for: the gateway's start/restart/replace and its registration.
    prerequisites: Vec<String>,
}

impl Context<'_> {
    fn registry_target(&self, name: &str, entry: Option<RegistryFields>) -> RegistryTarget {
        RegistryTarget {
            path: self.registry_path.clone(),
            name: name.to_owned(),
            entry,
        }
    }
}

/// The gateway's own steps already planned: a CLI step must not run against the gateway before
/// it is (re)started and known to the CLI.
fn prerequisites(desired: &Desired, steps: &[Step]) -> Vec<String> {
    let gateway = format!("gateway.{}", desired.gateway.name);
    let cli_gateway = format!("cli-gateway.{}", desired.gateway.name);
    steps
        .iter()
        .filter(|s| {
            (s.address == gateway
                && matches!(
                    s.action,
                    Action::Create | Action::Start | Action::Restart | Action::Replace
                ))
                || s.address == cli_gateway
        })
        .map(|s| s.id.clone())
        .collect()
}

pub(super) fn plan<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    ix: &'a Index<'a>,
    b: &mut Builder,
) {
    // Without the CLI's section the observation was not made for sandboxes (a snapshot from
    // before they were observed): nothing is planned for them rather than a guess.
    if observed.openshell.is_none() {
        return;
    }
    let registry = observed.registry.known();
    let registered = registry.is_some_and(|r| !r.sandboxes.is_empty());
    if desired.sandboxes.is_empty() && !registered && desired.prune_sandboxes.is_empty() {
        return;
    }
    let cli = openshell::usable(observed);
    let mut stops_by_port: HashMap<u16, Vec<String>> = HashMap::new();
    for s in b.steps.iter().filter(|s| s.action == Action::Stop) {
        if let Target::Process(p) = &s.target {
            for port in &p.ports {
                stops_by_port.entry(*port).or_default().push(s.id.clone());
            }
        }
    }
    let cx = Context {
        desired,
        observed,
        ix,
        stops_by_port,
        stopped: ports::stopped_pids(&b.steps),
        binary: observed
            .openshell
            .as_ref()
            .and_then(|c| c.binary.clone())
            .unwrap_or_else(|| "openshell".to_owned()),
        cli,
        gateway: desired
            .gateway
            .runtime
            .as_ref()
            .map(|_| desired.gateway.name.clone()),
        registry_path: registry.map_or_else(
            || "~/.nemoclaw/sandboxes.json".to_owned(),
            |r| r.path.clone(),
        ),
        registry_blocked: match &observed.registry {
            Observation::Unknown { reason } => Some(Blocked {
                reason: format!(
                    "the sandbox registry cannot be read ({reason}); it is never written while unreadable: move the broken file aside (it is kept as is) and plan again"
                ),
                allow: None,
            }),
            Observation::Known { .. } => None,
        },
        containers: match &observed.docker {
            Some(Observation::Known { value }) => value.sandbox_containers.as_ref(),
            _ => None,
        },
        prerequisites: prerequisites(desired, &b.steps),
    };
    let legacy = matches!(
        desired.gateway.runtime,
        Some(GatewayRuntime::LegacyK3s { .. })
    );
    let lives: BTreeMap<&str, Live<'_>> = desired
        .sandboxes
        .iter()
        .map(|sb| (sb.name.as_str(), live_state(sb, &cx, legacy)))
        .collect();
    let live_names: BTreeSet<&str> = lives
        .iter()
        .filter(|(_, l)| matches!(l, Live::Running(_) | Live::Stopped(_)))
        .map(|(n, _)| *n)
        .collect();
    let assigned = assign_ports(desired, observed, &b.steps, &live_names);
    derived_ports_finding(desired, observed, b);
    for sb in &desired.sandboxes {
        let live = &lives[sb.name.as_str()];
        match assigned.get(&sb.name) {
            Some(Ok(a)) => declared(&cx, sb, live, a, b),
            other => {
                let why = match other {
                    Some(Err(w)) => w.clone(),
                    _ => "no dashboard port was assigned".to_owned(),
                };
                let addr = format!("sandbox.{}", sb.name);
                b.step(Step {
                    id: format!("create:{addr}"),
                    address: addr,
                    action: Action::Create,
                    risk: Risk::Create,
                    reason: format!("sandbox `{}` needs a dashboard port", sb.name),
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
        }
    }
    undeclared::plan(&cx, b);
}

/// The steps of one declared sandbox whose port is chosen.
fn declared(
    cx: &Context<'_>,
    sb: &SandboxDesired,
    live: &Live<'_>,
    port: &Assigned,
    b: &mut Builder,
) {
    let addr = format!("sandbox.{}", sb.name);
    if let Some(q) = port.file_port {
        b.finding(
            &addr,
            FindingKind::SandboxPortBaked,
            format!(
                "sandbox `{}` was created with dashboard port {} baked in; the file asks for {q}, and a live sandbox's port cannot be moved. Set `dashboardPort: {}`, or delete the sandbox (`openshell sandbox delete {}`) and apply again to recreate it on {q}",
                sb.name, port.port, port.port, sb.name
            ),
        );
    }
    // A stop step that frees this port must come first: the port is claimed before anything
    // is built (#3397).
    let frees: Vec<String> = cx
        .stops_by_port
        .get(&port.port)
        .cloned()
        .unwrap_or_default();
    let port_blocked = port_held_by_other(cx, &sb.name, port.port);
    let mut before = cx.prerequisites.clone();
    before.extend(frees.iter().cloned());
    let fields = RegistryFields {
        dashboard_port: port.port,
        agent: sb.create.agent.clone(),
        gateway_name: cx.gateway.clone(),
        gateway_port: cx.gateway.as_ref().map(|_| cx.desired.gateway.port),
    };
    let upsert = cx.registry_target(&sb.name, Some(fields));
    let mut after: Vec<String> = Vec::new();
    match live {
        Live::Unknown(why) => {
            // Nothing is stopped to free a port for a sandbox that may already have it.
            for id in &frees {
                if let Some(s) = b.step_mut(id)
                    && s.blocked.is_none()
                {
                    s.blocked = Some(Blocked {
                        reason: format!(
                            "it would free port {} for sandbox `{}`, whose existence is unknown ({why}); the listener may be that sandbox's own",
                            port.port, sb.name
                        ),
                        allow: None,
                    });
                }
            }
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
            return;
        }
        Live::Stopped(c) => {
            let id = format!("start:{addr}");
            b.step(Step {
                id: id.clone(),
                address: addr.clone(),
                action: Action::Start,
                risk: Risk::Create,
                reason: format!("sandbox container `{}` is `{}`; start it (its writable layer holds the sandbox's state)", c.name, c.status),
                depends_on: before.clone(),
                blocked: None,
                target: Target::Container(ContainerTarget { name: c.name.clone(), id: Some(c.id.clone()), status: Some(c.status.clone()), spec: None, wait: None }),
            });
            after.push(id);
        }
        Live::Absent => {
            let id = format!("create:{addr}");
            let argv = cx.cli.as_ref().map_err(Clone::clone).and_then(|c| {
                openshell::create_argv(sb, port.port, c, cx.observed).map_err(|reason| Blocked {
                    reason,
                    allow: None,
                })
            });
            let policy = sb.create.policy.as_ref();
            let policy_text = policy.map_or(String::new(), |p| {
                format!(
                    "; policy {} ({})",
                    p.path,
                    p.sha256.as_deref().unwrap_or("not read yet")
                )
            });
            b.step(Step {
                id: id.clone(),
                address: addr.clone(),
                action: Action::Create,
                risk: Risk::Create,
                reason: format!(
                    "sandbox `{}` does not exist; create it {} with dashboard port {} ({}) baked in{policy_text}, wait until it is Ready, then register it",
                    sb.name,
                    sb.create.from.as_deref().map_or("(no `from` is declared)".to_owned(), |f| format!("from `{f}`")),
                    port.port,
                    port.why
                ),
                depends_on: before.clone(),
                blocked: argv
                    .as_ref()
                    .err()
                    .cloned()
                    .or_else(|| port_blocked.clone())
                    .or_else(|| cx.registry_blocked.clone()),
                target: Target::Sandbox(SandboxTarget {
                    name: sb.name.clone(),
                    port: port.port,
                    cli: cx.binary.clone(),
                    gateway: cx.gateway.clone(),
                    argv: argv.unwrap_or_default(),
                    ready_timeout: sb.create.ready_timeout,
                    list_json: cx.cli.as_ref().is_ok_and(|c| c.list_json),
                    policy: policy.cloned(),
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
        let registry = cx.observed.registry.known();
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
                blocked: cx.registry_blocked.clone(),
                target: Target::Registry(upsert),
            });
        }
    }
    if port_blocked.is_none() {
        // The forward waits for the sandbox and for the stop that frees its port.
        let mut forward_after = after;
        forward_after.extend(before);
        forward::plan(
            cx.observed,
            cx.ix,
            sb,
            port.port,
            &cx.binary,
            cx.gateway.as_ref(),
            cx.cli.as_ref().err(),
            &forward_after,
            b,
        );
    }
}

/// Says which ports of the range live OpenClaw gateways will claim, and that no sandbox gets them.
fn derived_ports_finding(desired: &Desired, observed: &Observed, b: &mut Builder) {
    let stopped = ports::stopped_pids(&b.steps);
    let mut by_gateway: BTreeMap<(u32, u16), Vec<u16>> = BTreeMap::new();
    for (port, owner) in ports::openclaw_derived(observed, &stopped) {
        if desired.dashboard.contains(port) {
            by_gateway.entry(owner).or_default().push(port);
        }
    }
    for ((pid, own), ports) in by_gateway {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        b.finding(
            &format!("port.{own}"),
            FindingKind::OpenClawDerivedPorts,
            format!(
                "the live OpenClaw gateway pid {pid} on port {own} claims {} later (browser control on {}, extension relay on {}); no sandbox is given {}",
                list.join(" and "),
                own + 2,
                own + 10,
                if ports.len() == 1 { "it" } else { "them" }
            ),
        );
    }
}

/// Blocked when the port is held by something this plan does not stop and that is not the
/// sandbox's own live forward: nothing is built on a port that cannot be claimed (#3397).
fn port_held_by_other(cx: &Context<'_>, sandbox: &str, port: u16) -> Option<Blocked> {
    let held = cx.ix.listeners_on(port).iter().any(|l| match &l.holders {
        Holders::Known { pids } => !pids.iter().all(|p| cx.stopped.contains(p)),
        Holders::Unknown { .. } => true,
    }) && live_forward(cx.observed, cx.ix, sandbox, port).is_none();
    held.then(|| Blocked {
        reason: format!(
            "its dashboard port {port} is held by a listener this plan does not stop (see `port.{port}` and the findings); the port is claimed before anything is built"
        ),
        allow: None,
    })
}

fn live_state<'a>(sb: &SandboxDesired, cx: &Context<'a>, legacy: bool) -> Live<'a> {
    let mine: Option<Vec<&SandboxContainer>> = cx.containers.map(|_| {
        cx.ix
            .containers
            .get(sb.name.as_str())
            .cloned()
            .unwrap_or_default()
    });
    let cli = cx.cli.as_ref().ok();
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
    if let Some(row) = rows.and(cx.ix.rows.get(sb.name.as_str())) {
        return Live::Running(row.phase.clone());
    }
    match (mine.is_some(), rows.is_some(), legacy) {
        // Docker-driver sandboxes are containers, which outlive their gateway: none labelled
        // means none exists, even while the CLI cannot be asked (a gateway this plan starts or
        // registers first). A record without a container makes the create fail; nothing is lost.
        (true, _, false) => Live::Absent,
        (_, true, _) => Live::Absent,
        _ => Live::Unknown(match (&cx.cli, cli.map(|c| &c.sandboxes)) {
            (_, Some(Observation::Unknown { reason })) => {
                format!("`openshell sandbox list` failed: {reason}")
            }
            (Err(b), _) => format!(
                "the Docker engine could not say whether it exists, and the CLI cannot be asked: {}",
                b.reason
            ),
            _ => "neither the Docker engine nor the `openshell` CLI could say whether it exists"
                .to_owned(),
        }),
    }
}
