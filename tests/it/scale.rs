//! Scale without change: the plans of generated hosts (`generate.rs`: up to 300 sandboxes and
//! 1,200 listeners, missing, present and mixed) are pinned by hash, taken before the planner's
//! indexes went in — a faster planner must make byte-identical plans. Speed itself is measured in
//! `benches/planner.rs`, never asserted here.

use nemoclaw::plan::{PlanOptions, plan, render};

use crate::generate::{Presence, Shape, create_flags, desired_yaml, observed};
use crate::snap;

#[test]
fn generated_hosts_plan_exactly_as_before() {
    let flags = create_flags();
    let mut out = String::new();
    for sandboxes in [0, 10, 100, 300] {
        for presence in [Presence::Missing, Presence::Present, Presence::Mixed] {
            for listeners in [0, 40, 1200] {
                let shape = Shape {
                    sandboxes,
                    presence,
                    listeners,
                };
                let d = crate::support::desired(&desired_yaml(shape));
                let o = observed(shape, flags.clone());
                let p = plan(&d, &o, &PlanOptions::default());
                let json = render::render_json(&p);
                out.push_str(&format!(
                    "{sandboxes:>4} {presence:<8} {listeners:>5}: {:>5} steps {:>5} findings {}\n",
                    p.steps.len(),
                    p.findings.len(),
                    &nemoclaw::model::sha256_hex(json.as_bytes())[..16],
                    presence = format!("{presence:?}"),
                ));
            }
        }
    }
    snap!("scale-generated-plans", out);
}
