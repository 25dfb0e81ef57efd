//! Reading a small file the engine does not own, safely: never through a symlink, never a FIFO
//! or device (which could block or never end), never more than a cap.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Reads `path` if it is a regular file of at most `cap` bytes. The open neither follows a
/// symlink nor blocks on a FIFO (`O_NOFOLLOW | O_NONBLOCK`); the type is checked on the open
/// file, so it cannot be swapped between the check and the read.
pub fn read_regular(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
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
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(
            read_regular(&fifo, 10).is_err(),
            "a FIFO never blocks the read"
        );
    }
}
