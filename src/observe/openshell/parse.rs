//! Parsers for what the real `openshell` CLI prints.
//!
//! The CLI styles labels and values with owo-colors unconditionally — piped or not, with or
//! without `NO_COLOR` or `TERM=dumb` (recorded runs of 0.0.72: `07-status`, `07b`–`07d`) — and
//! renders errors with miette (a `×` gutter, wrapped lines continued with `│`). Every parser here
//! first strips escape sequences ([`strip_ansi`]), as NemoClaw does before it parses
//! (`src/lib/state/gateway.ts`), and matches whole labelled lines, never substrings of free text.

use crate::model::{CliStatus, ForwardRow, GatewayRegistration, Lookup, SandboxRow};

use super::Run;

/// Removes ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ESC \`, and two-byte
/// `ESC x`) and carriage returns.
#[must_use]
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates (0x20–0x3F), then one final byte (0x40–0x7E).
                    for n in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            // The 8-bit CSI introducer.
            '\u{9b}' => {
                for n in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&n) {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A miette error as one line: escapes stripped, gutters (`×`, `│`, `├─▶`, `╰─▶`) removed,
/// wrapped lines joined, whitespace collapsed.
#[must_use]
pub fn error_text(text: &str) -> String {
    let plain = strip_ansi(text);
    let joined: Vec<&str> = plain
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("Error:")
                .trim_start()
                .trim_start_matches(['×', '│', '├', '╰', '─', '▶'])
                .trim_start_matches(['─', '▶'])
                .trim()
        })
        .filter(|l| !l.is_empty())
        .collect();
    joined
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of a `Label:` line (after stripping), trimmed; `None` when there is no such line.
fn labelled<'a>(plain: &'a str, label: &str) -> Option<&'a str> {
    plain
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
}

/// `openshell status`. Connected only when it exited 0 and printed the line `Status: Connected`
/// (`07-status`); unregistered prints `Status: No gateway configured.` (`01`); a stopped gateway
/// exits 1 with no `Status:` line and a miette error (`12`).
#[must_use]
pub fn status(r: &Run) -> CliStatus {
    let plain = strip_ansi(&r.stdout);
    let value = |label| labelled(&plain, label).filter(|v| !v.is_empty());
    let status_line = value("Status:");
    CliStatus {
        gateway: value("Gateway:").map(str::to_owned),
        server: value("Server:").map(str::to_owned),
        connected: r.code == Some(0) && status_line == Some("Connected"),
        configured: status_line != Some("No gateway configured.")
            && !error_text(&r.stderr).starts_with("No active gateway"),
        detail: (r.code != Some(0) || status_line != Some("Connected")).then(|| {
            let e = error_text(&r.stderr);
            if e.is_empty() {
                status_line.unwrap_or("no `Status:` line").to_owned()
            } else {
                e
            }
        }),
    }
}

/// `openshell sandbox list -o json`: an array of sandboxes; `[]` when none (`11`).
#[must_use]
pub fn list_json(text: &str) -> Option<Vec<SandboxRow>> {
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let mut rows = Vec::new();
    for item in value.as_array()? {
        let name = item
            .get("name")
            .or_else(|| item.pointer("/metadata/name"))?
            .as_str()?;
        let phase = match item.get("phase").or_else(|| item.pointer("/status/phase")) {
            Some(serde_json::Value::String(s)) => phase_name(s),
            _ => "Unknown".to_owned(),
        };
        let id = item
            .get("id")
            .or_else(|| item.pointer("/metadata/id"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        rows.push(SandboxRow {
            name: name.to_owned(),
            phase,
            id,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Some(rows)
}

/// `Ready`, `Provisioning`, … whether printed as the proto enum (`SANDBOX_PHASE_READY`) or the
/// CLI's display name.
fn phase_name(s: &str) -> String {
    let bare = s.strip_prefix("SANDBOX_PHASE_").unwrap_or(s);
    if bare.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !bare.is_empty() {
        bare.split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map_or(String::new(), |f| {
                    f.to_string() + &c.as_str().to_ascii_lowercase()
                })
            })
            .collect()
    } else {
        bare.to_owned()
    }
}

/// `openshell sandbox list` as a table: a bold `NAME  CREATED  PHASE` header then rows whose
/// phase is coloured (`47`, `49`), or `No sandboxes found.` (`08`). `None` when neither shape is
/// there: empty output is not an empty list.
#[must_use]
pub fn list_table(text: &str) -> Option<Vec<SandboxRow>> {
    let plain = strip_ansi(text);
    if plain.trim() == "No sandboxes found." {
        return Some(Vec::new());
    }
    let mut lines = plain.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    if header.first() != Some(&"NAME") || header.last() != Some(&"PHASE") {
        return None;
    }
    let mut rows = Vec::new();
    for l in lines {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let (Some(name), Some(phase)) = (cols.first(), cols.last()) else {
            continue;
        };
        if cols.len() < 2 {
            return None;
        }
        rows.push(SandboxRow {
            name: (*name).to_owned(),
            phase: (*phase).to_owned(),
            id: None,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Some(rows)
}

/// The gRPC NotFound the CLI prints for a missing sandbox (`09-sandbox-get-nosuch`):
/// `Error:   × code: 'Some requested entity was not found', message: "sandbox not found"`.
const NOT_FOUND_CODE: &str = "code: 'Some requested entity was not found'";
const NOT_FOUND_MESSAGE: &str = "message: \"sandbox not found\"";

/// `openshell sandbox get NAME`: present (exit 0 and a `Phase:` line, `50`), NotFound (exit 1 and
/// exactly the gRPC NotFound for a sandbox, `09`), or an error — a transport error (`14`), a TLS
/// error, an unknown gateway, or anything else — which says nothing about the sandbox.
#[must_use]
pub fn get(r: &Run) -> Lookup {
    if r.code == Some(0) {
        let plain = strip_ansi(&r.stdout);
        return match labelled(&plain, "Phase:") {
            Some(phase) if !phase.is_empty() => Lookup::Present {
                phase: phase.to_owned(),
            },
            _ => Lookup::Error {
                reason: "exit 0 but no `Phase:` line".to_owned(),
            },
        };
    }
    let err = error_text(&r.stderr);
    if r.code == Some(1) && err.contains(NOT_FOUND_CODE) && err.contains(NOT_FOUND_MESSAGE) {
        return Lookup::NotFound;
    }
    Lookup::Error {
        reason: format!("exit {}: {}", code_text(r.code), first_chars(&err, 300)),
    }
}

/// `openshell forward list`: a `SANDBOX BIND PORT PID STATUS` table whose status is coloured
/// (`52`), or `No active forwards.` on stderr, exit 0 (`10`). `None` when neither.
#[must_use]
pub fn forwards(r: &Run) -> Option<Vec<ForwardRow>> {
    let plain = strip_ansi(&r.stdout);
    if plain.trim().is_empty() && strip_ansi(&r.stderr).trim() == "No active forwards." {
        return Some(Vec::new());
    }
    let mut lines = plain.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    if header != ["SANDBOX", "BIND", "PORT", "PID", "STATUS"] {
        return None;
    }
    let mut rows = Vec::new();
    for l in lines {
        let c: Vec<&str> = l.split_whitespace().collect();
        if c.len() < 5 {
            return None;
        }
        rows.push(ForwardRow {
            sandbox: c[0].to_owned(),
            bind: c[1].to_owned(),
            port: c[2].parse().ok()?,
            pid: c[3].parse().ok(),
            status: c[4..].join(" "),
        });
    }
    Some(rows)
}

/// `openshell gateway list`: a bold header `NAME ENDPOINT TYPE SOURCE AUTH`, the active row
/// marked `* ` and coloured (`04-gateway-list`). `None` when the shape is not there.
#[must_use]
pub fn gateways(r: &Run) -> Option<Vec<GatewayRegistration>> {
    let plain = strip_ansi(&r.stdout);
    let mut lines = plain.lines().filter(|l| !l.trim().is_empty());
    let Some(first) = lines.next() else {
        // No gateways at all: the CLI prints its hint on stderr.
        return (r.code == Some(0)).then(Vec::new);
    };
    let header: Vec<&str> = first.split_whitespace().collect();
    if header.first() != Some(&"NAME") || !header.contains(&"ENDPOINT") {
        return (r.code == Some(0) && !first.contains("NAME")).then(Vec::new);
    }
    let mut out = Vec::new();
    for l in lines {
        let t = l.trim_start();
        let (active, rest) = match t.strip_prefix("* ") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let c: Vec<&str> = rest.split_whitespace().collect();
        if c.len() < 2 {
            return None;
        }
        out.push(GatewayRegistration {
            name: c[0].to_owned(),
            endpoint: c[1].to_owned(),
            active,
        });
    }
    Some(out)
}

/// `openshell --version`: `openshell 0.0.72` (`help/version.piped.stdout`).
#[must_use]
pub fn version(r: &Run) -> Option<String> {
    let plain = strip_ansi(&r.stdout);
    let v = plain.trim().strip_prefix("openshell ")?.trim();
    parse_version(v).map(|_| v.to_owned())
}

/// `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored).
#[must_use]
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let out = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(out)
}

/// The long flags a `--help` text lists (`--cpu <CPU>` → `cpu`), in order.
#[must_use]
pub fn help_flags(text: &str) -> Vec<String> {
    let plain = strip_ansi(text);
    let mut out: Vec<String> = Vec::new();
    for l in plain.lines() {
        let t = l.trim_start();
        let t = match t.strip_prefix('-') {
            Some(rest) if !rest.starts_with('-') => {
                // `-o, --output <OUTPUT>`: skip the short form.
                rest.split_once(", ").map_or("", |(_, long)| long)
            }
            _ => t,
        };
        if let Some(flag) = t.strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

fn code_text(code: Option<i32>) -> String {
    code.map_or("by signal".to_owned(), |c| c.to_string())
}

fn first_chars(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: i32, stdout: &str, stderr: &str) -> Run {
        Run {
            code: Some(code),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2mStatus:\u{1b}[0m \u{1b}[32mConnected\u{1b}[39m\r"),
            "Status: Connected"
        );
        assert_eq!(
            strip_ansi("a\u{1b}]0;title\u{7}b\u{1b}]8;;x\u{1b}\\c"),
            "abc"
        );
    }

    #[test]
    fn miette_errors_read_as_one_line() {
        let e = "Error:   \u{d7} code: 'The system is not in a state required for the operation's\n  \u{2502} execution', message: \"docker\"\n";
        assert_eq!(
            error_text(e),
            "code: 'The system is not in a state required for the operation's execution', message: \"docker\""
        );
        let chain = "Error:   \u{d7} client error (Connect)\n  \u{251c}\u{2500}\u{25b6} tcp connect error\n  \u{2570}\u{2500}\u{25b6} Connection refused (os error 111)\n";
        assert_eq!(
            error_text(chain),
            "client error (Connect) tcp connect error Connection refused (os error 111)"
        );
    }

    #[test]
    fn not_found_needs_the_grpc_code_and_the_sandbox_message() {
        let nf = run(
            1,
            "",
            "Error:   \u{d7} code: 'Some requested entity was not found', message: \"sandbox not found\"\n\n",
        );
        assert_eq!(get(&nf), Lookup::NotFound);
        let mtls = run(
            1,
            "",
            "Error:   \u{d7} mTLS certificates for gateway 'x' were not found\n",
        );
        assert!(matches!(get(&mtls), Lookup::Error { .. }));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("0.0.72"), Some((0, 0, 72)));
        assert_eq!(parse_version("0.0.44-dev.3"), Some((0, 0, 44)));
        assert_eq!(parse_version("0.0"), None);
        assert_eq!(
            version(&run(0, "openshell 0.0.72\n", "")).as_deref(),
            Some("0.0.72")
        );
    }

    #[test]
    fn help_lists_long_flags() {
        let h = "FLAGS:\n      --name <NAME>\n      --gpu [<COUNT>]\n  -o, --output <OUTPUT>  x\n  -g, --gateway <GATEWAY>\n";
        assert_eq!(help_flags(h), vec!["name", "gpu", "output", "gateway"]);
    }

    #[test]
    fn json_phases_are_display_names() {
        let rows = list_json(
            r#"[{"name":"b","phase":"SANDBOX_PHASE_READY"},{"name":"a","phase":"Provisioning"}]"#,
        )
        .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.name.as_str(), r.phase.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "Provisioning"), ("b", "Ready")]
        );
        assert_eq!(list_json("[]"), Some(vec![]));
        assert_eq!(list_json(""), None);
    }
}
