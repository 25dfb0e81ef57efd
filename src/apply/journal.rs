//! The apply journal: append-only JSON lines, one file per user
//! (`$XDG_STATE_HOME/nemoclaw/journal.jsonl`, default `~/.local/state/nemoclaw`).
//!
//! Before a mutating step runs, its intent (step id, plan hash, the facts it was planned against)
//! is appended and synced to disk; after it, its outcome. An intent with no outcome means the
//! apply died mid-step: the next run judges it from a fresh observation and records the verdict,
//! so it is reported once. Secrets never reach the journal: steps carry no secret values.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::recovery::Verdict;
use crate::plan::{Action, Risk, Target};

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// An apply began.
    Start {
        /// Run id.
        run: String,
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The plan's hash.
        plan_sha256: String,
        /// The desired file.
        desired_path: String,
        /// Its hash.
        desired_sha256: String,
        /// Steps in the plan.
        steps: usize,
    },
    /// A mutating step is about to run.
    Intent {
        /// Run id.
        run: String,
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Step id.
        step: String,
        /// Its address.
        address: String,
        /// Its action.
        action: Action,
        /// Its risk.
        risk: Risk,
        /// The plan's hash.
        plan_sha256: String,
        /// What it acts on, with the facts it was planned against.
        target: Box<Target>,
    },
    /// A step ended.
    Outcome {
        /// Run id.
        run: String,
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Step id.
        step: String,
        /// `done`, `stale` or `failed`.
        outcome: String,
        /// What happened.
        message: String,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// An apply ended.
    End {
        /// Run id.
        run: String,
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The exit code.
        exit: u8,
    },
    /// A later run judged an interrupted step.
    Recovered {
        /// The run that judged it.
        run: String,
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The run that was interrupted.
        of_run: String,
        /// The step.
        step: String,
        /// The verdict.
        verdict: Verdict,
        /// Why.
        detail: String,
    },
}

/// An open journal for one run.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
    run: String,
}

/// An intent with no outcome and no verdict yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dangling {
    /// The interrupted run.
    pub run: String,
    /// When the intent was written.
    pub at_ms: u64,
    /// Step id.
    pub step: String,
    /// Its address.
    pub address: String,
    /// Its action.
    pub action: Action,
    /// Its risk.
    pub risk: Risk,
    /// Its target and facts.
    pub target: Target,
}

impl Journal {
    /// Opens (creating the directory, 0700) the journal in `dir` for a new run.
    pub fn open(dir: &Path, now_ms: u64) -> std::io::Result<Self> {
        super::files::private_dir(dir)?;
        let path = dir.join("journal.jsonl");
        super::files::open_append(&path)?;
        Ok(Self {
            path,
            run: format!("{now_ms}-{}", std::process::id()),
        })
    }

    /// This run's id.
    #[must_use]
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The journal file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event and syncs it to disk before returning.
    pub fn record(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = super::files::open_append(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()
    }
}

/// Past this size (8 MiB, some thousands of applies) an apply moves the journal aside, so
/// every plan reads a short file. Only a journal whose every intent has an outcome or a verdict is
/// moved: what recovery needs stays in `journal.jsonl`.
pub const ROTATE_AT: u64 = 8 << 20;

/// The file a rotated journal is kept in, beside `path` (`journal.1.jsonl`); `history` reads it
/// first. One generation is kept.
#[must_use]
pub fn rotated(path: &Path) -> std::path::PathBuf {
    path.with_extension("1.jsonl")
}

/// Moves the journal at `path` to [`rotated`] when it is larger than [`ROTATE_AT`] and holds no
/// dangling intent. Returns whether it did. Called by apply under the host lock.
pub fn rotate_if_large(path: &Path) -> std::io::Result<bool> {
    rotate_past(path, ROTATE_AT)
}

fn rotate_past(path: &Path, limit: u64) -> std::io::Result<bool> {
    let large = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() > limit);
    if !large || !dangling(&read(path).map_err(std::io::Error::other)?).is_empty() {
        return Ok(false);
    }
    std::fs::rename(path, rotated(path))?;
    Ok(true)
}

/// The largest journal read (256 MiB, some million applies).
pub const JOURNAL_CAP: u64 = 256 << 20;

/// Reads every event of the journal at `path`; a missing file is empty. A line that does not
/// parse (the last one, torn by a kill mid-write) is skipped.
pub fn read(path: &Path) -> Result<Vec<Event>, String> {
    // Read like any file another user might have planted: regular, no symlink, bounded.
    let text = match crate::observe::files::read_regular(path, JOURNAL_CAP) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Intents that have neither an outcome nor a later verdict.
#[must_use]
pub fn dangling(events: &[Event]) -> Vec<Dangling> {
    // Linear in the journal: each intent is found again by (run, step) through an index.
    let mut out: Vec<Option<Dangling>> = Vec::new();
    let mut at: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    for e in events {
        match e {
            Event::Intent {
                run,
                at_ms,
                step,
                address,
                action,
                risk,
                target,
                ..
            } => {
                at.insert((run.as_str(), step.as_str()), out.len());
                out.push(Some(Dangling {
                    run: run.clone(),
                    at_ms: *at_ms,
                    step: step.clone(),
                    address: address.clone(),
                    action: *action,
                    risk: *risk,
                    target: (**target).clone(),
                }));
            }
            Event::Outcome { run, step, .. }
            | Event::Recovered {
                of_run: run, step, ..
            } => {
                if let Some(i) = at.remove(&(run.as_str(), step.as_str())) {
                    out[i] = None;
                }
            }
            Event::Start { .. } | Event::End { .. } => {}
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_without_outcomes_dangle_until_judged() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1).unwrap();
        j.record(&intent(j.run(), "s1")).unwrap();
        j.record(&outcome(j.run(), "s1")).unwrap();
        j.record(&intent(j.run(), "s2")).unwrap();
        // A torn last line, as a kill mid-write leaves it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"event\":\"outc")
            .unwrap();
        let events = read(j.path()).unwrap();
        let d = dangling(&events);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].step, "s2");
        let j2 = Journal::open(dir.path(), 3).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        j2.record(&Event::Recovered {
            run: j2.run().to_owned(),
            at_ms: 4,
            of_run: j.run().to_owned(),
            step: "s2".into(),
            verdict: Verdict::NotDone,
            detail: String::new(),
        })
        .unwrap();
        assert!(dangling(&read(j.path()).unwrap()).is_empty());
    }

    fn outcome(run: &str, step: &str) -> Event {
        Event::Outcome {
            run: run.to_owned(),
            at_ms: 2,
            step: step.to_owned(),
            outcome: "done".into(),
            message: String::new(),
            elapsed_ms: 1,
        }
    }

    fn intent(run: &str, step: &str) -> Event {
        Event::Intent {
            run: run.to_owned(),
            at_ms: 1,
            step: step.to_owned(),
            address: "a".to_owned(),
            action: Action::Stop,
            risk: Risk::Disrupt,
            plan_sha256: "p".to_owned(),
            target: Box::new(Target::Ports {
                range: "1-2".to_owned(),
            }),
        }
    }

    #[test]
    fn a_long_journal_is_moved_aside_only_when_nothing_dangles() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1).unwrap();
        j.record(&intent("r", "s1")).unwrap();
        assert!(
            !rotate_past(j.path(), 10).unwrap(),
            "an intent without outcome stays"
        );
        j.record(&outcome("r", "s1")).unwrap();
        assert!(!rotate_past(j.path(), 1 << 20).unwrap(), "short enough");
        assert!(rotate_past(j.path(), 10).unwrap());
        assert!(!j.path().exists() && rotated(j.path()).is_file());
        assert_eq!(rotated(j.path()).file_name().unwrap(), "journal.1.jsonl");
        // The next record starts a fresh file.
        let j2 = Journal::open(dir.path(), 3).unwrap();
        j2.record(&intent("r", "s2")).unwrap();
        assert_eq!(read(j2.path()).unwrap().len(), 1);
    }
}
