//! The `NemoClawHost` custom resource: one host's desired state as a Kubernetes object, for fleets
//! reconciled through a cluster. `spec.desired` is the desired-state file's body (everything but
//! `apiVersion`/`kind`), and its schema is the file's own — generated from the same Rust types as
//! `nemoclaw schema`, then rewritten into the structural OpenAPI v3 subset Kubernetes accepts
//! ([`structural`]): one source of truth.

use serde_json::{Map, Value, json};

/// The API group.
pub const GROUP: &str = "nemoclaw.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "NemoClawHost";
/// The plural resource name.
pub const PLURAL: &str = "nemoclawhosts";

/// The CustomResourceDefinition, as `nemoclaw crd` prints it (committed as
/// `schemas/nemoclawhost.crd.json`).
#[must_use]
pub fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{PLURAL}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": format!("{KIND}List"),
                "plural": PLURAL,
                "singular": "nemoclawhost",
                "shortNames": ["nch"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": printer_columns(),
                "schema": { "openAPIV3Schema": resource_schema() },
            }],
        },
    })
}

fn printer_columns() -> Value {
    let column = |name: &str, ty: &str, path: &str, description: &str| json!({ "name": name, "type": ty, "jsonPath": path, "description": description });
    json!([
        column(
            "Host",
            "string",
            ".spec.host",
            "The host this resource is for."
        ),
        column(
            "Converged",
            "string",
            ".status.conditions[?(@.type==\"Converged\")].status",
            "Whether the host matches spec.desired."
        ),
        column(
            "Changes",
            "integer",
            ".status.plan.toChange",
            "Steps the last plan would run."
        ),
        column(
            "Blocked",
            "integer",
            ".status.plan.blocked",
            "Steps the last plan could not run."
        ),
        column(
            "Last-Apply",
            "date",
            ".status.lastApply.time",
            "When the agent last applied."
        ),
        column(
            "Age",
            "date",
            ".metadata.creationTimestamp",
            "Time since the resource was created."
        ),
    ])
}

/// The schema of the whole object: `spec` (host, desired, apply policy, approval) and `status`.
fn resource_schema() -> Value {
    json!({
        "type": "object",
        "description": "One NemoClaw host's desired state (`spec.desired`: the desired-state file's body) and what the host's agent last saw of it (`status`).",
        "required": ["spec"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": { "type": "object" },
            "spec": {
                "type": "object",
                "required": ["desired"],
                "properties": {
                    "host": {
                        "type": "string",
                        "description": "The host this resource is for: the agent's `--host NAME` (default: the machine's hostname).",
                    },
                    "desired": desired_schema(),
                    "apply": {
                        "type": "string",
                        "enum": ["never", "auto"],
                        "default": "never",
                        "description": "`never`: plan only. `auto`: apply everything up to `disrupt` by itself; `replace` and `destroy` still need an approval.",
                    },
                    "approve": {
                        "type": "object",
                        "description": "Run exactly one reviewed plan, with consent to its riskier steps.",
                        "required": ["planSha256"],
                        "properties": {
                            "planSha256": {
                                "type": "string",
                                "pattern": "^[0-9a-f]{64}$",
                                "description": "The sha256 of the reviewed plan (`nemoclaw plan -o json`'s `plan_sha256`).",
                            },
                            "allow": {
                                "type": "array",
                                "items": { "type": "string", "enum": ["replace", "destroy"] },
                                "description": "The risk classes consented to, as `--allow`.",
                            },
                        },
                    },
                },
            },
            "status": {
                "type": "object",
                "description": "Written by the agent (server-side apply, field manager `nemoclaw-agent`).",
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
    })
}

/// `spec.desired`: the desired-state file's schema without `apiVersion` and `kind`.
#[must_use]
pub fn desired_schema() -> Value {
    let file = super::json_schema();
    let defs = file
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut body = structural(&file, &defs, 0);
    if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("apiVersion");
        props.remove("kind");
    }
    if let Some(required) = body.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != "apiVersion" && r != "kind");
        if required.is_empty() {
            body.as_object_mut().map(|o| o.remove("required"));
        }
    }
    body
}

/// Rewrites a JSON Schema (draft 2020-12, as schemars makes it) into Kubernetes' structural
/// subset: `$ref`s inlined; `oneOf` of constants an `enum`; `anyOf [X, null]` and `type [T, null]`
/// become `nullable`; `const` an `enum`; `additionalProperties: false`, `$schema`, `$id`, `$defs`,
/// `title` and formats Kubernetes does not know dropped. Validation the CRD cannot express
/// (closed objects) is still enforced by the agent, which checks `spec.desired` as a file.
#[must_use]
pub fn structural(schema: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    // The file's types are not recursive; a cycle would be a bug, cut rather than loop.
    if depth > 32 {
        return json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    }
    let mut out = Map::new();
    if let Some(target) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        && let Value::Object(inlined) = structural(target, defs, depth + 1)
    {
        out.extend(inlined);
    }
    for (k, v) in obj {
        match k.as_str() {
            "$ref" | "$schema" | "$id" | "$defs" | "title" => {}
            "additionalProperties" if v == &Value::Bool(false) => {}
            "additionalProperties" => {
                out.insert(k.clone(), structural(v, defs, depth + 1));
            }
            "format"
                if !matches!(
                    v.as_str(),
                    Some("int32" | "int64" | "float" | "double" | "byte" | "date" | "date-time")
                ) => {}
            "const" => {
                out.insert("enum".to_owned(), json!([v]));
            }
            "type" => match v {
                Value::Array(types) => {
                    let real: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if real.len() < types.len() {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    if let [one] = real.as_slice() {
                        out.insert("type".to_owned(), (*one).clone());
                    }
                }
                other => {
                    out.insert("type".to_owned(), other.clone());
                }
            },
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, p)| (name.clone(), structural(p, defs, depth + 1)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), structural(v, defs, depth + 1));
            }
            "oneOf" | "anyOf" => merge_alternatives(v, defs, depth, &mut out),
            // A sibling description or default overrides the inlined definition's.
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// `oneOf`/`anyOf`: constants of one type become an `enum` of that type; `[X, null]` becomes X
/// with `nullable: true`.
fn merge_alternatives(
    v: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    out: &mut Map<String, Value>,
) {
    let alternatives: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| structural(a, defs, depth + 1))
        .collect();
    let (nulls, real): (Vec<&Value>, Vec<&Value>) = alternatives
        .iter()
        .partition(|a| a.get("type").and_then(Value::as_str) == Some("null"));
    if !nulls.is_empty() {
        out.insert("nullable".to_owned(), Value::Bool(true));
    }
    let constants: Option<Vec<Value>> = real
        .iter()
        .map(|a| {
            a.get("enum")
                .and_then(Value::as_array)
                .filter(|e| e.len() == 1)
                .map(|e| e[0].clone())
        })
        .collect();
    match (real.as_slice(), constants) {
        ([one], _) => {
            if let Value::Object(o) = one {
                for (k, v) in o {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        (many, Some(values)) if !many.is_empty() => {
            if let Some(t) = many[0].get("type") {
                out.insert("type".to_owned(), t.clone());
            }
            out.insert("enum".to_owned(), Value::Array(values));
        }
        _ => {
            out.insert(
                "x-kubernetes-preserve-unknown-fields".to_owned(),
                Value::Bool(true),
            );
        }
    }
}

/// Whether `root` is a `NemoClawHost` manifest (`apiVersion: nemoclaw.io/v1alpha1`,
/// `kind: NemoClawHost`) rather than a desired-state file.
#[must_use]
pub fn is_manifest(root: &super::yaml::Node) -> bool {
    use super::yaml::Value as Y;
    let Y::Map(entries) = &root.value else {
        return false;
    };
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key.name == k)
            .map(|(_, v)| &v.value)
    };
    matches!(get("kind"), Some(Y::Str(k)) if k == KIND)
        && matches!(get("apiVersion"), Some(Y::Str(v)) if v == &format!("{GROUP}/{VERSION}"))
}

/// The desired-state document inside a manifest: `spec.desired`'s entries under a synthesized
/// `apiVersion`/`kind` header, every node keeping its position in the manifest, so diagnostics
/// point at the manifest's lines. `None` when there is no `spec.desired` mapping.
#[must_use]
pub fn desired_of(root: &super::yaml::Node) -> Option<super::yaml::Node> {
    use super::yaml::{Key, Node, Value as Y};
    let Y::Map(entries) = &root.value else {
        return None;
    };
    let spec = entries
        .iter()
        .find(|(k, _)| k.name == "spec")
        .map(|(_, v)| v)?;
    let Y::Map(spec) = &spec.value else {
        return None;
    };
    let (desired_key, desired) = spec.iter().find(|(k, _)| k.name == "desired")?;
    let Y::Map(body) = &desired.value else {
        return None;
    };
    let header = |name: &str, value: &str| {
        (
            Key {
                name: name.to_owned(),
                span: desired_key.span,
            },
            Node {
                value: Y::Str(value.to_owned()),
                span: desired_key.span,
            },
        )
    };
    let mut out = vec![
        header("apiVersion", super::API_VERSION),
        header("kind", "Host"),
    ];
    out.extend(
        body.iter()
            .filter(|(k, _)| k.name != "apiVersion" && k.name != "kind")
            .cloned(),
    );
    Some(Node {
        value: Y::Map(out),
        span: desired.span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Kubernetes rejects in a structural schema, anywhere in the tree.
    fn non_structural(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let here = format!("{path}.{k}");
                    let bad = match k.as_str() {
                        "$ref" | "$defs" | "$schema" | "oneOf" | "anyOf" | "const" => true,
                        "additionalProperties" => child == &Value::Bool(false),
                        "type" => !child.is_string(),
                        _ => false,
                    };
                    if bad {
                        out.push(here.clone());
                    }
                    // Property names and enum values are data, not schema keywords.
                    if k != "enum" && k != "default" {
                        non_structural(child, &here, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    non_structural(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_crd_schema_is_structural_and_is_the_files_schema() {
        let crd = crd();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut bad = Vec::new();
        non_structural(schema, "", &mut bad);
        assert!(bad.is_empty(), "not structural: {bad:?}");
        let desired = &schema["properties"]["spec"]["properties"]["desired"];
        let file = crate::spec::json_schema();
        let mut names: Vec<&String> = file["properties"].as_object().unwrap().keys().collect();
        names.retain(|n| *n != "apiVersion" && *n != "kind");
        let mut got: Vec<&String> = desired["properties"].as_object().unwrap().keys().collect();
        names.sort();
        got.sort();
        assert_eq!(got, names, "every key of the file, and only those");
        assert_eq!(
            desired["properties"]["gateway"]["properties"]["runtime"]["enum"],
            json!(["docker-driver", "legacy-k3s"])
        );
        assert_eq!(desired["properties"]["gateway"]["nullable"], json!(true));
        assert_eq!(
            desired["properties"]["gateway"]["properties"]["env"]["additionalProperties"],
            json!({ "type": "string" })
        );
    }
}
