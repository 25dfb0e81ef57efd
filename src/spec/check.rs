//! Structural check of a YAML tree against the file's JSON Schema, reporting every problem.
//!
//! Only the schema keywords the generated schema uses are understood: `$ref`, `type`,
//! `properties`, `additionalProperties: false`, `required`, `items`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `const`/`enum`, `anyOf`/`oneOf`. `pattern` is left to the semantic
//! checks, which give better messages for names, port ranges and durations.

use serde_json::Value as J;

use super::diagnostic::{Diagnostic, DocPath, closest};
use super::yaml::{Node, Value};

/// Returns every structural problem of `root` against `schema`.
#[must_use]
pub fn check(schema: &J, root: &Node) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    walk(schema, schema, root, &DocPath::root(), &mut out);
    out
}

fn resolve<'a>(root: &'a J, schema: &'a J) -> &'a J {
    let mut s = schema;
    for _ in 0..16 {
        let Some(r) = s.get("$ref").and_then(J::as_str) else {
            break;
        };
        let Some(name) = r.strip_prefix("#/$defs/") else {
            break;
        };
        match root.get("$defs").and_then(|d| d.get(name)) {
            Some(target) => s = target,
            None => break,
        }
    }
    s
}

fn walk(root: &J, schema: &J, node: &Node, path: &DocPath, out: &mut Vec<Diagnostic>) {
    let schema = resolve(root, schema);
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(J::as_array) {
            check_branches(root, schema, branches, node, path, out);
            return;
        }
    }
    if let Some(expected) = allowed_literals(schema) {
        let ok = matches!(&node.value, Value::Str(s) if expected.iter().any(|e| e == s));
        if !ok {
            let list = expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut d = Diagnostic::error(
                path.clone(),
                format!(
                    "`{path}` has an unsupported value: {}",
                    node.value.describe()
                ),
            )
            .with_span(node.span)
            .with_expected(list);
            if let Value::Str(s) = &node.value
                && let Some(c) = closest(s, expected.iter().map(String::as_str))
            {
                d = d.with_hint(format!("did you mean `{c}`?"));
            }
            out.push(d);
        }
        return;
    }
    if !type_allows(schema, &node.value) {
        out.push(
            Diagnostic::error(
                path.clone(),
                format!(
                    "`{path}` has the wrong type: found {}",
                    node.value.describe()
                ),
            )
            .with_span(node.span)
            .with_expected(expected_text(schema))
            .with_hint(description_hint(schema)),
        );
        return;
    }
    match &node.value {
        Value::Map(entries) => check_map(root, schema, node, entries, path, out),
        Value::Seq(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(root, item_schema, item, &path.index(i), out);
                }
            }
        }
        Value::Int(i) => {
            let min = schema.get("minimum").and_then(J::as_i64);
            let max = schema.get("maximum").and_then(J::as_i64);
            if min.is_some_and(|m| *i < m) || max.is_some_and(|m| *i > m) {
                out.push(
                    Diagnostic::error(path.clone(), format!("`{path}` is {i}, out of range"))
                        .with_span(node.span)
                        .with_expected(expected_text(schema))
                        .with_hint(description_hint(schema)),
                );
            }
        }
        Value::Str(s) => {
            let len = s.chars().count() as u64;
            let min = schema.get("minLength").and_then(J::as_u64);
            let max = schema.get("maxLength").and_then(J::as_u64);
            if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
                out.push(
                    Diagnostic::error(path.clone(), format!("`{path}` is {len} characters long"))
                        .with_span(node.span)
                        .with_expected(match (min, max) {
                            (Some(a), Some(b)) => format!("{a} to {b} characters"),
                            (Some(a), None) => format!("at least {a} characters"),
                            (None, Some(b)) => format!("at most {b} characters"),
                            (None, None) => String::new(),
                        })
                        .with_hint(description_hint(schema)),
                );
            }
        }
        Value::Null | Value::Bool(_) | Value::Float(_) => {}
    }
}

fn check_map(
    root: &J,
    schema: &J,
    node: &Node,
    entries: &[(super::yaml::Key, Node)],
    path: &DocPath,
    out: &mut Vec<Diagnostic>,
) {
    let empty = serde_json::Map::new();
    let props = schema
        .get("properties")
        .and_then(J::as_object)
        .unwrap_or(&empty);
    let closed = schema.get("additionalProperties") == Some(&J::Bool(false));
    for (key, value) in entries {
        match props.get(&key.name) {
            Some(prop) => walk(root, prop, value, &path.key(&key.name), out),
            None if closed => {
                let names: Vec<&str> = props.keys().map(String::as_str).collect();
                let where_ = if path.segments().is_empty() {
                    "at the top level".to_owned()
                } else {
                    format!("in `{path}`")
                };
                let hint = match (
                    retired_key(&key.name),
                    closest(&key.name, names.iter().copied()),
                ) {
                    (Some(why), _) => why.to_owned(),
                    (None, Some(c)) => format!("did you mean `{c}`?"),
                    (None, None) => "`nemoclaw schema` prints every accepted key".to_owned(),
                };
                out.push(
                    Diagnostic::error(
                        path.key(&key.name),
                        format!("unknown key `{}` {where_}", key.name),
                    )
                    .with_span(key.span)
                    .with_expected(format!(
                        "one of {}",
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .with_hint(hint),
                );
            }
            // `additionalProperties: {schema}` (`gateway.env`): each value checked at its key.
            None => {
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    walk(root, extra, value, &path.key(&key.name), out);
                }
            }
        }
    }
    for req in schema
        .get("required")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = req.as_str() else { continue };
        if !entries.iter().any(|(k, _)| k.name == name) {
            // Point at the mapping's first key: the mapping's own mark sits after it.
            let at = entries.first().map_or(node.span, |(k, _)| k.span);
            let mut d = Diagnostic::error(
                path.key(name),
                format!("missing required key `{}`", path.key(name)),
            )
            .with_span(at);
            if let Some(p) = props.get(name) {
                d = d.with_expected(format!("`{name}: {}`", example_value(resolve(root, p))));
                d = d.with_hint(description_hint(p));
            }
            out.push(d);
        }
    }
}

fn check_branches(
    root: &J,
    _schema: &J,
    branches: &[J],
    node: &Node,
    path: &DocPath,
    out: &mut Vec<Diagnostic>,
) {
    let mut best: Option<Vec<Diagnostic>> = None;
    for branch in branches {
        let mut tmp = Vec::new();
        walk(root, branch, node, path, &mut tmp);
        if tmp.is_empty() {
            return;
        }
        let branch = resolve(root, branch);
        // Prefer the branch whose type fits: its errors are about the content, not the type.
        let fits = type_allows(branch, &node.value)
            && branch.get("type").and_then(J::as_str) != Some("null");
        if fits || best.is_none() {
            best = Some(tmp);
        }
    }
    out.extend(best.unwrap_or_default());
}

fn allowed_literals(schema: &J) -> Option<Vec<String>> {
    if let Some(c) = schema.get("const").and_then(J::as_str) {
        return Some(vec![c.to_owned()]);
    }
    schema
        .get("enum")
        .and_then(J::as_array)
        .map(|v| v.iter().filter_map(J::as_str).map(str::to_owned).collect())
}

fn types_of(schema: &J) -> Vec<&str> {
    match schema.get("type") {
        Some(J::String(t)) => vec![t.as_str()],
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).collect(),
        _ => Vec::new(),
    }
}

fn type_allows(schema: &J, value: &Value) -> bool {
    let types = types_of(schema);
    if types.is_empty() {
        return true;
    }
    let t = value.json_type();
    types
        .iter()
        .any(|&allowed| allowed == t || (allowed == "number" && t == "integer"))
}

fn expected_text(schema: &J) -> String {
    let types = types_of(schema);
    let min = schema.get("minimum").and_then(J::as_i64);
    let max = schema.get("maximum").and_then(J::as_i64);
    let mut parts = Vec::new();
    for t in &types {
        parts.push(match *t {
            "integer" => match (min, max) {
                (Some(a), Some(b)) => format!("an integer from {a} to {b}"),
                _ => "an integer".to_owned(),
            },
            "string" => "a string".to_owned(),
            "boolean" => "`true` or `false`".to_owned(),
            "array" => "a list".to_owned(),
            "object" => "a mapping".to_owned(),
            "null" => continue,
            other => format!("a {other}"),
        });
    }
    if parts.is_empty() {
        "a different value".to_owned()
    } else {
        parts.join(" or ")
    }
}

fn example_value(schema: &J) -> String {
    if let Some(lits) = allowed_literals(schema) {
        return lits.join(" | ");
    }
    if let Some(one) = schema.get("oneOf").and_then(J::as_array) {
        let lits: Vec<String> = one.iter().filter_map(allowed_literals).flatten().collect();
        if !lits.is_empty() {
            return lits.join(" | ");
        }
    }
    expected_text(schema)
}

/// Keys earlier versions of the file accepted, and what to do instead.
fn retired_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "inference" => {
            "the engine does not manage inference providers: `openshell sandbox create --provider` needs a provider the gateway already has, so configure inference with NemoClaw (`nemoclaw onboard`) or `openshell provider create` and `openshell inference set`, and remove `inference` here"
        }
        "tier" | "presets" => {
            "`policy` is now the path of one policy YAML file (`openshell sandbox create --policy FILE` takes exactly one); merge the presets into that file"
        }
        _ => return None,
    })
}

fn description_hint(schema: &J) -> String {
    schema.get("description").and_then(J::as_str).map_or_else(
        || "`nemoclaw schema` describes every key".to_owned(),
        |d| d.replace('\n', " "),
    )
}
