//! `shears cocoeval`: COCOeval (bbox) of a results file against an annotation file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::eval::coco;

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
    let stats = coco::evaluate_files(&args.gt, &args.dt)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&Report {
            stats: &stats.stats,
        })?;
        write_atomic(path, text.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    for line in &stats.lines {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
