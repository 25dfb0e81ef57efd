//! The JSON plan (`nemoclaw plan -o json`): a stable wire format, separate from internal types.
//!
//! `format_version` follows Terraform's rule: a minor bump only adds keys, and consumers ignore
//! keys they do not know. `docs/plan-json.md` documents every key.

use serde_json::{Map, Value, json};

use crate::plan::{PLAN_FORMAT_VERSION, Plan, Step, Target};

/// Returns the plan as a JSON value.
#[must_use]
pub fn to_json(plan: &Plan) -> Value {
    let steps: Vec<Value> = plan.steps.iter().map(step_json).collect();
    let findings: Vec<Value> = plan
        .findings
        .iter()
        .map(|f| json!({ "address": f.address, "kind": f.kind.as_str(), "message": f.message }))
        .collect();
    json!({
        "format_version": PLAN_FORMAT_VERSION,
        "plan_sha256": plan.sha256(),
        "desired": { "path": plan.desired.path, "sha256": plan.desired.sha256 },
        "changes": plan.has_changes(),
        "blocked": plan.is_blocked(),
        "summary": {
            "steps": plan.steps.len(),
            "to_change": plan.changes().count(),
            "blocked": plan.steps.iter().filter(|s| s.blocked.is_some()).count(),
            "findings": plan.findings.len(),
        },
        "steps": steps,
        "findings": findings,
    })
}

/// Renders the plan as pretty JSON with a trailing newline.
#[must_use]
pub fn render_json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(&to_json(plan)).unwrap_or_default();
    s.push('\n');
    s
}

fn step_json(step: &Step) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(step.id));
    m.insert("address".into(), json!(step.address));
    m.insert("action".into(), json!(step.action.as_str()));
    m.insert("risk".into(), json!(step.risk.as_str()));
    m.insert("reason".into(), json!(step.reason));
    m.insert("depends_on".into(), json!(step.depends_on));
    m.insert(
        "blocked".into(),
        step.blocked.as_ref().map_or(
            Value::Null,
            |b| json!({ "reason": b.reason, "allow": b.allow }),
        ),
    );
    match &step.target {
        Target::Process(p) => {
            m.insert("pid".into(), json!(p.pid));
            m.insert("port".into(), json!(p.ports.first()));
            m.insert("ports".into(), json!(p.ports));
            m.insert("start_time".into(), json!(p.start_time));
            m.insert("uid".into(), json!(p.uid));
            m.insert("cmdline".into(), json!(p.cmdline));
            m.insert("wait_free".into(), json!(p.wait_free));
            m.insert("term_grace_ms".into(), json!(p.term_grace.0));
            m.insert("kill_grace_ms".into(), json!(p.kill_grace.0));
            m.insert("port_free_timeout_ms".into(), json!(p.port_free_timeout.0));
        }
        Target::Port { port, holders } => {
            m.insert("port".into(), json!(port));
            m.insert("holders".into(), json!(holders));
        }
        Target::Ports { range } => {
            m.insert("ports".into(), json!(range));
        }
        Target::Container(c) => {
            m.insert("container".into(), json!(c.name));
            m.insert("container_id".into(), json!(c.id));
            m.insert("status".into(), json!(c.status));
            if let Some(s) = &c.spec {
                m.insert("image".into(), json!(s.image));
                m.insert("volume".into(), json!(s.volume));
                m.insert("volume_exists".into(), json!(s.volume_exists));
                m.insert("network".into(), json!(s.network));
                m.insert("port".into(), json!(s.host_port));
                m.insert("bind_address".into(), json!(s.host_ip));
            }
            if let Some(w) = &c.wait {
                m.insert("port".into(), json!(w.port));
                m.insert("health_timeout_ms".into(), json!(w.timeout.0));
            }
        }
        Target::Volume { name, mountpoint } => {
            m.insert("volume".into(), json!(name));
            m.insert("mountpoint".into(), json!(mountpoint));
        }
        Target::Sandbox(s) => {
            m.insert("sandbox".into(), json!(s.name));
            m.insert("port".into(), json!(s.port));
            if let Some(p) = &s.policy {
                m.insert("policy".into(), json!(p.path));
                m.insert("policy_sha256".into(), json!(p.sha256));
            }
            m.insert(
                "command".into(),
                json!(
                    std::iter::once("openshell")
                        .chain(s.argv.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Target::Registry(r) => {
            m.insert("sandbox".into(), json!(r.name));
            m.insert("registry".into(), json!(r.path));
            if let Some(e) = &r.entry {
                m.insert("port".into(), json!(e.dashboard_port));
            }
        }
        Target::Forward(f) => {
            m.insert("sandbox".into(), json!(f.sandbox));
            m.insert("port".into(), json!(f.port));
            m.insert(
                "command".into(),
                json!(
                    std::iter::once("openshell")
                        .chain(f.argv.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Target::Secrets(t) => {
            m.insert("namespace".into(), json!("openshell"));
            m.insert("secrets".into(), json!(t.names));
        }
        Target::CliBundle { dir } => {
            m.insert("path".into(), json!(dir));
        }
        Target::CliGateway(g) => {
            m.insert("gateway".into(), json!(g.name));
            m.insert("endpoint".into(), json!(g.endpoint));
            m.insert(
                "command".into(),
                json!(
                    std::iter::once("openshell")
                        .chain(g.argv.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Target::StatefulSet { name } => {
            m.insert("statefulset".into(), json!(name));
        }
        Target::GatewayProcess(p) => {
            m.insert("binary".into(), json!(p.binary));
            m.insert("port".into(), json!(p.wait.port));
            m.insert("state_dir".into(), json!(p.state_dir));
            m.insert(
                "env_keys".into(),
                json!(
                    p.managed_env
                        .keys()
                        .chain(&p.file_env_keys)
                        .collect::<Vec<_>>()
                ),
            );
            m.insert("health_timeout_ms".into(), json!(p.wait.timeout.0));
            if let Some(s) = &p.stop {
                m.insert("pid".into(), json!(s.pid));
                m.insert("start_time".into(), json!(s.start_time));
                m.insert("stop_grace_ms".into(), json!(s.term_grace.0));
            }
            if let Some(c) = &p.config {
                m.insert("config".into(), json!(c));
            }
        }
    }
    Value::Object(m)
}
