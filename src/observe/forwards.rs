//! Dashboard forward pid files: `$HOME/.config/openshell/forwards/<sandbox>-<port>.pid`, each
//! holding `<pid>\t<sandbox_id>\t<bind>`.

use std::path::Path;

use crate::model::{ForwardContent, ForwardPidFile, Observation};

/// Reads every forward pid file in `dir`. A missing directory means no forwards.
#[must_use]
pub fn read(dir: &Path) -> Observation<Vec<ForwardPidFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Observation::Known { value: Vec::new() };
        }
        Err(e) => {
            return Observation::Unknown {
                reason: format!("{}: {e}", dir.display()),
            };
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some((sandbox, port)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_name)
        else {
            continue;
        };
        let content = match super::files::read_regular(&path, 4096)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
        {
            Ok(text) => parse_content(&text).map_or_else(
                || Observation::Unknown {
                    reason: format!(
                        "{}: expected `<pid>\\t<sandbox_id>\\t<bind>`",
                        path.display()
                    ),
                },
                |value| Observation::Known { value },
            ),
            Err(e) => Observation::Unknown {
                reason: format!("{}: {e}", path.display()),
            },
        };
        out.push(ForwardPidFile {
            path: path.display().to_string(),
            sandbox,
            port,
            content,
        });
    }
    out.sort_by(|a, b| (a.port, &a.sandbox).cmp(&(b.port, &b.sandbox)));
    Observation::Known { value: out }
}

/// Splits `<sandbox>-<port>.pid`; sandbox names contain hyphens, so the port is the last part.
#[must_use]
pub fn parse_name(name: &str) -> Option<(String, u16)> {
    let stem = name.strip_suffix(".pid")?;
    let (sandbox, port) = stem.rsplit_once('-')?;
    let port = port.parse().ok()?;
    (!sandbox.is_empty()).then(|| (sandbox.to_owned(), port))
}

/// Parses `<pid>\t<sandbox_id>\t<bind>`; the last two may be missing in old files.
#[must_use]
pub fn parse_content(text: &str) -> Option<ForwardContent> {
    let mut parts = text.trim().split('\t');
    let pid = parts.next()?.trim().parse().ok().filter(|p| *p > 0)?;
    let sandbox_id = parts.next().unwrap_or("").trim().to_owned();
    let bind = parts.next().unwrap_or("").trim().to_owned();
    Some(ForwardContent {
        pid,
        sandbox_id,
        bind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_last_hyphen() {
        assert_eq!(
            parse_name("my-assistant-18789.pid"),
            Some(("my-assistant".into(), 18789))
        );
        assert_eq!(parse_name("x.pid"), None);
        assert_eq!(parse_name("-18789.pid"), None);
    }

    #[test]
    fn content_parses() {
        let c = parse_content("4242\tsb-123\t127.0.0.1\n").unwrap();
        assert_eq!(
            (c.pid, c.sandbox_id.as_str(), c.bind.as_str()),
            (4242, "sb-123", "127.0.0.1")
        );
        assert!(parse_content("nope").is_none());
    }
}
