//! Hostile input, whole process: `nemoclaw validate` (and `plan --observed` for a snapshot) on
//! files built to exhaust a parser — an alias bomb, 300,000 nested sequences, deep flow nesting,
//! 40,000 unknown keys, 20 KB of `? ` keys, a NUL byte — each refused within fixed time and memory.
//! Prints wall time and the child's peak RSS (`getrusage(RUSAGE_CHILDREN)` per fresh process).
//! Run with `cargo bench --bench hostile_input`; results go in docs/security.md.

use std::process::Command;
use std::time::Instant;

fn cases() -> Vec<(&'static str, &'static str, String)> {
    let header = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";
    let mut bomb = format!("{header}x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    let mut keys = header.to_owned();
    for i in 0..40_000 {
        keys.push_str(&format!("k{i}: {i}\n"));
    }
    let deep_flow_snapshot = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    vec![
        ("alias bomb (10^9 values)", "validate", bomb),
        (
            "300,000 nested sequences",
            "validate",
            format!("{header}x: {}1\n", "- ".repeat(300_000)),
        ),
        ("40,000 unknown keys", "validate", keys),
        (
            "20 KB of `? ` keys",
            "validate",
            format!("{header}{}", "? ".repeat(10_000)),
        ),
        (
            "NUL byte",
            "validate",
            format!("{header}cleanup:\n  termGrace: 1s\0\n  staleListeners: false\n"),
        ),
        (
            "deep flow nesting (snapshot)",
            "snapshot",
            deep_flow_snapshot,
        ),
    ]
}

fn peak_rss_kib_of_children() -> i64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    usage.max_rss()
}

/// Each case runs in a fresh copy of this bench (`NEMOCLAW_BENCH_CASE=i`), whose only child is
/// the nemoclaw process, so `RUSAGE_CHILDREN`'s peak RSS is that process's own.
fn main() {
    if let Some(i) = std::env::var("NEMOCLAW_BENCH_CASE")
        .ok()
        .and_then(|i| i.parse().ok())
    {
        run_case(i);
        return;
    }
    println!(
        "{:<32} {:>10} {:>12} {:>6}",
        "input", "wall ms", "peak RSS MiB", "exit"
    );
    let me = std::env::current_exe().expect("current exe");
    for i in 0..cases().len() {
        let status = Command::new(&me)
            .env("NEMOCLAW_BENCH_CASE", i.to_string())
            .status()
            .expect("run a case");
        assert!(status.success(), "case {i} failed");
    }
}

fn run_case(i: usize) {
    let bin = env!("CARGO_BIN_EXE_nemoclaw");
    let dir = tempfile::tempdir().expect("tempdir");
    let (name, how, text) = cases().swap_remove(i);
    let file = dir.path().join("input.yaml");
    std::fs::write(&file, &text).expect("write");
    let valid = dir.path().join("nemoclaw.yaml");
    std::fs::write(&valid, "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n").expect("write");
    let mut cmd = Command::new(bin);
    match how {
        "snapshot" => cmd
            .args(["plan", "-f"])
            .arg(&valid)
            .arg("--observed")
            .arg(&file),
        _ => cmd.args(["validate", "-f"]).arg(&file),
    };
    let started = Instant::now();
    let out = cmd.output().expect("run nemoclaw");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    #[allow(clippy::cast_precision_loss)]
    let mib = peak_rss_kib_of_children() as f64 / 1024.0;
    println!(
        "{name:<32} {ms:>10.1} {mib:>12.1} {:>6}",
        out.status.code().unwrap_or(-1)
    );
    assert_ne!(out.status.code(), Some(0), "{name} must be refused");
    assert!(out.status.code().is_some(), "{name}: killed by a signal");
}
