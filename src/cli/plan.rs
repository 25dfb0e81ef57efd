//! `nemoclaw plan`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{CliError, Exit, context, ui};
use crate::plan::{self as planner, PlanOptions, Risk, render};

/// Show what apply would do on this host, and why. Changes nothing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired-state file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "nemoclaw.yaml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// Plan against a saved observation (`nemoclaw observe -o json`) instead of this host.
    #[arg(long, value_name = "SNAPSHOT")]
    observed: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 3 when something is blocked.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Exit 7 when the plan has changes (for scheduled drift checks).
    #[arg(long)]
    expect_no_changes: bool,
    /// Consent to riskier steps: `replace` (recreate, rotate) or `destroy` (data loss).
    #[arg(long, value_enum, value_name = "CLASS")]
    pub allow: Vec<Consent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

/// Risk classes that need consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Consent {
    /// Recreate containers, rotate secrets.
    Replace,
    /// Delete volumes, PVCs, sandboxes.
    Destroy,
}

/// Turns `--allow` flags into planner options.
pub fn options(allow: &[Consent]) -> PlanOptions {
    let allow: BTreeSet<Risk> = allow
        .iter()
        .map(|c| match c {
            Consent::Replace => Risk::Replace,
            Consent::Destroy => Risk::Destroy,
        })
        .collect();
    PlanOptions { allow }
}

pub fn run(args: &Args, color: bool) -> Result<Exit, CliError> {
    let desired = context::load_desired(&args.file, color)?;
    let observed = match &args.observed {
        Some(path) => context::load_observed(path)?,
        None => context::runtime()?.block_on(crate::observe::observe(&context::observe_options(
            Some(&desired),
        ))),
    };
    let plan = planner::plan(&desired, &observed, &options(&args.allow));
    match args.output {
        Format::Human => ui::print(&render::render_human(&plan, render::Style { color })),
        Format::Json => ui::print(&render::render_json(&plan)),
    }
    let mut codes = vec![Exit::Ok];
    if args.expect_no_changes && plan.has_changes() {
        codes.push(Exit::UnexpectedChanges);
    }
    if args.detailed_exitcode {
        if plan.is_blocked() {
            codes.push(Exit::Blocked);
        }
        if plan.has_changes() {
            codes.push(Exit::Changes);
        }
    }
    Ok(Exit::first_of(codes))
}
