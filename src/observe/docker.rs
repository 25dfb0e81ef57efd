//! The Docker engine, through its API (bollard): containers, volumes, networks and images, each
//! looked up by its exact name.
//!
//! Docker's name filters are substring matches (`openshell-cluster-nemoclaw` would match
//! `openshell-cluster-nemoclaw-old`), so objects are inspected by name and the name compared;
//! nothing is ever matched by prefix. A failure anywhere makes the whole Docker observation
//! unknown: a daemon that is down is not a daemon with no containers.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::ListContainersOptionsBuilder;

use crate::model::{
    ContainerFacts, DockerFacts, ImageFacts, MountFacts, NetworkFacts, Observation, PublishedPort,
    VolumeFacts,
};

/// What to look up.
#[derive(Clone, Debug, Default)]
pub struct DockerQuery {
    /// `DOCKER_HOST` (`unix:///path`), or `None` for `/var/run/docker.sock`.
    pub endpoint: Option<String>,
    /// Container names.
    pub containers: Vec<String>,
    /// Volume names.
    pub volumes: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
    /// Image references.
    pub images: Vec<String>,
    /// Whether to list Docker-driver sandbox containers (by label).
    pub sandbox_containers: bool,
}

impl DockerQuery {
    /// Returns whether anything needs Docker.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
            && self.volumes.is_empty()
            && self.networks.is_empty()
            && self.images.is_empty()
            && !self.sandbox_containers
    }
}

/// Connects to the engine at `endpoint` and settles the API version.
pub async fn connect(endpoint: Option<&str>) -> Result<Docker, String> {
    connect_with_version(endpoint).await.map(|(d, _)| d)
}

/// Connects and asks `/version` once: the answer both settles the API version (the lower of the
/// engine's and the client's, as bollard's `negotiate_version` does) and is the server version
/// the observation reports — one round trip where negotiating and then asking again took two.
pub async fn connect_with_version(
    endpoint: Option<&str>,
) -> Result<(Docker, bollard::models::SystemVersion), String> {
    let path = match endpoint {
        None => "/var/run/docker.sock",
        Some(e) => e.strip_prefix("unix://").ok_or_else(|| {
            format!("DOCKER_HOST `{e}` is not a unix socket (`unix:///path`); only local engines are supported")
        })?,
    };
    let unreachable =
        |e: bollard::errors::Error| format!("cannot reach the Docker engine at {path}: {e}");
    let probe =
        Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION).map_err(unreachable)?;
    let version = probe
        .version()
        .await
        .map_err(|e| format!("the Docker engine at {path} does not answer: {e}"))?;
    let server = version
        .api_version
        .as_deref()
        .and_then(|v| v.split_once('.'))
        .and_then(|(a, b)| {
            Some(bollard::ClientVersion {
                major_version: a.parse().ok()?,
                minor_version: b.parse().ok()?,
            })
        })
        .ok_or_else(|| format!("the Docker engine at {path} reported no API version"))?;
    let default = bollard::API_DEFAULT_VERSION;
    let api = if (server.major_version, server.minor_version)
        < (default.major_version, default.minor_version)
    {
        server
    } else {
        bollard::ClientVersion {
            major_version: default.major_version,
            minor_version: default.minor_version,
        }
    };
    let docker = Docker::connect_with_unix(path, 30, &api).map_err(unreachable)?;
    Ok((docker, version))
}

/// Returns whether an API error means "no such object".
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Looks everything in `q` up.
pub async fn observe(q: &DockerQuery) -> Observation<DockerFacts> {
    match observe_inner(q).await {
        Ok(value) => Observation::Known { value },
        Err(reason) => Observation::Unknown { reason },
    }
}

async fn observe_inner(q: &DockerQuery) -> Result<DockerFacts, String> {
    let (docker, version) = connect_with_version(q.endpoint.as_deref()).await?;
    let mut facts = DockerFacts {
        server_version: version.version.unwrap_or_default(),
        ..DockerFacts::default()
    };
    for name in &q.containers {
        facts
            .containers
            .insert(name.clone(), container(&docker, name).await?);
    }
    for name in &q.volumes {
        facts
            .volumes
            .insert(name.clone(), volume(&docker, name).await?);
    }
    for name in &q.networks {
        let found = match docker.inspect_network(name, None).await {
            Ok(n) if n.name.as_deref() == Some(name.as_str()) => Some(NetworkFacts {
                id: n.id.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
            }),
            // Inspect also resolves id prefixes; only the exact name counts.
            Ok(_) => None,
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(format!("inspecting network `{name}`: {e}")),
        };
        facts.networks.insert(name.clone(), found);
    }
    for reference in &q.images {
        let found = match docker.inspect_image(reference).await {
            Ok(i) => Some(ImageFacts {
                id: i.id.unwrap_or_default(),
            }),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(format!("inspecting image `{reference}`: {e}")),
        };
        facts.images.insert(reference.clone(), found);
    }
    if q.sandbox_containers {
        facts.sandbox_containers = Some(sandbox_containers(&docker).await?);
    }
    Ok(facts)
}

/// Lists containers labelled `openshell.ai/managed-by=openshell`.
pub async fn sandbox_containers(
    docker: &Docker,
) -> Result<Vec<crate::model::SandboxContainer>, String> {
    let listed = list_all(docker, "label", "openshell.ai/managed-by=openshell").await?;
    let mut out: Vec<crate::model::SandboxContainer> = listed
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            // The filter is the engine's; check the label exactly ourselves too.
            (labels.get("openshell.ai/managed-by").map(String::as_str) == Some("openshell")).then(
                || {
                    let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                    crate::model::SandboxContainer {
                        name: c
                            .names
                            .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
                            .unwrap_or_default(),
                        id: c.id.unwrap_or_default(),
                        sandbox: labels
                            .get("openshell.ai/sandbox-name")
                            .cloned()
                            .unwrap_or_default(),
                        sandbox_id: labels
                            .get("openshell.ai/sandbox-id")
                            .cloned()
                            .unwrap_or_default(),
                        running: state == "running",
                        status: state,
                    }
                },
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.sandbox, &a.name).cmp(&(&b.sandbox, &b.name)));
    Ok(out)
}

/// Inspects one container by exact name.
pub async fn container(docker: &Docker, name: &str) -> Result<Option<ContainerFacts>, String> {
    let c = match docker.inspect_container(name, None).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(format!("inspecting container `{name}`: {e}")),
    };
    if c.name.as_deref().map(|n| n.trim_start_matches('/')) != Some(name) {
        return Ok(None);
    }
    let state = c.state.unwrap_or_default();
    // The configured bindings, not NetworkSettings.Ports: a stopped container has none of the
    // latter, and what it will publish when started is what matters.
    let mut published: Vec<PublishedPort> = c
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.clone())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(container_port, bindings)| {
            bindings
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |b| {
                    Some(PublishedPort {
                        container_port: container_port.clone(),
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port: b.host_port?.parse().ok()?,
                    })
                })
        })
        .collect();
    published.sort();
    published.dedup();
    let mut mounts: Vec<MountFacts> = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| MountFacts {
            kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
            name: m.name,
            destination: m.destination.unwrap_or_default(),
        })
        .collect();
    mounts.sort();
    let started_at = state.started_at.filter(|s| !s.starts_with("0001-"));
    Ok(Some(ContainerFacts {
        id: c.id.unwrap_or_default(),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code,
        started_at_ms: started_at.as_deref().and_then(super::time::rfc3339_ms),
        started_at,
        finished_at: state.finished_at.filter(|s| !s.starts_with("0001-")),
        image_ref: c.config.and_then(|cfg| cfg.image).unwrap_or_default(),
        image_id: c.image.unwrap_or_default(),
        published,
        mounts,
        gpu: c
            .host_config
            .as_ref()
            .and_then(|h| h.device_requests.as_ref())
            .is_some_and(|d| !d.is_empty()),
        privileged: c.host_config.and_then(|h| h.privileged).unwrap_or(false),
    }))
}

/// Lists every container (running or not) matching one engine-side filter. Engine filters are
/// loose (substrings, prefixes); callers check the exact match themselves.
async fn list_all(
    docker: &Docker,
    key: &str,
    value: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, String> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([(key, vec![value])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing containers with {key}={value}: {e}"))
}

/// Inspects one volume by exact name and finds the containers that mount it.
pub async fn volume(docker: &Docker, name: &str) -> Result<Option<VolumeFacts>, String> {
    let v = match docker.inspect_volume(name).await {
        Ok(v) if v.name == name => v,
        Ok(_) => return Ok(None),
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(format!("inspecting volume `{name}`: {e}")),
    };
    let listed = list_all(docker, "volume", name).await?;
    // The filter is looser than an exact name; keep only exact volume mounts.
    let mut used_by: Vec<String> = listed
        .into_iter()
        .filter(|c| {
            c.mounts
                .iter()
                .flatten()
                .any(|m| m.name.as_deref() == Some(name))
        })
        .filter_map(|c| {
            c.names
                .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
        })
        .collect();
    used_by.sort();
    Ok(Some(VolumeFacts {
        driver: v.driver,
        mountpoint: v.mountpoint,
        used_by,
    }))
}
