//! Writing `~/.nemoclaw/sandboxes.json` with NemoClaw's own lock protocol, so the engine and the
//! NemoClaw CLI can run side by side without losing an entry.
//!
//! Lock: `mkdir sandboxes.json.lock` (atomic) and an `owner` file holding the pid (written through
//! a temp file and a rename). When the lock exists: if its owner pid is dead and the owner file
//! unchanged on a second read, break it; if the owner cannot be read, break it once the lock
//! directory is older than 10 s; otherwise retry every 100 ms, at most 120 times. Writes: read the
//! whole file, change only the named entry, write `sandboxes.json.tmp.<pid>` (0600) and rename.
//! The directory is created 0700 (tightened if looser); a symlink anywhere between `$HOME` and the
//! file is refused; a file that does not parse is never overwritten.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::plan::RegistryFields;

const RETRY: Duration = Duration::from_millis(100);
const TRIES: u32 = 120;
const STALE_AFTER: Duration = Duration::from_secs(10);

/// Why a registry write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A symlink on the way.
    #[error("refusing to write through the symlink `{0}`")]
    Symlink(PathBuf),
    /// The lock stayed held.
    #[error("the registry lock `{0}` stayed held for 12 s")]
    Locked(PathBuf),
    /// The file does not parse.
    #[error("`{path}` does not parse ({why}); it is left untouched")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        why: String,
    },
    /// An I/O error.
    #[error("{what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_owned();
    move |source| RegistryError::Io { what, path, source }
}

/// Holds the registry lock; released (the directory removed) on drop.
struct Lock {
    dir: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

fn owner_pid(owner: &Path) -> Option<String> {
    crate::observe::files::read_regular(owner, 64)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn acquire(file: &Path) -> Result<Lock, RegistryError> {
    let dir = PathBuf::from(format!("{}.lock", file.display()));
    let owner = dir.join("owner");
    for _ in 0..TRIES {
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                super::files::write_private(&owner, format!("{}\n", std::process::id()).as_bytes())
                    .map_err(io("writing the lock owner", &owner))?;
                return Ok(Lock { dir });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let first = owner_pid(&owner);
                match first
                    .as_deref()
                    .map(str::trim)
                    .and_then(|p| p.parse::<i32>().ok())
                {
                    Some(pid) if !pid_alive(pid) => {
                        // Dead owner; break the lock only if nobody took it over meanwhile.
                        if owner_pid(&owner) == first {
                            let _ = fs::remove_dir_all(&dir);
                            continue;
                        }
                    }
                    Some(_) => {}
                    None => {
                        let old = fs::metadata(&dir)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| SystemTime::now().duration_since(t).ok())
                            .is_some_and(|age| age > STALE_AFTER);
                        if old {
                            let _ = fs::remove_dir_all(&dir);
                            continue;
                        }
                    }
                }
                std::thread::sleep(RETRY);
            }
            Err(e) => return Err(io("taking the registry lock", &dir)(e)),
        }
    }
    Err(RegistryError::Locked(dir))
}

/// Refuses any symlink between `home` and `file`, and creates the directory 0700.
fn prepare(home: &Path, file: &Path) -> Result<(), RegistryError> {
    let dir = file.parent().unwrap_or(home);
    let mut p = dir.to_path_buf();
    loop {
        if let Ok(m) = fs::symlink_metadata(&p)
            && m.file_type().is_symlink()
        {
            return Err(RegistryError::Symlink(p));
        }
        if p == home || !p.pop() || !p.starts_with(home) {
            break;
        }
    }
    // A directory others can write is refused with the fix, never silently tightened: whatever
    // they planted there is already in it.
    super::files::private_dir(dir).map_err(io("checking", dir))?;
    if let Ok(m) = fs::symlink_metadata(file)
        && m.file_type().is_symlink()
    {
        return Err(RegistryError::Symlink(file.to_owned()));
    }
    Ok(())
}

/// Writes (`Some`) or removes (`None`) the entry `name`, under the lock. Returns a description.
pub fn update(
    home: &Path,
    file: &Path,
    name: &str,
    fields: Option<&RegistryFields>,
    now_iso: &str,
) -> Result<String, RegistryError> {
    prepare(home, file)?;
    let _lock = acquire(file)?;
    let mut doc: Value =
        match crate::observe::files::read_regular(file, crate::observe::registry::CAP)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        {
            Ok(text) => serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt {
                path: file.to_owned(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                serde_json::json!({ "sandboxes": {}, "defaultSandbox": null })
            }
            Err(e) => return Err(io("reading", file)(e)),
        };
    let Some(top) = doc.as_object_mut() else {
        return Err(RegistryError::Corrupt {
            path: file.to_owned(),
            why: "not a JSON object".to_owned(),
        });
    };
    let sandboxes = top
        .entry("sandboxes")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(sandboxes) = sandboxes.as_object_mut() else {
        return Err(RegistryError::Corrupt {
            path: file.to_owned(),
            why: "`sandboxes` is not an object".to_owned(),
        });
    };
    let what = match fields {
        Some(f) => {
            let entry = sandboxes
                .entry(name.to_owned())
                .or_insert_with(|| serde_json::json!({ "name": name, "createdAt": now_iso }));
            if let Some(e) = entry.as_object_mut() {
                e.insert("name".into(), Value::from(name));
                e.insert("dashboardPort".into(), Value::from(f.dashboard_port));
                e.insert("agent".into(), Value::from(f.agent.clone()));
                // NemoClaw records the presets it merged; the engine has none of its own, so an
                // existing list is kept and a new entry gets an empty one.
                e.entry("policies")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(v) = &f.gateway_name {
                    e.insert("gatewayName".into(), Value::from(v.clone()));
                }
                if let Some(p) = f.gateway_port {
                    e.insert("gatewayPort".into(), Value::from(p));
                }
            }
            let sandboxes_empty_default = top.get("defaultSandbox").is_none_or(Value::is_null);
            if sandboxes_empty_default {
                top.insert("defaultSandbox".into(), Value::from(name));
            }
            format!("registered `{name}` (dashboardPort {})", f.dashboard_port)
        }
        None => {
            sandboxes.remove(name);
            let next = sandboxes.keys().next().cloned();
            if top.get("defaultSandbox").and_then(Value::as_str) == Some(name) {
                top.insert(
                    "defaultSandbox".into(),
                    next.map_or(Value::Null, Value::from),
                );
            }
            format!("removed `{name}` from the registry")
        }
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    super::files::write_private(file, text.as_bytes()).map_err(io("writing", file))?;
    Ok(what)
}
