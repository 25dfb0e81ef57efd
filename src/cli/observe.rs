//! `nemoclaw observe`.

use std::path::PathBuf;

use super::{CliError, Exit, context, ui};

/// Print what is on this host now. Save it to plan offline: `nemoclaw plan --observed FILE`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A desired-state file whose ports to observe (default: the default ports, 8080 and 18789-18799).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Json)]
    output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Yaml,
}

pub fn run(args: &Args) -> Result<Exit, CliError> {
    let desired = match &args.file {
        Some(f) => Some(context::load_desired(f, false)?),
        None => None,
    };
    let opts = context::observe_options(desired.as_ref())?;
    let observed = context::runtime()?.block_on(crate::observe::observe(&opts));
    let text = match args.output {
        Format::Json => serde_json::to_string_pretty(&observed)
            .map(|s| s + "\n")
            .map_err(|e| CliError::from_error("cannot render the observation", &e))?,
        Format::Yaml => serde_yaml::to_string(&observed)
            .map_err(|e| CliError::from_error("cannot render the observation", &e))?,
    };
    ui::print(&text);
    Ok(Exit::Ok)
}
