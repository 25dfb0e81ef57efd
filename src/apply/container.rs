//! Legacy gateway container steps through the Docker API. Each re-inspects the container by
//! exact name first and refuses (stale) when its id or state moved since the plan.
//!
//! No step here removes a volume: `replace` removes the container only (`v=false`), and the
//! only volume removal is [`delete_volume`], for a `delete` step naming the volume exactly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, NetworkConnectRequest,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::StepOutcome;
use crate::observe::docker::{self as observe_docker, is_not_found};
use crate::observe::health;
use crate::plan::{ContainerSpec, ContainerTarget, HealthWait};

/// Seconds Docker waits after SIGTERM before SIGKILL when stopping the gateway (k3s needs time).
const STOP_TIMEOUT_S: i32 = 10;

/// Connects, or fails the step with the reason.
pub async fn connect(endpoint: Option<&str>) -> Result<Docker, StepOutcome> {
    observe_docker::connect(endpoint)
        .await
        .map_err(StepOutcome::Failed)
}

async fn current(
    docker: &Docker,
    name: &str,
) -> Result<Option<crate::model::ContainerFacts>, StepOutcome> {
    observe_docker::container(docker, name)
        .await
        .map_err(StepOutcome::Failed)
}

/// Re-inspects the container and returns it if it is still the one planned against.
async fn planned(
    docker: &Docker,
    t: &ContainerTarget,
) -> Result<crate::model::ContainerFacts, StepOutcome> {
    let now = current(docker, &t.name).await?;
    same(t, now.as_ref())?;
    now.ok_or_else(|| StepOutcome::Stale(format!("container `{}` no longer exists", t.name)))
}

/// Checks that the container is the one planned against.
fn same(
    t: &ContainerTarget,
    now: Option<&crate::model::ContainerFacts>,
) -> Result<(), StepOutcome> {
    match (now, &t.id) {
        (None, _) => Err(StepOutcome::Stale(format!(
            "container `{}` no longer exists",
            t.name
        ))),
        (Some(c), Some(id)) if &c.id != id => Err(StepOutcome::Stale(format!(
            "container `{}` was recreated since the plan (id {} now, {} planned)",
            t.name,
            &c.id[..c.id.len().min(12)],
            &id[..id.len().min(12)]
        ))),
        _ => Ok(()),
    }
}

/// Creates the network and volume if needed, then the container (not started).
pub async fn create(
    docker: &Docker,
    t: &ContainerTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let Some(spec) = &t.spec else {
        return StepOutcome::Failed("a create step without a container spec".to_owned());
    };
    match current(docker, &t.name).await {
        Ok(None) => {}
        Ok(Some(c)) => {
            return StepOutcome::Stale(format!(
                "container `{}` exists now (id {}); it was missing when planned",
                t.name,
                &c.id[..c.id.len().min(12)]
            ));
        }
        Err(e) => return e,
    }
    if let Err(e) = ensure_network_and_volume(docker, spec, progress).await {
        return e;
    }
    progress(&format!("creating container from `{}`", spec.image));
    match create_container(docker, &t.name, spec).await {
        Ok(id) => StepOutcome::Done(format!(
            "created container {} with volume `{}` at {}",
            &id[..id.len().min(12)],
            spec.volume,
            spec.volume_target
        )),
        Err(e) => e,
    }
}

async fn ensure_network_and_volume(
    docker: &Docker,
    spec: &ContainerSpec,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), StepOutcome> {
    if !spec.network_exists {
        progress(&format!("creating network `{}`", spec.network));
        // Attachable, as OpenShell creates it (`docker.rs:385-426`).
        let req = NetworkCreateRequest {
            name: spec.network.clone(),
            driver: Some("bridge".to_owned()),
            attachable: Some(true),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => {}
            // Created meanwhile by someone else: the same outcome.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => {
                return Err(StepOutcome::Failed(format!(
                    "creating network `{}`: {e}",
                    spec.network
                )));
            }
        }
    }
    match docker.inspect_volume(&spec.volume).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            if spec.volume_exists {
                return Err(StepOutcome::Stale(format!(
                    "volume `{}` existed when planned and is gone now; not creating an empty one in its place",
                    spec.volume
                )));
            }
            progress(&format!("creating volume `{}`", spec.volume));
            let req = VolumeCreateRequest {
                name: Some(spec.volume.clone()),
                ..Default::default()
            };
            docker.create_volume(req).await.map_err(|e| {
                StepOutcome::Failed(format!("creating volume `{}`: {e}", spec.volume))
            })?;
        }
        Err(e) => {
            return Err(StepOutcome::Failed(format!(
                "inspecting volume `{}`: {e}",
                spec.volume
            )));
        }
    }
    Ok(())
}

async fn create_container(
    docker: &Docker,
    name: &str,
    spec: &ContainerSpec,
) -> Result<String, StepOutcome> {
    let port_bindings = HashMap::from([(
        spec.container_port.clone(),
        Some(vec![PortBinding {
            host_ip: Some(spec.host_ip.clone()),
            host_port: Some(spec.host_port.to_string()),
        }]),
    )]);
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        hostname: Some(spec.hostname.clone()),
        cmd: Some(spec.cmd.clone()),
        exposed_ports: Some(vec![spec.container_port.clone()]),
        host_config: Some(HostConfig {
            privileged: Some(spec.privileged),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::HOST),
            binds: Some(vec![format!("{}:{}", spec.volume, spec.volume_target)]),
            port_bindings: Some(port_bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            network_mode: Some(spec.network.clone()),
            extra_hosts: Some(spec.extra_hosts.clone()),
            // OpenShell's legacy request (`docker.rs:53-65,652-673`): every NVIDIA GPU.
            device_requests: spec.gpu.then(|| {
                vec![bollard::models::DeviceRequest {
                    driver: Some("nvidia".to_owned()),
                    count: Some(-1),
                    capabilities: Some(vec![vec![
                        "gpu".to_owned(),
                        "utility".to_owned(),
                        "compute".to_owned(),
                    ]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map(|r| r.id)
        .map_err(|e| StepOutcome::Failed(format!("creating container `{name}`: {e}")))
}

/// Starts a stopped (or just created) container and waits for the gateway to answer.
pub async fn start(
    docker: &Docker,
    t: &ContainerTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let now = match planned(docker, t).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if now.running {
        return StepOutcome::Stale(format!(
            "container `{}` is already running; it was `{}` when planned",
            t.name,
            t.status.as_deref().unwrap_or("missing")
        ));
    }
    // The gateway container (the one that waits for health) is on its own network, which
    // OpenShell's start recreates and reconnects (`docker.rs:1152`): a network removed while it
    // was stopped is made again and the container attached, rather than a failed start.
    if t.wait.is_some()
        && let Err(e) = ensure_attached(docker, &t.name, progress).await
    {
        return e;
    }
    progress("starting container");
    if let Err(e) = docker.start_container(&t.name, None).await {
        return StepOutcome::Failed(format!("starting container `{}`: {e}", t.name));
    }
    wait_healthy(docker, &t.name, t.wait.as_ref(), "started", progress).await
}

/// The gateway container's network (named as the container) exists and the container is on it.
async fn ensure_attached(
    docker: &Docker,
    name: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), StepOutcome> {
    let network_id = match docker.inspect_network(name, None).await {
        Ok(n) => n.id,
        Err(e) if is_not_found(&e) => {
            progress(&format!("network `{name}` is gone; creating it again"));
            let req = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                attachable: Some(true),
                ..Default::default()
            };
            Some(
                docker
                    .create_network(req)
                    .await
                    .map_err(|e| StepOutcome::Failed(format!("creating network `{name}`: {e}")))?
                    .id,
            )
        }
        Err(e) => {
            return Err(StepOutcome::Failed(format!(
                "inspecting network `{name}`: {e}"
            )));
        }
    };
    let c = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| StepOutcome::Failed(format!("inspecting container `{name}`: {e}")))?;
    let endpoint = c
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(name));
    // Attached to a network of that name that no longer exists (removed and made again): the
    // old endpoint is dropped first, or the start fails with "network … not found".
    if let Some(ep) = &endpoint
        && ep.network_id.is_some()
        && ep.network_id != network_id
    {
        progress(&format!(
            "dropping `{name}`'s endpoint on the removed network"
        ));
        docker
            .disconnect_network(
                name,
                bollard::models::NetworkDisconnectRequest {
                    container: name.to_owned(),
                    force: Some(true),
                },
            )
            .await
            .map_err(|e| StepOutcome::Failed(format!("disconnecting `{name}`: {e}")))?;
    }
    if endpoint.is_none() || endpoint.as_ref().and_then(|e| e.network_id.clone()) != network_id {
        progress(&format!(
            "connecting container `{name}` to network `{name}`"
        ));
        docker
            .connect_network(
                name,
                NetworkConnectRequest {
                    container: name.to_owned(),
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|e| StepOutcome::Failed(format!("connecting `{name}` to its network: {e}")))?;
    }
    Ok(())
}

/// Restarts a running container and waits for the gateway to answer.
pub async fn restart(
    docker: &Docker,
    t: &ContainerTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    if let Err(e) = planned(docker, t).await {
        return e;
    }
    progress("restarting container");
    let options = RestartContainerOptionsBuilder::default()
        .t(STOP_TIMEOUT_S)
        .build();
    if let Err(e) = docker.restart_container(&t.name, Some(options)).await {
        return StepOutcome::Failed(format!("restarting container `{}`: {e}", t.name));
    }
    wait_healthy(docker, &t.name, t.wait.as_ref(), "restarted", progress).await
}

/// Stops and removes the container (never its volume), creates it again from the spec with the
/// same volume, starts it and waits for the gateway to answer.
pub async fn replace(
    docker: &Docker,
    t: &ContainerTarget,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let Some(spec) = &t.spec else {
        return StepOutcome::Failed("a replace step without a container spec".to_owned());
    };
    if let Err(e) = planned(docker, t).await {
        return e;
    }
    progress("stopping container");
    let stop = StopContainerOptionsBuilder::default()
        .t(STOP_TIMEOUT_S)
        .build();
    if let Err(e) = docker.stop_container(&t.name, Some(stop)).await {
        return StepOutcome::Failed(format!("stopping container `{}`: {e}", t.name));
    }
    progress("removing container (its volume stays)");
    let remove = RemoveContainerOptionsBuilder::default()
        .v(false)
        .force(false)
        .build();
    if let Err(e) = docker.remove_container(&t.name, Some(remove)).await {
        return StepOutcome::Failed(format!("removing container `{}`: {e}", t.name));
    }
    let spec = ContainerSpec {
        volume_exists: true,
        network_exists: true,
        ..spec.clone()
    };
    if let Err(e) = ensure_network_and_volume(docker, &spec, progress).await {
        return e;
    }
    progress(&format!("creating container from `{}`", spec.image));
    if let Err(e) = create_container(docker, &t.name, &spec).await {
        return e;
    }
    progress("starting container");
    if let Err(e) = docker.start_container(&t.name, None).await {
        return StepOutcome::Failed(format!("starting the new container `{}`: {e}", t.name));
    }
    wait_healthy(
        docker,
        &t.name,
        t.wait.as_ref(),
        "recreated with the same volume",
        progress,
    )
    .await
}

/// Polls the gateway port until it answers, noticing at once when the container exits.
async fn wait_healthy(
    docker: &Docker,
    name: &str,
    wait: Option<&HealthWait>,
    what: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let Some(w) = wait else {
        return StepOutcome::Done(what.to_owned());
    };
    progress(&format!(
        "waiting up to {} for the gateway to answer on port {}",
        w.timeout, w.port
    ));
    let started = Instant::now();
    let deadline = started + w.timeout.duration();
    let port = w.port;
    loop {
        let h = tokio::task::spawn_blocking(move || health::probe(port, Duration::from_secs(1)))
            .await
            .unwrap_or(crate::model::Health {
                tcp_open: false,
                http_status: None,
                answered: false,
                detail: Some("probe failed".to_owned()),
            });
        if h.alive() {
            return StepOutcome::Done(format!(
                "{what}; the gateway answered HTTP {} after {} ms",
                h.http_status.unwrap_or(0),
                started.elapsed().as_millis()
            ));
        }
        match current(docker, name).await {
            Ok(Some(c)) if !c.running => {
                return StepOutcome::Failed(format!(
                    "container `{name}` stopped again (status `{}`, exit code {}) before the gateway answered",
                    c.status,
                    c.exit_code.map_or("unknown".to_owned(), |e| e.to_string())
                ));
            }
            Ok(None) => {
                return StepOutcome::Failed(format!(
                    "container `{name}` disappeared while starting"
                ));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return StepOutcome::Failed(format!(
                "{what}, but the gateway did not answer on port {port} within {} ({})",
                w.timeout,
                h.detail
                    .unwrap_or_else(|| format!("HTTP {:?}", h.http_status))
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes a volume by exact name, only if it still exists and no container mounts it.
pub async fn delete_volume(docker: &Docker, name: &str) -> StepOutcome {
    match observe_docker::volume(docker, name).await {
        Ok(None) => StepOutcome::Stale(format!("volume `{name}` no longer exists")),
        Ok(Some(v)) if !v.used_by.is_empty() => StepOutcome::Stale(format!(
            "volume `{name}` is now mounted by {}; not deleted",
            v.used_by.join(", ")
        )),
        Ok(Some(_)) => {
            let options = RemoveVolumeOptionsBuilder::default().force(false).build();
            match docker.remove_volume(name, Some(options)).await {
                Ok(()) => StepOutcome::Done(format!("deleted volume `{name}`")),
                Err(e) => StepOutcome::Failed(format!("deleting volume `{name}`: {e}")),
            }
        }
        Err(e) => StepOutcome::Failed(e),
    }
}
