//! Writing the engine's files on a host other users share, as root or not.
//!
//! Every write goes into a directory that only root, the engine's user or the invoking user can
//! write, on a path no other user could have steered: the directory chain is checked first
//! ([`check_dir`]); no open follows a symlink (`O_NOFOLLOW`) or leaks into a child (`O_CLOEXEC`);
//! a replaced file is written to a temp file with an unpredictable name created exclusively
//! (`O_EXCL`) beside it, synced and renamed over it, so readers see the old content or the new;
//! an appended file (journal, log) must already be a regular file the engine's user owns.

use std::fs::{self, File};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::observe::files::unsafe_path;
pub use crate::observe::files::{check_dir, trusted_uids};

/// Creates `dir` (and its parents) with mode 0700 where missing, then [`check_dir`]s it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check_dir(dir)
}

fn flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC)
        .bits()
        .cast_signed()
}

/// Replaces `path` with `bytes` atomically, mode 0600, in a checked directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    check_dir(dir)?;
    let tmp = temp_beside(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags())
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Opens `path` for appending (creating it 0600), in a checked directory; refuses anything but
/// a regular file owned by the engine's user.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    check_dir(parent(path))?;
    let f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(flags() | rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(path)?;
    owned_regular(&f, path)?;
    Ok(f)
}

/// Fails unless the open file is a regular file owned by the engine's effective user.
pub fn owned_regular(f: &File, path: &Path) -> std::io::Result<()> {
    let m = f.metadata()?;
    let euid = rustix::process::geteuid().as_raw();
    if !m.file_type().is_file() {
        return Err(unsafe_path(path, "is not a regular file", "remove it"));
    }
    if m.uid() != euid {
        return Err(unsafe_path(
            path,
            &format!(
                "belongs to uid {}, not to uid {euid} that runs the engine",
                m.uid()
            ),
            "remove it; the engine never writes a file it does not own",
        ));
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.<16 random hex>.tmp` beside `path`: nobody can guess it to plant it first, and the
/// exclusive create fails rather than follow anything that is there.
fn temp_beside(path: &Path) -> PathBuf {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{:016x}.tmp", h.finish()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandboxes.json");
        std::fs::write(&path, "old").unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "root's").unwrap();
        let path = dir.path().join("sandboxes.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_directory_others_can_write_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_private(&open.join("f"), b"x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("writable by other users (mode 777)") && e.contains("chmod go-w"),
            "{e}"
        );
        let e = open_append(&open.join("log")).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
        // A sticky world-writable ancestor (/tmp) is fine; the directory itself is private.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let inner = open.join("private");
        private_dir(&inner).unwrap();
        write_private(&inner.join("f"), b"x").unwrap();
    }

    #[test]
    fn append_refuses_a_fifo_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("journal.jsonl");
        crate::observe::files::make_fifo(&fifo);
        // No reader: the non-blocking open fails at once (ENXIO) instead of waiting for one.
        assert!(open_append(&fifo).is_err());
        let link = dir.path().join("log");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(open_append(&link).is_err());
    }
}
