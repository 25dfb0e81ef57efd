//! `nemoclaw init --from-host`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{CliError, Exit, context, ui};
use crate::model::{GatewayDesired, Observation, PortRange};
use crate::observe::docker::DockerQuery;
use crate::observe::driver::DriverQuery;

/// Write a desired-state file that describes this host as it is now, so that planning it gives no
/// changes: `nemoclaw init --from-host > nemoclaw.yaml`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Describe what runs on this host (the only source so far).
    #[arg(long, required = true)]
    from_host: bool,
}

pub fn run(_args: &Args) -> Result<Exit, CliError> {
    let uid = context::invoking_uid();
    let home = context::home_dir(uid)?;
    let port = 8080;
    let cluster = GatewayDesired::default_name(port);
    let cluster = format!("openshell-cluster-{cluster}");
    let keys: BTreeSet<String> = crate::spec::semantic::MANAGED_GATEWAY_ENV
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
    let opts = crate::observe::ObserveOptions {
        invoking_uid: uid,
        config_home: context::config_home(uid, &home),
        home: home.clone(),
        ports: vec![
            PortRange::DASHBOARD_DEFAULT,
            PortRange {
                start: port,
                end: port,
            },
        ],
        timeout: std::time::Duration::from_secs(10),
        docker: DockerQuery {
            endpoint: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
            containers: vec![cluster.clone()],
            sandbox_containers: true,
            ..DockerQuery::default()
        },
        gateway_port: Some(port),
        cluster: None,
        cli: Some(crate::observe::openshell::CliQuery {
            candidates: context::openshell_candidates(),
            registered: Vec::new(),
            gateway: None,
            timeout: std::time::Duration::from_secs(15),
        }),
        driver: Some(DriverQuery {
            state_dir: home.join(".local/state/nemoclaw/openshell-docker-gateway"),
            binary_candidates: Vec::new(),
            port,
            env_keys: keys.clone(),
            clear_keys: keys,
            fingerprint_key: None,
        }),
    };
    let observed = context::runtime()?.block_on(crate::observe::observe(&opts));

    let mut y = String::from(
        "# yaml-language-server: $schema=https://nemoclaw.io/schemas/v1alpha1/nemoclaw.schema.json\n",
    );
    let _ = writeln!(
        y,
        "# Written by `nemoclaw init --from-host`: what this host runs now."
    );
    let _ = writeln!(y, "apiVersion: nemoclaw.io/v1alpha1\nkind: Host");
    let legacy = match &observed.docker {
        Some(Observation::Known { value }) => value.containers.get(&cluster).cloned().flatten(),
        _ => None,
    };
    let mut notes = Vec::new();
    match (&legacy, observed.gateway_process.as_ref().and_then(|g| g.process.as_ref())) {
        (Some(c), _) if c.running => {
            let published = c.published.iter().find(|p| p.container_port == crate::plan::gateway::CLUSTER_PORT);
            let host_port = published.map_or(port, |p| p.host_port);
            let _ = writeln!(y, "gateway:\n  runtime: legacy-k3s");
            if host_port != port {
                // The container is `openshell-cluster-nemoclaw`; keep that name on another port.
                let _ = writeln!(y, "  name: nemoclaw");
            }
            let _ = writeln!(y, "  port: {host_port}");
            if published.is_some_and(|p| p.host_ip == "0.0.0.0" || p.host_ip.is_empty()) {
                let _ = writeln!(y, "  bindAddress: 0.0.0.0");
            }
            let _ = writeln!(y, "  image: {}", c.image_ref);
            if !c.privileged {
                let _ = writeln!(y, "  privileged: false");
            }
        }
        (Some(c), _) => notes.push(format!(
            "# The gateway container `{cluster}` is `{}`: add a `gateway` section (runtime: legacy-k3s) to have it started.",
            c.status
        )),
        (None, Some(p)) => {
            let _ = writeln!(y, "gateway:\n  runtime: docker-driver\n  port: {port}");
            if let Observation::Known { value } = &p.exe
                && !value.ends_with(" (deleted)") {
                    let _ = writeln!(y, "  binary: {value}");
                }
        }
        (None, None) => notes.push("# No gateway was found; add a `gateway` section to manage one.".to_owned()),
    }
    // Only live sandboxes are declared: a registry entry alone describes nothing that runs.
    let live: BTreeSet<String> = observed
        .openshell
        .as_ref()
        .and_then(|c| c.sandboxes.known())
        .map(|rows| rows.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    let mut live = live;
    if let Some(Observation::Known { value }) = &observed.docker {
        live.extend(
            value
                .sandbox_containers
                .iter()
                .flatten()
                .map(|c| c.sandbox.clone()),
        );
    }
    let recorded = |name: &str| {
        observed
            .registry
            .known()
            .and_then(|r| r.sandboxes.get(name))
            .and_then(|e| e.dashboard_port)
    };
    if live.is_empty() {
        let _ = writeln!(y, "sandboxes: []");
    } else {
        let _ = writeln!(y, "sandboxes:");
        for name in &live {
            let _ = writeln!(y, "  - name: {name}");
            if let Some(p) = recorded(name).filter(|p| PortRange::DASHBOARD_DEFAULT.contains(*p)) {
                let _ = writeln!(y, "    dashboardPort: {p}");
            }
        }
    }
    let stale: Vec<String> = observed
        .registry
        .known()
        .map(|r| {
            r.sandboxes
                .keys()
                .filter(|n| !live.contains(*n))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !stale.is_empty() {
        notes.push(format!(
            "# Registered but not live (kept in the registry, not declared): {}",
            stale.join(", ")
        ));
    }
    for n in &notes {
        let _ = writeln!(y, "{n}");
    }

    // Planning the file must show no changes; whatever it would still do is turned off, and said.
    let mut text = y.clone();
    if let Ok(desired) = crate::spec::load("nemoclaw.yaml", &text) {
        let plan = crate::plan::plan(&desired, &observed, &Default::default());
        let stops: Vec<&str> = plan
            .changes()
            .filter(|s| s.action == crate::plan::Action::Stop)
            .map(|s| s.address.as_str())
            .collect();
        if !stops.is_empty() {
            let _ = writeln!(
                text,
                "cleanup:\n  # Stale listeners are running ({}); set this to true to have them stopped.\n  staleListeners: false",
                stops.join(", ")
            );
        }
        if let Ok(d) = crate::spec::load("nemoclaw.yaml", &text) {
            let left: Vec<String> = crate::plan::plan(&d, &observed, &Default::default())
                .changes()
                .map(|s| format!("{} {}", s.action.as_str(), s.address))
                .collect();
            if !left.is_empty() {
                ui::eprint(&format!(
                    "note: planning this file would still do: {}\n",
                    left.join(", ")
                ));
            }
        }
    }
    ui::print(&text);
    Ok(Exit::Ok)
}
