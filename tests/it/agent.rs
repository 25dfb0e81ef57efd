//! `nemoclaw agent` through the real `kube` client against the Kubernetes API emulator the test
//! script starts (kmock 0.8 + tests/support/kapi.py, which declares the NemoClawHost resource).
//! What the emulator cannot show: the CRD's own validation (it stores what it is given), a
//! separate status subresource (a status patch lands on the object), SSA field ownership.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams};
use serde_json::json;

use crate::gitops::{Listener, Site};
use crate::support::{code, text};

fn url() -> Option<String> {
    match std::env::var("NEMOCLAW_TEST_KUBE_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run these against the emulator (scripts/test)"
            );
            eprintln!(
                "skipped: NEMOCLAW_TEST_KUBE_URL is not set (scripts/test starts the emulator)"
            );
            None
        }
    }
}

fn resource() -> ApiResource {
    ApiResource {
        group: "nemoclaw.io".to_owned(),
        version: "v1alpha1".to_owned(),
        api_version: "nemoclaw.io/v1alpha1".to_owned(),
        kind: "NemoClawHost".to_owned(),
        plural: "nemoclawhosts".to_owned(),
    }
}

/// The cluster side of one test: a namespace and host of its own, a kubeconfig, a client.
struct Cluster {
    kubeconfig: std::path::PathBuf,
    ns: String,
    host: String,
    rt: tokio::runtime::Runtime,
    api: Api<DynamicObject>,
    url: String,
}

impl Cluster {
    fn new(url: &str, s: &Site, tag: &str) -> Self {
        let kubeconfig = s.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"
        )).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ns = format!("{tag}-{}", std::process::id());
        let api = {
            let _inside = rt.enter();
            let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
            Api::namespaced_with(client, &ns, &resource())
        };
        Self {
            kubeconfig,
            host: format!("host-{tag}-{}", std::process::id()),
            ns,
            rt,
            api,
            url: url.to_owned(),
        }
    }

    fn create(&self, name: &str, spec: serde_json::Value) {
        self.create_labelled(name, &json!({}), spec);
    }

    fn create_labelled(&self, name: &str, labels: &serde_json::Value, spec: serde_json::Value) {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "nemoclaw.io/v1alpha1",
            "kind": "NemoClawHost",
            "metadata": { "name": name, "namespace": self.ns, "labels": labels },
            "spec": spec,
        }))
        .unwrap();
        self.rt
            .block_on(self.api.create(&PostParams::default(), &obj))
            .unwrap();
    }

    /// Another kind of object in this test's namespace.
    fn typed<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        let _inside = self.rt.enter();
        let client = kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap();
        Api::namespaced(client, &self.ns)
    }

    /// The agent as a controller (no `--once`) for this namespace and host, with `args`.
    fn controller(&self, s: &Site, args: &[&str], stderr: std::process::Stdio) -> Running {
        s.cmd()
            .args(["agent", "--namespace", &self.ns, "--host", &self.host])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(Running)
            .unwrap()
    }

    /// The agent as a controller every `interval`, serving metrics; returns it and their port.
    fn controller_with_metrics(&self, s: &Site, interval: &str) -> (Running, u16) {
        let port = crate::support::next_range().start;
        let addr = format!("127.0.0.1:{port}");
        let args = ["--interval", interval, "--metrics-addr", &addr];
        (self.controller(s, &args, std::process::Stdio::null()), port)
    }

    /// This host's lease as it is now, if there is one.
    fn lease(&self) -> Option<LeaseSpec> {
        let leases: Api<Lease> = self.typed();
        self.rt
            .block_on(leases.get_opt(&format!("nemoclaw-{}", self.host)))
            .unwrap()
            .map(|l| l.spec.unwrap_or_default())
    }

    fn get(&self, name: &str) -> serde_json::Value {
        self.rt.block_on(self.api.get(name)).unwrap().data
    }

    fn agent(&self, s: &Site) -> std::process::Output {
        s.cmd()
            .args([
                "agent",
                "--once",
                "--namespace",
                &self.ns,
                "--host",
                &self.host,
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .output()
            .unwrap()
    }
}

fn cond(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition: {status:#}"))
}

/// An agent process, killed when the test ends however it ends (a failed assertion included).
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's `/metrics` text.
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

/// One unlabelled counter's value in a scrape.
fn counter(scraped: &str, name: &str) -> u64 {
    scraped
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {scraped}"))
}

/// Waits up to 20 s for `ok`.
fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A resource with `apply: auto` over a listener that ignores SIGTERM, so its stop takes `grace`.
fn stubborn_listener(tag: &str, port: u16, grace: &str) -> Option<(Site, Listener, Cluster)> {
    let url = url()?;
    let s = Site::new("");
    let l = Listener::spawn("ignore-term", s.port(port));
    let c = Cluster::new(&url, &s, tag);
    let mut spec = json!({ "host": c.host, "apply": "auto", "desired": desired(&s) });
    spec["desired"]["cleanup"]["termGrace"] = json!(grace);
    c.create("mine", spec);
    Some((s, l, c))
}

fn desired(s: &Site) -> serde_json::Value {
    json!({
        "dashboard": { "portRange": format!("{}-{}", s.port(0), s.port(10)) },
        "cleanup": { "termGrace": "1500ms", "killGrace": "1s" },
    })
}

/// A NemoClawHost for this host with a stale listener gets `Planned` with the stop step, and
/// with `spec.apply: never` (the default) nothing on the host changes; a resource for another
/// host is left alone; an invalid `spec.desired` is an `InvalidDesired` condition and exit 1.
#[test]
fn the_agent_plans_this_hosts_resources_and_writes_their_status() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(1));
    let c = Cluster::new(&url, &s, "plan");
    c.create("mine", json!({ "host": c.host, "desired": desired(&s) }));
    c.create(
        "other",
        json!({ "host": "elsewhere", "desired": desired(&s) }),
    );
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}/mine: Plan: 1 to stop", c.ns)),
        "{}",
        text(&out)
    );
    assert!(l.alive(), "apply: never plans only");
    let status = &c.get("mine")["status"];
    assert_eq!(cond(status, "Planned")["status"], "True", "{status:#}");
    assert_eq!(cond(status, "Converged")["status"], "False");
    let pid = l.pid();
    let steps = status["plan"]["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|st| st["address"] == format!("process.{pid}") && st["action"] == "stop"),
        "{status:#}"
    );
    assert_eq!(status["plan"]["toChange"], 1);
    assert_eq!(status["plan"]["sha256"].as_str().unwrap().len(), 64);
    assert!(
        c.get("other").get("status").is_none(),
        "another host's resource is not touched"
    );

    // Nothing moved on the host: the same status, so no write (no watch event for the fleet).
    let version = || {
        c.rt.block_on(c.api.get("mine"))
            .unwrap()
            .metadata
            .resource_version
    };
    let before = version();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("(status unchanged)"), "{}", text(&out));
    assert_eq!(version(), before);

    // `plan --from-cluster` plans the same resource, as the agent would.
    let out = s
        .cmd()
        .args([
            "plan",
            "--from-cluster",
            "-o",
            "json",
            "--namespace",
            &c.ns,
            "--host",
            &c.host,
            "--kubeconfig",
        ])
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["steps"][0]["id"],
        format!("stop:process.{pid}"),
        "{plan:#}"
    );

    c.create(
        "bad",
        json!({ "host": c.host, "desired": { "dashboard": { "portRange": "9-8" } } }),
    );
    let out = c.agent(&s);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(
        cond(&c.get("bad")["status"], "Planned")["reason"],
        "InvalidDesired"
    );
    assert!(l.alive());
    assert!(c.lease().is_none(), "`--once` gives the lease up");
}

/// `spec.apply: auto` stops the real stale process, as `nemoclaw apply` would, and reports
/// `Converged` with the apply in `lastApply`.
#[test]
fn apply_auto_stops_the_stale_process_and_reports_converged() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(2));
    let c = Cluster::new(&url, &s, "auto");
    c.create(
        "mine",
        json!({ "host": c.host, "apply": "auto", "desired": desired(&s) }),
    );
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!l.alive(), "stopped: {}", text(&out));
    let status = &c.get("mine")["status"];
    assert_eq!(cond(status, "Converged")["status"], "True", "{status:#}");
    assert_eq!(status["lastApply"]["exitCode"], 0, "{status:#}");
    assert_eq!(status["lastApply"]["stepsDone"], 1);
    assert!(
        s.journal().contains("\"event\":\"intent\""),
        "journaled like any apply"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = c.typed();
    let listed = c.rt.block_on(events.list(&Default::default())).unwrap();
    let pid = l.pid();
    assert!(
        listed
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("StepDone")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(&format!("stop:process.{pid}:")))
                && e.involved_object.name.as_deref() == Some("mine")),
        "an Event for the step: {:?}",
        listed
            .items
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );
    // The next round only plans: nothing to do, and the last apply stays reported.
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(c.get("mine")["status"]["lastApply"]["exitCode"], 0);
}

/// An approval runs exactly the plan it names: with a stale hash nothing runs (`Stale`); with the
/// hash the status reported, that plan is applied.
#[test]
fn an_approval_runs_only_the_plan_it_names() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(3));
    let c = Cluster::new(&url, &s, "approve");
    c.create(
        "mine",
        json!({
            "host": c.host,
            "approve": { "planSha256": "0".repeat(64), "allow": [] },
            "desired": desired(&s),
        }),
    );
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(l.alive(), "a stale approval runs nothing");
    let events: Api<k8s_openapi::api::core::v1::Event> = c.typed();
    let listed = c.rt.block_on(events.list(&Default::default())).unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ApprovalRefused")),
        "the refusal is an Event"
    );
    let status = c.get("mine")["status"].clone();
    assert_eq!(cond(&status, "Stale")["status"], "True", "{status:#}");
    assert!(
        cond(&status, "Stale")["message"]
            .as_str()
            .unwrap()
            .contains("this agent never reported a plan with that hash"),
        "{status:#}"
    );
    let reviewed = status["plan"]["sha256"].as_str().unwrap().to_owned();
    let approve = |hash: &str| {
        let mut obj = c.rt.block_on(c.api.get("mine")).unwrap();
        obj.data["spec"]["approve"]["planSha256"] = json!(hash);
        c.rt.block_on(c.api.replace("mine", &PostParams::default(), &obj))
            .unwrap();
    };

    // The listener restarts after the review: the approval is stale and says which fact moved.
    let old = l.pid();
    drop(l);
    let mut l = Listener::spawn("term", s.port(3));
    approve(&reviewed);
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(l.alive(), "a stale approval runs nothing");
    let status = c.get("mine")["status"].clone();
    let message = cond(&status, "Stale")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("process {old} (started at tick"))
            && message.contains("is gone or was replaced since the plan")
            && message.starts_with("spec.approve.planSha256 is ")
            && message.contains(": stop:"),
        "{message}"
    );
    let reviewed = status["plan"]["sha256"].as_str().unwrap().to_owned();

    approve(&reviewed);
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!l.alive(), "the approved plan ran: {}", text(&out));
    let status = c.get("mine")["status"].clone();
    assert_eq!(status["lastApply"]["planSha256"], json!(reviewed));

    // An approval runs once: left in the spec after its plan ran, it is done, not stale.
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("applied"), "{}", text(&out));
    let after = c.get("mine")["status"].clone();
    assert!(
        after["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Stale" || c["status"] == "False"),
        "{after:#}"
    );
    assert_eq!(after["lastApply"], status["lastApply"]);
}

/// Two agents, one lease: while another agent holds this host's lease (renewed just now), a
/// second one refuses, naming it, and writes no status; once the lease expired it takes it over.
#[test]
fn a_second_agent_for_the_same_host_waits_for_the_lease() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let kubeconfig = s.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"
    )).unwrap();
    let ns = format!("lease-{}", std::process::id());
    let host = format!("leased-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = {
        let _inside = rt.enter();
        kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let held = Lease {
        metadata: ObjectMeta {
            name: Some(format!("nemoclaw-{host}")),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("workstation-1/4242".to_owned()),
            lease_duration_seconds: Some(120),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    rt.block_on(leases.create(&PostParams::default(), &held))
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "nemoclaw.io/v1alpha1",
        "kind": "NemoClawHost",
        "metadata": { "name": "mine", "namespace": ns },
        "spec": { "host": host, "desired": { "dashboard": { "portRange": format!("{}-{}", s.port(0), s.port(10)) } } },
    }))
    .unwrap();
    rt.block_on(api.create(&PostParams::default(), &obj))
        .unwrap();
    let agent = || {
        s.cmd()
            .args([
                "agent",
                "--once",
                "--namespace",
                &ns,
                "--host",
                &host,
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .output()
            .unwrap()
    };
    let out = agent();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("another agent holds the lease")
            && text(&out).contains("`workstation-1/4242`"),
        "{}",
        text(&out)
    );
    assert!(
        rt.block_on(api.get("mine"))
            .unwrap()
            .data
            .get("status")
            .is_none()
    );

    // Once it has expired, the lease is taken over and the round runs.
    let name = format!("nemoclaw-{host}");
    let mut lease = rt.block_on(leases.get(&name)).unwrap();
    if let Some(spec) = lease.spec.as_mut() {
        spec.renew_time = Some(MicroTime(
            k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600),
        ));
    }
    rt.block_on(leases.replace(&name, &PostParams::default(), &lease))
        .unwrap();
    let out = agent();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        rt.block_on(api.get("mine"))
            .unwrap()
            .data
            .get("status")
            .is_some()
    );
}

/// A Kubernetes API emulator of this test's own, on a port it can restart on.
struct OwnApi(std::process::Child);

impl OwnApi {
    fn start(port: u16, dir: &std::path::Path) -> (Self, u16) {
        let venv = std::env::var("NEMOCLAW_TEST_VENV").map_or_else(
            |_| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap())
                    .join(".cache/nemoclaw-test-venv")
            },
            std::path::PathBuf::from,
        );
        let port_file = dir.join(format!("kapi-{port}.port"));
        let child = Self(
            std::process::Command::new(venv.join("bin/python"))
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/support/kapi.py"
                ))
                .args(["--port", &port.to_string(), "--port-file"])
                .arg(&port_file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && let Ok(p) = p.trim().parse()
            {
                return (child, p);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the emulator did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for OwnApi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent as a long-running process (`--interval 1s`) keeps going when its resource is
/// deleted and while the API server is down, and reconciles again once it is back; Ctrl-C ends it
/// with 130.
#[test]
fn the_agent_survives_an_api_server_restart_and_a_deleted_resource() {
    if url().is_none() {
        return;
    }
    let s = Site::new("");
    let (api_server, port) = OwnApi::start(0, s.dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let c = Cluster::new(&url, &s, "restart");
    c.create("mine", json!({ "host": c.host, "desired": desired(&s) }));
    let (mut agent, metrics_port) = c.controller_with_metrics(&s, "1s");
    let wait_status = |c: &Cluster| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(o) = c.rt.block_on(c.api.get("mine"))
                && o.data.get("status").is_some()
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no status written");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_status(&c);
    let scrape = || scrape(metrics_port);
    let metrics = scrape();
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    // Nothing listens in this test's range: converged.
    assert!(
        metrics.contains(&format!(
            "nemoclaw_converged{{resource=\"{}/mine\"}} 1",
            c.ns
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE nemoclaw_agent_reconciles_total counter"),
        "{metrics}"
    );
    c.rt.block_on(c.api.delete("mine", &Default::default()))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "alive after its resource was deleted"
    );
    // Its convergence gauge goes at its next due time (a second here).
    let gauge = format!("nemoclaw_converged{{resource=\"{}/mine\"}}", c.ns);
    eventually("the deleted resource's gauge is gone", || {
        !scrape().contains(&gauge)
    });
    drop(api_server);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "alive while the API server is down"
    );
    let errors = counter(&scrape(), "nemoclaw_agent_errors_total");
    assert!(errors > 0, "failed watches are counted");
    let (_api_server, again) = OwnApi::start(port, s.dir.path());
    assert_eq!(again, port);
    let c2 = Cluster::new(&url, &s, "restart");
    c2.create("mine", json!({ "host": c2.host, "desired": desired(&s) }));
    wait_status(&c2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(agent.wait().unwrap().code(), Some(130));
}

/// The controller watches: a new resource and a changed spec are reconciled at once, not at the
/// next `--interval` (an hour here); its own status writes start no reconcile.
#[test]
fn the_agent_requeues_on_a_change_not_only_every_interval() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let _l = Listener::spawn("term", s.port(4));
    let c = Cluster::new(&url, &s, "watch");
    let (mut agent, metrics_port) = c.controller_with_metrics(&s, "60m");
    let until = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(o) = c.rt.block_on(c.api.get("mine"))
                && ok(&o.data)
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.create("mine", json!({ "host": c.host, "desired": desired(&s) }));
    until("the new resource was reconciled", &|o| {
        o["status"]["plan"]["toChange"] == 1
    });
    let mut obj = c.rt.block_on(c.api.get("mine")).unwrap();
    obj.data["spec"]["desired"]["cleanup"]["staleListeners"] = json!(false);
    c.rt.block_on(c.api.replace("mine", &PostParams::default(), &obj))
        .unwrap();
    until("the changed spec was reconciled", &|o| {
        o["status"]["plan"]["toChange"] == 0
    });
    // Its own status writes started no reconcile: the new resource, the change — two.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let reconciles = counter(&scrape(metrics_port), "nemoclaw_agent_reconciles_total");
    assert_eq!(reconciles, 2, "reconciles");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A `destroy` never runs on `apply: auto`: the step is reported blocked and the volume stays;
/// an approval naming the plan with `allow: [destroy]` runs it.
#[test]
fn a_destroy_waits_for_an_approval_naming_it() {
    let Some(url) = url() else { return };
    if !crate::support::docker_engine() {
        return;
    }
    let s = Site::new("");
    let c = Cluster::new(&url, &s, "destroy");
    let volume = format!("nemoclaw-agent-{}", std::process::id());
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(docker(&["volume", "create", &volume]).status.success());
    let mut spec = json!({ "host": c.host, "apply": "auto", "desired": desired(&s) });
    spec["desired"]["destroy"] = json!({ "volumes": [volume] });
    c.create("mine", spec);
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status = c.get("mine")["status"].clone();
    assert_eq!(cond(&status, "Blocked")["status"], "True", "{status:#}");
    assert!(
        docker(&["volume", "inspect", &volume]).status.success(),
        "auto never destroys"
    );
    let reviewed = status["plan"]["sha256"].as_str().unwrap().to_owned();
    let mut obj = c.rt.block_on(c.api.get("mine")).unwrap();
    obj.data["spec"]["approve"] = json!({ "planSha256": reviewed, "allow": ["destroy"] });
    c.rt.block_on(c.api.replace("mine", &PostParams::default(), &obj))
        .unwrap();
    let out = c.agent(&s);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !docker(&["volume", "inspect", &volume]).status.success(),
        "the approved destroy ran: {}",
        text(&out)
    );
    assert_eq!(
        c.get("mine")["status"]["lastApply"]["planSha256"],
        json!(reviewed)
    );
    docker(&["volume", "rm", "-f", &volume]);
}

/// The lease is renewed while a round runs, so a long apply (here a listener that ignores
/// SIGTERM under a 12 s grace; the lease lasts 30 s, renewed every 10 s) never leaves it looking
/// abandoned to a second agent.
#[test]
fn the_lease_is_renewed_during_a_long_apply() {
    let Some((s, mut l, c)) = stubborn_listener("renew", 5, "12s") else {
        return;
    };
    let mut agent = s
        .cmd()
        // `--interval 10s`: the lease lasts max(2 intervals, 30 s) = 30 s, renewed every 10 s.
        .args([
            "agent",
            "--once",
            "--interval",
            "10s",
            "--namespace",
            &c.ns,
            "--host",
            &c.host,
        ])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    let renew_time = || c.lease().and_then(|l| l.renew_time).map(|t| t.0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        if let Some(t) = renew_time() {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "no lease taken");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::thread::sleep(std::time::Duration::from_secs(11));
    let later = renew_time().expect("still held mid-apply");
    assert!(
        later > first,
        "renewed during the apply: {first} then {later}"
    );
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    assert!(!l.alive());
}

/// A long-running agent with one resource whose `spec.desired` is invalid retries with backoff
/// (1 s, 2 s, 4 s, ...), not in a loop on its own status writes, and counts each failure.
#[test]
fn a_failing_reconcile_backs_off() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let c = Cluster::new(&url, &s, "backoff");
    c.create(
        "mine",
        json!({ "host": c.host, "desired": { "dashboard": { "portRange": "not-a-range" } } }),
    );
    let (mut agent, metrics_port) = c.controller_with_metrics(&s, "60m");
    eventually("the invalid spec was reported", || {
        c.rt.block_on(c.api.get("mine"))
            .is_ok_and(|o| o.data["status"]["conditions"][0]["reason"] == "InvalidDesired")
    });
    std::thread::sleep(std::time::Duration::from_secs(5));
    let scraped = scrape(metrics_port);
    let (reconciles, errors) = (
        counter(&scraped, "nemoclaw_agent_reconciles_total"),
        counter(&scraped, "nemoclaw_agent_errors_total"),
    );
    // At 0 s, 1 s, 3 s (and 7 s): a loop on its own writes would be hundreds.
    assert!((2..=4).contains(&reconciles), "{reconciles} reconciles");
    assert_eq!(errors, reconciles, "each one failed");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Two long-running agents, one lease: the second says who holds it and waits; the first stops
/// on SIGTERM (130) and gives the lease up, and the second takes it over and reconciles.
#[test]
fn a_standby_agent_takes_over_when_the_first_stops() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let c = Cluster::new(&url, &s, "standby");
    c.create("mine", json!({ "host": c.host, "desired": desired(&s) }));
    let spawn = |tag: &str| {
        let log = std::fs::File::create(s.dir.path().join(format!("{tag}.log"))).unwrap();
        c.controller(&s, &["--interval", "3s"], log.into())
    };
    let holder = || c.lease().and_then(|l| l.holder_identity);
    let mut first = spawn("first");
    eventually("the first agent holds the lease", || {
        holder().is_some_and(|h| h.ends_with(&format!("/{}", first.id())))
    });
    let mut second = spawn("second");
    let second_log = s.dir.path().join("second.log");
    eventually("the second agent says who holds the lease", || {
        std::fs::read_to_string(&second_log).is_ok_and(|t| {
            t.contains("waiting: another agent holds the lease")
                && t.contains(&format!("/{}`", first.id()))
        })
    });
    let reported = c.get("mine")["status"]["plan"].clone();
    assert!(!reported.is_null(), "the first agent reported");
    let signal = |child: &std::process::Child, sig| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            sig,
        )
        .unwrap();
    };
    signal(&first, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(first.wait().unwrap().code(), Some(130));
    eventually("the second agent took the lease over", || {
        holder().is_some_and(|h| h.ends_with(&format!("/{}", second.id())))
    });
    signal(&second, nix::sys::signal::Signal::SIGINT);
    assert_eq!(second.wait().unwrap().code(), Some(130));
    assert_eq!(holder(), None, "given up at shutdown");
}

/// `--selector` narrows what the API server sends: a resource of this host without the label is
/// neither listed nor reconciled.
#[test]
fn the_selector_narrows_the_resources_the_agent_reads() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let c = Cluster::new(&url, &s, "selector");
    for (name, labels) in [
        ("labelled", json!({ "nemoclaw.io/host": c.host })),
        ("unlabelled", json!({})),
    ] {
        c.create_labelled(
            name,
            &labels,
            json!({ "host": c.host, "desired": desired(&s) }),
        );
    }
    let out = s
        .cmd()
        .args(["agent", "--once", "--namespace", &c.ns, "--host", &c.host])
        .args([
            "-l",
            &format!("nemoclaw.io/host={}", c.host),
            "--kubeconfig",
        ])
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("/labelled: "), "{}", text(&out));
    assert!(!text(&out).contains("unlabelled"), "{}", text(&out));
    assert!(c.get("labelled").get("status").is_some());
    assert!(c.get("unlabelled").get("status").is_none());

    // The controller's watch is selected the same way: what it is not sent, it never reconciles.
    let _agent = c.controller(
        &s,
        &[
            "--interval",
            "60m",
            "-l",
            &format!("nemoclaw.io/host={}", c.host),
        ],
        std::process::Stdio::null(),
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    for (name, labels) in [
        ("later-unlabelled", json!({})),
        ("later-labelled", json!({ "nemoclaw.io/host": c.host })),
    ] {
        c.create_labelled(
            name,
            &labels,
            json!({ "host": c.host, "desired": desired(&s) }),
        );
    }
    eventually("the labelled one was reconciled", || {
        c.get("later-labelled").get("status").is_some()
    });
    // Had it been sent, its reconcile would have been queued beside the labelled one's.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(c.get("later-unlabelled").get("status").is_none());
}

/// `scripts/build-image` makes an image that runs the agent: built from this test's binary
/// (debug symbols stripped), run in the private Docker engine on the host's network as the
/// DaemonSet runs it (user 1000), it reconciles a resource against a snapshot and writes status.
#[test]
fn the_image_runs_the_agent() {
    let Some(url) = url() else { return };
    if std::env::var_os("DOCKER_HOST").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this with the private Docker engine"
        );
        eprintln!("skipped: DOCKER_HOST is not set (scripts/test starts a private Docker engine)");
        return;
    }
    let s = Site::new("");
    let c = Cluster::new(&url, &s, "image");
    c.create("mine", json!({ "host": c.host, "desired": desired(&s) }));
    let bin = s.dir.path().join("nemoclaw");
    let strip = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_nemoclaw"))
        .arg(&bin)
        .status()
        .unwrap();
    assert!(strip.success());
    let tag = format!("nemoclaw-it:{}", std::process::id());
    let built =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-image"))
            .arg(&tag)
            .env("NEMOCLAW_BIN", &bin)
            .output()
            .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), tag);
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let _image = Image(tag.clone());

    // What the container reads: the kubeconfig and a snapshot of this host, readable by user 1000.
    let work = s.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let snapshot = s.run(&["observe", "-o", "json"]);
    assert_eq!(code(&snapshot), 0, "{}", text(&snapshot));
    std::fs::write(work.join("host.json"), &snapshot.stdout).unwrap();
    std::fs::copy(&c.kubeconfig, work.join("kubeconfig")).unwrap();
    for p in [s.dir.path(), work.as_path()] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["host.json", "kubeconfig"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(work.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "host", "-v"])
        .arg(format!("{}:/work:ro", work.display()))
        .args([
            &tag,
            "agent",
            "--once",
            "--namespace",
            &c.ns,
            "--host",
            &c.host,
        ])
        .args([
            "--kubeconfig",
            "/work/kubeconfig",
            "--observed",
            "/work/host.json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("/mine: "), "{}", text(&out));
    let status = &c.get("mine")["status"];
    assert_eq!(cond(status, "Planned")["status"], "True", "{status:#}");
    assert_eq!(status["agentVersion"], env!("CARGO_PKG_VERSION"));
}

/// SIGTERM to the long-running agent in the middle of an apply: the running stop finishes (the
/// listener that ignores SIGTERM is killed after its grace), the reconcile writes its status with
/// `lastApply`, nothing new starts, and the agent exits 130 with its lease given up.
#[test]
fn sigterm_mid_apply_finishes_the_running_reconcile() {
    let Some((s, mut l, c)) = stubborn_listener("drain", 6, "3s") else {
        return;
    };
    let mut agent = c.controller(&s, &["--interval", "60m"], std::process::Stdio::null());
    // The stop is under way once the journal holds its intent.
    eventually("the stop started", || {
        s.journal().contains("\"event\":\"intent\"")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(agent.wait().unwrap().code(), Some(130));
    assert!(!l.alive(), "the running stop finished");
    let status = c.get("mine")["status"].clone();
    assert!(
        !status["lastApply"].is_null(),
        "the reconcile reported: {status:#}"
    );
    assert!(c.lease().is_none(), "the lease was given up");
}
