//! The `openshell` CLI, asked read-only: `--version`, the `--help` of `sandbox create` and
//! `sandbox list` (which flags this CLI has), `status`, `gateway list`, `forward list`,
//! `sandbox list` (`-o json` where it exists) and `sandbox get <name>` for registered sandboxes
//! missing from the list.
//!
//! Questions that do not depend on each other are asked at once; lookups run concurrently with a
//! bound. An empty output or a failed command is never "none": it is unknown (NemoClaw's
//! `sandbox get` treated empty stdout as "gone", which also meant "command failed"). A missing
//! binary is a known absence.

pub mod parse;
pub mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use run::{CliEnv, Run, Running, run, spawn};

use crate::model::{CliFacts, Lookup, Observation};

/// What to ask.
#[derive(Clone, Debug)]
pub struct CliQuery {
    /// Where to look for the binary, in order.
    pub candidates: Vec<PathBuf>,
    /// Registered sandbox names, looked up one by one when missing from the list.
    pub registered: Vec<String>,
    /// `OPENSHELL_GATEWAY` for the child (the gateway the file manages).
    pub gateway: Option<String>,
    /// Time limit per command.
    pub timeout: Duration,
}

/// How many `sandbox get` lookups run at once.
const LOOKUP_PARALLELISM: usize = 8;

fn not_installed<T>() -> Observation<T> {
    Observation::Unknown {
        reason: "the `openshell` CLI is not installed".to_owned(),
    }
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// One command's parsed answer, or why there is none.
fn answer<T>(
    what: &str,
    r: Result<Run, String>,
    parse: impl FnOnce(&Run) -> Option<T>,
) -> Observation<T> {
    match r {
        Ok(r) if r.code == Some(0) => match parse(&r) {
            Some(value) => Observation::Known { value },
            None => Observation::Unknown {
                reason: format!("`openshell {what}` printed nothing this engine can parse"),
            },
        },
        Ok(r) => Observation::Unknown {
            reason: format!(
                "`openshell {what}` exited {}: {}",
                r.code.map_or("by signal".to_owned(), |c| c.to_string()),
                parse::error_text(&r.stderr)
            ),
        },
        Err(e) => Observation::Unknown { reason: e },
    }
}

/// Asks the CLI. Blocking.
#[must_use]
pub fn observe(q: &CliQuery) -> CliFacts {
    let Some(binary) = q
        .candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
    else {
        return CliFacts {
            installed: false,
            binary: None,
            version: not_installed(),
            create_flags: not_installed(),
            list_json: false,
            status: not_installed(),
            sandboxes: not_installed(),
            lookups: BTreeMap::new(),
            forwards: not_installed(),
            gateways: not_installed(),
        };
    };
    let env = CliEnv {
        gateway: q.gateway.clone(),
    };
    let ask = |args: &[&str]| run(&binary, &words(args), &env, q.timeout);
    let (version, create_help, list_help, status, gateways, forwards) = std::thread::scope(|s| {
        let version = s.spawn(|| ask(&["--version"]));
        let create_help = s.spawn(|| ask(&["sandbox", "create", "--help"]));
        let list_help = s.spawn(|| ask(&["sandbox", "list", "--help"]));
        let status = s.spawn(|| ask(&["status"]));
        let gateways = s.spawn(|| ask(&["gateway", "list"]));
        let forwards = s.spawn(|| ask(&["forward", "list"]));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Run, String>>| {
            h.join()
                .unwrap_or_else(|_| Err("the CLI observer panicked".to_owned()))
        };
        (
            join(version),
            join(create_help),
            join(list_help),
            join(status),
            join(gateways),
            join(forwards),
        )
    });
    let version = answer("--version", version, parse::version);
    let create_flags = answer("sandbox create --help", create_help, |r| {
        Some(parse::help_flags(&r.stdout)).filter(|f| !f.is_empty())
    });
    let list_json = list_help.is_ok_and(|r| {
        r.code == Some(0) && parse::help_flags(&r.stdout).iter().any(|f| f == "output")
    });
    // `status` exits 1 when the gateway is down (`12`): still an answer, "not connected".
    let status = match status {
        Ok(r) => Observation::Known {
            value: parse::status(&r),
        },
        Err(e) => Observation::Unknown { reason: e },
    };
    let gateways = answer("gateway list", gateways, parse::gateways);
    let forwards = answer("forward list", forwards, parse::forwards);
    let sandboxes = if list_json {
        answer(
            "sandbox list -o json",
            ask(&["sandbox", "list", "-o", "json"]),
            |r| parse::list_json(&r.stdout),
        )
    } else {
        answer("sandbox list", ask(&["sandbox", "list"]), |r| {
            parse::list_table(&r.stdout)
        })
    };
    let mut lookups = BTreeMap::new();
    if let Observation::Known { value: rows } = &sandboxes {
        let missing: Vec<&String> = q
            .registered
            .iter()
            .filter(|n| !rows.iter().any(|r| &r.name == *n))
            .collect();
        for chunk in missing.chunks(LOOKUP_PARALLELISM) {
            let found: Vec<(String, Lookup)> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|name| {
                        let ask = &ask;
                        s.spawn(move || {
                            let lookup = match ask(&["sandbox", "get", name]) {
                                Ok(r) => parse::get(&r),
                                Err(e) => Lookup::Error { reason: e },
                            };
                            ((*name).clone(), lookup)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            lookups.extend(found);
        }
    }
    CliFacts {
        installed: true,
        binary: Some(binary),
        version,
        create_flags,
        list_json,
        status,
        sandboxes,
        lookups,
        forwards,
        gateways,
    }
}
