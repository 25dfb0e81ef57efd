//! The step graph: what waits for what, and what is blocked and why, as Mermaid (GitHub renders
//! it in a pull-request comment) or Graphviz `dot`. One node per step, labelled
//! `action address [risk]`; an edge from each dependency to the step that waits for it; blocked
//! steps dashed and marked, with the reason in a tooltip-free note line.

use std::fmt::Write as _;

use crate::plan::{Plan, Risk, Step};

fn label(s: &Step) -> String {
    let blocked = if s.blocked.is_some() {
        " (blocked)"
    } else {
        ""
    };
    format!("{} {} [{}]{blocked}", s.action.as_str(), s.address, s.risk)
}

/// Node ids are `s0`, `s1`, … in plan order: stable, and free of the characters step ids hold.
fn node(plan: &Plan, id: &str) -> Option<String> {
    plan.steps
        .iter()
        .position(|s| s.id == id)
        .map(|i| format!("s{i}"))
}

fn class(s: &Step) -> &'static str {
    match (s.blocked.is_some(), s.risk) {
        (true, _) => "blocked",
        (false, Risk::Destroy | Risk::Replace) => "danger",
        (false, Risk::Disrupt) => "disrupt",
        _ => "safe",
    }
}

/// A Mermaid `flowchart` of the plan's steps.
#[must_use]
pub fn render_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    for (i, s) in plan.steps.iter().enumerate() {
        let text = label(s).replace('"', "'");
        let _ = writeln!(out, "  s{i}[\"{text}\"]:::{}", class(s));
    }
    for (i, s) in plan.steps.iter().enumerate() {
        for dep in &s.depends_on {
            if let Some(d) = node(plan, dep) {
                let _ = writeln!(out, "  {d} --> s{i}");
            }
        }
    }
    out.push_str("  classDef safe fill:#e6f4ea,stroke:#1e8e3e\n");
    out.push_str("  classDef disrupt fill:#fef7e0,stroke:#f9ab00\n");
    out.push_str("  classDef danger fill:#fce8e6,stroke:#d93025\n");
    out.push_str("  classDef blocked fill:#f1f3f4,stroke:#5f6368,stroke-dasharray: 5 5\n");
    out
}

/// The same graph for Graphviz (`nemoclaw plan -o dot | dot -Tsvg`).
#[must_use]
pub fn render_dot(plan: &Plan) -> String {
    let mut out = String::from(
        "digraph nemoclaw_plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for (i, s) in plan.steps.iter().enumerate() {
        let esc = |t: &str| t.replace('\\', "\\\\").replace('"', "\\\"");
        let mut lines = vec![esc(&label(s))];
        if let Some(b) = &s.blocked {
            lines.push(esc(&b.reason));
        }
        // `\n` inside a dot string is a line break.
        let text = lines.join("\\n");
        let style = match class(s) {
            "blocked" => "style=dashed, color=gray40",
            "danger" => "color=red3",
            "disrupt" => "color=orange3",
            _ => "color=green4",
        };
        let _ = writeln!(out, "  s{i} [label=\"{text}\", {style}];");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        for dep in &s.depends_on {
            if let Some(d) = node(plan, dep) {
                let _ = writeln!(out, "  {d} -> s{i};");
            }
        }
    }
    out.push_str("}\n");
    out
}
