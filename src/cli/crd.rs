//! `nemoclaw crd`.

use super::{CliError, Exit, ui};

/// Print the `NemoClawHost` CustomResourceDefinition as JSON (committed as
/// schemas/nemoclawhost.crd.json; `kubectl apply -f` takes it): `spec.desired` has the
/// desired-state file's own schema.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<Exit, CliError> {
    // JSON, not YAML: kubectl reads YAML 1.1, where the enum values `on` and `off` (`gpu`) would
    // silently turn into booleans.
    let text = serde_json::to_string_pretty(&crate::spec::crd::crd())
        .map_err(|e| CliError::from_error("cannot render the CRD", &e))?;
    ui::print(&format!("{text}\n"));
    Ok(Exit::Ok)
}
