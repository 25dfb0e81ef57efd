//! The `nemoclaw` command: arguments, environment, output and exit codes.
//!
//! Only this module prints or reads environment variables; the layers below take plain values.

mod agent;
mod apply;
pub mod context;
mod crd;
mod exit;
mod history;
mod init;
mod observe;
mod plan;
mod recovery;
mod schema;
mod shell;
mod ui;
mod validate;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use exit::Exit;

const AFTER_HELP: &str = "\
Exit codes (plan and apply):
  0    nothing to do / converged (plain `plan` exits 0 whenever it succeeds)
  1    error: invalid file, failed observer, usage error, refused confirmation
  2    plan --detailed-exitcode: changes present
  3    something is blocked (consent missing, or an unknown observation in the way)
  4    apply: a step's facts moved since the plan (stale); it and its dependents did not run
  5    apply: steps ran but the host did not converge
  7    plan --expect-no-changes: changes present
  130  interrupted
When several apply, the first of 1, 130, 4, 5, 7, 3, 2, 0 wins. Findings never change it.

Environment:
  NO_COLOR            disable colour (as does --color never)
  HOME                where ~/.nemoclaw and ~/.config/openshell are read
  XDG_CONFIG_HOME     OpenShell's gateways and forward pid files (default ~/.config)
  NEMOCLAW_OPENSHELL_BIN  the `openshell` CLI (default: `openshell` on PATH)
  SUDO_UID            under sudo, the user whose processes and files are managed
  NEMOCLAW_LOCK_FILE  the host lock for apply (default /run/lock/nemoclaw-apply.lock)
  DOCKER_HOST         the Docker engine (unix:///path; default /var/run/docker.sock)
  NEMOCLAW_OPENSHELL_GATEWAY_STATE_DIR, NEMOCLAW_OPENSHELL_GATEWAY_BIN
                      the docker-driver gateway's state directory and binary

Examples:
  nemoclaw validate -f nemoclaw.yaml
  nemoclaw plan -f nemoclaw.yaml --detailed-exitcode
  nemoclaw observe -f nemoclaw.yaml > host.json && nemoclaw plan -f nemoclaw.yaml --observed host.json
  nemoclaw apply -f nemoclaw.yaml --yes";

/// Declarative reconciliation for NemoClaw hosts: observe the host, plan the difference from
/// nemoclaw.yaml, apply it safely.
#[derive(Debug, Parser)]
#[command(name = "nemoclaw", version, after_long_help = AFTER_HELP, after_help = "Run `nemoclaw help <command>` or `--help` for exit codes and examples.")]
pub struct Cli {
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Log to stderr: `-v` each observer and step with its duration, `-vv` also every `openshell`
    /// call. `RUST_LOG` (e.g. `RUST_LOG=nemoclaw=debug`) takes precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// `--color` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a desired-state file: schema and semantic rules, every problem at once.
    Validate(validate::Args),
    /// Print the JSON Schema of the desired-state file.
    Schema(schema::Args),
    /// Print the NemoClawHost CustomResourceDefinition (one host's desired state in a cluster).
    Crd(crd::Args),
    /// Print what is on this host now (listeners, processes, registry, forwards).
    Observe(observe::Args),
    /// Show what apply would do, and why, without changing anything.
    #[command(after_long_help = AFTER_HELP)]
    Plan(plan::Args),
    /// Carry out the plan: shows it, asks, acts, then checks the host converged.
    #[command(after_long_help = AFTER_HELP)]
    Apply(apply::Args),
    /// List past applies on this host, from the journal.
    History(history::Args),
    /// Write a desired-state file describing this host as it is now.
    Init(init::Args),
    /// Reconcile this host's NemoClawHost resources from a cluster (a controller; `--once`: each
    /// once) and report each plan as its status.
    Agent(agent::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(shell::CompletionsArgs),
    /// Print the man page (roff): `nemoclaw man > nemoclaw.1`.
    Man(shell::ManArgs),
}

/// Runs the CLI with these arguments and returns the process exit code.
#[must_use]
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; usage errors are 1, never 2 (2 means "changes").
            let code = if e.use_stderr() {
                Exit::Error
            } else {
                Exit::Ok
            };
            return code.into();
        }
    };
    let color = ui::color_enabled(cli.color);
    init_logs(cli.verbose, color);
    let result = match cli.command {
        Command::Validate(a) => validate::run(&a, color),
        Command::Schema(a) => schema::run(&a),
        Command::Crd(a) => crd::run(&a),
        Command::Observe(a) => observe::run(&a),
        Command::Plan(a) => plan::run(&a, color),
        Command::Apply(a) => apply::run(&a, color),
        Command::History(a) => history::run(&a),
        Command::Init(a) => init::run(&a),
        Command::Agent(a) => agent::run(&a),
        Command::Completions(a) => shell::completions(&a),
        Command::Man(a) => shell::man(&a),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            ui::print_error(&e, color);
            Exit::Error.into()
        }
    }
}

/// Logs go to stderr, never stdout (which may be data): off by default, `-v` info, `-vv` debug,
/// `-vvv` trace, or whatever `RUST_LOG` says.
fn init_logs(verbose: u8, color: bool) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match (from_env, verbose) {
        (Some(v), _) => EnvFilter::new(v),
        (None, 0) => return,
        (None, 1) => EnvFilter::new("nemoclaw=info"),
        (None, 2) => EnvFilter::new("nemoclaw=debug"),
        (None, _) => EnvFilter::new("nemoclaw=trace"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .try_init();
}

/// An error for the user: what went wrong, its causes, and how to fix it.
#[derive(Debug)]
pub struct CliError {
    message: String,
    causes: Vec<String>,
    hint: Option<String>,
}

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            causes: Vec::new(),
            hint: None,
        }
    }

    fn from_error(message: impl Into<String>, error: &dyn std::error::Error) -> Self {
        let mut causes = vec![error.to_string()];
        let mut source = error.source();
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        Self {
            message: message.into(),
            causes,
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}
