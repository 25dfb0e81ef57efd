//! `nemoclaw schema`.

use super::{CliError, Exit, ui};

/// Print the JSON Schema of nemoclaw.yaml (committed as schemas/nemoclaw.schema.json).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<Exit, CliError> {
    let schema = crate::spec::json_schema();
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| CliError::from_error("cannot render the schema", &e))?;
    ui::print(&format!("{text}\n"));
    Ok(Exit::Ok)
}
