//! `shears run PIPELINE.yaml`: run a pipeline file over its models and print a summary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::ui::Ui;
use crate::pipeline::{load_spec, run_pipeline, summary_table, write_summary};

/// Run a YAML pipeline: passes over one model or a whole model zoo.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Models processed in parallel.
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Write the summary to PREFIX.json and PREFIX.md (overrides the file's `report`).
    #[arg(long, value_name = "PREFIX")]
    pub report: Option<PathBuf>,
    /// Rewrite models that hold fields this version of shears does not know (they are lost).
    #[arg(long)]
    pub force: bool,
}

/// Exit code 0 when every model succeeded, 2 when any failed, 1 when all ran but some failed
/// their accuracy gate.
pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let spec = load_spec(&args.pipeline)?;
    let run = run_pipeline(&spec, &args.pipeline, args.jobs, args.force, ui.progress())?;
    let base = args.pipeline.parent().unwrap_or(std::path::Path::new("."));
    let prefix = match (&args.report, &spec.report) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => crate::pipeline::resolve_path(base, r)?,
        (None, None) => run
            .models
            .first()
            .and_then(|m| m.output.parent())
            .unwrap_or(base)
            .join("summary"),
    };
    write_summary(&run, &prefix)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", summary_table(&run))?;
    writeln!(out, "summary written to {}.json and .md", prefix.display())?;
    let failures = run.failures();
    if failures > 0 {
        ui.warn(format_args!(
            "{failures} of {} models failed",
            run.models.len()
        ));
        return Ok(ExitCode::from(2));
    }
    let gate_failures = run.gate_failures();
    if gate_failures > 0 {
        return Err(crate::GateFailed(format!(
            "{gate_failures} of {} models lost more accuracy than the pipeline's budget allows",
            run.models.len()
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
