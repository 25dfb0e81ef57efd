//! The `openshell` CLI, asked read-only: `status`, `sandbox list`, `sandbox get <name>` for
//! registered sandboxes missing from the list, and `forward list`.
//!
//! Output is parsed as NemoClaw parses it. An empty output or a failed command is never "none":
//! it is unknown (NemoClaw's `sandbox get` treated empty stdout as "gone", which also meant
//! "command failed"). A missing binary is a known absence.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::{CliFacts, CliStatus, ForwardRow, Lookup, Observation, SandboxRow};

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

/// Output of one command.
#[derive(Clone, Debug)]
pub struct Run {
    /// Exit code (`None`: killed or timed out).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `binary args…` with a time limit. Blocking.
pub fn run(
    binary: &str,
    args: &[String],
    gateway: Option<&str>,
    timeout: Duration,
) -> Result<Run, String> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(g) = gateway {
        cmd.env("OPENSHELL_GATEWAY", g);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{binary}`: {e}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let readers = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_string(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_string(&mut e);
        }
        (o, e)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = readers.join().unwrap_or_default();
    match status {
        Some(s) => Ok(Run {
            code: s.code(),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "`{binary} {}` timed out after {}s",
            args.join(" "),
            timeout.as_secs()
        )),
    }
}

fn not_installed<T>() -> Observation<T> {
    Observation::Unknown {
        reason: "the `openshell` CLI is not installed".to_owned(),
    }
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
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
            status: not_installed(),
            sandboxes: not_installed(),
            lookups: BTreeMap::new(),
            forwards: not_installed(),
        };
    };
    let ask = |args: &[&str]| run(&binary, &words(args), q.gateway.as_deref(), q.timeout);
    let status = match ask(&["status"]) {
        Ok(r) => Observation::Known {
            value: parse_status(&format!("{}\n{}", r.stdout, r.stderr)),
        },
        Err(e) => Observation::Unknown { reason: e },
    };
    let sandboxes = match ask(&["sandbox", "list"]) {
        Ok(r) if r.code == Some(0) => match parse_list(&r.stdout) {
            Some(rows) => Observation::Known { value: rows },
            None => Observation::Unknown {
                reason: "`openshell sandbox list` printed nothing parseable".to_owned(),
            },
        },
        Ok(r) => Observation::Unknown {
            reason: format!(
                "`openshell sandbox list` exited {:?}: {}",
                r.code,
                r.stderr.trim()
            ),
        },
        Err(e) => Observation::Unknown { reason: e },
    };
    let mut lookups = BTreeMap::new();
    if let Observation::Known { value: rows } = &sandboxes {
        for name in q
            .registered
            .iter()
            .filter(|n| !rows.iter().any(|r| &r.name == *n))
        {
            let lookup = match ask(&["sandbox", "get", name]) {
                Ok(r) => classify_get(&r),
                Err(e) => Lookup::Error { reason: e },
            };
            lookups.insert(name.clone(), lookup);
        }
    }
    let forwards = match ask(&["forward", "list"]) {
        Ok(r) if r.code == Some(0) => Observation::Known {
            value: parse_forwards(&r.stdout),
        },
        Ok(r) => Observation::Unknown {
            reason: format!("`openshell forward list` exited {:?}", r.code),
        },
        Err(e) => Observation::Unknown { reason: e },
    };
    CliFacts {
        installed: true,
        binary: Some(binary),
        status,
        sandboxes,
        lookups,
        forwards,
    }
}

/// `Gateway: <name>` and `Status: Connected`; error texts mean not connected.
#[must_use]
pub fn parse_status(text: &str) -> CliStatus {
    let gateway = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Gateway:"))
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty());
    let bad = [
        "Error",
        "transport error",
        "client error",
        "Connection refused",
        "Connection reset",
        "No active gateway",
        "Disconnected",
    ];
    let connected = text
        .lines()
        .any(|l| l.trim().starts_with("Status: Connected"))
        && !bad.iter().any(|b| text.contains(b));
    CliStatus { gateway, connected }
}

/// `NAME CREATED PHASE` rows, or `No sandboxes found.`; `None` when neither shape is there.
#[must_use]
pub fn parse_list(text: &str) -> Option<Vec<SandboxRow>> {
    if text.contains("No sandboxes found") {
        return Some(Vec::new());
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next()?;
    if !header.trim_start().starts_with("NAME") {
        return None;
    }
    Some(
        lines
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some(SandboxRow {
                    name: (*cols.first()?).to_owned(),
                    phase: (*cols.last()?).to_owned(),
                })
            })
            .collect(),
    )
}

/// Present (exit 0, `Phase: X`), NotFound (its text), or an error: never "gone" on a guess.
#[must_use]
pub fn classify_get(r: &Run) -> Lookup {
    let all = format!("{}\n{}", r.stdout, r.stderr);
    if r.code == Some(0) && !r.stdout.trim().is_empty() {
        let phase = all
            .lines()
            .find_map(|l| l.trim().strip_prefix("Phase:"))
            .map_or("Unknown", str::trim)
            .to_owned();
        return Lookup::Present { phase };
    }
    let lower = all.to_ascii_lowercase();
    if ["notfound", "not found", "sandbox not found"]
        .iter()
        .any(|m| lower.contains(m))
    {
        return Lookup::NotFound;
    }
    Lookup::Error {
        reason: format!("exit {:?}: {}", r.code, all.trim()),
    }
}

/// `SANDBOX BIND PORT PID STATUS` rows.
#[must_use]
pub fn parse_forwards(text: &str) -> Vec<ForwardRow> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("SANDBOX"))
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 5).then(|| ForwardRow {
                sandbox: c[0].to_owned(),
                bind: c[1].to_owned(),
                port: c[2].parse().unwrap_or(0),
                pid: c[3].parse().ok(),
                status: c[4].to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_as_nemoclaw_parses_them() {
        let s = parse_status(
            "Server Status\n  Gateway: nemoclaw\n  Server: http://127.0.0.1:8080\n  Status: Connected\n",
        );
        assert_eq!(
            (s.gateway.as_deref(), s.connected),
            (Some("nemoclaw"), true)
        );
        assert!(!parse_status("Gateway: nemoclaw\nStatus: Error: Connection refused").connected);
        let rows = parse_list(
            "NAME          CREATED              PHASE\nalice         2026-11-20 10:00     Ready\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![SandboxRow {
                name: "alice".into(),
                phase: "Ready".into()
            }]
        );
        assert_eq!(parse_list("No sandboxes found.\n"), Some(vec![]));
        assert_eq!(parse_list(""), None, "empty output is not an empty list");
        let gone = Run {
            code: Some(1),
            stdout: String::new(),
            stderr: "Error: sandbox not found".into(),
        };
        assert_eq!(classify_get(&gone), Lookup::NotFound);
        let broken = Run {
            code: Some(1),
            stdout: String::new(),
            stderr: "transport error".into(),
        };
        assert!(matches!(classify_get(&broken), Lookup::Error { .. }));
        let f = parse_forwards(
            "SANDBOX  BIND       PORT   PID   STATUS\nalice    127.0.0.1  18789  4242  running\n",
        );
        assert_eq!(
            (f[0].port, f[0].pid, f[0].status.as_str()),
            (18789, Some(4242), "running")
        );
    }
}
