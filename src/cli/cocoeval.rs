//! `shears cocoeval`: COCOeval (bbox) of a results file against an annotation file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use shears::eval::coco;
use shears::onnx::OutputPlan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// COCO instances annotation JSON (ground truth).
    #[arg(long)]
    pub gt: PathBuf,
    /// COCO results JSON (detections: image_id, category_id, bbox, score).
    #[arg(long)]
    pub dt: PathBuf,
    /// Also write the 12 stats as JSON (`{"stats": [...]}`) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    stats: &'a [f64; 12],
}

/// Runs the evaluation and prints pycocotools' 12-line summary.
pub fn run(args: &Args, _ui: &super::Ui) -> anyhow::Result<ExitCode> {
    let mut plan = OutputPlan::new();
    plan.input("--gt", &args.gt)?;
    plan.input("--dt", &args.dt)?;
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    let stats = coco::evaluate_files(&args.gt, &args.dt)?;
    if let Some(path) = &args.json {
        let report = Report {
            stats: &stats.stats,
        };
        plan.stage_json(path, &report)?;
    }
    plan.commit()?;
    let mut out = std::io::stdout().lock();
    for line in &stats.lines {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}
