//! `nemoclaw agent`: this host's `NemoClawHost` resources, planned against the host and reported
//! back as their status.
//!
//! Each round lists the resources in `--namespace` whose `spec.host` (else `metadata.name`) is
//! this host, reads `spec.desired` as a desired-state file (the same checks as `-f`), observes,
//! plans, and writes `status` with server-side apply (field manager `nemoclaw-agent`). It plans
//! only: a resource that asks for `spec.apply: auto` or carries `spec.approve` gets a `False`
//! `Applied` condition saying so, and nothing on the host changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{CliError, Exit, context, ui};

mod lease;
use crate::fleet::status::{Applied, status};
use crate::model::Millis;
use crate::spec::crd;

/// Plan this host's NemoClawHost resources and report each plan as the resource's status.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// Time between rounds (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = Millis::parse)]
    interval: Millis,
    /// One round, then exit: 0 when every resource's status was written, 1 otherwise.
    #[arg(long)]
    once: bool,
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

pub fn run(args: &Args) -> Result<Exit, CliError> {
    let host = match &args.host {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| CliError::from_error("cannot read this machine's hostname", &e))?
            .trim()
            .to_owned(),
    };
    let rt = context::runtime()?;
    rt.block_on(async {
        let client = client(args.kubeconfig.as_deref()).await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &args.namespace, &resource());
        let lease = lease::HostLease::new(client, &args.namespace, &host, args.interval.duration());
        let mut backoff = Duration::from_secs(1);
        loop {
            // One agent per host: the round runs only under the host's lease.
            let round = match lease.acquire().await {
                Ok(()) => {
                    let r = round(&api, &args.namespace, &host).await;
                    if args.once {
                        lease.release().await;
                    }
                    r
                }
                Err(e) => Err(e),
            };
            if args.once {
                return round;
            }
            let wait = match &round {
                Ok(_) => {
                    backoff = Duration::from_secs(1);
                    args.interval.duration()
                }
                Err(e) => {
                    ui::eprint(&format!("error: {}\n", e.message));
                    backoff =
                        (backoff * 2).min(args.interval.duration().max(Duration::from_secs(1)));
                    backoff
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = tokio::signal::ctrl_c() => return Ok(Exit::Interrupted),
            }
        }
    })
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

/// One round over every resource of this host. Each one's outcome is printed as a line.
async fn round(api: &Api<DynamicObject>, ns: &str, host: &str) -> Result<Exit, CliError> {
    let list = api.list(&ListParams::default()).await.map_err(|e| {
        CliError::from_error(
            format!("cannot list {} resources in namespace `{ns}`", crd::KIND),
            &e,
        )
        .hint("install the definition with `nemoclaw crd | kubectl apply -f -`")
    })?;
    let mine: Vec<&DynamicObject> = list
        .items
        .iter()
        .filter(|o| {
            let named = o.data["spec"]["host"]
                .as_str()
                .or(o.metadata.name.as_deref());
            named == Some(host)
        })
        .collect();
    if mine.is_empty() {
        ui::print(&format!(
            "No {} for host `{host}` in namespace `{ns}`.\n",
            crd::KIND
        ));
        return Ok(Exit::Ok);
    }
    let mut exit = Exit::Ok;
    for obj in mine {
        let name = obj.metadata.name.clone().unwrap_or_default();
        match reconcile(api, obj, &format!("{ns}/{name}")).await {
            Ok(line) => ui::print(&format!("{ns}/{name}: {line}\n")),
            Err(e) => {
                ui::eprint(&format!("{ns}/{name}: error: {}\n", e.message));
                exit = Exit::Error;
            }
        }
    }
    Ok(exit)
}

/// Plans one resource and writes its status. Returns the line to print.
async fn reconcile(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    shown: &str,
) -> Result<String, CliError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = crate::observe::time::format_rfc3339(crate::observe::now_ms());
    let desired = match desired_of(obj, shown) {
        Ok(d) => d,
        Err(why) => {
            let status = json!({
                "observedGeneration": generation,
                "conditions": [{
                    "type": "Planned", "status": "False", "reason": "InvalidDesired",
                    "message": why, "lastTransitionTime": now, "observedGeneration": generation,
                }],
                "agentVersion": env!("CARGO_PKG_VERSION"),
            });
            write_status(api, &name, status).await?;
            return Err(CliError::new(format!("spec.desired is invalid: {why}")));
        }
    };
    let opts = context::observe_options(Some(&desired))?;
    let observed = crate::observe::observe(&opts).await;
    let journal = context::state_dir()?.join("journal.jsonl");
    let hold = super::recovery::hold_only(&journal, &observed);
    let plan = crate::plan::plan(&desired, &observed, &super::plan::options(&[], hold));
    let spec = &obj.data["spec"];
    let applied = if spec["apply"].as_str() == Some("auto") || !spec["approve"].is_null() {
        Applied::Refused(
            "this agent plans only: `spec.apply: auto` and `spec.approve` are not carried out by it; apply on the host with `nemoclaw apply -f`".to_owned(),
        )
    } else {
        Applied::PlanOnly
    };
    write_status(
        api,
        &name,
        status(generation, &plan, &observed, &applied, &now),
    )
    .await?;
    Ok(crate::plan::render::summary(&plan) + " (status written)")
}

/// `spec.desired` as a desired-state file, checked as `-f` checks one.
fn desired_of(obj: &DynamicObject, shown: &str) -> Result<crate::model::Desired, String> {
    let Some(Value::Object(body)) = obj.data["spec"].get("desired") else {
        return Err("there is no `spec.desired` mapping".to_owned());
    };
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".to_owned(), json!(crate::spec::API_VERSION));
    doc.insert("kind".to_owned(), json!("Host"));
    doc.extend(
        body.iter()
            .filter(|(k, _)| *k != "apiVersion" && *k != "kind")
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    // JSON is YAML: the same bounded front end and checks as a file.
    let text = serde_json::to_string_pretty(&Value::Object(doc)).map_err(|e| e.to_string())?;
    let mut desired = crate::spec::load(shown, &text).map_err(|diags| {
        diags
            .iter()
            .take(3)
            .map(|d| format!("`{}`: {}", d.path, d.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    context::finish_desired(&mut desired, shown).map_err(|e| e.message)?;
    Ok(desired)
}

async fn write_status(api: &Api<DynamicObject>, name: &str, status: Value) -> Result<(), CliError> {
    let patch = json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": crd::KIND,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(crate::fleet::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| CliError::from_error(format!("cannot write the status of `{name}`"), &e))
}
