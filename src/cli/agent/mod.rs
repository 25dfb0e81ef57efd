//! `nemoclaw agent`: this host's `NemoClawHost` resources, planned against the host and reported
//! back as their status.
//!
//! The resources are those in `--namespace` (selected by `--selector`) whose `spec.host` (else
//! `metadata.name`) is this host: a kube-runtime controller reconciles each on change and every
//! `--interval` (`controller.rs`); `--once` lists and reconciles each once (here). A reconcile
//! reads `spec.desired` as a desired-state file (the same checks as `-f`), observes, plans, and
//! writes `status` with server-side apply (field manager `nemoclaw-agent`). With
//! `spec.apply: auto` it applies what needs no consent (up to `disrupt`), exactly as `nemoclaw
//! apply` does — host lock, journal, parallel steps, a fresh look to judge convergence; with
//! `spec.approve` it applies the plan whose sha256 it names, with that consent, and nothing when
//! the fresh plan is another (`Stale`). Never a `replace` or `destroy` without an approval.

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use std::path::{Path, PathBuf};

use super::{CliError, Exit, context, ui};

mod controller;
mod events;
mod lease;
mod reconcile;
mod reviewed;
mod serve;
use crate::model::Millis;
use crate::spec::crd;
use serve::metrics;

/// Where this host's NemoClawHost resources are: shared by `agent` and `plan --from-cluster`.
#[derive(Debug, clap::Args)]
pub struct Where {
    /// The kubeconfig to reach the cluster. Default: `KUBECONFIG`, else `~/.kube/config`, else
    /// the in-cluster service account.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The namespace of the NemoClawHost resources.
    #[arg(short = 'n', long, value_name = "NS", default_value = "nemoclaw")]
    namespace: String,
    /// This host's name, as the resources' `spec.host` says it. Default: the machine's hostname.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Only the resources with these labels (`kubectl -l` syntax), selected by the API server:
    /// with `nemoclaw.io/host=<host>` on each resource, an agent is sent its own resources
    /// and their changes only, not the whole namespace's (docs/fleet.md).
    #[arg(short = 'l', long, value_name = "LABELS")]
    selector: Option<String>,
}

/// Reconcile this host's NemoClawHost resources: plan each against the host, apply what its spec
/// allows, and report the plan as its status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: Where,
    /// How often each resource is reconciled when nothing changes (`30s`, `2m`); a spec change is
    /// reconciled at once.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = Millis::parse)]
    interval: Millis,
    /// List and reconcile each resource once, then exit: 0 when every one was reconciled, 1
    /// otherwise.
    #[arg(long)]
    once: bool,
    /// Plan against a saved observation (`nemoclaw observe -o json`) instead of this host: a dry
    /// run of the agent, and how `scripts/measure-fleet` simulates many hosts. Nothing is applied.
    #[arg(long, value_name = "SNAPSHOT")]
    observed: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn resource() -> ApiResource {
    ApiResource {
        group: crd::GROUP.to_owned(),
        version: crd::VERSION.to_owned(),
        api_version: format!("{}/{}", crd::GROUP, crd::VERSION),
        kind: crd::KIND.to_owned(),
        plural: crd::PLURAL.to_owned(),
    }
}

fn host_name(given: Option<&String>) -> Result<String, CliError> {
    match given {
        Some(h) => Ok(h.clone()),
        None => Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| CliError::from_error("cannot read this machine's hostname", &e))?
            .trim()
            .to_owned()),
    }
}

/// `plan --from-cluster`: the one NemoClawHost of this host, read as its desired state.
pub fn desired_from_cluster(at: &Where) -> Result<crate::model::Desired, CliError> {
    let host = host_name(at.host.as_ref())?;
    let rt = context::runtime()?;
    let client = rt.block_on(client(at.kubeconfig.as_deref()))?;
    let api: Api<DynamicObject> = {
        let _inside = rt.enter();
        Api::namespaced_with(client, &at.namespace, &resource())
    };
    let mine = list_mine(&rt, &api, &at.namespace, at.selector.as_deref(), &host)?;
    let [obj] = mine.as_slice() else {
        return Err(CliError::new(format!(
            "{} {} for host `{host}` in namespace `{}`; --from-cluster plans exactly one",
            mine.len(),
            crd::KIND,
            at.namespace
        ))
        .hint("pass `--host NAME` or `--namespace NS`, or plan the manifest with `-f`"));
    };
    let shown = format!(
        "{}/{}",
        at.namespace,
        obj.metadata.name.as_deref().unwrap_or_default()
    );
    reconcile::desired_of(obj, &shown)
        .map_err(|why| CliError::new(format!("`{shown}`: spec.desired is invalid: {why}")))
}

/// The namespace's NemoClawHosts (those `--selector` selects) that are for `host`, in the
/// server's order.
fn list_mine(
    rt: &tokio::runtime::Runtime,
    api: &Api<DynamicObject>,
    ns: &str,
    selector: Option<&str>,
    host: &str,
) -> Result<Vec<DynamicObject>, CliError> {
    let mut params = ListParams::default();
    if let Some(labels) = selector {
        params = params.labels(labels);
    }
    let list = rt.block_on(api.list(&params)).map_err(|e| {
        CliError::from_error(
            format!("cannot list {} resources in namespace `{ns}`", crd::KIND),
            &e,
        )
        .hint("install the definition with `nemoclaw crd | kubectl apply -f -`")
    })?;
    Ok(list.items.into_iter().filter(|o| is_for(o, host)).collect())
}

/// A fingerprint of a resource's spec: what a round plans from.
fn spec_hash(obj: &DynamicObject) -> String {
    crate::model::sha256_hex(obj.data["spec"].to_string().as_bytes())
}

/// Whether `obj` is for `host`: its `spec.host`, else its name.
fn is_for(obj: &DynamicObject, host: &str) -> bool {
    obj.data["spec"]["host"]
        .as_str()
        .or(obj.metadata.name.as_deref())
        == Some(host)
}

pub fn run(args: &Args) -> Result<Exit, CliError> {
    let host = host_name(args.at.host.as_ref())?;
    let snapshot = match &args.observed {
        Some(path) => Some(context::load_observed(path)?),
        None => None,
    };
    let rt = context::runtime()?;
    if let Some(addr) = args.metrics_addr {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| {
                CliError::from_error(format!("cannot listen for metrics on {addr}"), &e)
            })?;
        rt.spawn(serve::serve(listener));
    }
    let client = rt.block_on(client(args.at.kubeconfig.as_deref()))?;
    let api: Api<DynamicObject> = {
        let _inside = rt.enter();
        Api::namespaced_with(client.clone(), &args.at.namespace, &resource())
    };
    let lease = lease::HostLease::new(client, &args.at.namespace, &host, args.interval.duration());
    let scope = controller::Scope {
        api,
        namespace: args.at.namespace.clone(),
        selector: args.at.selector.clone(),
        host,
        snapshot,
        interval: args.interval.duration(),
        lease,
    };
    if args.once {
        once(&rt, &scope)
    } else {
        controller::run(&rt, scope)
    }
}

/// `--once`: under the host's lease, every resource of this host listed and reconciled once;
/// the lease is given up afterwards, so the next agent need not wait for it to expire.
fn once(rt: &tokio::runtime::Runtime, at: &controller::Scope) -> Result<Exit, CliError> {
    rt.block_on(at.lease.acquire())?;
    let renewing = at.lease.keep_renewed(rt.handle());
    let result = reconcile_listed(rt, at);
    renewing.abort();
    rt.block_on(at.lease.release());
    result
}

fn reconcile_listed(
    rt: &tokio::runtime::Runtime,
    at: &controller::Scope,
) -> Result<Exit, CliError> {
    let (ns, host) = (&at.namespace, &at.host);
    let mine = list_mine(rt, &at.api, ns, at.selector.as_deref(), host)?;
    if mine.is_empty() {
        ui::print(&format!(
            "No {} for host `{host}` in namespace `{ns}`.\n",
            crd::KIND
        ));
        return Ok(Exit::Ok);
    }
    let mut exit = Exit::Ok;
    for obj in &mine {
        let failed = controller::reconcile_one(rt.handle(), at, obj).is_err();
        // Counted when done, with its error, as the controller counts them.
        serve::metrics(|m| {
            m.reconciles += 1;
            m.errors += u64::from(failed);
        });
        if failed {
            exit = Exit::Error;
        }
    }
    Ok(exit)
}

async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                CliError::from_error(
                    format!("cannot read the kubeconfig `{}`", path.display()),
                    &e,
                )
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| CliError::from_error("the kubeconfig is not usable", &e))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            CliError::from_error("no cluster configuration found", &e)
                .hint("pass `--kubeconfig FILE`")
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| CliError::from_error("cannot build the cluster client", &e))
}
