//! Parallel apply, whole process: eight stale listeners that ignore SIGTERM, `termGrace: 1s`,
//! stopped by `nemoclaw apply --yes --parallelism 1` and then `--parallelism 10` (fresh listeners
//! each time). Prints each apply's wall time, observe and plan included. Run with
//! `cargo bench --bench parallel_apply` (needs python3; ports 43300-43310 free, or set
//! `NEMOCLAW_BENCH_BASE`). Results go in docs/performance.md.

mod support;
use support::{Proc, spawn};

use std::process::Command;
use std::time::Instant;

const LISTENER: &str = r#"
import signal, socket, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
signal.pause()
"#;

fn listener(port: u16) -> Proc {
    spawn("openclaw-gateway", LISTENER, &[port.to_string()])
}

fn main() {
    let base: u16 = std::env::var("NEMOCLAW_BENCH_BASE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(43_300);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{base}-{}\"\ncleanup:\n  termGrace: 1s\n  killGrace: 1s\n",
            base + 10
        ),
    )
    .expect("write");
    println!("| --parallelism | listeners | apply wall time (s) | exit |");
    println!("|---:|---:|---:|---:|");
    for parallelism in ["1", "10"] {
        let _procs: Vec<Proc> = (0..8).map(|i| listener(base + i)).collect();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_nemoclaw"))
            .args(["apply", "--yes", "--parallelism", parallelism])
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("NEMOCLAW_LOCK_FILE", dir.path().join("apply.lock"))
            .env("NO_COLOR", "1")
            .output()
            .expect("nemoclaw apply");
        println!(
            "| {parallelism} | 8 | {:.2} | {} |",
            started.elapsed().as_secs_f64(),
            out.status.code().unwrap_or(-1)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains("8 of 8 steps done"),
            "the eight were stopped: {stdout}"
        );
    }
}
