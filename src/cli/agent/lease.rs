//! One agent per host: a `coordination.k8s.io/v1` Lease `nemoclaw-<host>` in the resources'
//! namespace, held while an agent reconciles. Taken when absent, expired or already ours; renewed
//! each round; a second agent for the same host is refused, naming the holder and how long ago it
//! renewed. Updates carry the lease's `resourceVersion`, so two agents racing for it cannot both
//! win (the loser gets a 409 and tries again next round).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};

use crate::cli::CliError;

/// The lease of one host, as this process holds it.
#[derive(Clone)]
pub struct HostLease {
    api: Api<Lease>,
    name: String,
    /// `<hostname>/<pid>`: which agent process holds it.
    identity: String,
    /// How long a holder that stopped renewing keeps it: two rounds, at least 30 s.
    duration: Duration,
}

impl HostLease {
    /// The lease for `host` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, host: &str, interval: Duration) -> Self {
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self {
            api: Api::namespaced(client, namespace),
            name: format!("nemoclaw-{host}"),
            identity: format!("{}/{}", machine.trim(), std::process::id()),
            duration: (interval * 2).max(Duration::from_secs(30)),
        }
    }

    /// Takes or renews the lease; `Err` names the agent that holds it.
    pub async fn acquire(&self) -> Result<(), CliError> {
        let now = chrono_now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        };
        let err = |what: &str, e: kube::Error| {
            CliError::from_error(format!("cannot {what} the lease `{}`", self.name), &e)
        };
        match self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| err("read", e))?
        {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        ..spec
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
                    .map_err(|e| err("create", e))
            }
            Some(mut lease) => {
                let held = lease.spec.clone().unwrap_or_default();
                let holder = held.holder_identity.clone().unwrap_or_default();
                let renewed = held.renew_time.as_ref().map(|t| t.0);
                let ttl = held.lease_duration_seconds.unwrap_or(0);
                let age = renewed.map(|t| now.as_second() - t.as_second());
                let live = age.is_some_and(|a| a < i64::from(ttl));
                if !holder.is_empty() && holder != self.identity && live {
                    return Err(CliError::new(format!(
                        "another agent holds the lease `{}`: `{holder}`, renewed {}s ago (it expires after {ttl}s without renewal)",
                        self.name,
                        age.unwrap_or(0)
                    ))
                    .hint("one agent per host: stop the other one, or wait until its lease expires"));
                }
                let acquire = if holder == self.identity {
                    held.acquire_time
                } else {
                    Some(MicroTime(now))
                };
                lease.spec = Some(LeaseSpec {
                    acquire_time: acquire,
                    lease_transitions: Some(
                        held.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity),
                    ),
                    ..spec
                });
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
                    .map_err(|e| err("renew", e))
            }
        }
    }

    /// Renews the lease every third of its duration while a round runs — an apply can outlast
    /// the lease (a gateway restart waits up to 30 s) — until the returned task is aborted.
    pub fn keep_renewed(&self, rt: &tokio::runtime::Handle) -> tokio::task::JoinHandle<()> {
        let lease = self.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(lease.duration / 3).await;
                if let Err(e) = lease.acquire().await {
                    tracing::warn!("cannot renew the lease `{}`: {}", lease.name, e.message);
                }
            }
        })
    }

    /// Gives the lease up (after `--once`, at shutdown), so the next agent need not wait for it
    /// to expire — only while this process holds it, and only that version of it (a lease another
    /// agent took over in between is left alone).
    pub async fn release(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        let _ = self.api.delete(&self.name, &params).await;
    }
}

fn chrono_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
