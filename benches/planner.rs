//! The planner at scale: generated hosts (`tests/it/generate.rs`) of 10 to 10,000 sandboxes
//! (missing, present, mixed) and 1,000 to 100,000 listeners, planned in-process (median time and
//! peak heap while planning, growth per ×10) and as a whole process (`nemoclaw plan -f FILE
//! --observed SNAPSHOT`, reading the snapshot included), side by side with `terraform plan` of as
//! many `terraform_data` resources when terraform is installed (it is not a dependency).
//!
//! `cargo bench --bench planner`; `NEMOCLAW_BENCH_QUICK=1` for the small sizes only. Figures and
//! the command go in docs/performance.md.

#[path = "../tests/it/generate.rs"]
mod generate;

use std::process::Command;
use std::time::{Duration, Instant};

use generate::{Presence, Shape};
use nemoclaw::plan::{PlanOptions, plan};

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0), so
/// `VmHWM` afterwards is the peak of what follows.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// In-process: median plan time and the peak RSS the plan adds (inputs excluded), in KiB.
fn in_process(shape: Shape, flags: &[String]) -> (Duration, usize, usize) {
    let desired = nemoclaw::spec::load("bench.yaml", &generate::desired_yaml(shape))
        .unwrap_or_else(|d| panic!("{d:?}"));
    let observed = generate::observed(shape, flags.to_vec());
    let runs = if shape.sandboxes + shape.listeners >= 50_000 {
        5
    } else {
        15
    };
    let mut times = Vec::new();
    let mut peak = 0;
    let mut steps = 0;
    for _ in 0..runs {
        reset_peak();
        let base = status_kib("VmRSS:");
        let t = Instant::now();
        let p = plan(&desired, &observed, &PlanOptions::default());
        times.push(t.elapsed());
        peak = peak.max(status_kib("VmHWM:").saturating_sub(base));
        steps = p.steps.len();
    }
    (median(times), peak, steps)
}

/// Whole process, from files: median of three runs.
fn whole_process(shape: Shape, flags: &[String], dir: &std::path::Path) -> Duration {
    let file = dir.join("nemoclaw.yaml");
    let snapshot = dir.join("host.json");
    std::fs::write(&file, generate::desired_yaml(shape)).expect("write");
    std::fs::write(
        &snapshot,
        serde_json::to_vec(&generate::observed(shape, flags.to_vec())).expect("json"),
    )
    .expect("write");
    let times = (0..3)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_nemoclaw"))
                .args(["plan", "-o", "json", "-f"])
                .arg(&file)
                .arg("--observed")
                .arg(&snapshot)
                .env("XDG_STATE_HOME", dir.join("state"))
                .output()
                .expect("run nemoclaw");
            assert!(
                out.status.code().is_some_and(|c| c != 1),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.elapsed()
        })
        .collect();
    median(times)
}

/// `terraform plan` of `n` `terraform_data` resources, median of three, or `None` without
/// terraform.
fn terraform(n: usize, dir: &std::path::Path) -> Option<Duration> {
    Command::new("terraform").arg("version").output().ok()?;
    let tf = dir.join(format!("tf{n}"));
    std::fs::create_dir_all(&tf).ok()?;
    let body: String = (0..n)
        .map(|i| format!("resource \"terraform_data\" \"r{i}\" {{\n  input = \"{i}\"\n}}\n"))
        .collect();
    std::fs::write(tf.join("main.tf"), body).ok()?;
    // An empty CLI configuration: no plugin cache, no network; `terraform_data` is built in.
    let rc = dir.join("terraformrc");
    std::fs::write(&rc, "").ok()?;
    let run = |args: &[&str]| {
        Command::new("terraform")
            .args(args)
            .current_dir(&tf)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .output()
            .ok()
    };
    let init = run(&["init", "-input=false"])?;
    if !init.status.success() {
        eprintln!(
            "terraform init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        return None;
    }
    let times = (0..3)
        .map(|_| {
            let t = Instant::now();
            run(&["plan", "-input=false", "-lock=false"]);
            t.elapsed()
        })
        .collect();
    Some(median(times))
}

/// `NEMOCLAW_BENCH_PROFILE=SANDBOXES,LISTENERS,LOOPS`: plan one mixed host LOOPS times and
/// nothing else, for `perf record`; `NEMOCLAW_BENCH_KEEP=DIR` also leaves its files in DIR.
fn profile(spec: &str) {
    let n: Vec<usize> = spec.split(',').filter_map(|x| x.parse().ok()).collect();
    let shape = Shape {
        sandboxes: n[0],
        presence: Presence::Mixed,
        listeners: n[1],
    };
    let flags = generate::create_flags();
    if let Some(dir) = std::env::var_os("NEMOCLAW_BENCH_KEEP") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("nemoclaw.yaml"), generate::desired_yaml(shape)).expect("write");
        std::fs::write(
            dir.join("host.json"),
            serde_json::to_vec(&generate::observed(shape, flags.clone())).expect("json"),
        )
        .expect("write");
    }
    let desired = nemoclaw::spec::load("bench.yaml", &generate::desired_yaml(shape))
        .unwrap_or_else(|d| panic!("{d:?}"));
    let observed = generate::observed(shape, flags);
    for _ in 0..n[2] {
        std::hint::black_box(plan(&desired, &observed, &PlanOptions::default()));
    }
}

fn main() {
    if let Ok(spec) = std::env::var("NEMOCLAW_BENCH_PROFILE") {
        profile(&spec);
        return;
    }
    let quick = std::env::var_os("NEMOCLAW_BENCH_QUICK").is_some();
    let flags = generate::create_flags();
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes: &[usize] = if quick {
        &[10, 100, 1000]
    } else {
        &[10, 100, 1000, 10_000]
    };
    println!("# planner, in-process (median) and whole process `plan --observed` (median of 3)");
    println!(
        "{:<34} {:>7} {:>11} {:>9} {:>9} {:>12}",
        "host", "steps", "plan ms", "×10", "+RSS MiB", "process ms"
    );
    let row = |label: String, shape: Shape, previous: &mut Option<Duration>| {
        let (t, peak, steps) = in_process(shape, &flags);
        let growth = previous.map_or("".to_owned(), |p| {
            format!("{:.1}×", t.as_secs_f64() / p.as_secs_f64())
        });
        *previous = Some(t);
        let whole = whole_process(shape, &flags, dir.path());
        #[allow(clippy::cast_precision_loss)]
        let mib = peak as f64 / 1024.0;
        println!(
            "{label:<34} {steps:>7} {:>11.2} {growth:>9} {mib:>9.1} {:>12.1}",
            ms(t),
            ms(whole)
        );
    };
    for presence in [Presence::Missing, Presence::Present, Presence::Mixed] {
        let mut previous = None;
        for &n in sizes {
            row(
                format!("{n} sandboxes, {presence:?}"),
                Shape {
                    sandboxes: n,
                    presence,
                    listeners: 0,
                },
                &mut previous,
            );
        }
    }
    let mut previous = None;
    let listeners: &[usize] = if quick {
        &[1000, 10_000]
    } else {
        &[1000, 10_000, 100_000]
    };
    for &l in listeners {
        row(
            format!("{l} listeners"),
            Shape {
                sandboxes: 0,
                presence: Presence::Missing,
                listeners: l,
            },
            &mut previous,
        );
    }
    if !quick {
        row(
            "10000 sandboxes (mixed) + 100000 listeners".to_owned(),
            Shape {
                sandboxes: 10_000,
                presence: Presence::Mixed,
                listeners: 100_000,
            },
            &mut None,
        );
    }
    println!();
    println!(
        "# terraform plan of N terraform_data resources (median of 3) beside nemoclaw plan of N missing sandboxes"
    );
    for n in [10, 100, 1000] {
        let nemo = whole_process(
            Shape {
                sandboxes: n,
                presence: Presence::Missing,
                listeners: 0,
            },
            &flags,
            dir.path(),
        );
        match terraform(n, dir.path()) {
            Some(t) => println!(
                "{n:>5}: terraform {:>9.1} ms   nemoclaw {:>7.1} ms   {:.0}×",
                ms(t),
                ms(nemo),
                t.as_secs_f64() / nemo.as_secs_f64()
            ),
            None => println!(
                "{n:>5}: terraform not installed (skipped)   nemoclaw {:>7.1} ms",
                ms(nemo)
            ),
        }
    }
}
