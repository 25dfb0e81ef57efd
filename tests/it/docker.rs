//! The legacy k3s gateway against a real Docker engine: the private dockerd that
//! `tests/support/test-services.sh` starts (scripts/test does), with busybox standing in for the
//! cluster image (`server` serves HTTP on 30051) and two tags of it for image drift.
//!
//! Under CI a missing engine fails these tests; elsewhere they are skipped with a message.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nemoclaw::model::PortRange;

use crate::support::{code, step_ids, step_with_action, text};
use crate::support::{nemoclaw_cmd, next_range};

const IMAGE_1: &str = "nemoclaw-test/busybox:1";
const IMAGE_2: &str = "nemoclaw-test/busybox:2";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A gateway of this test's own: unique name, free port, its own HOME; removes what it created.
struct Gateway {
    dir: tempfile::TempDir,
    name: String,
    port: u16,
    range: PortRange,
}

impl Gateway {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let range = next_range();
        Self {
            dir: tempfile::tempdir().unwrap(),
            name,
            port: range.end + 1,
            range,
        }
    }

    fn cluster(&self) -> String {
        format!("openshell-cluster-{}", self.name)
    }

    fn write(&self, gateway: bool, image: &str, extra: &str) {
        let gw = if gateway {
            format!(
                // This machine's engine cannot run privileged containers (its capability bounding
                // set lacks CAP_SYS_RESOURCE), so the tests ask for an unprivileged one.
                "gateway:\n  name: {}\n  runtime: legacy-k3s\n  privileged: false\n  port: {}\n  image: {image}\n  healthTimeout: 20s\n",
                self.name, self.port
            )
        } else {
            String::new()
        };
        let text = format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{}\"\n{gw}{extra}",
            self.range
        );
        std::fs::write(self.dir.path().join("nemoclaw.yaml"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        nemoclaw_cmd(self.dir.path()).args(args).output().unwrap()
    }

    fn plan(&self, extra: &[&str]) -> serde_json::Value {
        crate::support::plan_json(self.dir.path(), extra)
    }

    /// A container as OpenShell would have made it, with a file in its volume, left stopped.
    fn existing(&self, image: &str, running: bool) -> String {
        let c = self.cluster();
        docker_ok(&["network", "create", &c]);
        docker_ok(&["volume", "create", &c]);
        let publish = format!("127.0.0.1:{}:30051", self.port);
        let mount = format!("{c}:/var/lib/rancher/k3s");
        let id = docker_ok(&[
            "create",
            "--name",
            &c,
            "--network",
            &c,
            "-p",
            &publish,
            "-v",
            &mount,
            image,
            "server",
            "--disable=traefik",
        ]);
        docker_ok(&["start", &c]);
        docker_ok(&[
            "exec",
            &c,
            "sh",
            "-c",
            "echo precious > /var/lib/rancher/k3s/workspace.txt",
        ]);
        if !running {
            docker_ok(&["stop", &c]);
        }
        id
    }

    fn workspace_file(&self) -> String {
        let mount = format!("{}:/data", self.cluster());
        docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount,
            IMAGE_1,
            "cat",
            "/data/workspace.txt",
        ])
    }

    /// Whether the gateway's network takes other containers (`docker network inspect`).
    fn network_attachable(&self) -> String {
        docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{.Attachable}}",
            &self.cluster(),
        ])
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&[
            "inspect",
            "--type",
            "container",
            "--format",
            format,
            &self.cluster(),
        ])
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let c = self.cluster();
        let _ = docker(&["rm", "-f", &c]);
        let _ = docker(&["volume", "rm", "-f", &c, &format!("{c}-old")]);
        let _ = docker(&["network", "rm", &c]);
    }
}

// See: NVIDIA/NemoClaw#4187, #4210 — a stopped gateway was treated as missing and its volume,
// holding every sandbox workspace, deleted.
#[test]
fn a_stopped_gateway_is_started_and_its_volume_kept() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    let id = g.existing(IMAGE_1, false);
    g.write(true, IMAGE_1, "");

    let plan = g.plan(&[]);
    assert_eq!(
        step_ids(&plan),
        vec![format!("start:gateway.{}", g.name)],
        "{plan:#}"
    );
    assert_eq!(plan["steps"][0]["risk"], "create");
    assert!(
        plan["steps"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("is stopped")
    );

    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        g.inspect("{{.Id}} {{.State.Running}}"),
        format!("{id} true"),
        "the same container, running"
    );
    assert_eq!(g.workspace_file(), "precious");
    assert_eq!(
        code(&g.run(&["plan", "--detailed-exitcode"])),
        0,
        "a second plan is empty"
    );
}

#[test]
fn a_missing_gateway_is_created_with_the_spec_and_answers() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    g.write(true, IMAGE_1, "");
    let plan = g.plan(&[]);
    assert_eq!(
        step_ids(&plan),
        vec![
            format!("create:gateway.{}", g.name),
            format!("start:gateway.{}", g.name)
        ]
    );
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("the gateway answered HTTP 200"),
        "{}",
        text(&out)
    );
    assert_eq!(
        g.inspect("{{.HostConfig.Privileged}} {{.HostConfig.RestartPolicy.Name}} {{.Config.Hostname}} {{.HostConfig.NetworkMode}}"),
        format!("false unless-stopped openshell-{} {}", g.name, g.cluster()),
        "privileged as the file says (false here: see Gateway::write)"
    );
    assert_eq!(
        g.inspect("{{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}"),
        format!("{}:/var/lib/rancher/k3s", g.cluster())
    );
    assert_eq!(
        g.inspect("{{(index (index .NetworkSettings.Ports \"30051/tcp\") 0).HostPort}}"),
        g.port.to_string()
    );
    assert_eq!(
        docker_ok(&["volume", "inspect", "--format", "{{.Name}}", &g.cluster()]),
        g.cluster()
    );
    // OpenShell's environment: the entrypoint pins the server image to IMAGE_TAG.
    let env = g.inspect("{{range .Config.Env}}{{.}} {{end}}");
    for want in [
        "IMAGE_TAG=1".to_owned(),
        format!("OPENSHELL_NODE_NAME=openshell-{}", g.name),
        "IMAGE_REPO_BASE=ghcr.io/nvidia/openshell".to_owned(),
        "REGISTRY_MODE=external".to_owned(),
    ] {
        assert!(env.contains(&want), "{want} in {env}");
    }
    assert_eq!(g.network_attachable(), "true");
    assert_eq!(code(&g.run(&["plan", "--detailed-exitcode"])), 0);
}

#[test]
fn a_gateway_published_on_all_addresses_as_openshell_does_is_not_replaced() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    g.write(true, IMAGE_1, "");
    let c = g.cluster();
    docker_ok(&["network", "create", &c]);
    docker_ok(&["volume", "create", &c]);
    // OpenShell's bootstrap always publishes 30051 on 0.0.0.0 (`docker.rs:608-615`).
    let publish = format!("0.0.0.0:{}:30051", g.port);
    let mount = format!("{c}:/var/lib/rancher/k3s");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &c,
        "--network",
        &c,
        "-p",
        &publish,
        "-v",
        &mount,
        IMAGE_1,
        "server",
        "--disable=traefik",
    ]);
    let plan = g.plan(&[]);
    assert!(
        !step_ids(&plan).iter().any(|s| s.starts_with("replace")),
        "{plan:#}"
    );
    let notice = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["address"] == format!("gateway.{}", g.name))
        .unwrap_or_else(|| panic!("a notice: {plan:#}"));
    assert!(
        notice["message"].as_str().unwrap().contains("0.0.0.0"),
        "{notice:#}"
    );
}

#[test]
fn image_drift_is_a_replace_that_needs_consent_and_keeps_the_volume() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    let old_id = g.existing(IMAGE_1, true);
    g.write(true, IMAGE_2, "");

    let plan = g.plan(&[]);
    assert_eq!(step_ids(&plan), vec![format!("replace:gateway.{}", g.name)]);
    assert_eq!(plan["steps"][0]["risk"], "replace");
    assert_eq!(plan["steps"][0]["blocked"]["allow"], "--allow replace");
    assert_eq!(code(&g.run(&["plan", "--detailed-exitcode"])), 3);

    let refused = g.run(&["apply", "--yes"]);
    assert_eq!(code(&refused), 3, "{}", text(&refused));
    assert_eq!(
        g.inspect("{{.Id}}"),
        old_id,
        "nothing was replaced without consent"
    );

    let out = g.run(&["apply", "--yes", "--allow", "replace"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_ne!(g.inspect("{{.Id}}"), old_id);
    assert_eq!(g.inspect("{{.Config.Image}}"), IMAGE_2);
    assert_eq!(
        g.workspace_file(),
        "precious",
        "the volume survived the replace"
    );
    assert_eq!(code(&g.run(&["plan", "--detailed-exitcode"])), 0);
}

#[test]
fn a_stopped_gateway_with_drift_is_started_not_replaced() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    let id = g.existing(IMAGE_1, false);
    g.write(true, IMAGE_2, "");
    let plan = g.plan(&["--allow", "replace"]);
    assert_eq!(
        step_ids(&plan),
        vec![format!("start:gateway.{}", g.name)],
        "{plan:#}"
    );
    assert_eq!(plan["findings"][0]["kind"], "gateway-deferred");
    let out = g.run(&["apply", "--yes", "--allow", "replace"]);
    // The start worked, but the host still differs from the file (the image): not converged.
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("did not converge"), "{}", text(&out));
    assert_eq!(
        g.inspect("{{.Id}} {{.State.Running}}"),
        format!("{id} true"),
        "started, not recreated, in the same apply"
    );
    // The escalation comes in a later plan, after the start was tried.
    assert_eq!(
        step_ids(&g.plan(&[])),
        vec![format!("replace:gateway.{}", g.name)]
    );
}

#[test]
fn an_unreachable_engine_is_unknown_and_nothing_is_touched() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    let id = g.existing(IMAGE_1, false);
    g.write(
        true,
        IMAGE_1,
        &format!("destroy:\n  volumes: [{}]\n", g.cluster()),
    );
    let run = |args: &[&str]| {
        nemoclaw_cmd(g.dir.path())
            .args(args)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap()
    };
    assert_eq!(code(&run(&["plan", "--detailed-exitcode"])), 3);
    let json: serde_json::Value =
        serde_json::from_slice(&run(&["plan", "-o", "json"]).stdout).unwrap();
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "docker-unknown"),
        "{json:#}"
    );
    assert!(
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["blocked"].is_null()),
        "{json:#}"
    );
    let out = run(&["apply", "--yes", "--allow", "destroy", "--allow", "replace"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(
        g.inspect("{{.Id}} {{.State.Running}}"),
        format!("{id} false")
    );
    assert_eq!(g.workspace_file(), "precious");
}

#[test]
fn volumes_are_deleted_only_by_exact_name_and_with_consent() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    let c = g.cluster();
    let look_alike = format!("{c}-old");
    docker_ok(&["volume", "create", &c]);
    docker_ok(&["volume", "create", &look_alike]);
    let exists = |v: &str| docker(&["volume", "inspect", v]).status.success();

    // Consent alone deletes nothing.
    g.write(false, IMAGE_1, "destroy:\n  volumes: []\n");
    let out = g.run(&["apply", "--yes", "--allow", "destroy"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(exists(&c) && exists(&look_alike));

    // Named exactly: blocked without consent, deleted with it; the look-alike stays.
    g.write(false, IMAGE_1, &format!("destroy:\n  volumes: [{c}]\n"));
    let plan = g.plan(&[]);
    assert_eq!(step_ids(&plan), vec![format!("delete:volume.{c}")]);
    assert_eq!(plan["steps"][0]["risk"], "destroy");
    assert_eq!(
        plan["steps"][0]["blocked"]["allow"],
        format!("--allow destroy=volume.{c}"),
        "consent to data loss names the volume"
    );
    assert_eq!(code(&g.run(&["apply", "--yes"])), 3);
    assert!(exists(&c));
    let out = g.run(&["apply", "--yes", "--allow", "destroy"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!exists(&c), "the named volume is gone");
    assert!(exists(&look_alike), "a prefix look-alike is never touched");
}

#[test]
fn a_volume_in_use_by_the_declared_gateway_is_never_deleted() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    g.existing(IMAGE_1, false);
    g.write(
        true,
        IMAGE_1,
        &format!("destroy:\n  volumes: [{}]\n", g.cluster()),
    );
    let plan = g.plan(&["--allow", "destroy"]);
    let delete = step_with_action(&plan, "delete").unwrap();
    assert!(
        delete["blocked"]["allow"].is_null(),
        "no flag unblocks it: {delete:#}"
    );
    let out = g.run(&["apply", "--yes", "--allow", "destroy"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(g.workspace_file(), "precious");
}

#[test]
fn a_stopped_gateway_whose_network_was_removed_is_reattached_and_started() {
    if !crate::support::docker_engine() {
        return;
    }
    let g = Gateway::new();
    g.write(true, IMAGE_1, "");
    g.existing(IMAGE_1, false);
    docker_ok(&["network", "rm", &g.cluster()]);
    let out = g.run(&["apply", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(g.inspect("{{.State.Running}}"), "true");
    assert_eq!(g.workspace_file(), "precious", "the volume is the old one");
    assert_eq!(g.network_attachable(), "true");
}
