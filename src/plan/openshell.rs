//! What the installed `openshell` CLI can be asked to do: its version against the supported
//! range, and the `sandbox create` command line built from the flags its own `--help` lists.

use super::step::Blocked;
use crate::model::{CliFacts, Observation, Observed, SandboxDesired};
use crate::observe::openshell::parse::parse_version;

/// The oldest supported CLI: the version NemoClaw pinned in May 2026
/// (`nemoclaw-blueprint/blueprint.yaml`, `min_openshell_version`).
pub const SUPPORTED_MIN: (u64, u64, u64) = (0, 0, 44);
/// The newest supported CLI: the version NemoClaw pinned in July 2026.
pub const SUPPORTED_MAX: (u64, u64, u64) = (0, 0, 72);
/// The range, as shown to people.
pub const SUPPORTED_TEXT: &str = "0.0.44 through 0.0.72";

fn blocked(reason: String) -> Blocked {
    Blocked {
        reason,
        allow: None,
    }
}

/// The CLI's facts when it is installed and its version is supported; otherwise why every step
/// that runs it is blocked.
pub(super) fn usable(observed: &Observed) -> Result<&CliFacts, Blocked> {
    let Some(cli) = observed.openshell.as_ref().filter(|c| c.installed) else {
        return Err(blocked(
            "the `openshell` CLI is not installed (it was not found on PATH or at NEMOCLAW_OPENSHELL_BIN); install OpenShell and plan again".to_owned(),
        ));
    };
    match &cli.version {
        Observation::Unknown { reason } => Err(blocked(format!(
            "the `openshell` CLI's version could not be read ({reason}); only {SUPPORTED_TEXT} are supported"
        ))),
        Observation::Known { value } => match parse_version(value) {
            Some(v) if (SUPPORTED_MIN..=SUPPORTED_MAX).contains(&v) => Ok(cli),
            _ => Err(blocked(format!(
                "the installed `openshell` is {value}, outside the supported range {SUPPORTED_TEXT} (the versions NemoClaw pins); install one of those and plan again"
            ))),
        },
    }
}

/// Whether the CLI's `sandbox create --help` lists `--<flag>`.
fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

/// Whether a GPU is asked for: `on` always, `off` never, `auto` when an NVIDIA device was
/// observed. `Err` when `auto` cannot be decided.
pub(super) fn wants_gpu(sb: &SandboxDesired, observed: &Observed) -> Result<bool, String> {
    match sb.create.gpu.as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => match &observed.host.nvidia_gpus {
            Observation::Known { value } => Ok(!value.is_empty()),
            Observation::Unknown { reason } => Err(format!(
                "`gpu: auto` needs to know whether the host has an NVIDIA GPU, which could not be observed ({reason}); set `gpu: on` or `gpu: off`"
            )),
        },
    }
}

/// `openshell sandbox create` as NemoClaw runs it: the image source, one policy file, a GPU only
/// when wanted, resource limits only where this CLI has the flags, then the dashboard port baked
/// into the sandbox's start command. `Err` says why this CLI cannot create it as declared.
pub(super) fn create_argv(
    sb: &SandboxDesired,
    port: u16,
    cli: &CliFacts,
    observed: &Observed,
) -> Result<Vec<String>, String> {
    let version = cli.version.known().map_or("?", String::as_str);
    let flags = match &cli.create_flags {
        Observation::Known { value } => value,
        Observation::Unknown { reason } => {
            return Err(format!(
                "which flags `openshell sandbox create` accepts could not be read ({reason})"
            ));
        }
    };
    let missing = |flag: &str, field: &str| {
        format!(
            "the installed `openshell` {version} has no `sandbox create --{flag}` (its `--help` does not list it), which `{field}` needs; remove `{field}` or install a CLI that has it"
        )
    };
    let c = &sb.create;
    let mut a: Vec<String> = ["sandbox", "create", "--name", &sb.name]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let Some(from) = &c.from else {
        return Err(format!(
            "sandbox `{}` declares no `from`, so the engine does not know its image (OpenShell's default image has no `nemoclaw-start`); add `from:` with NemoClaw's Dockerfile or an image",
            sb.name
        ));
    };
    if !has_flag(flags, "from") {
        return Err(missing("from", "from"));
    }
    a.extend(["--from".to_owned(), from.clone()]);
    if let Some(p) = &c.policy {
        if !has_flag(flags, "policy") {
            return Err(missing("policy", "policy"));
        }
        a.extend(["--policy".to_owned(), p.path.clone()]);
    }
    if wants_gpu(sb, observed)? {
        if !has_flag(flags, "gpu") {
            return Err(missing("gpu", "gpu"));
        }
        a.push("--gpu".to_owned());
    }
    if let Some(cpu) = &c.cpu {
        if !has_flag(flags, "cpu") {
            return Err(missing("cpu", "resources.cpu"));
        }
        a.extend(["--cpu".to_owned(), cpu.clone()]);
    }
    if let Some(m) = &c.memory {
        if !has_flag(flags, "memory") {
            return Err(missing("memory", "resources.memory"));
        }
        a.extend(["--memory".to_owned(), m.clone()]);
    }
    a.extend([
        "--".to_owned(),
        "env".to_owned(),
        format!("CHAT_UI_URL=http://127.0.0.1:{port}"),
        format!("NEMOCLAW_DASHBOARD_PORT={port}"),
    ]);
    if c.agent == "openclaw" {
        // Where OpenClaw keeps its state inside the sandbox, as NemoClaw sets it for OpenClaw
        // agents (9708c264 `src/lib/onboard/openclaw-runtime-env.ts:18-25`).
        a.extend(
            [
                "OPENCLAW_HOME=/sandbox",
                "OPENCLAW_STATE_DIR=/sandbox/.openclaw",
                "OPENCLAW_WORKSPACE_DIR=/sandbox/.openclaw/workspace",
            ]
            .map(str::to_owned),
        );
    }
    a.push("nemoclaw-start".to_owned());
    Ok(a)
}
