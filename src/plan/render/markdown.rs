//! A pull-request comment: headline, a warning banner when anything is disrupted, replaced or
//! destroyed (blocked or not), the summary, the full plan in a collapsible block, and the plan hash
//! in the footer so the applied plan can be matched to the reviewed one.

use std::fmt::Write as _;

use super::human::{Style, render_human, summary};
use crate::plan::{Plan, Risk};

/// Renders the plan as GitHub-flavoured markdown.
#[must_use]
pub fn render_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### nemoclaw plan for `{}`", plan.desired.path);
    let _ = writeln!(out);
    let risky: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.risk >= Risk::Disrupt)
        .map(|s| {
            let state = if s.blocked.is_some() { ", blocked" } else { "" };
            format!("`{}` ({} {}{state})", s.address, s.action.as_str(), s.risk)
        })
        .collect();
    if !risky.is_empty() {
        let destroys = plan.steps.iter().any(|s| s.risk == Risk::Destroy);
        let _ = writeln!(out, "> [!{}]", if destroys { "CAUTION" } else { "WARNING" });
        let _ = writeln!(
            out,
            "> **This plan {}:** {}",
            if destroys {
                "deletes data"
            } else {
                "disrupts or replaces running things"
            },
            risky.join(", ")
        );
        let _ = writeln!(out);
    }
    if plan.steps.is_empty() {
        let _ = writeln!(
            out,
            "**No changes.** The host matches `{}`.",
            plan.desired.path
        );
    } else {
        let _ = writeln!(out, "**{}**", summary(plan));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "<details><summary>{} step{}, {} finding{}</summary>",
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        plan.findings.len(),
        if plan.findings.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "```text");
    out.push_str(&render_human(plan, Style { color: false }).replace("```", "'''"));
    let _ = writeln!(out, "```");
    let _ = writeln!(out);
    let _ = writeln!(out, "</details>");
    let _ = writeln!(out);
    if !plan.steps.is_empty() {
        // The step graph, which GitHub renders: what waits for what, and what is blocked.
        let _ = writeln!(out, "<details><summary>step graph</summary>");
        let _ = writeln!(out);
        let _ = writeln!(out, "```mermaid");
        out.push_str(&super::render_mermaid(plan));
        let _ = writeln!(out, "```");
        let _ = writeln!(out);
        let _ = writeln!(out, "</details>");
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "<sub>plan sha256 `{}` · `{}` sha256 `{}` · nemoclaw {}</sub>",
        plan.sha256(),
        plan.desired.path,
        plan.desired.sha256,
        env!("CARGO_PKG_VERSION")
    );
    out
}
