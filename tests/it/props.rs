//! Property tests of the planner's invariants over generated hosts.
//!
//! Invariant 1 (unknown never destroys) and 4 (ownership before signals) as properties: whatever
//! the host looks like, an unblocked stop step only ever targets a process that is provably the
//! invoking user's, marker-matched, unprotected, not the engine's ancestor, with registry and
//! forwards known. And the planner is deterministic.

use std::collections::BTreeSet;

use nemoclaw::model::{Holders, Observation, Observed};
use nemoclaw::plan::{Action, PlanOptions, Target, plan, render};
use proptest::prelude::*;

use crate::support::{Host, ME, desired_with};

const CMDLINES: [&str; 6] = [
    "openclaw-gateway --port 18789",
    "node /usr/lib/openclaw/openclaw-gateway.js",
    "openshell forward start 18790 alice",
    "openshell-forward",
    "python3 -m http.server",
    "nginx: worker process",
];

#[derive(Debug, Clone)]
struct Case {
    procs: Vec<(u32, u32, usize)>,
    listeners: Vec<(u16, Option<Vec<usize>>, bool)>,
    registry_known: bool,
    registry: Vec<(usize, Option<u16>)>,
    forwards: Vec<(usize, u16, usize)>,
    protected: Vec<u16>,
    sandboxes: Vec<(usize, Option<u16>)>,
    stale_listeners: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let procs = prop::collection::vec(
        (prop::sample::select(vec![ME, 0, 65534]), 0..CMDLINES.len()),
        1..6,
    );
    let port = prop::sample::select((18785u16..18802).collect::<Vec<_>>());
    (
        procs,
        prop::collection::vec(
            (
                port.clone(),
                prop::option::weighted(0.8, prop::collection::vec(0usize..6, 1..3)),
                any::<bool>(),
            ),
            0..8,
        ),
        prop::bool::weighted(0.8),
        prop::collection::vec((0usize..3, prop::option::of(port.clone())), 0..3),
        prop::collection::vec((0usize..3, port.clone(), 0usize..6), 0..3),
        prop::collection::vec(port.clone(), 0..2),
        prop::collection::vec((0usize..3, prop::option::of(port)), 0..3),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(
                procs,
                listeners,
                registry_known,
                registry,
                forwards,
                protected,
                sandboxes,
                stale_listeners,
            )| Case {
                procs: procs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (uid, c))| (200 + i as u32, uid, c))
                    .collect(),
                listeners,
                registry_known,
                registry,
                forwards,
                protected,
                sandboxes,
                stale_listeners,
            },
        )
}

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// Builds (desired, observed) from a case, or `None` when the desired file would be invalid.
fn build(c: &Case) -> Option<(nemoclaw::model::Desired, Observed)> {
    let mut sandboxes = String::new();
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (n, port) in &c.sandboxes {
        if !names.insert(*n) {
            continue;
        }
        sandboxes.push_str(&format!("  - name: {}\n", NAMES[*n]));
        if let Some(p) = port
            .filter(|p| (18789..=18799).contains(p) && !c.protected.contains(p) && ports.insert(*p))
        {
            sandboxes.push_str(&format!("    dashboardPort: {p}\n"));
        }
    }
    let protected: BTreeSet<u16> = c.protected.iter().copied().collect();
    let cleanup = format!(
        "  staleListeners: {}\n  protectedPorts: [{}]",
        c.stale_listeners,
        protected
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let d = nemoclaw::spec::load(
        "p.yaml",
        &format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\nsandboxes:{}\ncleanup:\n{cleanup}\n",
            if sandboxes.is_empty() {
                " []\n".to_owned()
            } else {
                format!("\n{sandboxes}")
            }
        ),
    )
    .ok()?;
    let _ = desired_with; // the helper is for fixed scenarios; generated ones build their own text
    let mut h = Host::new();
    for (pid, uid, c) in &c.procs {
        h = h.process(*pid, *uid, CMDLINES[*c]);
    }
    let pids: Vec<u32> = c.procs.iter().map(|p| p.0).collect();
    for (port, holders, v6) in &c.listeners {
        h = match holders {
            None => h.listen_unknown(*port, if *v6 { ME } else { 0 }),
            Some(idx) => {
                let mut held: Vec<u32> = idx.iter().map(|i| pids[i % pids.len()]).collect();
                held.sort_unstable();
                held.dedup();
                h.listen_at(if *v6 { "::1" } else { "127.0.0.1" }, *port, &held)
            }
        };
    }
    for (n, port) in &c.registry {
        h = h.registered(NAMES[*n], *port);
    }
    for (n, port, p) in &c.forwards {
        h = h.forward(NAMES[*n], *port, pids[p % pids.len()]);
    }
    if !c.registry_known {
        h = h.registry_unknown();
    }
    Some((d, h.build()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn planning_is_deterministic(c in case()) {
        let Some((d, o)) = build(&c) else { return Ok(()) };
        let a = plan(&d, &o, &PlanOptions::default());
        let b = plan(&d, &o.clone(), &PlanOptions::default());
        prop_assert_eq!(render::render_json(&a), render::render_json(&b));
        prop_assert_eq!(render::render_human(&a, render::Style { color: false }), render::render_human(&b, render::Style { color: false }));
    }

    #[test]
    fn only_provably_stale_processes_are_signalled(c in case()) {
        let Some((d, o)) = build(&c) else { return Ok(()) };
        let p = plan(&d, &o, &PlanOptions::default());
        let registry = o.registry.known();
        let mut seen = BTreeSet::new();
        for step in p.changes() {
            prop_assert_eq!(step.action, Action::Stop);
            let Target::Process(t) = &step.target else { panic!("stop without a process") };
            prop_assert!(seen.insert(t.pid), "pid {} stopped twice", t.pid);
            prop_assert!(registry.is_some(), "unknown registry yet an unblocked stop");
            prop_assert!(d.cleanup.stale_listeners);
            let info = &o.processes[&t.pid];
            prop_assert_eq!(info.uid, ME);
            prop_assert!(d.cleanup.markers.iter().any(|m| info.command().contains(m.as_str())));
            prop_assert!(!o.host.engine_ancestors.contains(&t.pid) && o.host.engine_pid != t.pid);
            prop_assert_eq!((info.start_time, &info.cmdline), (t.start_time, &t.cmdline));
            for port in &t.ports {
                prop_assert!(!d.cleanup.protected_ports.contains(port));
                prop_assert!(d.dashboard.contains(*port));
                let undeclared_owner = registry.unwrap().sandboxes.values()
                    .any(|e| e.dashboard_port == Some(*port) && !d.declares(&e.name));
                prop_assert!(!undeclared_owner, "port {} belongs to a registered sandbox", port);
            }
            // It really holds a listener, by a known holder list.
            let holds = o.listeners.known().unwrap().iter().any(|l| matches!(&l.holders, Holders::Known { pids } if pids.contains(&t.pid)));
            prop_assert!(holds);
        }
    }

    #[test]
    fn unknown_registry_never_yields_a_signal(mut c in case()) {
        c.registry_known = false;
        let Some((d, o)) = build(&c) else { return Ok(()) };
        let unknown = matches!(o.registry, Observation::Unknown { .. });
        prop_assert!(unknown);
        let p = plan(&d, &o, &PlanOptions::default());
        prop_assert!(!p.has_changes());
    }

    #[test]
    fn dependencies_come_first(c in case()) {
        let Some((d, o)) = build(&c) else { return Ok(()) };
        let p = plan(&d, &o, &PlanOptions::default());
        let mut before = BTreeSet::new();
        for s in &p.steps {
            for dep in &s.depends_on {
                prop_assert!(before.contains(dep), "{} depends on later {}", s.id, dep);
            }
            prop_assert!(before.insert(s.id.clone()), "duplicate id {}", s.id);
        }
    }

    #[test]
    fn the_summary_counts_every_step_that_runs(c in case()) {
        let Some((d, o)) = build(&c) else { return Ok(()) };
        let p = plan(&d, &o, &PlanOptions::default());
        let line = nemoclaw::plan::render::summary(&p);
        let counted: usize = line
            .trim_start_matches("Plan: ")
            .split(", ")
            .filter_map(|part| part.split_once(" to ").and_then(|(n, _)| n.parse::<usize>().ok()))
            .sum();
        prop_assert_eq!(counted, p.changes().count(), "{}", line);
    }
}
