//! Kubernetes Events on the `NemoClawHost`: one per step the agent ran (done, stale, failed) and
//! one per approval it refused, so `kubectl describe nch HOST` tells what happened on the host.
//! An event that cannot be written is logged and dropped: it never stops a round.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};

use crate::spec::crd;

/// Records what happened to `step` (`done`, `stale`, `failed`, `refused`).
pub fn record(
    rt: &tokio::runtime::Handle,
    hosts: &Api<DynamicObject>,
    obj: &DynamicObject,
    step: &str,
    outcome: &str,
    message: &str,
) {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let (kind, reason) = match outcome {
        "done" => ("Normal", "StepDone"),
        "stale" => ("Warning", "StepStale"),
        "refused" => ("Warning", "ApprovalRefused"),
        _ => ("Warning", "StepFailed"),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // Event messages are capped by the API server (1 KiB is safe everywhere).
    let mut text = format!("{step}: {message}");
    if text.len() > 1024 {
        let mut cut = 1021;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    let event = Event {
        metadata: ObjectMeta {
            // A unique name as kubectl's recorders make them (`<object>.<hex>`), not
            // `generateName`: some API servers and emulators do not generate.
            name: Some(format!(
                "{name}.{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            )),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(format!("{}/{}", crd::GROUP, crd::VERSION)),
            kind: Some(crd::KIND.to_owned()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: obj.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(text),
        type_: Some(kind.to_owned()),
        source: Some(EventSource {
            component: Some(crate::fleet::FIELD_MANAGER.to_owned()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(hosts.clone().into_client(), &ns);
    if let Err(e) = rt.block_on(events.create(&PostParams::default(), &event)) {
        tracing::warn!("cannot record an event for {ns}/{name}: {e}");
    }
}
