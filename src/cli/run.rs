//! `shears run PIPELINE.yaml`: run a pipeline file over its models and print a summary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::ui::Ui;
use shears::onnx::OutputPlan;
use shears::pipeline::{
    Input, load_spec, plan_models, run_pipeline, stage_summary, summary_paths, summary_table,
};

/// Run a YAML pipeline: passes over one model or a whole model zoo.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Models processed in parallel.
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Write the summary to PREFIX.json, PREFIX.md and PREFIX.html (overrides the file's `report`).
    #[arg(long, value_name = "PREFIX")]
    pub report: Option<PathBuf>,
    /// Redo every model, even those whose output is up to date; also rewrite models that hold
    /// fields this version of shears does not know (they are lost).
    #[arg(long)]
    pub force: bool,
    /// Write the outputs' dependencies here in make's format (for `-include` in a Makefile).
    #[arg(long, value_name = "FILE")]
    pub depfile: Option<PathBuf>,
}

/// Exit code 0 when every model succeeded, 2 when any failed, 1 when all ran but some failed
/// their accuracy gate.
pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let spec = load_spec(&args.pipeline)?;
    let base = args.pipeline.parent().unwrap_or(std::path::Path::new("."));
    let models = plan_models(&spec, base)?;
    let prefix = match (&args.report, &spec.report) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => shears::pipeline::resolve_path(base, r)?,
        (None, None) => models
            .first()
            .and_then(|(_, output)| output.parent())
            .unwrap_or(base)
            .join("summary"),
    };
    // Every path of the run at once: no output may be an input of another model, and no two
    // outputs the same file. Each model then commits its own output; the summary comes last.
    let mut plan = OutputPlan::new();
    plan.input("pipeline", &args.pipeline)?;
    for (input, _) in &models {
        if let Input::File(path) = input {
            plan.input("input model", path)?;
        }
    }
    for (_, output) in &models {
        plan.output("output", output)?;
    }
    for path in summary_paths(&prefix) {
        plan.output("summary", &path)?;
    }
    if let Some(path) = &args.depfile {
        plan.output("--depfile", path)?;
    }
    let run = run_pipeline(&spec, &args.pipeline, args.jobs, args.force, ui.progress())?;
    // the models' outputs were checked against these by the run; the summary is checked here
    plan.inputs("file read by the pipeline", &run.shared_inputs)?;
    for warning in &run.warnings {
        ui.warn(format_args!("{warning}"));
    }
    stage_summary(&run, &prefix, &mut plan)?;
    if let Some(path) = &args.depfile {
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        plan.stage_bytes(path, run.depfile()?.as_bytes())?;
    }
    plan.commit()?;
    let mut out = std::io::stdout().lock();
    for model in &run.models {
        if model.up_to_date {
            writeln!(out, "{}: up to date", model.output.display())?;
        }
        if let Some(s) = model.search() {
            writeln!(
                out,
                "{}: {} amount {} found within the {} budget of {} in {} validations",
                model.output.display(),
                s.pass,
                s.amount,
                s.metric.name(),
                s.max_drop,
                s.validations
            )?;
        }
    }
    let width = console::Term::stdout()
        .size_checked()
        .map(|(_, columns)| usize::from(columns));
    write!(out, "{}", summary_table(&run, width))?;
    writeln!(
        out,
        "summary written to {}.json, .md and .html",
        prefix.display()
    )?;
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
        return Err(shears::GateFailed(format!(
            "{gate_failures} of {} models lost more accuracy than the pipeline's budget allows",
            run.models.len()
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
