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

/// A NemoClawHost for this host with a stale listener gets `Planned` with the stop step; nothing
/// on the host changes (the agent plans only), and a resource asking for `apply: auto` is told
/// so in an `Applied: False` condition. A resource for another host is left alone.
#[test]
fn the_agent_plans_this_hosts_resources_and_writes_their_status() {
    let Some(url) = url() else { return };
    let s = Site::new("");
    let mut l = Listener::spawn("term", s.port(1));
    let kubeconfig = s.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"
    )).unwrap();
    let ns = format!("agent-{}", std::process::id());
    let host = format!("host-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = {
        let _inside = rt.enter();
        kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());
    let desired = json!({
        "dashboard": { "portRange": format!("{}-{}", s.port(0), s.port(10)) },
        "cleanup": { "termGrace": "1500ms", "killGrace": "1s" },
    });
    let make = |name: &str, spec: serde_json::Value| {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "nemoclaw.io/v1alpha1",
            "kind": "NemoClawHost",
            "metadata": { "name": name, "namespace": ns },
            "spec": spec,
        }))
        .unwrap();
        rt.block_on(api.create(&PostParams::default(), &obj))
            .unwrap();
    };
    make("mine", json!({ "host": host, "desired": desired }));
    make(
        "auto",
        json!({ "host": host, "apply": "auto", "desired": desired }),
    );
    make("other", json!({ "host": "elsewhere", "desired": desired }));

    let out = s
        .cmd()
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
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{ns}/mine: Plan: 1 to stop")),
        "{}",
        text(&out)
    );
    assert!(l.alive(), "the agent plans only");

    let get = |name: &str| rt.block_on(api.get(name)).unwrap().data;
    let mine = get("mine");
    let status = &mine["status"];
    let cond = |s: &serde_json::Value, kind: &str| {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} condition: {s:#}"))
    };
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
    let auto = get("auto");
    assert_eq!(cond(&auto["status"], "Applied")["reason"], "NotSupported");
    assert!(
        get("other").get("status").is_none(),
        "another host's resource is not touched"
    );

    // Invalid desired state: reported in the status, exit 1, nothing else happens.
    make(
        "bad",
        json!({ "host": host, "desired": { "dashboard": { "portRange": "9-8" } } }),
    );
    let out = s
        .cmd()
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
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let bad = get("bad");
    assert_eq!(
        cond(&bad["status"], "Planned")["reason"],
        "InvalidDesired",
        "{bad:#}"
    );
    assert!(l.alive());
    let leases: Api<Lease> = {
        let _inside = rt.enter();
        Api::namespaced(
            kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap(),
            &ns,
        )
    };
    assert!(
        rt.block_on(leases.get_opt(&format!("nemoclaw-{host}")))
            .unwrap()
            .is_none(),
        "`--once` gives the lease up"
    );
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
