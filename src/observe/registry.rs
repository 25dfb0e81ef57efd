//! The NemoClaw sandbox registry, `$HOME/.nemoclaw/sandboxes.json`. Read only.
//!
//! A missing file means no sandboxes. A file that cannot be read or parsed is **unknown**, never
//! "empty": NemoClaw itself reads a corrupt registry as empty, and the next write then wipes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::model::{Observation, Registry, RegistryEntry};

/// The largest registry read (16 MiB: some 50,000 entries).
pub const CAP: u64 = 16 << 20;

/// The registry's text, if only trusted users could have written it: a regular file (no symlink,
/// FIFO or device) of at most [`CAP`] bytes, owned by a trusted user, writable by nobody else, in
/// a directory that passes [`super::files::check_dir`]. Anything else is an error that names the
/// fix: a registry another user could plant would steer what the engine deletes.
fn read_trusted(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let bytes = super::files::read_regular(path, CAP)?;
    let m = std::fs::symlink_metadata(path)?;
    if !super::files::trusted_uids().contains(&m.uid()) || m.mode() & 0o022 != 0 {
        return Err(super::files::unsafe_path(
            path,
            &format!(
                "is owned by uid {} with mode {:o}",
                m.uid(),
                m.mode() & 0o7777
            ),
            &format!(
                "`chmod go-w {}` (and `chown` it to its user)",
                path.display()
            ),
        ));
    }
    if let Some(dir) = path.parent() {
        super::files::check_dir(dir)?;
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// Reads the registry at `path`.
#[must_use]
pub fn read(path: &Path) -> Observation<Registry> {
    let shown = path.display().to_string();
    match read_trusted(path) {
        Ok(text) => match parse(&shown, &text) {
            Ok(value) => Observation::Known { value },
            Err(reason) => Observation::Unknown { reason },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::Known {
            value: Registry {
                path: shown,
                present: false,
                sandboxes: BTreeMap::new(),
                default_sandbox: None,
            },
        },
        Err(e) => Observation::Unknown {
            reason: format!("{shown}: {e}"),
        },
    }
}

/// Parses the registry's text. Unknown keys are ignored; a wrong shape is an error.
pub fn parse(path: &str, text: &str) -> Result<Registry, String> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| format!("{path}:{}:{}: not valid JSON: {e}", e.line(), e.column()))?;
    let Some(top) = doc.as_object() else {
        return Err(format!("{path}: expected a JSON object at the top level"));
    };
    let mut sandboxes = BTreeMap::new();
    match top.get("sandboxes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, entry) in map {
                let Some(e) = entry.as_object() else {
                    return Err(format!("{path}: entry `sandboxes.{name}` is not an object"));
                };
                let port = |key: &str| -> Result<Option<u16>, String> {
                    match e.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v
                            .as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .map(Some)
                            .ok_or_else(|| {
                                format!("{path}: `sandboxes.{name}.{key}` is not a port number")
                            }),
                    }
                };
                sandboxes.insert(
                    name.clone(),
                    RegistryEntry {
                        name: name.clone(),
                        dashboard_port: port("dashboardPort")?,
                        gateway_name: e
                            .get("gatewayName")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        gateway_port: port("gatewayPort")?,
                    },
                );
            }
        }
        Some(_) => return Err(format!("{path}: `sandboxes` is not an object")),
    }
    let default_sandbox = top
        .get("defaultSandbox")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Registry {
        path: path.to_owned(),
        present: true,
        sandboxes,
        default_sandbox,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_default_are_read() {
        let r = parse("r.json", r#"{"sandboxes":{"alice":{"name":"alice","dashboardPort":18790,"model":"x"}},"defaultSandbox":"alice"}"#).unwrap();
        assert_eq!(r.sandboxes["alice"].dashboard_port, Some(18790));
        assert_eq!(r.default_sandbox.as_deref(), Some("alice"));
    }

    #[test]
    fn corrupt_registry_is_unknown_with_position() {
        let err = parse("r.json", "{\"sandboxes\": {\n  \"a\": }").unwrap_err();
        assert!(err.starts_with("r.json:2:"), "{err}");
        assert!(parse("r.json", "[]").is_err());
        assert!(parse("r.json", r#"{"sandboxes":{"a":{"dashboardPort":"x"}}}"#).is_err());
    }

    #[test]
    fn missing_file_means_no_sandboxes() {
        let Observation::Known { value } = read(Path::new("/nonexistent/sandboxes.json")) else {
            panic!()
        };
        assert!(!value.present);
        assert!(value.sandboxes.is_empty());
    }
}
