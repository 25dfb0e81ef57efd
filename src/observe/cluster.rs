//! The legacy gateway's k3s cluster through the real `kube` client: namespace `openshell`, the
//! `openshell` statefulset, the four bootstrap secrets, and PVCs.
//!
//! Secret values never leave this module: each secret becomes `missing`, `valid` or `malformed`
//! (keys missing, not PEM, key not matching its certificate, expired, server SANs incomplete), with
//! SHA-256 fingerprints and certificate metadata. Unreachable, unauthorized or slow = unknown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::model::{CertFacts, ClusterFacts, Observation, PvcFacts, SecretFacts, sha256_hex};

/// The namespace OpenShell runs in.
pub const NAMESPACE: &str = "openshell";
/// Server TLS secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`).
pub const SERVER_TLS: &str = "openshell-server-tls";
/// The CA the server trusts for client certificates (`ca.crt`).
pub const CLIENT_CA: &str = "openshell-server-client-ca";
/// The client bundle shared by the CLI and sandbox pods (`tls.crt`, `tls.key`, `ca.crt`).
pub const CLIENT_TLS: &str = "openshell-client-tls";
/// The SSH handshake secret (`secret`).
pub const HANDSHAKE: &str = "openshell-ssh-handshake";
/// All four, in the order they are reported.
pub const SECRETS: [&str; 4] = [SERVER_TLS, CLIENT_CA, CLIENT_TLS, HANDSHAKE];
/// Names the server certificate must cover (OpenShell's own list).
pub const SERVER_SANS: [&str; 6] = [
    "openshell",
    "openshell.openshell.svc",
    "openshell.openshell.svc.cluster.local",
    "localhost",
    "host.docker.internal",
    "127.0.0.1",
];

/// Where the cluster is and what else to read.
#[derive(Clone, Debug)]
pub struct ClusterQuery {
    /// A kubeconfig file (the file's `gateway.cluster.kubeconfig`, else `KUBECONFIG`), or `None`
    /// to read the gateway container's `/etc/rancher/k3s/k3s.yaml` through the Docker API.
    pub kubeconfig: Option<PathBuf>,
    /// The legacy gateway container.
    pub container: String,
    /// `DOCKER_HOST`.
    pub docker_endpoint: Option<String>,
    /// The CLI's copy of the client bundle.
    pub mtls_dir: PathBuf,
    /// Time limit for connecting and for each call.
    pub timeout: Duration,
}

/// Builds a client for the cluster, saying where it points.
pub async fn client(q: &ClusterQuery) -> Result<(Client, String), String> {
    let (kubeconfig, source) = match &q.kubeconfig {
        Some(path) => (
            Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            from_container(q).await?,
            format!("container {}:/etc/rancher/k3s/k3s.yaml", q.container),
        ),
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig from {source}: {e}"))?;
    config.connect_timeout = Some(q.timeout);
    config.read_timeout = Some(q.timeout);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| format!("kube client for {server}: {e}"))?;
    Ok((client, format!("{server} (from {source})")))
}

/// Reads k3s's kubeconfig out of the gateway container and points it at the container's address
/// on its network, keeping TLS verification against the certificate's name `localhost`.
async fn from_container(q: &ClusterQuery) -> Result<Kubeconfig, String> {
    use futures_util::StreamExt as _;
    let docker = super::docker::connect(q.docker_endpoint.as_deref()).await?;
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path("/etc/rancher/k3s/k3s.yaml")
        .build();
    let mut stream = docker.download_from_container(&q.container, Some(options));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar.extend_from_slice(
            &chunk.map_err(|e| format!("reading k3s.yaml from `{}`: {e}", q.container))?,
        );
    }
    let text =
        first_tar_file(&tar).ok_or_else(|| format!("`{}` returned no k3s.yaml", q.container))?;
    let inspect = docker
        .inspect_container(&q.container, None)
        .await
        .map_err(|e| e.to_string())?;
    let ip = inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| nets.get(&q.container).and_then(|n| n.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            format!(
                "container `{}` has no address on network `{}`",
                q.container, q.container
            )
        })?;
    let mut kc = Kubeconfig::from_yaml(&text).map_err(|e| format!("k3s.yaml: {e}"))?;
    for c in &mut kc.clusters {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.server = Some(format!("https://{ip}:6443"));
            cluster.tls_server_name = Some("localhost".to_owned());
        }
    }
    Ok(kc)
}

/// The contents of the first file of a tar archive.
fn first_tar_file(tar: &[u8]) -> Option<String> {
    let header = tar.get(..512)?;
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    String::from_utf8(tar.get(512..512 + size)?.to_vec()).ok()
}

/// Observes the cluster. `now_s` decides what "expired" means.
pub async fn observe(q: &ClusterQuery, now_s: i64) -> Observation<ClusterFacts> {
    match tokio::time::timeout(q.timeout * 3, observe_inner(q, now_s)).await {
        Ok(Ok(value)) => Observation::Known { value },
        Ok(Err(reason)) => Observation::Unknown { reason },
        Err(_) => Observation::Unknown {
            reason: format!(
                "the cluster did not answer within {}s",
                (q.timeout * 3).as_secs()
            ),
        },
    }
}

async fn observe_inner(q: &ClusterQuery, now_s: i64) -> Result<ClusterFacts, String> {
    let (client, source) = client(q).await?;
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: kube::Error| format!("{what}: {err}")
    };
    // The calls are independent: ask them all at once rather than one round trip after another.
    let secrets_api = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let namespaces = Api::<Namespace>::all(client.clone());
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), NAMESPACE);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client, NAMESPACE);
    let list = ListParams::default();
    let (namespace, statefulset, claims, found) = tokio::join!(
        namespaces.get_opt(NAMESPACE),
        statefulsets.get_opt("openshell"),
        claims.list(&list),
        futures_util::future::join_all(SECRETS.iter().map(|name| secrets_api.get_opt(name))),
    );
    let namespace = namespace.map_err(e("namespace"))?.is_some();
    let statefulset = namespace && statefulset.map_err(e("statefulset"))?.is_some();
    let mut secrets = BTreeMap::new();
    let mut raw: Vec<(&str, Secret)> = Vec::new();
    for (name, s) in SECRETS.iter().zip(found) {
        let s = s.map_err(e(&format!("secret {name}")))?;
        secrets.insert((*name).to_owned(), classify(name, s.as_ref(), now_s));
        if let Some(s) = s {
            raw.push((name, s));
        }
    }
    let tls: BTreeMap<&str, &Secret> = raw.iter().map(|(n, s)| (*n, s)).collect();
    let all_valid = [SERVER_TLS, CLIENT_CA, CLIENT_TLS]
        .iter()
        .all(|n| matches!(secrets.get(*n), Some(SecretFacts::Valid { .. })));
    let (tls_layout, tls_problem) = if all_valid {
        match tls_chain(&tls) {
            Ok(layout) => (Some(layout.to_owned()), None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (None, None)
    };
    let pvcs = match claims {
        Ok(list) => list.items.into_iter().map(pvc).collect(),
        // A namespace that does not exist has no claims.
        Err(_) if !namespace => Vec::new(),
        Err(err) => return Err(e("PVCs")(err)),
    };
    let cli_bundle = ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .map(|f| {
            (
                (*f).to_owned(),
                super::files::read_regular(&q.mtls_dir.join(f), 1 << 20)
                    .ok()
                    .map(|b| sha256_hex(&b)),
            )
        })
        .collect();
    Ok(ClusterFacts {
        source,
        namespace,
        statefulset,
        secrets,
        pvcs,
        cli_bundle,
        tls_layout,
        tls_problem,
    })
}

fn pvc(p: PersistentVolumeClaim) -> PvcFacts {
    let name = p.metadata.name.clone().unwrap_or_default();
    let sandbox = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("openshell.ai/sandbox-name").cloned())
        .or_else(|| {
            name.strip_prefix("workspace-")
                .map(|s| s.trim_end_matches("-0").to_owned())
        });
    let status = p.status.unwrap_or_default();
    let capacity = status
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage").map(|q| q.0.clone()))
        .or_else(|| {
            p.spec.as_ref().and_then(|s| {
                s.resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")
                    .map(|q| q.0.clone())
            })
        });
    PvcFacts {
        name,
        phase: status.phase.unwrap_or_else(|| "Unknown".to_owned()),
        volume: p.spec.and_then(|s| s.volume_name),
        capacity,
        sandbox,
    }
}

/// Classifies one secret; values are reduced to fingerprints here and go no further.
#[must_use]
pub fn classify(name: &str, secret: Option<&Secret>, now_s: i64) -> SecretFacts {
    let Some(s) = secret else {
        return SecretFacts::Missing;
    };
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let fingerprints: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.clone(), sha256_hex(v)))
        .collect();
    let bad = |reason: String| SecretFacts::Malformed {
        reason,
        fingerprints: fingerprints.clone(),
    };
    let need: &[&str] = match name {
        SERVER_TLS => &["tls.crt", "tls.key"],
        CLIENT_CA => &["ca.crt"],
        CLIENT_TLS => &["tls.crt", "tls.key", "ca.crt"],
        _ => &["secret"],
    };
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|k| data.get(*k).is_none_or(Vec::is_empty))
        .collect();
    if !missing.is_empty() {
        return bad(format!("keys missing or empty: {}", missing.join(", ")));
    }
    if name == HANDSHAKE {
        return SecretFacts::Valid {
            fingerprints,
            cert: None,
        };
    }
    let cert_key = if name == CLIENT_CA {
        "ca.crt"
    } else {
        "tls.crt"
    };
    let cert = match cert_facts(&data[cert_key], now_s) {
        Ok(c) => c,
        Err(why) => return bad(format!("`{cert_key}`: {why}")),
    };
    if name != CLIENT_CA
        && let Err(why) = key_matches(&data["tls.crt"], &data["tls.key"])
    {
        return bad(why);
    }
    if name == CLIENT_TLS
        && let Err(why) = cert_facts(&data["ca.crt"], now_s)
    {
        return bad(format!("`ca.crt`: {why}"));
    }
    if name == SERVER_TLS {
        let lacking: Vec<&str> = REQUIRED_SERVER_SANS
            .iter()
            .copied()
            .filter(|n| !cert.sans.iter().any(|s| s == n))
            .collect();
        if !lacking.is_empty() {
            return bad(format!(
                "the server certificate lacks the names {}",
                lacking.join(", ")
            ));
        }
    }
    SecretFacts::Valid {
        fingerprints,
        cert: Some(cert),
    }
}

/// The names the server certificate must cover for the CLI (`https://127.0.0.1:<port>`,
/// `localhost`) and the pods (the service names) to reach it. The engine's own certificates also
/// name `host.docker.internal`, as OpenShell's do; NemoClaw's #3306 repair leaves it out
/// (9708c264 `src/lib/onboard/gateway-bootstrap.ts:81`), and a set without it still works.
pub const REQUIRED_SERVER_SANS: [&str; 5] = [
    "openshell",
    "openshell.openshell.svc",
    "openshell.openshell.svc.cluster.local",
    "localhost",
    "127.0.0.1",
];

/// Whether the three TLS secrets, each well formed, work together, and in which layout:
/// the client certificate must be signed by the bundle's `ca.crt`, the server's client CA must be
/// that same certificate, and the server certificate must be signed by it (OpenShell's layout: one
/// CA) or be self-signed (NemoClaw's #3306 repair: a self-signed server certificate and a separate
/// client CA). `Err` says what is broken; secrets that are missing or malformed are judged alone.
fn tls_chain(secrets: &BTreeMap<&str, &Secret>) -> Result<&'static str, String> {
    let data = |name: &str, key: &str| -> Option<Vec<u8>> {
        secrets
            .get(name)?
            .data
            .as_ref()?
            .get(key)
            .map(|b| b.0.clone())
    };
    let (Some(server), Some(client_ca), Some(client), Some(bundle_ca)) = (
        data(SERVER_TLS, "tls.crt"),
        data(CLIENT_CA, "ca.crt"),
        data(CLIENT_TLS, "tls.crt"),
        data(CLIENT_TLS, "ca.crt"),
    ) else {
        return Ok("incomplete");
    };
    if client_ca != bundle_ca {
        return Err(format!(
            "`{CLIENT_CA}` and the `ca.crt` of `{CLIENT_TLS}` differ: the server would not accept the client certificate"
        ));
    }
    let parse = |pem: &[u8]| -> Result<Vec<u8>, String> {
        x509_parser::pem::parse_x509_pem(pem)
            .map(|(_, p)| p.contents)
            .map_err(|_| "not PEM".to_owned())
    };
    let (server, ca, client) = (parse(&server)?, parse(&client_ca)?, parse(&client)?);
    fn cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|e| e.to_string())
    }
    let (server, ca, client) = (cert(&server)?, cert(&ca)?, cert(&client)?);
    if client.verify_signature(Some(ca.public_key())).is_err() {
        return Err(format!(
            "the client certificate in `{CLIENT_TLS}` is not signed by its `ca.crt`"
        ));
    }
    if server.verify_signature(Some(ca.public_key())).is_ok() {
        return Ok("openshell");
    }
    if server.verify_signature(None).is_ok() {
        return Ok("nemoclaw-repair");
    }
    Err(format!(
        "the server certificate in `{SERVER_TLS}` is signed neither by the client CA nor by itself"
    ))
}

fn cert_facts(pem: &[u8], now_s: i64) -> Result<CertFacts, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| "not PEM".to_owned())?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    if not_after < now_s {
        return Err(format!("expired at {}", cert.validity().not_after));
    }
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                    sans.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string());
                }
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after: super::time::format_rfc3339(u64::try_from(not_after).unwrap_or(0) * 1000),
        sans,
    })
}

fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    use rcgen::PublicKeyData as _;
    let key = std::str::from_utf8(key_pem)
        .ok()
        .and_then(|k| rcgen::KeyPair::from_pem(k).ok())
        .ok_or("`tls.key` is not a PEM private key")?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem).map_err(|_| "`tls.crt` is not PEM")?;
    let cert = pem
        .parse_x509()
        .map_err(|_| "`tls.crt` is not a certificate")?;
    if cert.public_key().subject_public_key.data.as_ref() == key.der_bytes() {
        Ok(())
    } else {
        Err("`tls.key` does not match the certificate in `tls.crt`".to_owned())
    }
}
