//! Stale dashboard listeners: which listeners in the dashboard range the engine may stop.
//!
//! A listener is stale only when every one of these holds, each proven from observed facts:
//! its process is owned by the invoking user, its full command line contains a marker, the port
//! is not protected, it is not the live forward of a declared sandbox, the port is not a
//! registered-but-undeclared sandbox's, and it is not the engine or one of its ancestors.
//! Anything unknown on the way keeps the listener (a finding) or blocks the step; it never
//! yields a signal (#3397/#3398).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::index::Index;

use super::Builder;
use super::forward_process::{ForwardProcess, forward_process};
use super::step::{Action, Blocked, FindingKind, Risk, Step, StopProcess, Target};
use crate::model::{Desired, Holders, Listener, Observation, Observed, ProcessInfo, Registry};

/// Why a listener group is left alone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Keep {
    EngineProcess(u32),
    Foreign { pid: u32 },
    CmdlineMismatch { pid: u32 },
    Vanished { pid: u32 },
    Protected(u16),
    DeclaredForward { pid: u32, sandbox: String },
    RegisteredSandbox { sandbox: String, port: u16 },
    UnattributedForward { pid: u32, sandbox_id: String },
    OpenClawInUse { pid: u32, connections: u32 },
    OpenClawProfile { pid: u32, profile: String },
    OpenClawUnknown { pid: u32, what: String },
    CleanupDisabled,
}

/// Forward pid files by the pid they name: (sandbox, port) pairs.
type ForwardsByPid<'a> = BTreeMap<u32, Vec<(&'a str, u16)>>;

/// Facts about the host that every listener decision consults.
struct Context<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    ix: &'a Index<'a>,
    registry: Result<&'a Registry, &'a str>,
    /// Forward pid files by the pid they name: (sandbox, port).
    forwards: Result<ForwardsByPid<'a>, &'a str>,
    ancestors: BTreeSet<u32>,
}

pub(super) fn plan<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    ix: &'a Index<'a>,
    b: &mut Builder,
) {
    let range = desired.dashboard;
    let registry = match &observed.registry {
        Observation::Known { value } => Ok(value),
        Observation::Unknown { reason } => {
            b.finding(
                "registry",
                FindingKind::RegistryUnknown,
                format!(
                    "the sandbox registry could not be read ({reason}); no stale listener is stopped until it can, because a listener may belong to a registered sandbox. Fix or move the file; it is never overwritten"
                ),
            );
            Err(reason.as_str())
        }
    };
    let forwards = match &observed.forwards {
        Observation::Known { value } => {
            let mut by_pid: ForwardsByPid<'_> = BTreeMap::new();
            for f in value {
                if let Observation::Known { value: c } = &f.content {
                    by_pid
                        .entry(c.pid)
                        .or_default()
                        .push((f.sandbox.as_str(), f.port));
                }
            }
            Ok(by_pid)
        }
        Observation::Unknown { reason } => {
            b.finding(
                "forwards",
                FindingKind::ForwardsUnknown,
                format!("dashboard forward pid files could not be read ({reason}); no stale listener is stopped until they can"),
            );
            Err(reason.as_str())
        }
    };
    let mut ancestors: BTreeSet<u32> = observed.host.engine_ancestors.iter().copied().collect();
    ancestors.insert(observed.host.engine_pid);
    let cx = Context {
        desired,
        observed,
        ix,
        registry,
        forwards,
        ancestors,
    };

    let scanned = observed
        .scanned_ports
        .iter()
        .any(|r| r.start <= range.start && range.end <= r.end);
    let listeners = match (&observed.listeners, scanned) {
        (Observation::Known { value }, true) => value,
        (Observation::Known { .. }, false) => {
            return blocked_observation(
                b,
                &cx,
                &format!(
                    "this observation did not scan the dashboard range {range}; observe again with this file (`nemoclaw observe -f FILE`)"
                ),
            );
        }
        (Observation::Unknown { reason }, _) => {
            return blocked_observation(
                b,
                &cx,
                &format!("listening sockets could not be read: {reason}"),
            );
        }
    };
    let in_range: Vec<&Listener> = listeners
        .iter()
        .filter(|l| range.contains(l.port))
        .collect();

    // Listeners whose holders are unknown: never signalled; blocked only where a sandbox needs the port.
    let mut unknown_ports: BTreeMap<u16, &Listener> = BTreeMap::new();
    for l in &in_range {
        if let Holders::Unknown { .. } = l.holders {
            unknown_ports.entry(l.port).or_insert(l);
        }
    }
    for (port, l) in &unknown_ports {
        let Holders::Unknown { reason } = &l.holders else {
            continue;
        };
        let me = observed.host.invoking_uid;
        let (kind, who) = if l.socket_uid == me {
            (
                FindingKind::OwnerUnknown,
                format!(
                    "a socket created by uid {} (you) whose process could not be found ({reason})",
                    l.socket_uid
                ),
            )
        } else {
            (
                FindingKind::ForeignOwner,
                format!(
                    "a socket owned by uid {}, not you, whose process is not visible ({reason})",
                    l.socket_uid
                ),
            )
        };
        b.finding(
            &format!("port.{port}"),
            kind,
            format!("port {port} is held by {who}; left alone"),
        );
        if let Some(sb) = ix.needing.get(port) {
            b.step(blocked_free_port(
                *port,
                &sb.name,
                &[],
                &format!("it is held by {who}, and the engine cannot prove the holder stale"),
            ));
        }
    }

    for group in holder_groups(&in_range) {
        plan_group(b, &cx, &group);
    }
}

/// A set of processes sharing listening sockets, and the ports those sockets are on.
struct Group {
    pids: BTreeSet<u32>,
    ports: BTreeSet<u16>,
}

/// Groups known holders so that processes sharing a socket (a fork, say) are decided together:
/// stopping one of them alone would not free the port.
///
/// A union-find over pids: near-linear in listeners, where merging into a list of groups was a
/// scan of every group per listener.
fn holder_groups(listeners: &[&Listener]) -> Vec<Group> {
    fn root(parent: &mut HashMap<u32, u32>, mut x: u32) -> u32 {
        while let Some(&p) = parent.get(&x) {
            if p == x {
                break;
            }
            // Path halving: point x at its grandparent as we go.
            let gp = parent.get(&p).copied().unwrap_or(p);
            parent.insert(x, gp);
            x = gp;
        }
        x
    }
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for l in listeners {
        let Holders::Known { pids } = &l.holders else {
            continue;
        };
        let Some(&first) = pids.first() else { continue };
        parent.entry(first).or_insert(first);
        let a = root(&mut parent, first);
        for &p in &pids[1..] {
            parent.entry(p).or_insert(p);
            let r = root(&mut parent, p);
            if r != a {
                parent.insert(r, a);
            }
        }
    }
    let mut by_root: HashMap<u32, Group> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for l in listeners {
        let Holders::Known { pids } = &l.holders else {
            continue;
        };
        let Some(&first) = pids.first() else {
            // A socket with no holder left is its own group, as it always was.
            groups.push(Group {
                pids: BTreeSet::new(),
                ports: BTreeSet::from([l.port]),
            });
            continue;
        };
        let r = root(&mut parent, first);
        let g = by_root.entry(r).or_insert_with(|| Group {
            pids: BTreeSet::new(),
            ports: BTreeSet::new(),
        });
        g.pids.extend(pids.iter().copied());
        g.ports.insert(l.port);
    }
    groups.extend(by_root.into_values());
    groups.sort_by_key(|g| (g.ports.first().copied(), g.pids.first().copied()));
    groups
}

fn plan_group(b: &mut Builder, cx: &Context<'_>, group: &Group) {
    let desired = cx.desired;
    let procs: Vec<Option<&ProcessInfo>> = group
        .pids
        .iter()
        .map(|p| cx.observed.processes.get(p))
        .collect();
    let mut keep: Vec<Keep> = Vec::new();
    for (pid, info) in group.pids.iter().zip(&procs) {
        let pid = *pid;
        let Some(info) = info else {
            keep.push(Keep::Vanished { pid });
            continue;
        };
        if cx.ancestors.contains(&pid) {
            keep.push(Keep::EngineProcess(pid));
        }
        if info.uid != cx.observed.host.invoking_uid {
            keep.push(Keep::Foreign { pid });
        }
        let command = info.command();
        let forward = forward_process(&info.cmdline);
        if forward.is_none()
            && !desired
                .cleanup
                .markers
                .iter()
                .any(|m| command.contains(m.as_str()))
        {
            keep.push(Keep::CmdlineMismatch { pid });
        }
        let named = attributed(cx, pid, forward.as_ref());
        if let Some(f) = &forward
            && named.is_empty()
            && cx.forwards.as_ref().is_ok_and(|fw| !fw.contains_key(&pid))
            && !orphaned(cx, f)
        {
            keep.push(Keep::UnattributedForward {
                pid,
                sandbox_id: f.sandbox_id.clone().unwrap_or_default(),
            });
        }
        if let Ok(forwards) = &cx.forwards {
            for (sandbox, port) in forwards
                .get(&pid)
                .into_iter()
                .flatten()
                .copied()
                .chain(named)
            {
                if cx.ix.declares(sandbox) {
                    keep.push(Keep::DeclaredForward {
                        pid,
                        sandbox: sandbox.to_owned(),
                    });
                } else if cx.registry.is_ok_and(|r| r.sandboxes.contains_key(sandbox)) {
                    keep.push(Keep::RegisteredSandbox {
                        sandbox: sandbox.to_owned(),
                        port,
                    });
                }
            }
        }
    }
    let mut supervised: Vec<(u32, String)> = Vec::new();
    for pid in &group.pids {
        let Some(oc) = cx.observed.openclaw.get(pid) else {
            continue;
        };
        let pid = *pid;
        match &oc.established {
            Observation::Known { value: 0 } => {}
            Observation::Known { value } => keep.push(Keep::OpenClawInUse {
                pid,
                connections: *value,
            }),
            Observation::Unknown { reason } => keep.push(Keep::OpenClawUnknown {
                pid,
                what: format!("its client connections ({reason})"),
            }),
        }
        if let Observation::Unknown { reason } = &oc.environ {
            keep.push(Keep::OpenClawUnknown {
                pid,
                what: format!(
                    "its environment, which says whether systemd supervises it ({reason})"
                ),
            });
        }
        let profile = oc.profile();
        if desired.cleanup.keep_openclaw_profiles.contains(&profile) {
            keep.push(Keep::OpenClawProfile { pid, profile });
        }
        if let Some(unit) = oc.supervisor() {
            supervised.push((pid, unit));
        }
    }
    for port in &group.ports {
        if desired.cleanup.protected_ports.contains(port) {
            keep.push(Keep::Protected(*port));
        }
        if cx.registry.is_ok() {
            for entry in cx.ix.undeclared_by_port.get(port).into_iter().flatten() {
                keep.push(Keep::RegisteredSandbox {
                    sandbox: entry.name.clone(),
                    port: *port,
                });
            }
        }
    }
    if keep.is_empty() && !desired.cleanup.stale_listeners {
        keep.push(Keep::CleanupDisabled);
    }
    keep.sort();
    keep.dedup();

    let who = describe_group(group, &procs, cx.observed.host.invoking_uid);
    let needed: Vec<(u16, &str)> = group
        .ports
        .iter()
        .filter_map(|p| cx.ix.needing.get(p).map(|s| (*p, s.name.as_str())))
        .collect();

    if !keep.is_empty() {
        let (kind, why) = explain_keep(&keep, cx);
        let evidence = openclaw_evidence(cx, group);
        let why = if evidence.is_empty() {
            why
        } else {
            format!("{why}. OpenClaw: {evidence}")
        };
        for port in &group.ports {
            b.finding(
                &format!("port.{port}"),
                kind,
                format!("port {port} is held by {who}; left alone: {why}"),
            );
        }
        for (port, sandbox) in needed {
            let own_forward = keep
                .iter()
                .any(|k| matches!(k, Keep::DeclaredForward { sandbox: s, .. } if s == sandbox));
            if !own_forward {
                b.step(blocked_free_port(
                    port,
                    sandbox,
                    &group.pids.iter().copied().collect::<Vec<_>>(),
                    &format!("it is held by {who}, which the engine will not stop: {why}"),
                ));
            }
        }
        return;
    }

    // Stale. Every process of the group is stopped; the last one waits for the ports.
    let marker = procs.iter().flatten().find_map(|p| {
        desired
            .cleanup
            .markers
            .iter()
            .find(|m| p.command().contains(m.as_str()))
    });
    let evidence = match marker {
        Some(m) => format!("its command line contains the marker `{m}`"),
        None => "it is an OpenShell dashboard forward (`ssh … ssh-proxy … -N -L`)".to_owned(),
    };
    let ports_text = join_ports(&group.ports);
    let facts =
        format!("{who} is yours and {evidence}; no declared or registered sandbox accounts for it");
    let reason = if needed.is_empty() {
        format!("stale listener on {ports_text}: {facts}")
    } else {
        let needs: Vec<String> = needed
            .iter()
            .map(|(p, s)| format!("sandbox `{s}` needs port {p} (its dashboardPort)"))
            .collect();
        format!(
            "{} and a stale listener holds it, so it must be freed before the sandbox can claim it: {facts}",
            needs.join("; ")
        )
    };
    let openclaw = openclaw_evidence(cx, group);
    let reason = if openclaw.is_empty() {
        reason
    } else {
        format!("{reason}. OpenClaw: {openclaw}")
    };
    let supervised_block = supervised.first().map(|(pid, unit)| Blocked {
        reason: format!(
            "pid {pid} is supervised by the systemd unit `{unit}`, whose restart policy brings it straight back on the same port; the engine never signals a supervised gateway. Stop it with `systemctl --user stop {unit}` (a system unit: `sudo systemctl stop {unit}`) or `openclaw gateway stop`, then plan again"
        ),
        allow: None,
    });
    let blocked = match (&cx.registry, &cx.forwards) {
        _ if supervised_block.is_some() => supervised_block,
        (Err(why), _) => Some(Blocked {
            reason: format!(
                "the sandbox registry could not be read ({why}), so the engine cannot prove no registered sandbox owns {ports_text}; fix the registry file and plan again"
            ),
            allow: None,
        }),
        (_, Err(why)) => Some(Blocked {
            reason: format!(
                "forward pid files could not be read ({why}), so the engine cannot prove this is not a sandbox's live forward; fix them and plan again"
            ),
            allow: None,
        }),
        _ => None,
    };
    let c = &desired.cleanup;
    let mut previous: Option<String> = None;
    let last = group.pids.len() - 1;
    for (i, info) in procs.iter().flatten().enumerate() {
        let address = format!("process.{}", info.pid);
        let id = format!("stop:{address}");
        b.step(Step {
            id: id.clone(),
            address,
            action: Action::Stop,
            risk: Risk::Disrupt,
            reason: reason.clone(),
            depends_on: previous.take().into_iter().collect(),
            blocked: blocked.clone(),
            target: Target::Process(StopProcess {
                pid: info.pid,
                start_time: info.start_time,
                uid: info.uid,
                cmdline: info.cmdline.clone(),
                ports: group.ports.iter().copied().collect(),
                wait_free: if i == last {
                    group.ports.iter().copied().collect()
                } else {
                    Vec::new()
                },
                term_grace: c.term_grace,
                kill_grace: c.kill_grace,
                port_free_timeout: c.port_free_timeout,
            }),
        });
        previous = Some(id);
    }
}

/// The sandboxes a forward process serves, by what else names it: `openshell forward list`
/// rows with its pid, and pid files whose sandbox id is the one in its `ProxyCommand`.
fn attributed<'a>(
    cx: &Context<'a>,
    pid: u32,
    forward: Option<&ForwardProcess>,
) -> Vec<(&'a str, u16)> {
    let mut out: Vec<(&'a str, u16)> = cx
        .ix
        .forward_rows_by_pid
        .get(&pid)
        .into_iter()
        .flatten()
        .map(|r| (r.sandbox.as_str(), r.port))
        .collect();
    let Some(id) = forward.and_then(|f| f.sandbox_id.as_deref()) else {
        return out;
    };
    let f = forward.expect("an id comes from a forward");
    for r in cx.ix.rows_by_id.get(id).into_iter().flatten() {
        out.extend(f.ports.iter().map(|p| (r.name.as_str(), *p)));
    }
    if !id.is_empty() {
        for file in cx.ix.forward_files_by_id.get(id).into_iter().flatten() {
            if f.ports.contains(&file.port) {
                out.push((file.sandbox.as_str(), file.port));
            }
        }
    }
    out
}

/// What the OpenClaw gateways of a group say about themselves, for the plan's reason.
fn openclaw_evidence(cx: &Context<'_>, group: &Group) -> String {
    let mut parts = Vec::new();
    for pid in &group.pids {
        let Some(oc) = cx.observed.openclaw.get(pid) else {
            continue;
        };
        let lock = match &oc.locks {
            Observation::Known { value } if value.is_empty() => "no lock file names it".to_owned(),
            Observation::Known { value } => value
                .iter()
                .map(|l| {
                    format!(
                        "lock {} ({}{})",
                        l.path,
                        l.state_dir
                            .as_deref()
                            .map_or(String::new(), |d| format!("state dir {d}, ")),
                        if l.start_time_matches {
                            "its start time matches"
                        } else {
                            "start time differs: not this process's"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            Observation::Unknown { reason } => format!("lock files unreadable ({reason})"),
        };
        let service = match oc.supervisor() {
            Some(u) => format!("supervised by `{u}`"),
            None => "no service markers".to_owned(),
        };
        let conns = match &oc.established {
            Observation::Known { value } => format!("{value} client connections"),
            Observation::Unknown { .. } => "client connections unknown".to_owned(),
        };
        let health = oc
            .healthz
            .map_or("`/healthz` did not answer".to_owned(), |c| {
                format!("`/healthz` {c}")
            });
        let wrapper = oc
            .wrapper
            .map_or(String::new(), |w| format!(", launched by pid {w}"));
        parts.push(format!(
            "pid {pid}: profile `{}`, {lock}, {service}, {conns}, {health}{wrapper}",
            oc.profile()
        ));
    }
    parts.join("; ")
}

/// Whether a forward's sandbox is provably gone: the CLI's sandbox list is known, carries ids,
/// and none of them is the forward's.
fn orphaned(cx: &Context<'_>, f: &ForwardProcess) -> bool {
    let Some(id) = f.sandbox_id.as_deref() else {
        return false;
    };
    cx.ix.rows_known && cx.ix.rows_all_have_ids && !cx.ix.rows_by_id.contains_key(id)
}

fn blocked_observation(b: &mut Builder, cx: &Context<'_>, why: &str) {
    let range = cx.desired.dashboard;
    b.finding(
        &format!("ports.{range}"),
        FindingKind::ListenersUnknown,
        why.to_owned(),
    );
    let address = format!("ports.{range}");
    b.step(Step {
        id: format!("observe:{address}"),
        address,
        action: Action::Observe,
        risk: Risk::Read,
        reason: format!(
            "the dashboard range {range} must be observed before stale listeners can be judged"
        ),
        depends_on: Vec::new(),
        blocked: Some(Blocked {
            reason: why.to_owned(),
            allow: None,
        }),
        target: Target::Ports {
            range: range.to_string(),
        },
    });
}

fn blocked_free_port(port: u16, sandbox: &str, holders: &[u32], why: &str) -> Step {
    let address = format!("port.{port}");
    Step {
        id: format!("free-port:{address}"),
        address,
        action: Action::FreePort,
        risk: Risk::Disrupt,
        reason: format!("sandbox `{sandbox}` needs port {port} (its dashboardPort)"),
        depends_on: Vec::new(),
        blocked: Some(Blocked {
            reason: format!(
                "{why}; stop the holder yourself or give `{sandbox}` another dashboardPort"
            ),
            allow: None,
        }),
        target: Target::Port {
            port,
            holders: holders.to_vec(),
        },
    }
}

fn explain_keep(keep: &[Keep], cx: &Context<'_>) -> (FindingKind, String) {
    let me = cx.observed.host.invoking_uid;
    let kind = match &keep[0] {
        Keep::EngineProcess(_) => FindingKind::EngineProcess,
        Keep::Foreign { .. } => FindingKind::ForeignOwner,
        Keep::CmdlineMismatch { .. } => FindingKind::CmdlineMismatch,
        Keep::Vanished { .. } => FindingKind::OwnerUnknown,
        Keep::Protected(_) => FindingKind::ProtectedPort,
        Keep::DeclaredForward { .. } => FindingKind::DeclaredForward,
        Keep::RegisteredSandbox { .. } => FindingKind::RegisteredSandbox,
        Keep::UnattributedForward { .. } => FindingKind::DeclaredForward,
        Keep::OpenClawInUse { .. } | Keep::OpenClawProfile { .. } => FindingKind::OpenClawWanted,
        Keep::OpenClawUnknown { .. } => FindingKind::OwnerUnknown,
        Keep::CleanupDisabled => FindingKind::CleanupDisabled,
    };
    let parts: Vec<String> = keep
        .iter()
        .map(|k| match k {
            Keep::EngineProcess(pid) => format!("pid {pid} is this engine or one of its ancestors"),
            Keep::Foreign { pid } => format!("pid {pid} is not owned by you (uid {me})"),
            Keep::CmdlineMismatch { pid } => format!(
                "the command line of pid {pid} contains none of the markers {}",
                cx.desired.cleanup.markers.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ),
            Keep::Vanished { pid } => format!("pid {pid} could not be read (it may have exited while observing)"),
            Keep::Protected(port) => format!("port {port} is in `cleanup.protectedPorts`"),
            Keep::DeclaredForward { sandbox, .. } => format!("it is the live dashboard forward of declared sandbox `{sandbox}`"),
            Keep::RegisteredSandbox { sandbox, port } => format!(
                "port {port} belongs to sandbox `{sandbox}`, which is registered in the sandbox registry but not declared in the file; declare it, or remove it with NemoClaw"
            ),
            Keep::UnattributedForward { pid, sandbox_id } => format!(
                "pid {pid} is an OpenShell dashboard forward of sandbox id `{sandbox_id}`, which no pid file names and `openshell sandbox list` does not show to be gone, so it may be a live sandbox's"
            ),
            Keep::OpenClawInUse { pid, connections } => format!(
                "pid {pid} is an OpenClaw gateway in use: {connections} client connection{} established to it",
                if *connections == 1 { " is" } else { "s are" }
            ),
            Keep::OpenClawProfile { pid, profile } => format!(
                "pid {pid} is the OpenClaw gateway of profile `{profile}`, which `cleanup.openclaw.keepProfiles` keeps"
            ),
            Keep::OpenClawUnknown { pid, what } => format!(
                "pid {pid} is an OpenClaw gateway and {what} could not be read, so it cannot be proven stale"
            ),
            Keep::CleanupDisabled => "`cleanup.staleListeners` is false".to_owned(),
        })
        .collect();
    (kind, parts.join("; "))
}

fn describe_group(group: &Group, procs: &[Option<&ProcessInfo>], me: u32) -> String {
    let parts: Vec<String> = group
        .pids
        .iter()
        .zip(procs)
        .map(|(pid, p)| match p {
            Some(p) => describe_process(p, me),
            None => format!("pid {pid}"),
        })
        .collect();
    parts.join(" and ")
}

/// `pid 4242 `openclaw-gateway --port 18789` (uid 1000, alice)`.
pub(crate) fn describe_process(p: &ProcessInfo, me: u32) -> String {
    let mut command = p.command();
    if command.chars().count() > 80 {
        command = command.chars().take(77).collect::<String>() + "...";
    }
    let user = match (&p.user, p.uid == me) {
        (Some(u), _) => format!("uid {}, {u}", p.uid),
        (None, true) => format!("uid {}, you", p.uid),
        (None, false) => format!("uid {}", p.uid),
    };
    format!("pid {} `{command}` ({user})", p.pid)
}

fn join_ports(ports: &BTreeSet<u16>) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    match list.len() {
        1 => format!("port {}", list[0]),
        _ => format!("ports {}", list.join(", ")),
    }
}
