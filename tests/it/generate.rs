//! Generated hosts for scale: N declared sandboxes (missing, present or mixed) and L listeners
//! (a third stale with a marker (`openshell-forward`), a third another user's, a third this user's without a marker).
//! Shared by the scale tests (`tests/it/scale.rs`) and `benches/planner.rs` (`#[path]`), so the
//! bench measures exactly the hosts whose plans the tests pin.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use nemoclaw::model::{
    CliFacts, CliStatus, GatewayRegistration, Holders, HostFacts, Listener,
    OBSERVED_FORMAT_VERSION, Observation, Observed, PortRange, ProcessInfo, Registry,
    RegistryEntry, SandboxRow,
};

/// Which declared sandboxes exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// None exists or is registered.
    Missing,
    /// Every one is Ready and registered on its port.
    Present,
    /// Even-numbered ones are present.
    Mixed,
}

/// A host's size.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub sandboxes: usize,
    pub presence: Presence,
    pub listeners: usize,
}

const ME: u32 = 1000;
const BASE: u16 = 20_000;

/// The dashboard range: a port per sandbox, then room for the listeners (four per port).
fn range(s: Shape) -> PortRange {
    let ports = s.sandboxes + s.listeners.div_ceil(4) + 10;
    PortRange {
        start: BASE,
        end: BASE + u16::try_from(ports).expect("fits below 65536"),
    }
}

/// The desired-state file.
pub fn desired_yaml(s: Shape) -> String {
    let r = range(s);
    let mut out = format!(
        "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{}-{}\"\nsandboxes:\n",
        r.start, r.end
    );
    if s.sandboxes == 0 {
        out.push_str("  []\n");
    }
    for i in 0..s.sandboxes {
        out.push_str(&format!(
            "  - name: sb{i}\n    from: ghcr.io/nvidia/nemoclaw/sandbox-base:latest\n    gpu: off\n"
        ));
    }
    out
}

fn present(s: Shape, i: usize) -> bool {
    match s.presence {
        Presence::Missing => false,
        Presence::Present => true,
        Presence::Mixed => i.is_multiple_of(2),
    }
}

/// The observation: CLI 0.0.72 connected to its gateway, the registry, the listeners.
pub fn observed(s: Shape, create_flags: Vec<String>) -> Observed {
    let r = range(s);
    let mut rows = Vec::new();
    let mut registry = BTreeMap::new();
    for i in (0..s.sandboxes).filter(|i| present(s, *i)) {
        let name = format!("sb{i}");
        rows.push(SandboxRow {
            name: name.clone(),
            phase: "Ready".to_owned(),
            id: Some(format!("id-{i}")),
        });
        registry.insert(
            name.clone(),
            RegistryEntry {
                name,
                dashboard_port: Some(BASE + u16::try_from(i).expect("fits")),
                gateway_name: None,
                gateway_port: None,
            },
        );
    }
    let first_listener_port = BASE + u16::try_from(s.sandboxes).expect("fits") + 5;
    let mut listeners = Vec::with_capacity(s.listeners);
    let mut processes = BTreeMap::new();
    for i in 0..s.listeners {
        let port = first_listener_port + u16::try_from(i / 4).expect("fits");
        let pid = 10_000 + u32::try_from(i / 2).expect("fits");
        let kind = (i / 2) % 3;
        let (uid, cmdline) = match kind {
            0 => (
                ME,
                vec![
                    "openshell-forward".to_owned(),
                    "--port".to_owned(),
                    port.to_string(),
                ],
            ),
            1 => (2000, vec!["openclaw-gateway".to_owned()]),
            _ => (ME, vec!["nginx".to_owned()]),
        };
        listeners.push(Listener {
            port,
            address: IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + u8::try_from(i % 4).expect("fits"),
            )),
            inode: 1_000_000 + i as u64,
            socket_uid: uid,
            holders: Holders::Known { pids: vec![pid] },
        });
        processes.insert(
            pid,
            ProcessInfo {
                pid,
                start_time: 5000 + u64::from(pid),
                uid,
                user: None,
                cmdline,
            },
        );
    }
    Observed {
        format_version: OBSERVED_FORMAT_VERSION.to_owned(),
        host: host_facts(),
        scanned_ports: vec![
            r,
            PortRange {
                start: 8080,
                end: 8080,
            },
        ],
        listeners: Observation::Known { value: listeners },
        processes,
        registry: Observation::Known {
            value: Registry {
                path: "/home/alice/.nemoclaw/sandboxes.json".to_owned(),
                present: true,
                sandboxes: registry,
                default_sandbox: None,
            },
        },
        forwards: Observation::Known { value: Vec::new() },
        docker: None,
        gateway_health: None,
        gateway_process: None,
        cluster: None,
        openshell: Some(CliFacts {
            installed: true,
            binary: Some("/usr/bin/openshell".to_owned()),
            version: Observation::Known {
                value: "0.0.72".to_owned(),
            },
            create_flags: Observation::Known {
                value: create_flags,
            },
            list_json: true,
            status: Observation::Known {
                value: CliStatus {
                    gateway: Some("nemoclaw".to_owned()),
                    server: Some("http://127.0.0.1:8080".to_owned()),
                    connected: true,
                    configured: true,
                    detail: None,
                },
            },
            sandboxes: Observation::Known { value: rows },
            lookups: BTreeMap::new(),
            forwards: Observation::Known { value: Vec::new() },
            gateways: Observation::Known {
                value: vec![GatewayRegistration {
                    name: "nemoclaw".to_owned(),
                    endpoint: "http://127.0.0.1:8080".to_owned(),
                    active: true,
                }],
            },
        }),
        openclaw: BTreeMap::new(),
    }
}

/// Who observes in every built observation: alice (uid 1000), the engine pid 100 under pid 90.
pub fn host_facts() -> HostFacts {
    HostFacts {
        invoking_uid: ME,
        invoking_user: Some("alice".to_owned()),
        engine_pid: 100,
        engine_ancestors: vec![90, 1],
        listener_source: "netlink".to_owned(),
        observed_at_ms: 1_795_000_000_000,
        nvidia_gpus: Observation::Known { value: Vec::new() },
    }
}

/// The real 0.0.72 CLI's `sandbox create` flags, from its recorded `--help`.
pub fn create_flags() -> Vec<String> {
    let help = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openshell/0.0.72/sandbox-create-help.stdout"
    ))
    .expect("the recorded help");
    nemoclaw::observe::openshell::parse::help_flags(&help)
}
