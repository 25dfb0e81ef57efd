//! `nemoclaw validate`.

use std::path::PathBuf;

use super::{CliError, Exit, context, ui};

/// Check a desired-state file without touching the host.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired-state file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "nemoclaw.yaml",
        value_name = "FILE"
    )]
    file: PathBuf,
}

pub fn run(args: &Args, color: bool) -> Result<Exit, CliError> {
    let desired = context::load_desired(&args.file, color)?;
    ui::print(&format!(
        "{} is valid: gateway port {}, dashboard range {}, {} sandbox{}.\n",
        args.file.display(),
        desired.gateway.port,
        desired.dashboard,
        desired.sandboxes.len(),
        if desired.sandboxes.len() == 1 {
            ""
        } else {
            "es"
        }
    ));
    Ok(Exit::Ok)
}
