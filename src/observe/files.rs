//! Reading a small file the engine does not own, safely: never through a symlink, never a FIFO
//! or device (which could block or never end), never more than a cap.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Reads `path` if it is a regular file of at most `cap` bytes. The open neither follows a
/// symlink nor blocks on a FIFO (`O_NOFOLLOW | O_NONBLOCK`); the type is checked on the open
/// file, so it cannot be swapped between the check and the read.
pub fn read_regular(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    read_capped(path, cap, libc_flags())
}

/// Reads a file the user named on the command line (the desired file, a snapshot, a saved plan):
/// a symlink is followed — the user chose the name — but a FIFO, device or directory is refused
/// without blocking, and so is anything over `cap`.
pub fn read_input(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let flags = (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC)
        .bits()
        .cast_signed();
    read_capped(path, cap, flags)
}

fn read_capped(path: &Path, cap: u64, flags: i32) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > cap {
        return Err(std::io::Error::other(format!(
            "{} is {} bytes, more than the {cap} this engine reads",
            path.display(),
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC)
        .bits()
        .cast_signed()
}

/// The users whose directories and files the engine trusts: root, its effective user and the
/// user it acts for (under sudo, `SUDO_UID`).
#[must_use]
pub fn trusted_uids() -> [u32; 3] {
    let euid = rustix::process::geteuid().as_raw();
    let invoking = std::env::var("SUDO_UID")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|_| euid == 0)
        .unwrap_or(euid);
    [0, euid, invoking]
}

/// Checks that `dir` and every directory above it (after resolving symlinks) are owned by a
/// trusted user and writable by nobody else — an ancestor may be writable by others only with
/// the sticky bit (`/tmp`), and `dir` itself not even then: in a directory another user can
/// write, they can plant the very name the engine is about to use.
pub fn check_dir(dir: &Path) -> std::io::Result<()> {
    let real = fs::canonicalize(dir)?;
    let trusted = trusted_uids();
    let mut current = Some(real.as_path());
    let mut first = true;
    while let Some(d) = current {
        let m = fs::metadata(d)?;
        if !m.is_dir() {
            return Err(unsafe_path(d, "is not a directory", "choose a directory"));
        }
        if !trusted.contains(&m.uid()) {
            return Err(unsafe_path(
                d,
                &format!("is owned by uid {}, not by you or root", m.uid()),
                &format!(
                    "`chown` it to yourself, or use a path you own instead of `{}`",
                    dir.display()
                ),
            ));
        }
        let writable = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        if writable && (first || !sticky) {
            return Err(unsafe_path(
                d,
                &format!("is writable by other users (mode {:o})", m.mode() & 0o7777),
                &format!("`chmod go-w {}`", d.display()),
            ));
        }
        first = false;
        current = d.parent();
    }
    Ok(())
}

pub(crate) fn unsafe_path(path: &Path, what: &str, fix: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing to use `{}`: it {what}, so another user could plant files there; fix: {fix}",
            path.display()
        ),
    )
}

/// Makes a FIFO at `path`: the tests' input that must never be read as a file.
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::read_regular;

    #[test]
    fn symlinks_fifos_and_big_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"hello");
        assert!(read_regular(&f, 2).is_err());
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(read_regular(&l, 10).is_err());
        let fifo = d.path().join("fifo");
        super::make_fifo(&fifo);
        assert!(
            read_regular(&fifo, 10).is_err(),
            "a FIFO never blocks the read"
        );
    }
}
