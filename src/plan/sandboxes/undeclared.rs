//! Sandboxes the file does not declare: registry entries whose sandbox is gone (removed only on
//! NotFound from the connected, selected gateway — #952, #2276), live ones kept as findings, and
//! the ones `prune.sandboxes` names, deleted with consent.

use super::super::Builder;
use super::super::step::{Action, FindingKind, RegistryTarget, Risk, SandboxTarget, Step, Target};
use super::Context;
use crate::model::{CliFacts, Lookup, Millis};

pub(super) fn plan(cx: &Context<'_>, b: &mut Builder) {
    let registry = cx.observed.registry.known();
    let registered: Vec<&str> = registry
        .map(|r| r.sandboxes.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for name in registered {
        if cx.ix.declares(name) {
            continue;
        }
        let addr = format!("sandbox.{name}");
        let in_list = cx.cli.is_ok() && cx.ix.rows_known && cx.ix.rows.contains_key(name);
        let in_docker = cx.containers.is_some() && cx.ix.containers.contains_key(name);
        let remove = cx.registry_target(name, None);
        if in_list || in_docker {
            if cx.desired.prune_sandboxes.contains(name) {
                prune(cx, b, name, remove);
            } else {
                b.finding(&addr, FindingKind::UndeclaredSandbox, format!("sandbox `{name}` is registered and live but not declared; it is kept: declare it, or list it under `prune.sandboxes` to delete it"));
            }
            continue;
        }
        match gone(cx.cli.as_ref().ok().copied(), name, cx.gateway.as_deref()) {
            Ok(why) => b.step(Step {
                id: format!("unregister:registry.{name}"),
                address: format!("registry.{name}"),
                action: Action::Unregister,
                risk: Risk::Create,
                reason: format!("sandbox `{name}` is definitely gone ({why}); remove its registry entry (metadata only)"),
                depends_on: Vec::new(),
                blocked: cx.registry_blocked.clone(),
                target: Target::Registry(remove),
            }),
            Err(why) => b.finding(
                &format!("registry.{name}"),
                FindingKind::RegistryEntryKept,
                format!("the registry entry for `{name}` is kept: {why}"),
            ),
        }
    }

    // Live sandbox containers nobody declared or registered.
    for c in cx.containers.into_iter().flatten() {
        if cx.ix.declares(&c.sandbox)
            || registry.is_some_and(|r| r.sandboxes.contains_key(&c.sandbox))
        {
            continue;
        }
        if cx.desired.prune_sandboxes.contains(&c.sandbox) {
            let remove = cx.registry_target(&c.sandbox, None);
            prune(cx, b, &c.sandbox, remove);
        } else {
            b.finding(&format!("sandbox.{}", c.sandbox), FindingKind::UndeclaredSandbox, format!("sandbox container `{}` (sandbox `{}`) is neither declared nor registered; it is kept", c.name, c.sandbox));
        }
    }
}

fn prune(cx: &Context<'_>, b: &mut Builder, name: &str, remove: RegistryTarget) {
    let addr = format!("sandbox.{name}");
    b.step(Step {
        id: format!("delete:{addr}"),
        address: addr,
        action: Action::Delete,
        risk: Risk::Destroy,
        reason: format!("`prune.sandboxes` names `{name}`, which is not declared: delete it and its registry entry. Its workspace goes with it"),
        depends_on: cx.prerequisites.clone(),
        blocked: cx.cli.as_ref().err().cloned(),
        target: Target::Sandbox(SandboxTarget {
            name: name.to_owned(),
            port: 0,
            cli: cx.binary.clone(),
            gateway: cx.gateway.clone(),
            argv: vec!["sandbox".to_owned(), "delete".to_owned(), name.to_owned()],
            ready_timeout: Millis(0),
            list_json: false,
            policy: None,
            registry: remove,
        }),
    });
}

/// `Ok(why)` only for NotFound from the file's gateway while it is connected and selected.
fn gone(cli: Option<&CliFacts>, name: &str, gateway: Option<&str>) -> Result<String, String> {
    let Some(cli) = cli else {
        return Err(
            "the `openshell` CLI is not usable here, so whether the sandbox exists cannot be asked"
                .to_owned(),
        );
    };
    let Some(gateway) = gateway else {
        return Err(
            "the file declares no gateway, so a NotFound cannot be attributed to the right one"
                .to_owned(),
        );
    };
    let lookup = cli.lookups.get(name);
    let status = cli.status.known();
    match (lookup, status) {
        (Some(Lookup::NotFound), Some(s))
            if s.connected && s.gateway.as_deref() == Some(gateway) =>
        {
            Ok(format!(
                "`openshell sandbox get {name}` says NotFound from the connected, selected gateway `{gateway}`"
            ))
        }
        (Some(Lookup::NotFound), Some(s)) if !s.connected => Err(
            "NotFound, but the gateway is not connected: the answer cannot be trusted".to_owned(),
        ),
        (Some(Lookup::NotFound), Some(s)) => Err(format!(
            "NotFound, but the selected gateway is `{}`, not the file's `{}` (#2276: select the right gateway first)",
            s.gateway.as_deref().unwrap_or("none"),
            gateway
        )),
        (Some(Lookup::NotFound), None) => {
            Err("NotFound, but `openshell status` could not be read".to_owned())
        }
        (Some(Lookup::Present { phase }), _) => Err(format!("it exists (phase `{phase}`)")),
        (Some(Lookup::Error { reason }), _) => {
            Err(format!("`openshell sandbox get` failed ({reason})"))
        }
        (None, _) => Err("it was not looked up (`openshell sandbox list` failed)".to_owned()),
    }
}
