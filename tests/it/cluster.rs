//! Bootstrap secrets and PVCs through the real `kube` client, against the Kubernetes API emulator
//! the test script starts (kmock 0.8 with the fixes in tests/support/kapi.py; no k3s or
//! kube-apiserver can run here). What the emulator cannot show: server-side validation, SSA
//! field ownership and conflicts, a real statefulset rollout (the restart is checked as the
//! annotation `kubectl rollout restart` sets), and TLS to the API (it speaks plain HTTP).
//! Each test also runs a real gateway container on the private Docker engine, so that the plan
//! is about secrets only.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::support::text;
use crate::support::{nemoclaw_cmd, next_range};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Env {
    dir: tempfile::TempDir,
    container: String,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

fn url() -> Option<String> {
    match std::env::var("NEMOCLAW_TEST_KUBE_URL") {
        Ok(u) if std::env::var_os("DOCKER_HOST").is_some() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run these against the emulator and the private engine (scripts/test)"
            );
            eprintln!(
                "skipped: NEMOCLAW_TEST_KUBE_URL or DOCKER_HOST is not set (scripts/test starts both)"
            );
            None
        }
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

impl Env {
    fn new(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let range = next_range();
        let name = format!("c{}x{}", std::process::id(), range.start);
        let container = format!("openshell-cluster-{name}");
        let port = range.end + 1;
        docker(&["network", "create", &container]);
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &container,
            "-p",
            &format!("127.0.0.1:{port}:30051"),
            "-v",
            &format!("{container}:/var/lib/rancher/k3s"),
            "nemoclaw-test/busybox:1",
            "server",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"
        )).unwrap();
        std::fs::write(dir.path().join("nemoclaw.yaml"), format!(
            "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{range}\"\ngateway:\n  name: {name}\n  runtime: legacy-k3s\n  privileged: false\n  port: {port}\n  image: nemoclaw-test/busybox:1\n  healthTimeout: 20s\n  cluster:\n    kubeconfig: {}\n",
            kubeconfig.display()
        )).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = {
            // The client's buffer service spawns onto the runtime it is built in.
            let _inside = rt.enter();
            kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
        };
        let env = Self {
            dir,
            container,
            rt,
            client,
        };
        env.reset();
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        nemoclaw_cmd(self.dir.path()).args(args).output().unwrap()
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), "openshell")
    }

    fn reset(&self) {
        self.rt.block_on(async {
            for s in [
                "openshell-server-tls",
                "openshell-server-client-ca",
                "openshell-client-tls",
                "openshell-ssh-handshake",
            ] {
                let _ = self.secrets().delete(s, &DeleteParams::default()).await;
            }
            let _ = Api::<StatefulSet>::namespaced(self.client.clone(), "openshell")
                .delete("openshell", &DeleteParams::default())
                .await;
            let pvcs: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), "openshell");
            if let Ok(list) = pvcs.list(&Default::default()).await {
                for p in list.items {
                    let _ = pvcs
                        .delete(
                            &p.metadata.name.unwrap_or_default(),
                            &DeleteParams::default(),
                        )
                        .await;
                }
            }
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete("openshell", &DeleteParams::default())
                .await;
        });
    }

    /// Namespace and statefulset exist: the cluster finished bootstrapping.
    fn bootstrapped(&self) {
        self.rt.block_on(async {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some("openshell".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<Namespace>::all(self.client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
            let ss = StatefulSet {
                metadata: ObjectMeta {
                    name: Some("openshell".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<StatefulSet>::namespaced(self.client.clone(), "openshell")
                .create(&PostParams::default(), &ss)
                .await
                .unwrap();
        });
    }

    fn put(&self, name: &str, data: &[(&str, &[u8])]) {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.rt
            .block_on(self.secrets().create(&PostParams::default(), &s))
            .unwrap();
    }

    fn get(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.rt
            .block_on(self.secrets().get_opt(name))
            .unwrap()
            .map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            })
    }

    fn ids(&self, extra: &[&str]) -> Vec<String> {
        crate::support::step_ids(&crate::support::plan_json(self.dir.path(), extra))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.reset();
        docker(&["rm", "-f", &self.container]);
        docker(&["volume", "rm", "-f", &self.container]);
        docker(&["network", "rm", &self.container]);
    }
}

fn cert(pem: &[u8]) -> x509_parser::certificate::X509Certificate<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let leaked: &'static [u8] = Box::leak(p.contents.into_boxed_slice());
    x509_parser::parse_x509_certificate(leaked).unwrap().1
}

#[test]
fn all_four_missing_are_created_as_one_valid_pki_and_copied_to_the_cli() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    e.bootstrapped();
    let gw = e
        .container
        .trim_start_matches("openshell-cluster-")
        .to_owned();
    assert_eq!(
        e.ids(&[]),
        vec![
            "create:secret.openshell/openshell-ssh-handshake".to_owned(),
            "create:secrets.openshell/tls".to_owned(),
            format!("write:mtls.{gw}")
        ]
    );
    let out = e.run(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let server = e.get("openshell-server-tls").unwrap();
    let ca_secret = e.get("openshell-server-client-ca").unwrap();
    let client = e.get("openshell-client-tls").unwrap();
    let ca = cert(&ca_secret["ca.crt"]);
    let s = cert(&server["tls.crt"]);
    let c = cert(&client["tls.crt"]);
    assert_eq!(
        client["ca.crt"], ca_secret["ca.crt"],
        "the client CA is the CA"
    );
    assert!(ca.is_ca() && ca.subject().to_string().contains("CN=openshell-ca"));
    for (leaf, cn, eku_server) in [
        (&s, "openshell-server", true),
        (&c, "openshell-client", false),
    ] {
        assert!(leaf.subject().to_string().contains(&format!("CN={cn}")));
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(
            (eku.server_auth, eku.client_auth),
            (eku_server, !eku_server)
        );
    }
    let sans: Vec<String> = s
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    for name in [
        "openshell",
        "openshell.openshell.svc",
        "openshell.openshell.svc.cluster.local",
        "localhost",
        "host.docker.internal",
    ] {
        assert!(
            sans.iter().any(|s| s.contains(name)),
            "SAN {name} in {sans:?}"
        );
    }
    assert!(
        sans.iter().any(|s| s.contains(&format!("openshell-{gw}"))),
        "the gateway's own host name: {sans:?}"
    );
    assert_eq!(
        e.get("openshell-ssh-handshake").unwrap()["secret"].len(),
        64
    );
    let mtls = e
        .dir
        .path()
        .join(format!(".config/openshell/gateways/{gw}/mtls"));
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert_eq!(
            std::fs::read(mtls.join(f)).unwrap(),
            client[f],
            "the CLI's {f} is the cluster's"
        );
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(mtls.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert_eq!(
        e.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "a second plan is empty"
    );

    // Secret values never appear in any output, snapshot or journal.
    let key_body: String = String::from_utf8_lossy(&client["tls.key"])
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let handshake =
        String::from_utf8_lossy(&e.get("openshell-ssh-handshake").unwrap()["secret"]).to_string();
    let mut seen = String::new();
    for args in [
        &["plan", "-o", "json"][..],
        &["plan"],
        &["plan", "-o", "markdown"],
        &["observe", "-f", "nemoclaw.yaml"],
        &["observe", "-f", "nemoclaw.yaml", "-o", "yaml"],
        &["apply", "--yes"],
        &["history"],
    ] {
        seen.push_str(&text(&e.run(args)));
    }
    seen.push_str(
        &std::fs::read_to_string(e.dir.path().join(".local/state/nemoclaw/journal.jsonl"))
            .unwrap_or_default(),
    );
    assert!(
        !seen.contains(&key_body) && !seen.contains(&handshake),
        "key material leaked into output or the journal"
    );
}

#[test]
fn only_the_missing_group_is_regenerated_and_a_replace_needs_consent() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    e.bootstrapped();
    assert_eq!(e.run(&["apply", "--yes"]).status.code(), Some(0));
    let server_before = e.get("openshell-server-tls").unwrap();

    // The handshake alone: only it is regenerated.
    e.rt.block_on(
        e.secrets()
            .delete("openshell-ssh-handshake", &DeleteParams::default()),
    )
    .unwrap();
    assert_eq!(
        e.ids(&[]),
        vec!["create:secret.openshell/openshell-ssh-handshake".to_owned()]
    );
    assert_eq!(e.run(&["apply", "--yes"]).status.code(), Some(0));
    assert_eq!(
        e.get("openshell-server-tls").unwrap(),
        server_before,
        "the TLS group is untouched"
    );

    // The client side missing: the TLS group must be made anew, replacing the server secret.
    e.rt.block_on(
        e.secrets()
            .delete("openshell-client-tls", &DeleteParams::default()),
    )
    .unwrap();
    let gw = e
        .container
        .trim_start_matches("openshell-cluster-")
        .to_owned();
    assert_eq!(
        e.ids(&[]),
        vec![
            "replace:secrets.openshell/tls".to_owned(),
            format!("write:mtls.{gw}"),
            "restart:statefulset.openshell/openshell".to_owned()
        ]
    );
    let refused = e.run(&["apply", "--yes"]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        e.get("openshell-client-tls").is_none(),
        "nothing was replaced without consent"
    );
    let out = e.run(&["apply", "--yes", "--allow", "replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(e.get("openshell-server-tls").unwrap(), server_before);
    let ss = e
        .rt
        .block_on(Api::<StatefulSet>::namespaced(e.client.clone(), "openshell").get("openshell"))
        .unwrap();
    let restarted = ss
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        restarted.contains_key("kubectl.kubernetes.io/restartedAt"),
        "the rollout was restarted"
    );
    let mtls = e
        .dir
        .path()
        .join(format!(".config/openshell/gateways/{gw}/mtls"));
    assert_eq!(
        std::fs::read(mtls.join("tls.crt")).unwrap(),
        e.get("openshell-client-tls").unwrap()["tls.crt"],
        "the CLI bundle followed"
    );
}

#[test]
fn a_malformed_secret_is_a_blocked_replace() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    e.bootstrapped();
    e.put(
        "openshell-server-tls",
        &[("tls.crt", b"not a certificate"), ("tls.key", b"nor a key")],
    );
    let out = e.run(&["plan", "-o", "json", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == "secrets.openshell/tls")
        .unwrap();
    assert_eq!(
        (step["action"].as_str(), step["risk"].as_str()),
        (Some("replace"), Some("replace"))
    );
    assert!(step["reason"].as_str().unwrap().contains("malformed"));
    assert_eq!(step["blocked"]["allow"], "--allow replace");
}

#[test]
fn a_bootstrapping_cluster_is_not_repaired_and_orphaned_pvcs_are_kept() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    let out = e.run(&["plan", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["steps"].as_array().unwrap().is_empty(), "{json:#}");
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "cluster-bootstrapping")
    );

    e.bootstrapped();
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("workspace-ghost-0".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(e.client.clone(), "openshell");
    e.rt.block_on(pvcs.create(&PostParams::default(), &pvc))
        .unwrap();
    let out = e.run(&["apply", "--yes", "--allow", "destroy", "--allow", "replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("orphaned-workspace") && text(&out).contains("workspace-ghost-0"),
        "{}",
        text(&out)
    );
    assert!(
        e.rt.block_on(pvcs.get_opt("workspace-ghost-0"))
            .unwrap()
            .is_some(),
        "never deleted"
    );
}

#[test]
fn an_unreachable_api_is_unknown_and_exits_3() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = std::fs::read_to_string(e.dir.path().join("kubeconfig"))
        .unwrap()
        .replace(&url, &format!("http://127.0.0.1:{closed}"));
    std::fs::write(e.dir.path().join("kubeconfig"), kc).unwrap();
    let out = e.run(&["plan", "-o", "json", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "cluster-unknown"),
        "{json:#}"
    );
}

/// NemoClaw's #3306 repair, made the way its script makes it (byte-identical in 3aa9a59f
/// `src/lib/onboard.ts:4101-4137` and 9708c264 `src/lib/onboard/gateway-bootstrap.ts:63-99`):
/// a self-signed RSA server certificate without `host.docker.internal`, and a separate client CA
/// signing the client certificate. Returns (server.crt, server.key, client-ca.crt, client.crt,
/// client.key); `other_ca` signs the client certificate with a CA that is not the bundle's.
fn nemoclaw_repair(dir: &std::path::Path, other_ca: bool) -> [Vec<u8>; 5] {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server-ext.cnf"),
        "subjectAltName=DNS:openshell,DNS:openshell.openshell,DNS:openshell.openshell.svc,DNS:openshell.openshell.svc.cluster.local,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client-ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    sh(
        "openssl req -nodes -newkey rsa:2048 -keyout server.key -out server.csr -subj /CN=openshell.openshell.svc.cluster.local 2>/dev/null \
        && openssl x509 -req -in server.csr -signkey server.key -out server.crt -days 3650 -sha256 -extfile server-ext.cnf 2>/dev/null \
        && openssl req -x509 -nodes -newkey rsa:2048 -keyout client-ca.key -out client-ca.crt -subj /CN=openshell-client-ca -days 3650 2>/dev/null \
        && openssl req -x509 -nodes -newkey rsa:2048 -keyout other-ca.key -out other-ca.crt -subj /CN=other-ca -days 3650 2>/dev/null \
        && openssl req -nodes -newkey rsa:2048 -keyout client.key -out client.csr -subj /CN=openshell-client 2>/dev/null",
    );
    let signer = if other_ca { "other-ca" } else { "client-ca" };
    sh(&format!(
        "openssl x509 -req -in client.csr -CA {signer}.crt -CAkey {signer}.key -CAcreateserial -out client.crt -days 3650 -sha256 -extfile client-ext.cnf 2>/dev/null"
    ));
    [
        "server.crt",
        "server.key",
        "client-ca.crt",
        "client.crt",
        "client.key",
    ]
    .map(|f| std::fs::read(dir.join(f)).unwrap())
}

#[test]
fn nemoclaws_repaired_pki_is_kept_and_a_broken_chain_is_replaced() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    for other_ca in [false, true] {
        let e = Env::new(&url);
        e.bootstrapped();
        let [scrt, skey, ca, ccrt, ckey] = nemoclaw_repair(e.dir.path(), other_ca);
        e.put(
            "openshell-server-tls",
            &[("tls.crt", &scrt), ("tls.key", &skey)],
        );
        e.put("openshell-server-client-ca", &[("ca.crt", &ca)]);
        e.put(
            "openshell-client-tls",
            &[("tls.crt", &ccrt), ("tls.key", &ckey), ("ca.crt", &ca)],
        );
        e.put(
            "openshell-ssh-handshake",
            &[("secret", b"0123456789abcdef")],
        );
        let plan = crate::support::plan_json(e.dir.path(), &[]);
        let tls: Vec<&serde_json::Value> = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["address"] == "secrets.openshell/tls")
            .collect();
        if other_ca {
            assert_eq!(tls.len(), 1, "{plan:#}");
            assert_eq!(tls[0]["action"], "replace");
            assert!(
                tls[0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not signed by its `ca.crt`"),
                "{:#}",
                tls[0]
            );
        } else {
            assert!(
                tls.is_empty(),
                "NemoClaw's layout works and is kept: {plan:#}"
            );
            let observed: serde_json::Value = serde_json::from_slice(
                &e.run(&["observe", "-f", "nemoclaw.yaml", "-o", "json"])
                    .stdout,
            )
            .unwrap();
            assert_eq!(
                observed["cluster"]["value"]["tls_layout"],
                "nemoclaw-repair"
            );
        }
    }
}

#[test]
fn secrets_are_reconciled_in_the_same_apply_once_a_started_gateways_cluster_bootstraps() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = url() else { return };
    let e = Env::new(&url);
    docker(&["stop", &e.container]);
    // Stopped, and its cluster not bootstrapped: the plan can only start it.
    let ids = e.ids(&[]);
    assert!(
        ids.iter().any(|i| i.starts_with("start:gateway."))
            && !ids.iter().any(|i| i.contains("secrets")),
        "{ids:?}"
    );
    let out = std::thread::scope(|s| {
        let apply = s.spawn(|| e.run(&["apply", "--yes"]));
        // The cluster comes up a moment after the start, as k3s does.
        std::thread::sleep(std::time::Duration::from_secs(3));
        e.bootstrapped();
        apply.join().unwrap()
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("waiting for the gateway's cluster"),
        "{}",
        text(&out)
    );
    for name in [
        "openshell-server-tls",
        "openshell-server-client-ca",
        "openshell-client-tls",
        "openshell-ssh-handshake",
    ] {
        assert!(e.get(name).is_some(), "{name} was created: {}", text(&out));
    }
}
