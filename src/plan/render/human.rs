//! Terraform-style text: a symbol per step, the address, what happens, why, then findings and a
//! summary line. Colour is never the only signal.

use std::fmt::Write as _;

use crate::model::text::escape_controls as esc;
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

fn headline(step: &Step) -> String {
    let verb = match step.action {
        Action::Stop => "stopped",
        Action::Create => "created",
        Action::Start => "started",
        Action::Restart => "restarted",
        Action::Replace => "replaced (recreated)",
        Action::Delete => "deleted, with all its data",
        Action::Register => "registered",
        Action::Unregister => "removed from the registry",
        Action::Forward => "forwarded",
        Action::Write => "written",
        Action::Select => "selected",
        Action::FreePort => return "must be freed".to_owned(),
        Action::Observe => return "must be observed".to_owned(),
    };
    if step.blocked.is_some() {
        format!("would be {verb}")
    } else {
        format!("will be {verb}")
    }
}

/// Renders the plan for a terminal.
#[must_use]
pub fn render_human(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let file = esc(&plan.desired.path);
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
        // The riskiest addresses first, so a reviewer cannot miss them in a long plan.
        let mut headed = false;
        for (risk, label) in [
            (Risk::Destroy, "Destroys data"),
            (Risk::Replace, "Replaces"),
            (Risk::Disrupt, "Disrupts"),
        ] {
            let addrs: Vec<String> = plan
                .steps
                .iter()
                .filter(|s| s.risk == risk)
                .map(|s| {
                    if s.blocked.is_some() {
                        format!("{} (blocked)", s.address)
                    } else {
                        s.address.clone()
                    }
                })
                .collect();
            if !addrs.is_empty() {
                let color = if risk == Risk::Disrupt { "33" } else { "31;1" };
                let _ = writeln!(out, "  {}: {}", style.paint(color, label), addrs.join(", "));
                headed = true;
            }
        }
        if headed {
            let _ = writeln!(out);
        }
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
                esc(&f.message)
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
    // Reasons quote others' command lines: their control characters are shown, not obeyed.
    let _ = writeln!(out, "      # {}", esc(&step.reason));
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
            esc(&b.reason)
        );
    }
    let _ = writeln!(out);
}

/// `Plan: 1 to create, 1 to stop, 1 blocked, 2 findings.` then the riskiest addresses first.
#[must_use]
pub fn summary(plan: &Plan) -> String {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    // Every action a step that runs can have (`free-port` and `observe` are only ever blocked),
    // so the counts always add up to the steps that will run.
    let verbs = [
        (Action::Create, "create"),
        (Action::Start, "start"),
        (Action::Stop, "stop"),
        (Action::Restart, "restart"),
        (Action::Replace, "replace"),
        (Action::Delete, "delete"),
        (Action::Register, "register"),
        (Action::Unregister, "unregister"),
        (Action::Forward, "forward"),
        (Action::Select, "select"),
        (Action::Write, "write"),
        (Action::FreePort, "free"),
        (Action::Observe, "observe"),
    ];
    let mut parts: Vec<String> = verbs
        .iter()
        .filter_map(|(action, verb)| {
            let n = plan.changes().filter(|s| s.action == *action).count();
            (n > 0).then(|| format!("{n} to {verb}"))
        })
        .collect();
    if parts.is_empty() {
        parts.push("0 to change".to_owned());
    }
    let blocked = plan.steps.iter().filter(|s| s.blocked.is_some()).count();
    let mut line = format!(
        "Plan: {}, {blocked} blocked, {}.",
        parts.join(", "),
        plural(plan.findings.len(), "finding", "findings")
    );
    for (risk, label) in [
        (Risk::Destroy, "Destroys"),
        (Risk::Replace, "Replaces"),
        (Risk::Disrupt, "Disrupts"),
    ] {
        let addrs: Vec<&str> = plan
            .changes()
            .filter(|s| s.risk == risk)
            .map(|s| s.address.as_str())
            .collect();
        if !addrs.is_empty() {
            let _ = write!(line, " {label}: {}.", addrs.join(", "));
        }
    }
    line
}
