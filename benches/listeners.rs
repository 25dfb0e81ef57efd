//! Listener discovery for the 11-port dashboard range: nemoclaw's scan against the seed's method
//! (`lsof -iTCP:<port> -sTCP:LISTEN` per port, then `ps` per pid), with N other listeners on the
//! host. Run with `cargo bench --bench listeners` (needs `lsof`, `ps`, `python3`; takes about a
//! minute). Results go in docs/performance.md.
//!
//! Environment: `NEMOCLAW_BENCH_N` (default `10,1000,5000`), `NEMOCLAW_BENCH_BASE` (first port of
//! the range, default 18789; must be free).

mod support;
use support::spawn;

use std::process::Command;
use std::time::{Duration, Instant};

use nemoclaw::model::PortRange;
use nemoclaw::observe::{self, sockets};

/// A fake gateway: listens, and answers every connection at once with an HTTP 404 — as the real
/// OpenClaw and OpenShell gateways answer (`nemoclaw observe` asks OpenClaw gateways `/healthz`;
/// one that never answered would cost the probe's whole timeout).
const GATEWAY: &str = r#"
import signal, socket, sys, threading
socks = []
for a in sys.argv[1:]:
    host, port = a.rsplit(":", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks.append(socket.create_server((host.strip("[]"), int(port)), family=fam, dualstack_ipv6=host == "[::]"))
def answer(s):
    while True:
        c, _ = s.accept()
        try:
            c.recv(4096)
            c.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        finally:
            c.close()
for s in socks:
    threading.Thread(target=answer, args=(s,), daemon=True).start()
print("ready", flush=True)
signal.pause()
"#;

const CROWD: &str = r#"
import resource, signal, socket, sys
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
print("ready", flush=True)
signal.pause()
"#;

/// The seed's method: one lsof per port, then one ps per distinct pid.
fn seed(range: PortRange) -> usize {
    let mut pids = std::collections::BTreeSet::new();
    for port in range.ports() {
        let out = Command::new("lsof")
            .args([&format!("-iTCP:{port}"), "-sTCP:LISTEN", "-n", "-P", "-Fpc"])
            .output()
            .expect("lsof");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(pid) = line.strip_prefix('p') {
                pids.insert(pid.to_owned());
            }
        }
    }
    for pid in &pids {
        let _ = Command::new("ps")
            .args(["-o", "user=", "-o", "args=", "-p", pid])
            .output();
    }
    pids.len()
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    f(); // warm-up
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn main() {
    let base: u16 = std::env::var("NEMOCLAW_BENCH_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18789);
    let range = PortRange {
        start: base,
        end: base + 10,
    };
    let ns: Vec<usize> = std::env::var("NEMOCLAW_BENCH_N")
        .unwrap_or_else(|_| "10,1000,5000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ports: Vec<u16> = range.ports().collect();
    assert_eq!(
        observe::probe_ports(&ports),
        observe::PortState::Free,
        "the range {range} must be free"
    );
    let p = |i: u16| (base + i).to_string();
    // The perf-baseline setup: five fake gateways on six of the eleven ports.
    let _gw = [
        spawn(
            "openclaw-gateway",
            GATEWAY,
            &[format!("127.0.0.1:{}", p(0))],
        ),
        spawn("openclaw-gateway", GATEWAY, &[format!("0.0.0.0:{}", p(1))]),
        spawn("openclaw-gateway", GATEWAY, &[format!("[::1]:{}", p(2))]),
        spawn(
            "openshell-forward",
            GATEWAY,
            &[format!("127.0.0.1:{}", p(3))],
        ),
        spawn(
            "openshell-gateway",
            GATEWAY,
            &[format!("127.0.0.1:{}", p(4)), format!("[::]:{}", p(5))],
        ),
    ];
    let busy_range = range;
    let free_range = PortRange {
        start: base + 6,
        end: base + 10,
    };

    println!(
        "| other listeners | seed: 11 lsof + ps | nemoclaw scan (netlink) | nemoclaw scan (/proc/net) | netlink dump only | /proc/net read only | scan, nothing in range | seed / nemoclaw |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Whole processes, as a user runs them: `nemoclaw observe` (start-up, runtime, every observer
    // the file asks for) against `ss -ltnpH` and the seed's 11 lsof + ps.
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("nemoclaw.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{}-{}\"\n",
            busy_range.start, free_range.end
        ),
    )
    .expect("write");
    let has_ss = Command::new("ss").arg("-V").output().is_ok();
    let mut whole = Vec::new();
    for n in ns {
        let _crowd = spawn("bench-crowd", CROWD, &[n.to_string()]);
        let found = observe::scan_listeners(&[busy_range]);
        let held = found.processes.len();
        assert_eq!(held, 5, "the five fake gateways are found");
        assert_eq!(seed(busy_range), 5, "the seed method finds them too");

        let (seed_ms, seed_lo, seed_hi) = median_ms(10, || {
            seed(busy_range);
        });
        let (nl, nl_lo, nl_hi) = median_ms(50, || {
            std::hint::black_box(observe::scan_listeners(&[busy_range]));
        });
        let (pn, pn_lo, pn_hi) = median_ms(50, || {
            let raw = sockets::proc_net_listening().unwrap();
            let inodes = raw
                .iter()
                .filter(|s| busy_range.contains(s.port))
                .map(|s| s.inode)
                .collect();
            let uids = raw
                .iter()
                .filter(|s| busy_range.contains(s.port))
                .map(|s| s.uid)
                .collect();
            std::hint::black_box(observe::procfs::find_holders(&inodes, &uids));
        });
        let (dump, _, _) = median_ms(100, || {
            std::hint::black_box(sockets::netlink_listening().unwrap());
        });
        let (read, _, _) = median_ms(100, || {
            std::hint::black_box(sockets::proc_net_listening().unwrap());
        });
        let (idle, _, _) = median_ms(100, || {
            std::hint::black_box(observe::scan_listeners(&[free_range]));
        });
        println!(
            "| {n} | {seed_ms:.1} ({seed_lo:.0}-{seed_hi:.0}) | {nl:.2} ({nl_lo:.2}-{nl_hi:.2}) | {pn:.2} ({pn_lo:.2}-{pn_hi:.2}) | {dump:.2} | {read:.2} | {idle:.2} | {:.0}x |",
            seed_ms / nl
        );
        let (proc_ms, proc_lo, proc_hi) = median_ms(20, || {
            let out = Command::new(env!("CARGO_BIN_EXE_nemoclaw"))
                .args(["observe", "-o", "json", "-f"])
                .arg(&file)
                .env("HOME", home.path())
                .env_remove("XDG_STATE_HOME")
                .output()
                .expect("nemoclaw observe");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        let ss = has_ss.then(|| {
            median_ms(20, || {
                std::hint::black_box(Command::new("ss").arg("-ltnpH").output().expect("ss"));
            })
        });
        whole.push((n, seed_ms, proc_ms, proc_lo, proc_hi, ss));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!();
    println!(
        "| other listeners | seed (processes) | `nemoclaw observe` (whole process) | `ss -ltnpH` | seed / nemoclaw | ss / nemoclaw |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (n, seed_ms, p, lo, hi, ss) in whole {
        let (ss_text, ratio) = match ss {
            Some((m, l, h)) => (format!("{m:.1} ({l:.1}-{h:.1})"), format!("{:.2}x", m / p)),
            None => ("not installed".to_owned(), "-".to_owned()),
        };
        println!(
            "| {n} | {seed_ms:.0} | {p:.1} ({lo:.1}-{hi:.1}) | {ss_text} | {:.0}x | {ratio} |",
            seed_ms / p
        );
    }
}
