//! Bootstrap secrets through the real `kube` client: generate (rcgen), write idempotently, copy
//! the client bundle to the CLI, restart the statefulset's rollout.
//!
//! Key material exists only in memory here and in the cluster; it is never logged, journaled or
//! returned in a step outcome. Before writing, each secret is re-read: if it no longer looks as
//! planned (fingerprints), the step is stale. A create answered 409 means someone else wrote it
//! meanwhile: that is stale too, never an overwrite.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::StepOutcome;
use crate::model::sha256_hex;
use crate::observe::cluster::{self, ClusterQuery, NAMESPACE};
use crate::plan::SecretsTarget;

/// The field manager every write carries.
const FIELD_MANAGER: &str = "nemoclaw";

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

fn fingerprints(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), sha256_hex(&v.0)))
        .collect()
}

async fn secrets_api(q: &ClusterQuery) -> Result<Api<Secret>, StepOutcome> {
    let (client, _) = cluster::client(q).await.map_err(StepOutcome::Failed)?;
    Ok(Api::namespaced(client, NAMESPACE))
}

/// A freshly generated PKI, PEM-encoded.
struct Pki {
    ca: String,
    server_crt: String,
    server_key: String,
    client_crt: String,
    client_key: String,
}

fn generate(sans: &[String]) -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "openshell-ca");
    ca.distinguished_name
        .push(DnType::OrganizationName, "openshell");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let leaf = |cn: &str,
                names: Vec<String>,
                eku: ExtendedKeyUsagePurpose|
     -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_crt, server_key) = leaf(
        "openshell-server",
        sans.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_crt, client_key) = leaf(
        "openshell-client",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Pki {
        ca: ca_cert.pem(),
        server_crt,
        server_key,
        client_crt,
        client_key,
    })
}

/// 32 random bytes from the kernel, hex.
fn handshake() -> Result<String, std::io::Error> {
    use std::io::Read as _;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn secret(
    name: &str,
    kind: &str,
    data: &[(&str, &str)],
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "nemoclaw".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(kind.to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Generates and writes the step's secrets.
pub async fn write(
    t: &SecretsTarget,
    q: &ClusterQuery,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepOutcome {
    let api = match secrets_api(q).await {
        Ok(a) => a,
        Err(e) => return e,
    };
    let mut current = BTreeMap::new();
    for name in &t.names {
        let now = match api.get_opt(name).await {
            Ok(s) => s,
            Err(e) => return StepOutcome::Failed(format!("reading secret `{name}`: {e}")),
        };
        let seen = now.as_ref().map(fingerprints);
        if t.expected.get(name).cloned().flatten() != seen {
            return StepOutcome::Stale(format!(
                "secret `{name}` changed since the plan; nothing was written"
            ));
        }
        current.insert(name.clone(), now.and_then(|s| s.metadata.resource_version));
    }
    progress("generating key material");
    let mut writes: Vec<Secret> = Vec::new();
    if t.names.iter().any(|n| n == cluster::SERVER_TLS) {
        let pki = match generate(&t.server_sans) {
            Ok(p) => p,
            Err(e) => return StepOutcome::Failed(format!("generating the PKI: {e}")),
        };
        let rv = |n: &str| current.get(n).cloned().flatten();
        writes.push(secret(
            cluster::SERVER_TLS,
            "kubernetes.io/tls",
            &[("tls.crt", &pki.server_crt), ("tls.key", &pki.server_key)],
            rv(cluster::SERVER_TLS),
        ));
        writes.push(secret(
            cluster::CLIENT_CA,
            "Opaque",
            &[("ca.crt", &pki.ca)],
            rv(cluster::CLIENT_CA),
        ));
        writes.push(secret(
            cluster::CLIENT_TLS,
            "Opaque",
            &[
                ("tls.crt", &pki.client_crt),
                ("tls.key", &pki.client_key),
                ("ca.crt", &pki.ca),
            ],
            rv(cluster::CLIENT_TLS),
        ));
    }
    if t.names.iter().any(|n| n == cluster::HANDSHAKE) {
        let value = match handshake() {
            Ok(v) => v,
            Err(e) => return StepOutcome::Failed(format!("reading /dev/urandom: {e}")),
        };
        writes.push(secret(
            cluster::HANDSHAKE,
            "Opaque",
            &[("secret", &value)],
            current.get(cluster::HANDSHAKE).cloned().flatten(),
        ));
    }
    let mut done = Vec::new();
    for s in writes {
        let name = s.metadata.name.clone().unwrap_or_default();
        let result = if s.metadata.resource_version.is_some() {
            api.replace(&name, &post_params(), &s)
                .await
                .map(|_| "replaced")
        } else {
            api.create(&post_params(), &s).await.map(|_| "created")
        };
        match result {
            Ok(how) => done.push(format!("{how} `{name}`")),
            // Classified by code, not only by reason: the reason strings vary between servers.
            // Someone else wrote it meanwhile: re-read and compare. A valid handshake secret is as
            // good as ours; a TLS secret from another PKI would not match the rest, so it is stale.
            Err(kube::Error::Api(status)) if status.code == 409 && name == cluster::HANDSHAKE => {
                let now = api.get_opt(&name).await.ok().flatten();
                match cluster::classify(&name, now.as_ref(), 0) {
                    crate::model::SecretFacts::Valid { .. } => done.push(format!(
                        "kept `{name}` (written meanwhile by someone else, and valid)"
                    )),
                    _ => {
                        return StepOutcome::Stale(format!(
                            "secret `{name}` was written meanwhile by someone else and is not valid"
                        ));
                    }
                }
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return StepOutcome::Stale(format!(
                    "secret `{name}` was written by someone else meanwhile (409 {}); re-plan to compare{}",
                    status.reason,
                    if done.is_empty() {
                        String::new()
                    } else {
                        format!(" (already written: {})", done.join(", "))
                    }
                ));
            }
            Err(e) => return StepOutcome::Failed(format!("writing secret `{name}`: {e}")),
        }
    }
    StepOutcome::Done(done.join(", "))
}

/// Copies `openshell-client-tls` to the CLI's `mtls` directory (0700 dir, 0600 files, each
/// written to a temp file and renamed).
pub async fn copy_bundle(dir: &str, home: &Path, q: &ClusterQuery) -> StepOutcome {
    let api = match secrets_api(q).await {
        Ok(a) => a,
        Err(e) => return e,
    };
    let s = match api.get_opt(cluster::CLIENT_TLS).await {
        Ok(Some(s)) => s,
        Ok(None) => return StepOutcome::Stale("`openshell-client-tls` does not exist".to_owned()),
        Err(e) => return StepOutcome::Failed(format!("reading `openshell-client-tls`: {e}")),
    };
    let dir = dir
        .strip_prefix("~/")
        .map_or_else(|| Path::new(dir).to_path_buf(), |rest| home.join(rest));
    if let Err(e) = super::files::private_dir(&dir) {
        return StepOutcome::Failed(format!("creating {}: {e}", dir.display()));
    }
    let data = s.data.unwrap_or_default();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        let Some(value) = data.get(file) else {
            return StepOutcome::Stale(format!("`openshell-client-tls` has no `{file}`"));
        };
        let path = dir.join(file);
        if let Err(e) = super::files::write_private(&path, &value.0) {
            return StepOutcome::Failed(format!("writing {}: {e}", path.display()));
        }
    }
    StepOutcome::Done(format!(
        "wrote ca.crt, tls.crt, tls.key into {}",
        dir.display()
    ))
}

/// Restarts the statefulset's rollout, as `kubectl rollout restart` does.
pub async fn restart_rollout(q: &ClusterQuery, now_rfc3339: &str) -> StepOutcome {
    let (client, _) = match cluster::client(q).await {
        Ok(c) => c,
        Err(e) => return StepOutcome::Failed(e),
    };
    let api: Api<StatefulSet> = Api::namespaced(client, NAMESPACE);
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { "kubectl.kubernetes.io/restartedAt": now_rfc3339 } } } }
    });
    match api
        .patch(
            "openshell",
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => StepOutcome::Done(
            "restarted the rollout of statefulset `openshell/openshell`".to_owned(),
        ),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            StepOutcome::Stale("statefulset `openshell/openshell` no longer exists".to_owned())
        }
        Err(e) => StepOutcome::Failed(format!("patching statefulset `openshell/openshell`: {e}")),
    }
}
