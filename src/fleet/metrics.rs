//! The agent's `/metrics`, in the Prometheus text format: reconciles and errors, each resource's
//! convergence, steps applied by action and outcome, and how long the last observe and plan took.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Counters and gauges, updated by the agent at each reconcile and rendered on each scrape.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles run (one resource each).
    pub reconciles: u64,
    /// Reconciles that failed (the lease held, a status not written, ...) and failed watches
    /// (the API server unreachable).
    pub errors: u64,
    /// Per resource (`namespace/name`): 1 converged, 0 not.
    pub converged: BTreeMap<String, u8>,
    /// Steps applied, by (action, outcome).
    pub steps: BTreeMap<(String, String), u64>,
    /// Seconds the last observation took.
    pub observe_seconds: f64,
    /// Seconds the last plan took.
    pub plan_seconds: f64,
}

impl Metrics {
    /// The text a scrape gets.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            name.to_owned()
        }
        let n = family(
            &mut out,
            "nemoclaw_agent_reconciles_total",
            "counter",
            "Reconciles run, one resource each.",
        );
        let _ = writeln!(out, "{n} {}", self.reconciles);
        let n = family(
            &mut out,
            "nemoclaw_agent_errors_total",
            "counter",
            "Reconciles and watches that failed.",
        );
        let _ = writeln!(out, "{n} {}", self.errors);
        let n = family(
            &mut out,
            "nemoclaw_converged",
            "gauge",
            "Whether the host matches the resource's spec.desired (1) or not (0).",
        );
        for (resource, v) in &self.converged {
            let _ = writeln!(out, "{n}{{resource=\"{}\"}} {v}", escape(resource));
        }
        let n = family(
            &mut out,
            "nemoclaw_steps_applied_total",
            "counter",
            "Steps the agent ran, by action and outcome.",
        );
        for ((action, outcome), v) in &self.steps {
            let _ = writeln!(
                out,
                "{n}{{action=\"{}\",outcome=\"{}\"}} {v}",
                escape(action),
                escape(outcome)
            );
        }
        let n = family(
            &mut out,
            "nemoclaw_observe_seconds",
            "gauge",
            "How long the last observation took.",
        );
        let _ = writeln!(out, "{n} {}", self.observe_seconds);
        let n = family(
            &mut out,
            "nemoclaw_plan_seconds",
            "gauge",
            "How long the last plan took.",
        );
        let _ = writeln!(out, "{n} {}", self.plan_seconds);
        out
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut m = Metrics {
            reconciles: 3,
            ..Metrics::default()
        };
        m.converged.insert("nemoclaw/ws-1".into(), 1);
        m.steps.insert(("stop".into(), "done".into()), 2);
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE nemoclaw_agent_reconciles_total counter\nnemoclaw_agent_reconciles_total 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("nemoclaw_converged{resource=\"nemoclaw/ws-1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nemoclaw_steps_applied_total{action=\"stop\",outcome=\"done\"} 2\n"),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
