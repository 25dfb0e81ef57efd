//! The CLI's registration of the file's gateway.
//!
//! `openshell` resolves `-g NAME` / `OPENSHELL_GATEWAY` from its stored gateway metadata; a
//! gateway the engine starts is unknown to it until registered, and every sandbox and forward
//! command then fails with "Unknown gateway". So the registration is an observed fact
//! (`openshell gateway list`), and a missing one is a planned step, as NemoClaw's onboarding does
//! it: `openshell gateway add <endpoint> --local --name <gw>` (which also makes it active), or
//! `openshell gateway select <gw>` when it is registered but another gateway is active. An
//! `http://` endpoint registers a plaintext gateway (the `docker-driver` runtime as the engine
//! runs it); an `https://` one with `--local` a local mTLS gateway, whose client bundle must
//! already be in the CLI's gateway directory (the legacy runtime: the bundle step comes first).

use super::Builder;
use super::openshell;
use super::step::{Action, CliGatewayTarget, FindingKind, Risk, Step, Target};
use crate::model::{Desired, GatewayRuntime, Observation, Observed};

/// The endpoint the CLI should know the file's gateway by.
#[must_use]
pub fn endpoint(desired: &Desired) -> Option<String> {
    let g = &desired.gateway;
    let host = if g.bind_address.is_unspecified() || g.bind_address.is_loopback() {
        "127.0.0.1".to_owned()
    } else {
        g.bind_address.to_string()
    };
    match g.runtime.as_ref()? {
        GatewayRuntime::LegacyK3s { .. } => Some(format!("https://{host}:{}", g.port)),
        GatewayRuntime::DockerDriver { .. } => Some(format!("http://{host}:{}", g.port)),
    }
}

pub(super) fn plan(desired: &Desired, observed: &Observed, b: &mut Builder) {
    if desired.sandboxes.is_empty() && desired.prune_sandboxes.is_empty() {
        return;
    }
    let (Some(endpoint), Some(facts)) = (endpoint(desired), observed.openshell.as_ref()) else {
        return;
    };
    let Ok(cli) = openshell::usable(observed) else {
        return; // The sandbox steps say why the CLI cannot be used.
    };
    let name = &desired.gateway.name;
    let addr = format!("cli-gateway.{name}");
    let binary = facts
        .binary
        .clone()
        .unwrap_or_else(|| "openshell".to_owned());
    // After the gateway's own steps, and, for mTLS, after its client bundle is in place.
    let depends_on: Vec<String> = b
        .steps
        .iter()
        .filter(|s| {
            s.address == format!("gateway.{name}") && s.action != Action::Observe
                || s.address == format!("mtls.{name}")
        })
        .map(|s| s.id.clone())
        .collect();
    let registered = match &cli.gateways {
        Observation::Known { value } => value,
        Observation::Unknown { reason } => {
            b.blocked_observe(
                addr,
                format!("whether the CLI knows gateway `{name}` must be known before sandboxes are managed through it"),
                reason.clone(),
                Target::Ports {
                    range: String::new(),
                },
            );
            return;
        }
    };
    let target = |argv: Vec<&str>| {
        Target::CliGateway(CliGatewayTarget {
            name: name.clone(),
            endpoint: endpoint.clone(),
            cli: binary.clone(),
            argv: argv.into_iter().map(str::to_owned).collect(),
        })
    };
    match registered.iter().find(|g| &g.name == name) {
        None => b.step(Step {
            id: format!("register:{addr}"),
            address: addr,
            action: Action::Register,
            risk: Risk::Create,
            reason: format!(
                "the `openshell` CLI does not know gateway `{name}`; register it at {endpoint} (and make it active) so sandbox and forward commands reach it"
            ),
            depends_on,
            blocked: None,
            target: target(vec!["gateway", "add", &endpoint, "--local", "--name", name]),
        }),
        Some(g) if g.endpoint.trim_end_matches('/') != endpoint => b.finding(
            &addr,
            FindingKind::CliGatewayMismatch,
            format!(
                "the `openshell` CLI has gateway `{name}` registered at {}, but the file's gateway is at {endpoint}; sandbox commands go to the registered endpoint. Re-register it (`openshell gateway remove {name}`, then plan again) if the file is right",
                g.endpoint
            ),
        ),
        Some(g) if !g.active => b.step(Step {
            id: format!("select:{addr}"),
            address: addr,
            action: Action::Select,
            risk: Risk::Create,
            reason: format!(
                "gateway `{name}` is registered but not the CLI's active gateway; select it, as NemoClaw's onboarding leaves it, so `openshell` and `nemoclaw` commands without `-g` reach it"
            ),
            depends_on,
            blocked: None,
            target: target(vec!["gateway", "select", name]),
        }),
        Some(_) => {}
    }
}
