//! Terraform-style text: a symbol per step, the address, what happens, why, then findings and a
//! summary line. Colour is never the only signal.

use std::fmt::Write as _;

use crate::plan::{Action, Plan, Risk, Step, Target};

/// Terminal styling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Emit ANSI colours.
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Returns the symbol for a step: `+` create, `~` disrupt, `-/+` replace, `-` destroy, `<=` read,
/// `!` blocked.
#[must_use]
pub fn symbol(step: &Step) -> &'static str {
    if step.blocked.is_some() {
        return "!";
    }
    match step.risk {
        Risk::Read => "<=",
        Risk::Create => "+",
        Risk::Disrupt => "~",
        Risk::Replace => "-/+",
        Risk::Destroy => "-",
    }
}

fn color_of(step: &Step) -> &'static str {
    if step.blocked.is_some() {
        return "35;1";
    }
    match step.risk {
        Risk::Read => "36",
        Risk::Create => "32",
        Risk::Disrupt => "33",
        Risk::Replace | Risk::Destroy => "31;1",
    }
}

fn headline(step: &Step) -> &'static str {
    match (step.action, step.blocked.is_some()) {
        (Action::Stop, false) => "will be stopped",
        (Action::Stop, true) => "would be stopped",
        (Action::FreePort, _) => "must be freed",
        (Action::Observe, _) => "must be observed",
    }
}

/// Renders the plan for a terminal.
#[must_use]
pub fn render_human(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let file = &plan.desired.path;
    if plan.steps.is_empty() {
        let _ = writeln!(
            out,
            "{} This host matches {file}.",
            style.paint("1", "No changes.")
        );
    } else {
        let _ = writeln!(
            out,
            "nemoclaw plan for this host against {file}. Steps, in the order apply runs them:"
        );
        let _ = writeln!(out);
        for step in &plan.steps {
            render_step(&mut out, step, style);
        }
    }
    if !plan.findings.is_empty() {
        // Every step ends with a blank line already.
        if plan.steps.is_empty() {
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "Findings (information only; they do not change the exit code):"
        );
        for f in &plan.findings {
            let _ = writeln!(
                out,
                "  - {} [{}]: {}",
                style.paint("1", &f.address),
                f.kind.as_str(),
                f.message
            );
        }
    }
    if !plan.findings.is_empty() || plan.steps.is_empty() {
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "{}", summary(plan));
    out
}

fn render_step(out: &mut String, step: &Step, style: Style) {
    let sym = format!("{:>3}", symbol(step));
    let tag = match &step.blocked {
        Some(_) => "blocked".to_owned(),
        None => step.risk.to_string(),
    };
    let _ = writeln!(
        out,
        "{} {} {} [{}]",
        style.paint(color_of(step), &sym),
        style.paint("1", &step.address),
        headline(step),
        tag
    );
    let _ = writeln!(out, "      # {}", step.reason);
    if let Target::Process(p) = &step.target {
        let mut how = format!(
            "SIGTERM, wait up to {}; SIGKILL, wait up to {}",
            p.term_grace, p.kill_grace
        );
        if !p.wait_free.is_empty() {
            let ports: Vec<String> = p.wait_free.iter().map(u16::to_string).collect();
            let _ = write!(
                how,
                "; then wait up to {} for {} to show free",
                p.port_free_timeout,
                ports.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "      # how: {how} (signals go through a pidfd; pid {} must still have start time {})",
            p.pid, p.start_time
        );
    }
    if !step.depends_on.is_empty() {
        let _ = writeln!(out, "      # after: {}", step.depends_on.join(", "));
    }
    if let Some(b) = &step.blocked {
        let unblock = match &b.allow {
            Some(flag) => format!("to allow it, re-run with `{flag}`"),
            None => "no flag unblocks this; it needs a person".to_owned(),
        };
        let _ = writeln!(
            out,
            "      # {}: {}; {unblock}",
            style.paint("35;1", "blocked"),
            b.reason
        );
    }
    let _ = writeln!(out);
}

/// `Plan: 1 to stop, 1 blocked, 2 findings.` plus the disruptive addresses first.
#[must_use]
pub fn summary(plan: &Plan) -> String {
    let stops = plan.changes().filter(|s| s.action == Action::Stop).count();
    let blocked = plan.steps.iter().filter(|s| s.blocked.is_some()).count();
    let findings = plan.findings.len();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut line = format!(
        "Plan: {} to stop, {} blocked, {}.",
        stops,
        blocked,
        plural(findings, "finding", "findings")
    );
    let risky: Vec<&str> = plan
        .changes()
        .filter(|s| s.risk >= Risk::Disrupt)
        .map(|s| s.address.as_str())
        .collect();
    if !risky.is_empty() {
        let _ = write!(line, " Disrupts: {}.", risky.join(", "));
    }
    line
}
