//! Processes through `/proc`: identity (pid + start time), owner, full command line, and which
//! processes hold a given socket inode.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::model::{Observation, ProcessInfo};

/// Reads one process, or `None` when it does not exist (or exited meanwhile).
#[must_use]
pub fn read_process(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let stat = fs::read_to_string(format!("{base}/stat")).ok()?;
    let start_time = parse_start_time(&stat)?;
    let status = fs::read_to_string(format!("{base}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())?;
    let raw = fs::read(format!("{base}/cmdline")).ok()?;
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| redact_arg(&String::from_utf8_lossy(part)))
        .collect();
    let cmdline = redact_argv(cmdline);
    Some(ProcessInfo {
        pid,
        start_time,
        uid,
        user: user_name(uid),
        cmdline,
    })
}

/// Flags whose value is a credential: OpenShell's forward carries a session `--token` inside its
/// `ssh -o ProxyCommand=…` argument, and OpenClaw's wrapper a gateway `--token`.
const SECRET_FLAGS: [&str; 3] = ["--token", "--password", "--api-key"];

/// What the engine keeps of one command-line argument: a credential that follows one of
/// [`SECRET_FLAGS`] (as `--token X`, `--token=X`, or inside a longer argument) becomes
/// `<redacted>`. Observe and apply both see command lines through this, so a stop's identity
/// check compares like with like, and no observation, plan or journal holds the secret.
#[must_use]
pub fn redact_arg(arg: &str) -> String {
    let words: Vec<&str> = arg.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut hide_next = false;
    for w in words {
        if hide_next && !w.is_empty() {
            out.push("<redacted>".to_owned());
            hide_next = false;
            continue;
        }
        match SECRET_FLAGS
            .iter()
            .find(|f| w.ends_with(*f) || w.contains(&format!("{f}=")))
        {
            Some(f) if w.ends_with(f) => {
                hide_next = true;
                out.push(w.to_owned());
            }
            Some(f) => {
                let at = w.find(&format!("{f}=")).unwrap_or(0) + f.len() + 1;
                out.push(format!("{}<redacted>", &w[..at]));
            }
            None => out.push(w.to_owned()),
        }
    }
    out.join(" ")
}

/// Redacts a whole argv: a flag whose value is the next argument hides that argument.
#[must_use]
pub fn redact_argv(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("<redacted>".to_owned());
            hide_next = false;
            continue;
        }
        hide_next = SECRET_FLAGS.contains(&a.as_str());
        out.push(a);
    }
    out
}

/// The variables of `/proc/<pid>/environ` that `keep` maps to a value (`None` drops one). Read
/// bounded (1 MiB) and never through a symlink or FIFO; a process whose environment cannot be
/// read (gone, or another user's without root) is `Unknown`, with the reason.
pub fn environ(
    pid: u32,
    keep: impl Fn(&str, &str) -> Option<String>,
) -> Observation<BTreeMap<String, String>> {
    let path = format!("/proc/{pid}/environ");
    match super::files::read_regular(Path::new(&path), 1 << 20) {
        Ok(raw) => Observation::Known {
            value: raw
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    keep(k, v).map(|v| (k.to_owned(), v))
                })
                .collect(),
        },
        Err(e) => Observation::Unknown {
            reason: format!("{path}: {e}"),
        },
    }
}

/// The systemd service its cgroup path ends in (`…/app.slice/openclaw-gateway.service`), if
/// any: a process systemd supervises. The user manager (`user@UID.service`) and session scopes
/// are not the process's own unit.
#[must_use]
pub fn cgroup_unit(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.split('/')
        .rfind(|c| c.ends_with(".service") && !c.starts_with("user@") && !c.starts_with("session-"))
        .map(str::to_owned)
}

/// Waits up to `limit` for the process behind `pidfd` to exit (the pidfd turns readable); a
/// signal interrupting the wait does not end it early. Blocking.
pub fn pidfd_exited_within(pidfd: &impl std::os::fd::AsFd, limit: std::time::Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) if !left.is_zero() => {}
            Err(_) => return false,
        }
    }
}

/// How long ago a process with start time `start_ticks` (field 22 of `/proc/PID/stat`) started.
#[must_use]
pub fn age_ms(start_ticks: u64) -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    if hz == 0 {
        return None;
    }
    let started_ms = btime * 1000 + start_ticks * 1000 / hz;
    Some(super::now_ms().saturating_sub(started_ms))
}

/// Returns field 22 (start time) of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
#[must_use]
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Returns field 4 (parent pid) of `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Returns the ancestors of `pid`, parent first, stopping at pid 1 or after 64 levels.
#[must_use]
pub fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Some(parent) = parent_of(cur) {
        if parent == 0 || out.len() >= 64 {
            break;
        }
        out.push(parent);
        if parent == 1 {
            break;
        }
        cur = parent;
    }
    out
}

/// Resolves a uid to its user name.
#[must_use]
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The result of looking for the holders of some socket inodes.
#[derive(Debug, Default)]
pub struct HolderScan {
    /// Pids holding each inode, ascending.
    pub holders: BTreeMap<u64, Vec<u32>>,
    /// Processes whose fd table could not be read (another user's, without privilege).
    pub unreadable: usize,
    /// Processes whose fds were read.
    pub scanned: usize,
}

/// Finds which processes hold the given socket inodes by reading `/proc/<pid>/fd`.
///
/// The fd walk costs a few microseconds per open fd on the host, so it is kept small: processes
/// owned by one of `likely_uids` (the sockets' owners) are read first, and the rest only if some
/// inode is still unaccounted for. A socket's uid is its creator's, which almost always still owns
/// the holding process.
#[must_use]
pub fn find_holders(inodes: &BTreeSet<u64>, likely_uids: &BTreeSet<u32>) -> HolderScan {
    let mut scan = HolderScan::default();
    if inodes.is_empty() {
        return scan;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return scan;
    };
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match entry.metadata() {
            Ok(meta) if likely_uids.contains(&meta.uid()) => first.push(pid),
            _ => rest.push(pid),
        }
    }
    first.sort_unstable();
    rest.sort_unstable();
    for pid in first {
        scan_fds(pid, inodes, &mut scan);
    }
    if scan.holders.len() < inodes.len() {
        for pid in rest {
            scan_fds(pid, inodes, &mut scan);
        }
    }
    for pids in scan.holders.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    scan
}

fn scan_fds(pid: u32, inodes: &BTreeSet<u64>, scan: &mut HolderScan) {
    let dir = format!("/proc/{pid}/fd");
    let Ok(fds) = fs::read_dir(&dir) else {
        // Gone meanwhile, or not ours to read. Only the second matters for "unknown owner".
        if Path::new(&format!("/proc/{pid}")).exists() {
            scan.unreadable += 1;
        }
        return;
    };
    scan.scanned += 1;
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        if inodes.contains(&inode) {
            scan.holders.entry(inode).or_default().push(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_arg, redact_argv};

    #[test]
    fn credentials_in_command_lines_are_redacted() {
        assert_eq!(
            redact_arg(
                "ProxyCommand=/bin/openshell ssh-proxy --sandbox-id x --token abc.def --gateway-name g"
            ),
            "ProxyCommand=/bin/openshell ssh-proxy --sandbox-id x --token <redacted> --gateway-name g"
        );
        assert_eq!(redact_arg("--token=s3cret"), "--token=<redacted>");
        let v: Vec<String> = ["openclaw", "gateway", "--token", "s3cret", "--port", "1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            redact_argv(v).join(" "),
            "openclaw gateway --token <redacted> --port 1"
        );
    }

    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987_654));
    }

    #[test]
    fn this_process_reads_and_has_ancestors() {
        let me = std::process::id();
        let p = read_process(me).unwrap();
        assert_eq!(p.pid, me);
        assert!(p.start_time > 0);
        assert!(!p.cmdline.is_empty());
        assert!(!ancestors(me).is_empty());
    }
}
