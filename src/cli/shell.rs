//! `nemoclaw completions SHELL` and `nemoclaw man`: generated from the clap definition itself, so
//! they can never describe a flag the binary does not have.

use clap::CommandFactory as _;

use super::{Cli, CliError, Exit};

/// `nemoclaw completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for a shell.
pub fn completions(a: &CompletionsArgs) -> Result<Exit, CliError> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "nemoclaw", &mut out);
    super::ui::print(&String::from_utf8_lossy(&out));
    Ok(Exit::Ok)
}

/// `nemoclaw man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// A command's own page (`nemoclaw-plan(1)`); without it, `nemoclaw(1)`.
    command: Option<String>,
}

/// Prints the man page (roff) of `nemoclaw`, or of one of its commands.
pub fn man(a: &ManArgs) -> Result<Exit, CliError> {
    let top = Cli::command();
    let cmd = match &a.command {
        None => top,
        Some(name) => top
            .find_subcommand(name)
            .cloned()
            .map(|c| c.name(format!("nemoclaw-{name}")))
            .ok_or_else(|| {
                CliError::new(format!("no command `{name}`"))
                    .hint("`nemoclaw --help` lists the commands")
            })?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| CliError::from_error("cannot render the man page", &e))?;
    super::ui::print(&String::from_utf8_lossy(&out));
    Ok(Exit::Ok)
}
