//! The summary of a pipeline run: a text table for the terminal, JSON and Markdown files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run::{Outcome, PipelineRun, Validation};
use crate::job::JobReport;
use crate::onnx::OutputPlan;

const COLUMNS: [&str; 8] = [
    "model",
    "passes",
    "params before",
    "params after",
    "sparsity",
    "size before",
    "size after",
    "status",
];
const VALIDATION_COLUMNS: [&str; 5] = ["metric", "dense", "pruned", "drop", "ms dense/pruned"];

fn size(bytes: u64, zstd: Option<u64>) -> String {
    match zstd {
        Some(z) => format!(
            "{:.2} MB ({:.2} MB zstd)",
            bytes as f64 / 1e6,
            z as f64 / 1e6
        ),
        None => format!("{:.2} MB", bytes as f64 / 1e6),
    }
}

fn job_cells(report: &JobReport) -> [String; 5] {
    [
        report.before.params.to_string(),
        report.after.nonzero_params.to_string(),
        format!("{:.4}", report.after.sparsity.global),
        size(report.before.file_bytes, report.before.zstd_bytes),
        size(report.after.file_bytes, report.after.zstd_bytes),
    ]
}

fn validation_cells(v: Option<&Validation>) -> [String; 5] {
    let Some(v) = v else {
        return std::array::from_fn(|_| "-".to_string());
    };
    [
        v.metric.name().to_string(),
        format!("{:.4}", v.metric.value(&v.dense)),
        format!("{:.4}", v.metric.value(&v.pruned)),
        format!("{:+.4}", -v.drop),
        format!(
            "{:.1}/{:.1}",
            v.dense.speed_ms.inference, v.pruned.speed_ms.inference
        ),
    ]
}

/// The header and one row per model; validation columns only when some model was validated.
fn rows(run: &PipelineRun) -> (Vec<String>, Vec<Vec<String>>) {
    let passes = run.passes.join(" + ");
    let validated = run.models.iter().any(|m| {
        matches!(
            m.result,
            Outcome::Ok {
                validation: Some(_),
                ..
            } | Outcome::GateFailed { .. }
        )
    });
    let mut header: Vec<String> = COLUMNS[..7].iter().map(|c| c.to_string()).collect();
    if validated {
        header.extend(VALIDATION_COLUMNS.iter().map(|c| c.to_string()));
    }
    header.push(COLUMNS[7].to_string());
    let rows = run
        .models
        .iter()
        .map(|m| {
            let name = match &m.model {
                super::run::Input::File(path) => path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                super::run::Input::Synth { variant, .. } => format!("{variant} (generated)"),
            };
            let (job, validation, status) = match &m.result {
                Outcome::Ok { report, validation } => (
                    Some(job_cells(report)),
                    validation.as_ref(),
                    "ok".to_string(),
                ),
                Outcome::GateFailed {
                    report,
                    validation,
                    message,
                } => (
                    Some(job_cells(report)),
                    Some(validation),
                    format!("GATE FAILED: {message}"),
                ),
                Outcome::Failed { error } => (None, None, format!("FAILED: {error}")),
            };
            let mut row = vec![name, passes.clone()];
            row.extend(job.unwrap_or_else(|| std::array::from_fn(|_| "-".to_string())));
            if validated {
                row.extend(validation_cells(validation));
            }
            row.push(status);
            row
        })
        .collect();
    (header, rows)
}

/// The summary as an aligned text table. "params after" counts non-zero parameters.
pub fn summary_table(run: &PipelineRun) -> String {
    let (header, rows) = rows(run);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out += &line(row);
    }
    out
}

fn markdown(run: &PipelineRun) -> String {
    let (header, rows) = rows(run);
    let mut out = format!("# shears pipeline {}\n\n", run.pipeline.display());
    out += &format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| c.replace('|', "\\|").replace('\n', " "))
            .collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// The two files of a summary: `<prefix>.json` and `<prefix>.md`.
pub fn summary_paths(prefix: &Path) -> [PathBuf; 2] {
    [prefix.with_extension("json"), prefix.with_extension("md")]
}

/// Stages `<prefix>.json` and `<prefix>.md` in `plan`, which declared [`summary_paths`]; creates
/// their folder when missing.
pub fn stage_summary(run: &PipelineRun, prefix: &Path, plan: &mut OutputPlan) -> Result<()> {
    if let Some(folder) = prefix.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(run)?;
    json.push(b'\n');
    let [json_path, md_path] = summary_paths(prefix);
    plan.stage_bytes(&json_path, &json)?;
    plan.stage_bytes(&md_path, markdown(run).as_bytes())?;
    Ok(())
}
