//! Judging, from a fresh observation, whether a step whose apply was interrupted (an intent in the
//! journal without an outcome) took effect. Pure: the observation comes in as data.

use serde::{Deserialize, Serialize};

use super::step::{Action, Target};
use crate::model::{Holders, Observation, Observed};

/// Whether an interrupted step took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Its effect is on the host.
    Done,
    /// Its effect is not on the host; the next plan proposes what is still needed.
    NotDone,
    /// The observation cannot tell. Nothing destructive runs until it can.
    Unknown,
}

impl Verdict {
    /// The name used in output and the journal.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::NotDone => "not done",
            Self::Unknown => "unknown",
        }
    }
}

/// Judges an interrupted step against `observed`.
#[must_use]
pub fn judge(action: Action, target: &Target, observed: &Observed) -> (Verdict, String) {
    match (action, target) {
        (Action::Stop, Target::Process(p)) => {
            let Some(listeners) = observed.listeners.known() else {
                return (
                    Verdict::Unknown,
                    "listening sockets could not be read".to_owned(),
                );
            };
            let same_process = observed
                .processes
                .get(&p.pid)
                .is_some_and(|i| i.start_time == p.start_time);
            let holds = listeners.iter().any(|l| {
                p.ports.contains(&l.port)
                    && matches!(&l.holders, Holders::Known { pids } if pids.contains(&p.pid))
            });
            if same_process && holds {
                (
                    Verdict::NotDone,
                    format!("pid {} still listens on {:?}", p.pid, p.ports),
                )
            } else if observed
                .scanned_ports
                .iter()
                .any(|r| p.ports.iter().all(|port| r.contains(*port)))
            {
                (
                    Verdict::Done,
                    format!("pid {} no longer listens on {:?}", p.pid, p.ports),
                )
            } else {
                (
                    Verdict::Unknown,
                    format!("ports {:?} were not observed", p.ports),
                )
            }
        }
        (_, Target::Container(c)) => {
            let Some(Observation::Known { value: docker }) = &observed.docker else {
                return (
                    Verdict::Unknown,
                    "the Docker engine could not be asked".to_owned(),
                );
            };
            let Some(found) = docker.containers.get(&c.name) else {
                return (
                    Verdict::Unknown,
                    format!("container `{}` was not looked up", c.name),
                );
            };
            match (action, found) {
                (Action::Create, Some(_)) => {
                    (Verdict::Done, format!("container `{}` exists", c.name))
                }
                (Action::Create, None) => (
                    Verdict::NotDone,
                    format!("container `{}` does not exist", c.name),
                ),
                (Action::Start | Action::Restart, Some(now)) if now.running => {
                    (Verdict::Done, format!("container `{}` runs", c.name))
                }
                (Action::Start | Action::Restart, Some(now)) => (
                    Verdict::NotDone,
                    format!("container `{}` is `{}`", c.name, now.status),
                ),
                (Action::Replace, Some(now))
                    if c.id.as_deref() != Some(now.id.as_str()) && now.running =>
                {
                    (
                        Verdict::Done,
                        format!("container `{}` was recreated and runs", c.name),
                    )
                }
                (Action::Replace, Some(_)) => (
                    Verdict::NotDone,
                    format!("container `{}` was not recreated (or does not run)", c.name),
                ),
                (_, None) => (
                    Verdict::NotDone,
                    format!(
                        "container `{}` is gone (removed, not recreated); the next plan creates it again with its volume",
                        c.name
                    ),
                ),
                _ => (
                    Verdict::Unknown,
                    format!("cannot judge `{}` on a container", action.as_str()),
                ),
            }
        }
        (Action::Delete, Target::Volume { name, .. }) => {
            let Some(Observation::Known { value: docker }) = &observed.docker else {
                return (
                    Verdict::Unknown,
                    "the Docker engine could not be asked".to_owned(),
                );
            };
            match docker.volumes.get(name) {
                Some(None) => (Verdict::Done, format!("volume `{name}` is gone")),
                Some(Some(_)) => (Verdict::NotDone, format!("volume `{name}` still exists")),
                None => (
                    Verdict::Unknown,
                    format!("volume `{name}` was not looked up"),
                ),
            }
        }
        (Action::Start | Action::Restart, Target::GatewayProcess(t)) => {
            match &observed.gateway_process {
                Some(g) => match &g.process {
                    Some(p)
                        if t.stop.as_ref().is_none_or(|s| {
                            s.start_time != p.info.start_time || s.pid != p.info.pid
                        }) =>
                    {
                        (Verdict::Done, format!("gateway pid {} runs", p.info.pid))
                    }
                    _ => (Verdict::NotDone, "no new gateway process runs".to_owned()),
                },
                None => (
                    Verdict::Unknown,
                    "the gateway process was not observed".to_owned(),
                ),
            }
        }
        (Action::Create | Action::Delete, Target::Sandbox(s)) => {
            let Some(r) = observed.registry.known() else {
                return (Verdict::Unknown, "the registry cannot be read".to_owned());
            };
            match (action, r.sandboxes.contains_key(&s.name)) {
                (Action::Create, true) => (Verdict::Done, format!("`{}` is registered", s.name)),
                (Action::Create, false) => (
                    Verdict::NotDone,
                    format!(
                        "`{}` is not registered; the next plan creates or registers it",
                        s.name
                    ),
                ),
                (_, false) => (
                    Verdict::Done,
                    format!("`{}` is no longer registered", s.name),
                ),
                (_, true) => (
                    Verdict::NotDone,
                    format!("`{}` is still registered", s.name),
                ),
            }
        }
        (_, Target::Registry(t)) => {
            let Some(r) = observed.registry.known() else {
                return (Verdict::Unknown, "the registry cannot be read".to_owned());
            };
            let now = r.sandboxes.get(&t.name).and_then(|e| e.dashboard_port);
            match (&t.entry, now) {
                (Some(f), Some(p)) if p == f.dashboard_port => {
                    (Verdict::Done, format!("`{}` is registered on {p}", t.name))
                }
                (None, _) if !r.sandboxes.contains_key(&t.name) => {
                    (Verdict::Done, format!("`{}` is not registered", t.name))
                }
                _ => (
                    Verdict::NotDone,
                    format!("the registry entry for `{}` was not written", t.name),
                ),
            }
        }
        (_, Target::Forward(f)) => match observed.listeners.known() {
            Some(ls) if ls.iter().any(|l| l.port == f.port) => {
                (Verdict::Done, format!("port {} listens", f.port))
            }
            Some(_) => (
                Verdict::NotDone,
                format!("nothing listens on port {}", f.port),
            ),
            None => (
                Verdict::Unknown,
                "listening sockets could not be read".to_owned(),
            ),
        },
        _ => (
            Verdict::Unknown,
            format!("cannot judge `{}` here", action.as_str()),
        ),
    }
}
