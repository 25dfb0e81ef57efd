//! The planner: a pure function from desired state, observed state and options to a [`Plan`].
//!
//! No I/O, no clock, no environment, no randomness: equal inputs give byte-identical plans, so a
//! plan can be reviewed, snapshotted, and re-checked. Every decision is made here; `apply` only
//! carries out what a step says.

pub mod cli_gateway;
pub mod forward_process;
pub mod gateway;
pub mod index;
mod listeners;
pub mod openshell;
pub mod recovery;
pub mod render;
pub mod sandboxes;
pub mod saved;
pub mod secrets;
pub mod step;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use gateway::managed_env;
pub use step::{
    Action, Blocked, CliGatewayTarget, ContainerSpec, ContainerTarget, Finding, FindingKind,
    ForwardTarget, HealthWait, ProcessTarget, RegistryFields, RegistryTarget, Risk, SandboxTarget,
    SecretsTarget, Step, StopProcess, Target,
};

use crate::model::{Desired, DesiredSource, Observed};

/// Version of the JSON plan format (`nemoclaw plan -o json`). Minor bumps are additive.
pub const PLAN_FORMAT_VERSION: &str = "1.0";

/// Consent and other knobs that change what the planner may propose.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Risk classes above the default (`disrupt`) that the user consented to with `--allow`.
    pub allow: BTreeSet<Risk>,
    /// Single steps consented to with `--allow <class>=<address>`.
    #[serde(default)]
    pub allow_steps: BTreeSet<(Risk, String)>,
    /// Set when an earlier apply was interrupted and its outcome is unknown: nothing `replace` or
    /// riskier may run until it is known.
    #[serde(default)]
    pub hold_destructive: Option<String>,
}

/// An ordered set of steps and the findings that explain what is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The desired-state file this plan was computed from.
    pub desired: DesiredSource,
    /// Steps in execution order; each step's dependencies come before it.
    pub steps: Vec<Step>,
    /// Things noticed and deliberately not acted on.
    pub findings: Vec<Finding>,
}

impl Plan {
    /// Steps that will run: not blocked, and not read-only.
    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| s.blocked.is_none() && s.risk > Risk::Read)
    }

    /// Returns whether any step would change the host.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.changes().next().is_some()
    }

    /// Returns whether any step is blocked.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.steps.iter().any(|s| s.blocked.is_some())
    }

    /// Returns whether the plan has nothing to do and nothing in the way.
    #[must_use]
    pub fn is_converged(&self) -> bool {
        !self.has_changes() && !self.is_blocked()
    }

    /// SHA-256 of the plan's canonical JSON: the id a review, a saved plan and the journal share.
    #[must_use]
    pub fn sha256(&self) -> String {
        // Streamed into the hasher: a plan of 30,000 steps is never held twice in memory.
        struct Hashing(sha2::Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                sha2::Digest::update(&mut self.0, buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(<sha2::Sha256 as sha2::Digest>::new());
        let _ = serde_json::to_writer(&mut h, self);
        crate::model::hex(&sha2::Digest::finalize(h.0))
    }
}

/// Computes the steps that move `observed` toward `desired`.
#[must_use]
pub fn plan(desired: &Desired, observed: &Observed, options: &PlanOptions) -> Plan {
    let mut b = Builder::default();
    let ix = index::Index::new(desired, observed);
    listeners::plan(desired, observed, &ix, &mut b);
    gateway::plan(desired, observed, &mut b);
    secrets::plan(desired, observed, &mut b);
    cli_gateway::plan(desired, observed, &mut b);
    sandboxes::plan(desired, observed, &ix, &mut b);
    b.finish(desired, options)
}

/// Collects steps and findings while planning, then orders them and applies consent.
#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    /// Each id in `steps` with its position: a step planned twice is kept once (its first
    /// form), and a later planner finds an earlier step without a scan.
    ids: std::collections::HashMap<String, usize>,
    findings: Vec<Finding>,
}

impl Builder {
    fn step(&mut self, step: Step) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.ids.entry(step.id.clone()) {
            e.insert(self.steps.len());
            self.steps.push(step);
        }
    }

    /// The step with `id`, if planned.
    fn step_mut(&mut self, id: &str) -> Option<&mut Step> {
        let i = *self.ids.get(id)?;
        self.steps.get_mut(i)
    }

    /// An `observe` step that cannot run: what `address` needs to be known first (`reason`) could
    /// not be observed (`why`). Nothing that depends on that knowledge is planned beside it.
    fn blocked_observe(&mut self, address: String, reason: String, why: String, target: Target) {
        self.step(Step {
            id: format!("observe:{address}"),
            address,
            action: Action::Observe,
            risk: Risk::Read,
            reason,
            depends_on: Vec::new(),
            blocked: Some(Blocked {
                reason: why,
                allow: None,
            }),
            target,
        });
    }

    fn finding(&mut self, address: &str, kind: FindingKind, message: String) {
        self.findings.push(Finding {
            address: address.to_owned(),
            kind,
            message,
        });
    }

    fn finish(mut self, desired: &Desired, options: &PlanOptions) -> Plan {
        consent(&mut self.steps, options);
        self.steps = order(self.steps);
        // Equal findings are identical in every field, so an unstable sort orders them the same.
        self.findings.sort_unstable();
        self.findings.dedup();
        Plan {
            desired: desired.source.clone(),
            steps: self.steps,
            findings: self.findings,
        }
    }
}

/// Applies consent to steps: a step riskier than `disrupt` is blocked unless `options` allows its
/// class or exactly its address, and while an earlier apply's outcome is unknown nothing
/// `replace` or riskier runs at all. Only consent blocks (those with an `allow` flag) are
/// re-evaluated, so a saved plan can be consented to at apply time by the same rule; blocks that
/// need a person stay.
pub fn consent(steps: &mut [Step], options: &PlanOptions) {
    for step in steps.iter_mut() {
        if step.blocked.as_ref().is_some_and(|b| b.allow.is_some()) {
            step.blocked = None;
        }
        if step.blocked.is_some() || step.risk <= Risk::Disrupt {
            continue;
        }
        if let Some(why) = &options.hold_destructive {
            step.blocked = Some(Blocked {
                reason: why.clone(),
                allow: None,
            });
            continue;
        }
        let allowed = options.allow.contains(&step.risk)
            || options
                .allow_steps
                .contains(&(step.risk, step.address.clone()));
        if !allowed {
            let flag = if step.risk == Risk::Destroy {
                format!("--allow destroy={}", step.address)
            } else {
                format!("--allow {}", step.risk)
            };
            step.blocked = Some(Blocked {
                reason: format!("`{}` steps need explicit consent", step.risk),
                allow: Some(flag),
            });
        }
    }
    // A step that waits for a blocked one cannot run either: say so, with the flag (if any) that
    // would unblock the whole chain.
    loop {
        let blocked: BTreeMap<String, Option<String>> = steps
            .iter()
            .filter_map(|s| s.blocked.as_ref().map(|b| (s.id.clone(), b.allow.clone())))
            .collect();
        let mut changed = false;
        for step in steps.iter_mut().filter(|s| s.blocked.is_none()) {
            if let Some((dep, allow)) = step
                .depends_on
                .iter()
                .find_map(|d| blocked.get(d).map(|a| (d, a)))
            {
                step.blocked = Some(Blocked {
                    reason: format!("it waits for `{dep}`, which is blocked"),
                    allow: allow.clone(),
                });
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// Orders steps so that every dependency comes first (a topological order) and, among the steps
/// ready at each point, the least risky comes first (non-destructive first), then the one for the
/// lowest port (the sandbox's port before strays), then by address.
///
/// Kahn's algorithm with a priority queue: O(n log n + edges). Dependencies on ids the plan does
/// not hold are ignored; a cycle (which the planners never make) is broken at its least key
/// rather than looping.
fn order(steps: Vec<Step>) -> Vec<Step> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    type Key = (Risk, u16, (String, u64), String);
    let key = |s: &Step| -> Key {
        (
            s.risk,
            first_port(&s.target),
            sort_key(&s.address),
            s.id.clone(),
        )
    };
    let index: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut waiting: Vec<usize> = vec![0; steps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let deps: BTreeSet<usize> = s
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
            .filter(|d| *d != i)
            .collect();
        waiting[i] = deps.len();
        for d in deps {
            dependents[d].push(i);
        }
    }
    let keys: Vec<Key> = steps.iter().map(key).collect();
    let mut ready: BinaryHeap<Reverse<(Key, usize)>> = (0..steps.len())
        .filter(|i| waiting[*i] == 0)
        .map(|i| Reverse((keys[i].clone(), i)))
        .collect();
    let mut placed = vec![false; steps.len()];
    let mut sequence = Vec::with_capacity(steps.len());
    while sequence.len() < steps.len() {
        let next = match ready.pop() {
            Some(Reverse((_, i))) if !placed[i] => i,
            Some(_) => continue,
            // Only a cycle is left: take its least key.
            None => (0..steps.len())
                .filter(|i| !placed[*i])
                .min_by(|a, b| keys[*a].cmp(&keys[*b]))
                .unwrap_or(0),
        };
        placed[next] = true;
        sequence.push(next);
        for &d in &dependents[next] {
            waiting[d] = waiting[d].saturating_sub(1);
            if waiting[d] == 0 && !placed[d] {
                ready.push(Reverse((keys[d].clone(), d)));
            }
        }
    }
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    sequence
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect()
}

fn first_port(target: &Target) -> u16 {
    match target {
        Target::Process(p) => p.ports.first().copied().unwrap_or(0),
        Target::Port { port, .. } => *port,
        Target::Container(c) => c
            .spec
            .as_ref()
            .map(|s| s.host_port)
            .or(c.wait.as_ref().map(|w| w.port))
            .unwrap_or(0),
        Target::GatewayProcess(p) => p.wait.port,
        Target::Sandbox(s) => s.port,
        Target::Forward(f) => f.port,
        Target::Ports { .. }
        | Target::Volume { .. }
        | Target::Registry(_)
        | Target::Secrets(_)
        | Target::CliBundle { .. }
        | Target::CliGateway(_)
        | Target::StatefulSet { .. } => 0,
    }
}

/// Orders `port.9` before `port.10`: numeric parts compare as numbers.
fn sort_key(address: &str) -> (String, u64) {
    match address.rsplit_once('.') {
        Some((kind, n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
            (kind.to_owned(), n.parse().unwrap_or(0))
        }
        _ => (address.to_owned(), 0),
    }
}
