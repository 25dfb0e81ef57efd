//! `nemoclaw plan`.

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
    /// Also save the plan to PLAN, for `nemoclaw apply PLAN` to carry out exactly.
    #[arg(long, value_name = "PLAN")]
    out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 3 when something is blocked.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Exit 7 when the plan has changes (for scheduled drift checks).
    #[arg(long)]
    expect_no_changes: bool,
    /// Consent to riskier steps: `replace` (recreate, rotate) or `destroy` (data loss), or to one
    /// step only: `destroy=volume.openshell-cluster-old`. Repeatable.
    #[arg(long, value_name = "CLASS[=ADDRESS]", value_parser = parse_consent)]
    pub allow: Vec<Consent>,
    /// Plan this host against its NemoClawHost in a cluster instead of a file (the one
    /// `nemoclaw agent` would reconcile): `--namespace`, `--host` and `--kubeconfig` as the agent's.
    #[arg(long, conflicts_with = "file")]
    from_cluster: bool,
    #[command(flatten)]
    cluster: super::agent::Where,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Terraform-style text.
    Human,
    /// The versioned JSON plan (docs/plan-json.md).
    Json,
    /// A pull-request comment (with the step graph as Mermaid).
    Markdown,
    /// The step graph for Graphviz: `nemoclaw plan -o dot | dot -Tsvg > plan.svg`.
    Dot,
}

/// One `--allow` value: a risk class, optionally narrowed to one step's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    risk: Risk,
    address: Option<String>,
}

/// Parses `replace`, `destroy`, `replace=<address>` or `destroy=<address>`.
pub fn parse_consent(text: &str) -> Result<Consent, String> {
    let (class, address) = match text.split_once('=') {
        Some((c, a)) if !a.trim().is_empty() => (c, Some(a.trim().to_owned())),
        Some(_) => return Err(format!("`{text}` names no address after `=`")),
        None => (text, None),
    };
    let risk = match class {
        "replace" => Risk::Replace,
        "destroy" => Risk::Destroy,
        "read" | "create" | "disrupt" => {
            return Err(format!(
                "`{class}` steps need no consent; `--allow` takes `replace` or `destroy`"
            ));
        }
        other => {
            return Err(format!(
                "`{other}` is not a risk class; use `replace` or `destroy`, optionally with `=<address>`"
            ));
        }
    };
    Ok(Consent { risk, address })
}

/// Turns `--allow` flags into planner options.
pub fn options(allow: &[Consent], hold_destructive: Option<String>) -> PlanOptions {
    let mut options = PlanOptions {
        hold_destructive,
        ..PlanOptions::default()
    };
    for c in allow {
        match &c.address {
            Some(a) => {
                options.allow_steps.insert((c.risk, a.clone()));
            }
            None => {
                options.allow.insert(c.risk);
            }
        }
    }
    options
}

pub fn run(args: &Args, color: bool) -> Result<Exit, CliError> {
    let desired = if args.from_cluster {
        super::agent::desired_from_cluster(&args.cluster)?
    } else {
        context::load_desired(&args.file, color)?
    };
    let (observed, hold) = match &args.observed {
        Some(path) => (context::load_observed(path)?, None),
        None => {
            let observed = context::runtime()?.block_on(crate::observe::observe(
                &context::observe_options(Some(&desired))?,
            ));
            // Report (without recording) steps an interrupted apply left mid-way; only human
            // output shows it, so JSON and markdown stay pure data.
            let journal = context::state_dir()?.join("journal.jsonl");
            let hold = if args.output == Format::Human {
                super::recovery::review(&journal, &observed, None)
            } else {
                super::recovery::hold_only(&journal, &observed)
            };
            (observed, hold)
        }
    };
    let plan = planner::plan(&desired, &observed, &options(&args.allow, hold));
    match args.output {
        Format::Human => ui::print(&render::render_human(&plan, render::Style { color })),
        Format::Json => ui::print(&render::render_json(&plan)),
        Format::Markdown => ui::print(&render::render_markdown(&plan)),
        Format::Dot => ui::print(&render::render_dot(&plan)),
    }
    if let Some(out) = &args.out {
        save(out, &plan)?;
        ui::eprint(&format!(
            "Saved the plan to `{}` (plan sha256 {}). Apply exactly this plan with `nemoclaw apply {}`.\n",
            out.display(),
            plan.sha256(),
            out.display()
        ));
    } else if args.output == Format::Human && plan.has_changes() {
        ui::eprint(
            "Note: without `--out`, a later `nemoclaw apply` plans again and may act on a host that moved. Save this plan with `--out PLAN` to apply exactly what you reviewed.\n",
        );
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

/// Writes a saved plan atomically, readable only by its owner.
fn save(path: &std::path::Path, plan: &crate::plan::Plan) -> Result<(), CliError> {
    let saved = crate::plan::saved::SavedPlan::new(plan.clone());
    let text = serde_json::to_string_pretty(&saved)
        .map_err(|e| CliError::from_error("cannot render the plan", &e))?;
    crate::apply::files::write_private(
        path,
        format!(
            "{text}
"
        )
        .as_bytes(),
    )
    .map_err(|e| CliError::from_error(format!("cannot write the plan to `{}`", path.display()), &e))
}
