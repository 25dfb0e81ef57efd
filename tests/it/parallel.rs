//! Parallel apply against real processes: independent stale listeners are stopped together
//! (one grace period, not eight), dependent stops never overlap, a first Ctrl-C lets the running
//! stops finish and starts nothing, and the journal of a parallel apply killed mid-way is judged
//! by the next run. Wall time is measured in `benches/`, asserted here only as "less than half of
//! serial".

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::gitops::{Listener, Site};
use crate::support::{code, text};

/// SIGTERM arrivals recorded by the listeners: (pid, epoch seconds).
fn terms(path: &std::path::Path) -> Vec<(u32, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once(' ')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

#[test]
fn eight_slow_stale_listeners_take_about_one_grace_period() {
    let s = Site::new("");
    let record = s.dir.path().join("terms");
    let mut ls: Vec<Listener> = (0..8)
        .map(|i| Listener::spawn_recording("ignore-term", s.port(i), &record))
        .collect();
    let started = Instant::now();
    let out = s.run(&["apply", "--yes"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(ls.iter_mut().all(|l| !l.alive()), "all stopped");
    let t = terms(&record);
    assert_eq!(t.len(), 8, "each got exactly one SIGTERM: {t:?}");
    let mut pids: Vec<u32> = t.iter().map(|(p, _)| *p).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 8, "{t:?}");
    // Together: the eight SIGTERMs within a second of each other (serially they come 1.5 s
    // apart, each grace then its SIGKILL).
    let first = t.iter().map(|(_, at)| *at).fold(f64::INFINITY, f64::min);
    let last = t.iter().map(|(_, at)| *at).fold(0.0, f64::max);
    assert!(last - first < 1.0, "{t:?}");
    // The whole apply (observe, plan, stops, observe again) in less than the serial graces alone.
    assert!(
        took < Duration::from_secs(12),
        "took {took:?}: {}",
        text(&out)
    );

    // `--parallelism 1` is the serial walk: the SIGTERMs come a grace period apart.
    let record1 = s.dir.path().join("terms1");
    let mut two: Vec<Listener> = (0..2)
        .map(|i| Listener::spawn_recording("ignore-term", s.port(i), &record1))
        .collect();
    let out = s.run(&["apply", "--yes", "--parallelism", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(two.iter_mut().all(|l| !l.alive()));
    let t = terms(&record1);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!((t[1].1 - t[0].1).abs() >= 1.4, "one after the other: {t:?}");
}

/// Two processes sharing one socket are stopped by two dependent steps: the second SIGTERM comes
/// only after the first process is gone (its grace period, then SIGKILL).
#[test]
fn dependent_stops_never_overlap() {
    let s = Site::new("");
    let record = s.dir.path().join("terms");
    let mut shared = Listener::spawn_recording("fork-ignore-term", s.port(3), &record);
    let mut other = Listener::spawn_recording("ignore-term", s.port(4), &record);
    let out = s.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!shared.alive() && !other.alive());
    let t = terms(&record);
    assert_eq!(t.len(), 3, "{t:?}");
    let other_pid = other.pid();
    let group: Vec<f64> = t
        .iter()
        .filter(|(p, _)| *p != other_pid)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(group.len(), 2, "{t:?}");
    assert!(
        (group[1] - group[0]).abs() >= 1.4,
        "the dependent stop waited for the first to end: {t:?}"
    );
    let independent = t.iter().find(|(p, _)| *p == other_pid).unwrap().1;
    assert!(
        (independent - group[0]).abs() < 1.0,
        "the independent stop ran beside the first: {t:?}"
    );
}

/// A first Ctrl-C during a parallel apply: the running stops finish, nothing new starts, 130.
#[test]
fn a_first_ctrl_c_lets_running_steps_finish_and_starts_none() {
    let s = Site::new("");
    let record = s.dir.path().join("terms");
    let mut ls: Vec<Listener> = (0..3)
        .map(|i| Listener::spawn_recording("ignore-term", s.port(i), &record))
        .collect();
    let apply = s
        .cmd()
        .args(["apply", "--yes", "--parallelism", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while terms(&record).len() < 2 {
        assert!(Instant::now() < deadline, "two stops never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(apply.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    let alive: Vec<bool> = ls.iter_mut().map(Listener::alive).collect();
    assert_eq!(alive, vec![false, false, true], "{}", text(&out));
    assert!(
        text(&out).contains("interrupted before it started"),
        "{}",
        text(&out)
    );
}

/// SIGKILL during a parallel apply leaves two intents without outcomes; the next plan names both,
/// and the next apply judges them and converges.
#[test]
fn a_parallel_apply_killed_mid_way_is_judged_and_converges() {
    let s = Site::new("");
    let record = s.dir.path().join("terms");
    let _ls: Vec<Listener> = (0..2)
        .map(|i| Listener::spawn_recording("ignore-term", s.port(i), &record))
        .collect();
    let mut apply = s
        .cmd()
        .args(["apply", "--yes"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while terms(&record).len() < 2 {
        assert!(Instant::now() < deadline, "the stops never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    apply.kill().unwrap();
    apply.wait().unwrap();
    let journal = s.journal();
    assert_eq!(
        journal.matches("\"event\":\"intent\"").count(),
        2,
        "{journal}"
    );
    assert_eq!(
        journal.matches("\"event\":\"outcome\"").count(),
        0,
        "{journal}"
    );
    let plan = s.run(&["plan"]);
    let t = text(&plan);
    assert!(
        t.contains("An earlier apply was interrupted mid-step"),
        "{t}"
    );
    let out = s.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(code(&s.run(&["plan", "--detailed-exitcode"])), 0);
    let journal = s.journal();
    assert_eq!(
        journal.matches("\"event\":\"recovered\"").count(),
        2,
        "{journal}"
    );
}
