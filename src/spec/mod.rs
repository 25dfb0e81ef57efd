//! The desired-state file: parse, check against the schema, resolve into [`Desired`].
//!
//! Loading is all-or-nothing: a file with any problem yields every diagnostic and no
//! [`Desired`], so an invalid file can never reach the planner or the host.

pub mod check;
pub mod crd;
pub mod diagnostic;
pub mod semantic;
pub mod types;
pub mod yaml;

pub use diagnostic::{Diagnostic, DocPath};
pub use types::{API_VERSION, Spec, json_schema};

use crate::model::{Desired, DesiredSource};

/// The largest desired-state file read (1 MiB; real ones are a few KiB).
pub const MAX_FILE_BYTES: u64 = yaml::Limits::DESIRED.max_bytes as u64;

/// Parses and validates a desired-state file. `path` is only used to label the result.
///
/// A `NemoClawHost` manifest (`kind: NemoClawHost`) is read as its `spec.desired`, with every
/// diagnostic still pointing at the manifest's lines; its hash is the manifest's.
pub fn load(path: &str, text: &str) -> Result<Desired, Vec<Diagnostic>> {
    let (mut root, mut diags) = yaml::parse(text).map_err(|d| vec![*d])?;
    if crd::is_manifest(&root) {
        root = crd::desired_of(&root).ok_or_else(|| {
            vec![
                Diagnostic::error(
                    DocPath::parse("spec.desired"),
                    format!("this {} has no `spec.desired` mapping", crd::KIND),
                )
                .with_span(root.span)
                .with_hint("put the desired-state file's body (everything but `apiVersion` and `kind`) under `spec.desired`"),
            ]
        })?;
    }
    let schema = json_schema();
    diags.extend(check::check(&schema, &root));
    if !diags.is_empty() {
        diags.sort_by_key(|d| d.span);
        return Err(diags);
    }
    let spec: Spec = serde_json::from_value(root.to_json()).map_err(|e| {
        // The schema check should have caught this; report it rather than panic.
        vec![
            Diagnostic::error(
                DocPath::root(),
                format!("the file does not fit the schema: {e}"),
            )
            .with_span(root.span),
        ]
    })?;
    let source = DesiredSource {
        path: path.to_owned(),
        sha256: sha256_hex(text.as_bytes()),
    };
    semantic::resolve(&spec, &root, source)
}

pub use crate::model::sha256_hex;
