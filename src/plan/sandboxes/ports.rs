//! Dashboard ports: chosen the same way every time, claimed before anything is built (#3397),
//! and never moved for a sandbox that already exists (the port is baked into it at create).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::model::{Desired, Observed};
use crate::plan::step::{Action, Step, Target};

/// A dashboard port chosen for a sandbox, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The port.
    pub port: u16,
    /// Why this one.
    pub why: String,
    /// The file's `dashboardPort` when it differs from the port baked into the live sandbox.
    pub file_port: Option<u16>,
}

/// Chooses every declared sandbox's dashboard port. A live sandbox keeps the port the registry
/// records for it — the one baked in at create — whatever the file says. Then, in file order:
/// the file's port, else the registry's recorded one, else the lowest free port of the range. A
/// port is free when nothing listens on it or only listeners this plan stops do, and no other
/// sandbox claims it. `Err` says why no port could be chosen.
#[must_use]
pub fn assign_ports(
    desired: &Desired,
    observed: &Observed,
    steps: &[Step],
    live: &BTreeSet<&str>,
) -> BTreeMap<String, Result<Assigned, String>> {
    let range = desired.dashboard;
    let registry = observed.registry.known();
    let recorded = |name: &str| {
        registry
            .and_then(|r| r.sandboxes.get(name))
            .and_then(|e| e.dashboard_port)
    };
    let mut out = BTreeMap::new();
    let mut claimed: BTreeSet<u16> = BTreeSet::new();
    // Live sandboxes first: their ports are facts, not choices.
    for sb in desired
        .sandboxes
        .iter()
        .filter(|s| live.contains(s.name.as_str()))
    {
        if let Some(p) = recorded(&sb.name) {
            claimed.insert(p);
            out.insert(
                sb.name.clone(),
                Ok(Assigned {
                    port: p,
                    why: "baked into the live sandbox at create (the registry records it)"
                        .to_owned(),
                    file_port: sb.dashboard_port.filter(|q| *q != p),
                }),
            );
        }
    }
    claimed.extend(
        desired
            .sandboxes
            .iter()
            .filter(|s| !out.contains_key(&s.name))
            .filter_map(|s| s.dashboard_port),
    );
    if let Some(r) = registry {
        let declared: HashSet<&str> = desired.sandboxes.iter().map(|s| s.name.as_str()).collect();
        claimed.extend(
            r.sandboxes
                .values()
                .filter(|e| !declared.contains(e.name.as_str()))
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
    let mut held: BTreeSet<u16> = listeners
        .map(|ls| ls.iter().map(|l| l.port).collect())
        .unwrap_or_default();
    let stopped = stopped_pids(steps);
    // A live OpenClaw gateway on P claims P+2 and P+10 later (browser control, extension
    // relay): they are never handed to a sandbox.
    held.extend(openclaw_derived(observed, &stopped).into_keys());
    let forwards: HashSet<(&str, u16)> = observed
        .forwards
        .known()
        .into_iter()
        .flatten()
        .map(|f| (f.sandbox.as_str(), f.port))
        .collect();
    let own_forward = |name: &str, port: u16| forwards.contains(&(name, port));
    // The lowest port of the range not yet ruled out: ports only ever become claimed, so the
    // lowest free one never moves down, and each search resumes where the last one stopped.
    let mut lowest = range.start;
    let free = |port: u16| -> bool {
        !desired.cleanup.protected_ports.contains(&port)
            && listeners.is_some()
            && (!held.contains(&port) || freed.contains(&port))
    };
    for sb in &desired.sandboxes {
        if out.contains_key(&sb.name) {
            continue;
        }
        if let Some(p) = sb.dashboard_port {
            out.insert(
                sb.name.clone(),
                Ok(Assigned {
                    port: p,
                    why: "the file's dashboardPort".to_owned(),
                    file_port: None,
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
        let choice = match recorded(&sb.name) {
            Some(p)
                if range.contains(p)
                    && !claimed.contains(&p)
                    && (free(p) || own_forward(&sb.name, p)) =>
            {
                Some(Assigned {
                    port: p,
                    why: "assigned: the port the registry records for it".to_owned(),
                    file_port: None,
                })
            }
            _ => {
                while lowest <= range.end && (claimed.contains(&lowest) || !free(lowest)) {
                    lowest = match lowest.checked_add(1) {
                        Some(n) => n,
                        None => break,
                    };
                }
                (range.contains(lowest) && !claimed.contains(&lowest) && free(lowest))
                    .then_some(lowest)
            }
            .map(|p| Assigned {
                port: p,
                why: format!("assigned: the lowest free port of {range}"),
                file_port: None,
            }),
        };
        match choice {
            Some(a) => {
                claimed.insert(a.port);
                out.insert(sb.name.clone(), Ok(a));
            }
            None => {
                out.insert(
                    sb.name.clone(),
                    Err(format!(
                        "every port of {range} is taken or held by something the engine cannot prove stale"
                    )),
                );
            }
        }
    }
    out
}

/// The pids this plan stops (unblocked `stop` steps).
#[must_use]
pub fn stopped_pids(steps: &[Step]) -> BTreeSet<u32> {
    steps
        .iter()
        .filter(|s| s.action == Action::Stop && s.blocked.is_none())
        .filter_map(|s| match &s.target {
            Target::Process(p) => Some(p.pid),
            _ => None,
        })
        .collect()
}

/// Ports live OpenClaw gateways (those this plan does not stop) derive from their own port P:
/// P+2 (browser control) and P+10 (extension relay). Derived port → (pid, P).
#[must_use]
pub fn openclaw_derived(observed: &Observed, stopped: &BTreeSet<u32>) -> BTreeMap<u16, (u32, u16)> {
    let mut out = BTreeMap::new();
    let Some(listeners) = observed.listeners.known() else {
        return out;
    };
    for (pid, oc) in &observed.openclaw {
        if stopped.contains(pid) {
            continue;
        }
        let own = oc
            .locks
            .known()
            .and_then(|l| l.iter().find_map(|l| l.port))
            .or_else(|| {
                oc.environ
                    .known()
                    .and_then(|e| e.get("OPENCLAW_GATEWAY_PORT"))
                    .and_then(|p| p.parse().ok())
            })
            .or_else(|| {
                listeners
                    .iter()
                    .filter(|l| matches!(&l.holders, crate::model::Holders::Known { pids } if pids.contains(pid)))
                    .map(|l| l.port)
                    .min()
            });
        if let Some(p) = own {
            for d in [p.checked_add(2), p.checked_add(10)].into_iter().flatten() {
                out.entry(d).or_insert((*pid, p));
            }
        }
    }
    out
}
