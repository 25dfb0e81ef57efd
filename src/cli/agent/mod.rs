//! `nemoclaw agent`: this host's `NemoClawHost` resources, planned against the host and reported
//! back as their status.
//!
//! Each round lists the resources in `--namespace` whose `spec.host` (else `metadata.name`) is
//! this host, reads `spec.desired` as a desired-state file (the same checks as `-f`), observes,
//! plans, and writes `status` with server-side apply (field manager `nemoclaw-agent`). With
//! `spec.apply: auto` it applies what needs no consent (up to `disrupt`), exactly as `nemoclaw
//! apply` does — host lock, journal, parallel steps, a fresh look to judge convergence; with
//! `spec.approve` it applies the plan whose sha256 it names, with that consent, and nothing when
//! the fresh plan is another (`Stale`). Never a `replace` or `destroy` without an approval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{CliError, Exit, context, ui};

mod events;
mod lease;
use crate::fleet::status::{Applied, status};
use crate::model::Millis;
use crate::spec::crd;

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
}

/// Plan this host's NemoClawHost resources and report each plan as the resource's status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: Where,
    /// Time between rounds (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = Millis::parse)]
    interval: Millis,
    /// One round, then exit: 0 when every resource's status was written, 1 otherwise.
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

/// This process's metrics (one agent per process).
static METRICS: std::sync::LazyLock<std::sync::Mutex<crate::fleet::metrics::Metrics>> =
    std::sync::LazyLock::new(Default::default);

fn metrics(update: impl FnOnce(&mut crate::fleet::metrics::Metrics)) {
    if let Ok(mut m) = METRICS.lock() {
        update(&mut m);
    }
}

/// Answers `GET /metrics` with the text format; anything else with 404.
async fn serve_metrics(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                let text = METRICS.lock().map(|m| m.render()).unwrap_or_default();
                ("200 OK", text)
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
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
    let mine = list_mine(&rt, &api, &at.namespace, &host)?;
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
    desired_of(obj, &shown)
        .map_err(|why| CliError::new(format!("`{shown}`: spec.desired is invalid: {why}")))
}

/// The namespace's NemoClawHosts that are for `host`, in the server's order.
fn list_mine(
    rt: &tokio::runtime::Runtime,
    api: &Api<DynamicObject>,
    ns: &str,
    host: &str,
) -> Result<Vec<DynamicObject>, CliError> {
    let list = rt.block_on(api.list(&ListParams::default())).map_err(|e| {
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
        rt.spawn(serve_metrics(listener));
    }
    let client = rt.block_on(client(args.at.kubeconfig.as_deref()))?;
    let api: Api<DynamicObject> = {
        let _inside = rt.enter();
        Api::namespaced_with(client.clone(), &args.at.namespace, &resource())
    };
    let lease = lease::HostLease::new(client, &args.at.namespace, &host, args.interval.duration());
    let mut backoff = Duration::from_secs(1);
    // Between rounds the agent watches its resources: a change to one of this host's specs
    // starts the next round at once; otherwise it runs every `--interval`. Its own status
    // writes change no spec, so they requeue nothing.
    let mut changes = if args.once {
        None
    } else {
        let _inside = rt.enter();
        Some(Box::pin(kube::runtime::WatchStreamExt::default_backoff(
            kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default()),
        )))
    };
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    loop {
        // One agent per host: the round runs only under the host's lease.
        let round = match rt.block_on(lease.acquire()) {
            Ok(()) => {
                let renewing = lease.keep_renewed(&rt);
                let r = round(
                    &rt,
                    &api,
                    &args.at.namespace,
                    &host,
                    snapshot.as_ref(),
                    &mut seen,
                );
                renewing.abort();
                if args.once {
                    rt.block_on(lease.release());
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
                metrics(|m| m.errors += 1);
                ui::eprint(&format!("error: {}\n", e.message));
                backoff = (backoff * 2).min(args.interval.duration().max(Duration::from_secs(1)));
                backoff
            }
        };
        let interrupted = rt.block_on(async {
            use futures_util::StreamExt as _;
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                let next = async {
                    match changes.as_mut() {
                        Some(c) => c.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut deadline => return false,
                    _ = tokio::signal::ctrl_c() => return true,
                    event = next => {
                        use kube::runtime::watcher::Event;
                        let changed = match event {
                            Some(Ok(Event::Apply(o) | Event::InitApply(o))) => {
                                is_for(&o, &host)
                                    && seen.get(o.metadata.name.as_deref().unwrap_or_default())
                                        != Some(&spec_hash(&o))
                            }
                            Some(Ok(Event::Delete(o))) => is_for(&o, &host),
                            _ => false,
                        };
                        if changed {
                            return false;
                        }
                    }
                }
            }
        });
        if interrupted {
            return Ok(Exit::Interrupted);
        }
    }
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
fn round(
    rt: &tokio::runtime::Runtime,
    api: &Api<DynamicObject>,
    ns: &str,
    host: &str,
    snapshot: Option<&crate::model::Observed>,
    seen: &mut std::collections::HashMap<String, String>,
) -> Result<Exit, CliError> {
    metrics(|m| m.rounds += 1);
    let mine = list_mine(rt, api, ns, host)?;
    // What this round plans from: each resource's spec, so that a watch event that changes no
    // spec (the agent's own status write) starts no round.
    *seen = mine
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), spec_hash(o)))
        .collect();
    if mine.is_empty() {
        ui::print(&format!(
            "No {} for host `{host}` in namespace `{ns}`.\n",
            crd::KIND
        ));
        return Ok(Exit::Ok);
    }
    let mut exit = Exit::Ok;
    for obj in &mine {
        let name = obj.metadata.name.clone().unwrap_or_default();
        match reconcile(rt, api, obj, &format!("{ns}/{name}"), snapshot) {
            Ok(line) => ui::print(&format!("{ns}/{name}: {line}\n")),
            Err(e) => {
                ui::eprint(&format!("{ns}/{name}: error: {}\n", e.message));
                exit = Exit::Error;
            }
        }
    }
    Ok(exit)
}

/// Plans one resource, applies it when `spec.apply: auto` or an approval allows, and writes its
/// status. Returns the line to print.
fn reconcile(
    rt: &tokio::runtime::Runtime,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    shown: &str,
    snapshot: Option<&crate::model::Observed>,
) -> Result<String, CliError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = || crate::observe::time::format_rfc3339(crate::observe::now_ms());
    let desired = match desired_of(obj, shown) {
        Ok(d) => d,
        Err(why) => {
            let status = json!({
                "observedGeneration": generation,
                "conditions": [{
                    "type": "Planned", "status": "False", "reason": "InvalidDesired",
                    "message": why, "lastTransitionTime": now(), "observedGeneration": generation,
                }],
                "agentVersion": env!("CARGO_PKG_VERSION"),
            });
            rt.block_on(write_status(api, &name, status))?;
            return Err(CliError::new(format!("spec.desired is invalid: {why}")));
        }
    };
    let opts = context::observe_options(Some(&desired))?;
    let started = std::time::Instant::now();
    let observed = match snapshot {
        Some(o) => o.clone(),
        None => rt.block_on(crate::observe::observe(&opts)),
    };
    let observe_seconds = started.elapsed().as_secs_f64();
    let journal_path = context::state_dir()?.join("journal.jsonl");
    let hold = super::recovery::hold_only(&journal_path, &observed);
    let options = super::plan::options(&[], hold);
    let started = std::time::Instant::now();
    let plan = crate::plan::plan(&desired, &observed, &options);
    let plan_seconds = started.elapsed().as_secs_f64();
    metrics(|m| {
        m.observe_seconds = observe_seconds;
        m.plan_seconds = plan_seconds;
    });
    let spec = &obj.data["spec"];
    let decision = match (decide(spec, &plan), snapshot) {
        // A snapshot is not this host: report what would run, run nothing.
        (Decision::Apply(_), Some(_)) => Decision::PlanOnly,
        (d, _) => d,
    };
    let mut line = crate::plan::render::summary(&plan);
    let (applied, after) = match decision {
        Decision::PlanOnly => (Applied::PlanOnly, None),
        Decision::Stale(why) => {
            events::record(rt, api, obj, "approval", "refused", &why);
            (Applied::Stale(why), None)
        }
        Decision::Apply(allow) => {
            let mut consented = options.clone();
            consented.allow.extend(allow);
            let to_apply = crate::plan::plan(&desired, &observed, &consented);
            if !to_apply.has_changes() {
                return finish(
                    rt,
                    api,
                    obj,
                    &name,
                    generation,
                    &plan,
                    &observed,
                    &Applied::PlanOnly,
                    line,
                );
            }
            let result = apply(rt, &to_apply, &desired, &consented, &opts, &observed)?;
            line = format!("applied: exit {}", result.exit as u8);
            for (step, outcome, message) in &result.outcomes {
                events::record(rt, api, obj, step, outcome, message);
                let action = step.split(':').next().unwrap_or_default().to_owned();
                metrics(|m| {
                    *m.steps.entry((action, (*outcome).to_owned())).or_default() += 1;
                });
            }
            // The look apply took afterwards, planned without consent: what a reviewer approves.
            let again = result.after;
            let after = crate::plan::plan(&desired, &again, &options);
            (
                Applied::Ran {
                    // The reviewed plan's hash (what an approval names), not the consented one's.
                    plan_sha256: plan.sha256(),
                    exit: result.exit as u8,
                    done: result.done,
                    failed: result.failed,
                },
                Some((after, again)),
            )
        }
    };
    let (plan, observed) = after.unwrap_or((plan, observed));
    finish(
        rt, api, obj, &name, generation, &plan, &observed, &applied, line,
    )
}

/// Writes the round's status and returns its line.
#[allow(clippy::too_many_arguments)]
fn finish(
    rt: &tokio::runtime::Runtime,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    generation: Option<i64>,
    plan: &crate::plan::Plan,
    observed: &crate::model::Observed,
    applied: &Applied,
    line: String,
) -> Result<String, CliError> {
    let now = crate::observe::time::format_rfc3339(crate::observe::now_ms());
    let resource = format!(
        "{}/{name}",
        obj.metadata.namespace.as_deref().unwrap_or_default()
    );
    metrics(|m| {
        m.converged.insert(resource, u8::from(plan.is_converged()));
    });
    let mut status = status(generation, plan, observed, applied, &now);
    // The last apply stays reported through rounds that only plan.
    if status["lastApply"].is_null() {
        match obj.data["status"].get("lastApply") {
            Some(previous) if !previous.is_null() => status["lastApply"] = previous.clone(),
            _ => {
                status.as_object_mut().map(|o| o.remove("lastApply"));
            }
        }
    }
    rt.block_on(write_status(api, name, status))?;
    Ok(line + " (status written)")
}

/// What a round does with the fresh plan.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Report it.
    PlanOnly,
    /// Report that the approval names another plan.
    Stale(String),
    /// Apply it, with consent to these classes beyond `disrupt`.
    Apply(Vec<crate::plan::Risk>),
}

/// `spec.approve` with the fresh plan's hash runs that plan with its consent; with another hash
/// nothing runs (stale). Otherwise `spec.apply: auto` runs what needs no consent; `never` plans.
fn decide(spec: &Value, plan: &crate::plan::Plan) -> Decision {
    if let Some(approve) = spec.get("approve").filter(|a| !a.is_null()) {
        let approved = approve["planSha256"].as_str().unwrap_or_default();
        let fresh = plan.sha256();
        if approved != fresh {
            return Decision::Stale(format!(
                "spec.approve.planSha256 is {approved}, but a fresh plan of this host is {fresh}: the host or spec.desired moved since the review; review status.plan and approve its sha256"
            ));
        }
        let allow = approve["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| match a.as_str() {
                Some("replace") => Some(crate::plan::Risk::Replace),
                Some("destroy") => Some(crate::plan::Risk::Destroy),
                _ => None,
            })
            .collect();
        return Decision::Apply(allow);
    }
    if spec["apply"].as_str() == Some("auto") && plan.has_changes() {
        return Decision::Apply(Vec::new());
    }
    Decision::PlanOnly
}

/// Applies `plan` exactly as `nemoclaw apply` does: under the host lock and the journal, judging
/// any interrupted earlier apply first.
fn apply(
    rt: &tokio::runtime::Runtime,
    plan: &crate::plan::Plan,
    desired: &crate::model::Desired,
    options: &crate::plan::PlanOptions,
    opts: &crate::observe::ObserveOptions,
    observed: &crate::model::Observed,
) -> Result<super::apply::ApplyResult, CliError> {
    let _lock = crate::apply::lock::acquire(&context::lock_path()?)
        .map_err(|e| CliError::from_error("cannot take the host lock", &e))?;
    let journal =
        crate::apply::journal::Journal::open(&context::state_dir()?, crate::observe::now_ms())
            .map_err(|e| CliError::from_error("cannot open the apply journal", &e))?;
    // Judged against the look the plan was made from, as `nemoclaw apply` does.
    let _ = super::recovery::review(journal.path(), observed, Some(&journal));
    super::apply::execute(rt, plan, desired, options, journal, opts, 10)
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
