//! Dashboard forwards: which one is live, and the step that starts a missing one.
//!
//! One identity rule, in plan and in apply: a forward of sandbox S on port P is live when a
//! process holding a listener on P is named by S's pid file for P, or by `openshell forward list`
//! for (S, P), or is an OpenShell forward (`ssh … ssh-proxy … -L P:127.0.0.1:P`) whose
//! `--sandbox-id` is S's (from its pid file). A pid file whose pid holds no listener on P is dead,
//! whatever that pid is now.

use super::super::Builder;
use super::super::forward_process::forward_process;
use super::super::index::Index;
use super::super::step::{Action, Blocked, ForwardTarget, Risk, Step, Target};
use crate::model::{Holders, Observed, SandboxDesired};

/// The pids holding a listener on `port`.
fn holders(ix: &Index<'_>, port: u16) -> Vec<u32> {
    ix.listeners_on(port)
        .iter()
        .filter_map(|l| match &l.holders {
            Holders::Known { pids } => Some(pids.clone()),
            Holders::Unknown { .. } => None,
        })
        .flatten()
        .collect()
}

/// Why `sandbox`'s forward on `port` is live, or `None` when it is not.
#[must_use]
pub fn live_forward(
    observed: &Observed,
    ix: &Index<'_>,
    sandbox: &str,
    port: u16,
) -> Option<String> {
    let holders = holders(ix, port);
    if holders.is_empty() {
        return None;
    }
    let pid_files: Vec<_> = ix
        .forward_files
        .get(&(sandbox, port))
        .into_iter()
        .flatten()
        .filter_map(|f| f.content.known())
        .collect();
    if let Some(c) = pid_files.iter().find(|c| holders.contains(&c.pid)) {
        return Some(format!(
            "its pid file names pid {}, which listens on {port}",
            c.pid
        ));
    }
    let listed = ix
        .forward_rows
        .get(&(sandbox, port))
        .into_iter()
        .flatten()
        .find(|r| r.pid.is_some_and(|p| holders.contains(&p)));
    if let Some(r) = listed {
        return Some(format!(
            "`openshell forward list` names pid {}, which listens on {port}",
            r.pid.unwrap_or(0)
        ));
    }
    let ids: Vec<&str> = pid_files
        .iter()
        .map(|c| c.sandbox_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    holders.iter().find_map(|pid| {
        let info = observed.processes.get(pid)?;
        let f = forward_process(&info.cmdline)?;
        let id = f.sandbox_id.as_deref()?;
        (f.ports.contains(&port) && ids.contains(&id))
            .then(|| format!("pid {pid} is OpenShell's ssh forward of sandbox id {id} on {port}"))
    })
}

/// Plans the forward of a declared sandbox on `port`, unless one is live. It runs after the
/// sandbox exists (`after`) and after any stop that frees the port (`frees`).
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    observed: &Observed,
    ix: &Index<'_>,
    sb: &SandboxDesired,
    port: u16,
    binary: &str,
    gateway: Option<&String>,
    cli_blocked: Option<&Blocked>,
    after: &[String],
    b: &mut Builder,
) {
    if live_forward(observed, ix, &sb.name, port).is_some() {
        return;
    }
    if observed.forwards.known().is_none() {
        return; // The listener planner already reported the unreadable forward directory.
    }
    let dead = ix
        .forward_files
        .get(&(sb.name.as_str(), port))
        .and_then(|fs| fs.first())
        .map(|f| f.path.clone());
    let bind = if sb.dashboard_bind.is_unspecified() {
        format!("0.0.0.0:{port}")
    } else {
        port.to_string()
    };
    let addr = format!("forward.{}", sb.name);
    let cleanup = dead.as_ref().map_or(String::new(), |p| {
        format!(" after removing the dead pid file {p}")
    });
    b.step(Step {
        id: format!("forward:{addr}"),
        address: addr,
        action: Action::Forward,
        risk: Risk::Create,
        reason: format!(
            "sandbox `{}` has no live dashboard forward on port {port}; start one{cleanup}",
            sb.name
        ),
        depends_on: after.to_vec(),
        blocked: cli_blocked.cloned(),
        target: Target::Forward(ForwardTarget {
            sandbox: sb.name.clone(),
            port,
            cli: binary.to_owned(),
            gateway: gateway.cloned(),
            argv: vec![
                "forward".to_owned(),
                "start".to_owned(),
                "--background".to_owned(),
                bind,
                sb.name.clone(),
            ],
            dead_pid_file: dead,
        }),
    });
}
