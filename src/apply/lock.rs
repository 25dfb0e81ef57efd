//! The host lock: one `apply` at a time. A second one fails at once and names the holder.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Held while an apply runs; released when dropped (or when the process dies: it is a `flock`).
#[derive(Debug)]
pub struct HostLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another apply holds it.
    #[error("another `nemoclaw apply` is running on this host ({holder}); lock file `{path}`")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it.
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock file `{path}`")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl HostLock {
    /// The lock file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock at `path` without waiting, recording this process as the holder.
///
/// The lock file is the engine's own: its directory is made 0700 and checked
/// ([`super::files::check_dir`]); it is opened without following a symlink, created 0600, and an
/// existing file that is not a regular file owned by the engine's user is refused, never changed.
pub fn acquire(path: &Path) -> Result<HostLock, LockError> {
    let open_err = |source| LockError::Open {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::files::private_dir(dir).map_err(open_err)?;
    }
    let flags =
        rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags.bits().cast_signed())
        .open(path)
        .map_err(open_err)?;
    super::files::owned_regular(&file, path).map_err(open_err)?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            return Err(LockError::Held {
                path: path.to_owned(),
                holder: holder(&mut file),
            });
        }
        return Err(open_err(e.into()));
    }
    let me = std::process::id();
    // Written before truncating to its length, so a reader never sees it empty once written.
    let note = format!("pid {me}: {}", command_of(me).unwrap_or_default());
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.write_all(note.as_bytes());
    let _ = file.set_len(note.len() as u64);
    let _ = file.flush();
    Ok(HostLock {
        _file: file,
        path: path.to_owned(),
    })
}

/// Who holds the lock: the kernel's answer (`/proc/locks` names the pid holding a `flock` on
/// this inode), with that process's command line; the holder's note when the kernel's table
/// cannot be read.
fn holder(file: &mut File) -> String {
    if let Some(pid) = file.metadata().ok().and_then(|m| flock_holder(&m)) {
        return match command_of(pid) {
            Some(cmd) => format!("pid {pid}: {cmd}"),
            None => format!("pid {pid}"),
        };
    }
    let mut note = String::new();
    let _ = file.take(4096).read_to_string(&mut note);
    match note.trim() {
        "" => "holder unknown".to_owned(),
        n => n.to_owned(),
    }
}

/// The pid `/proc/locks` shows holding a `FLOCK` on the file `m` describes. Its lines read
/// `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF` (major and minor in hex, inode decimal).
fn flock_holder(m: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = m.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        m.ino()
    );
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

fn command_of(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let text = crate::observe::procfs::redact_argv(args).join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apply.lock");
        let held = acquire(&path).unwrap();
        let err = acquire(&path).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(held);
        acquire(&path).expect("released on drop");
    }

    #[test]
    fn a_symlink_or_another_users_file_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("apply.lock");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(acquire(&path).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        if rustix::process::geteuid().is_root() {
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, "planted").unwrap();
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            let e = acquire(&path).unwrap_err().to_string();
            assert!(e.contains("lock file"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "planted");
        }
    }
}
