//! The summary of a pipeline run: a text table for the terminal, JSON and Markdown files.

use std::path::Path;

use anyhow::{Context, Result};

use super::run::{Outcome, PipelineRun};
use crate::onnx::write_atomic;

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

fn rows(run: &PipelineRun) -> Vec<[String; 8]> {
    let passes = run.passes.join(" + ");
    run.models
        .iter()
        .map(|m| {
            let name = m.model.file_name().map_or_else(
                || m.model.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match &m.result {
                Outcome::Ok { report } => [
                    name,
                    passes.clone(),
                    report.before.params.to_string(),
                    report.after.nonzero_params.to_string(),
                    format!("{:.4}", report.after.sparsity.global),
                    size(report.before.file_bytes, report.before.zstd_bytes),
                    size(report.after.file_bytes, report.after.zstd_bytes),
                    "ok".to_string(),
                ],
                Outcome::Failed { error } => {
                    let dash = || "-".to_string();
                    [
                        name,
                        passes.clone(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        format!("FAILED: {error}"),
                    ]
                }
            }
        })
        .collect()
}

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

/// The summary as an aligned text table. "params after" counts non-zero parameters.
pub fn summary_table(run: &PipelineRun) -> String {
    let rows = rows(run);
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([COLUMNS[i].len()])
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
    let mut out = line(&COLUMNS.map(String::from));
    for row in &rows {
        out += &line(row);
    }
    out
}

fn markdown(run: &PipelineRun) -> String {
    let mut out = format!("# shears pipeline {}\n\n", run.pipeline.display());
    out += &format!(
        "| {} |\n|{}\n",
        COLUMNS.join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for row in rows(run) {
        let cells: Vec<String> = row
            .iter()
            .map(|c| c.replace('|', "\\|").replace('\n', " "))
            .collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// Writes `<prefix>.json` and `<prefix>.md`.
pub fn write_summary(run: &PipelineRun, prefix: &Path) -> Result<()> {
    if let Some(folder) = prefix.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(run)?;
    json.push(b'\n');
    write_atomic(&prefix.with_extension("json"), &json)?;
    write_atomic(&prefix.with_extension("md"), markdown(run).as_bytes())?;
    Ok(())
}
