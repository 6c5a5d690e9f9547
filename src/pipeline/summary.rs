//! The summary of a pipeline run: a text table for the terminal, JSON, Markdown and HTML files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run::{Outcome, PipelineRun, Validation, lost_over_half};
use crate::analysis::grouped;
use crate::job::JobReport;
use crate::onnx::OutputPlan;

/// Columns of every row: counts before -> after.
const COLUMNS: [&str; 8] = [
    "model",
    "passes",
    "params",
    "non-zero params",
    "MACs",
    "file size",
    "sparsity after",
    "verified (max rel. diff)",
];
/// Columns added when some model was validated.
const VALIDATION_COLUMNS: [&str; 6] = [
    "metric",
    "dense",
    "pruned",
    "drop",
    "budget",
    "latency pruned/dense",
];

/// `x` as Python's `%.3g` writes it, the way val.py prints its metrics: three significant
/// digits, trailing zeros dropped, an exponent below 1e-4.
pub fn significant3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else {
            format!("{x}")
        };
    }
    // The exponent after rounding to three digits: 0.09996 is 0.1, exponent -1.
    let rounded: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    let exponent = rounded.abs().log10().floor() as i32;
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (-4..3).contains(&exponent) {
        trim(format!("{x:.*}", (2 - exponent) as usize))
    } else {
        let mantissa = rounded / 10f64.powi(exponent);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim(format!("{mantissa:.2}")),
            exponent.abs()
        )
    }
}

/// `before -> after`, digits grouped.
fn change(before: u64, after: u64) -> String {
    format!("{} -> {}", grouped(before), grouped(after))
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

fn job_cells(report: &JobReport) -> [String; 6] {
    let (b, a) = (&report.before, &report.after);
    [
        change(b.params, a.params),
        change(b.nonzero_params, a.nonzero_params),
        change(b.macs, a.macs),
        format!(
            "{} -> {}",
            size(b.file_bytes, b.zstd_bytes),
            size(a.file_bytes, a.zstd_bytes)
        ),
        format!("{:.4}", a.sparsity.global),
        proofs(report),
    ]
}

/// Each pass's check and its figure, "-" when no pass checked its result.
fn proofs(report: &JobReport) -> String {
    let cells: Vec<String> = report
        .passes
        .iter()
        .filter_map(|p| {
            let proof = p.proof.as_ref()?;
            Some(match proof.max_rel_diff {
                Some(figure) => format!("{}: {figure:.1e}", p.pass),
                None => format!("{}: not verified", p.pass),
            })
        })
        .collect();
    if cells.is_empty() {
        "-".to_string()
    } else {
        cells.join(", ")
    }
}

fn validation_cells(v: Option<&Validation>) -> [String; 6] {
    let Some(v) = v else {
        return std::array::from_fn(|_| "-".to_string());
    };
    [
        v.metric.name().to_string(),
        significant3(v.metric.value(&v.dense)),
        significant3(v.metric.value(&v.pruned)),
        significant3(v.drop),
        v.max_drop.map_or_else(|| "none".to_string(), significant3),
        v.latency_ratio.map_or_else(
            || "-".to_string(),
            |r| format!("{:.2} ({:.2}-{:.2})", r.median, r.p10, r.p90),
        ),
    ]
}

/// The verdict on a validated model, its budget beside it, and a warning when it lost more than
/// half its accuracy (gate or no gate).
fn validated_status(v: &Validation, gate_failed: bool) -> String {
    let (dense, pruned) = (v.metric.value(&v.dense), v.metric.value(&v.pruned));
    let verdict = match v.max_drop {
        Some(budget) if gate_failed => format!(
            "GATE FAILED: {} dropped by {} ({} -> {}), more than the budget of {}",
            v.metric.name(),
            significant3(v.drop),
            significant3(dense),
            significant3(pruned),
            significant3(budget)
        ),
        Some(budget) => format!(
            "ok: {} dropped by {}, within the budget of {}",
            v.metric.name(),
            significant3(v.drop),
            significant3(budget)
        ),
        None => "ok (no budget set)".to_string(),
    };
    if lost_over_half(dense, pruned) {
        format!(
            "{verdict}; WARNING: lost more than half its {} ({} -> {})",
            v.metric.name(),
            significant3(dense),
            significant3(pruned)
        )
    } else {
        verdict
    }
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
    let mut header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    if validated {
        header.extend(VALIDATION_COLUMNS.iter().map(|c| c.to_string()));
    }
    header.push("status".to_string());
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
                    validation
                        .as_ref()
                        .map_or_else(|| "ok".to_string(), |v| validated_status(v, false)),
                ),
                Outcome::GateFailed {
                    report, validation, ..
                } => (
                    Some(job_cells(report)),
                    Some(validation),
                    validated_status(validation, true),
                ),
                Outcome::Failed { error } => (None, None, format!("FAILED: {error}")),
            };
            let status = if m.up_to_date {
                format!("up to date; {status}")
            } else {
                status
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

/// The summary for a terminal `width` columns wide (`None`: no limit): an aligned text table of
/// parameters, non-zero parameters, MACs and file size before -> after; with validation, the
/// metric (values and drop rounded as val.py prints them; the drop is positive when accuracy
/// falls), the gate's budget and the latency ratio. When the table is wider than `width`, one
/// block per model instead, a line per column, long values wrapped. The Markdown and HTML
/// reports keep the whole table.
pub fn summary_table(run: &PipelineRun, width: Option<usize>) -> String {
    let (header, rows) = rows(run);
    let table = aligned(header.clone(), rows.clone());
    match width {
        Some(width) if table.lines().any(|l| l.chars().count() > width) => {
            blocks(&header, &rows, width)
        }
        _ => table,
    }
}

/// `rows` under `header`, columns aligned, each line trimmed.
fn aligned(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header)
        .add_rows(rows);
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    trimmed_lines(&table)
}

/// One block per row: its first cell, then a line per other column (name, value) fitted to
/// `width`, blocks apart by an empty line.
fn blocks(header: &[String], rows: &[Vec<String>], width: usize) -> String {
    let blocks: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
                .set_width(u16::try_from(width).unwrap_or(u16::MAX))
                .add_rows(header.iter().zip(row).skip(1).map(|(h, v)| [h, v]));
            if let Some(names) = table.column_mut(0) {
                names.set_padding((2, 1));
            }
            format!("{}\n{}", row[0], trimmed_lines(&table))
        })
        .collect();
    blocks.join("\n")
}

fn trimmed_lines(table: &comfy_table::Table) -> String {
    let mut out = String::new();
    for line in table.lines() {
        out += line.trim_end();
        out.push('\n');
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

/// The files of a summary: `<prefix>.json`, `<prefix>.md` and `<prefix>.html`.
pub fn summary_paths(prefix: &Path) -> [PathBuf; 3] {
    [
        prefix.with_extension("json"),
        prefix.with_extension("md"),
        prefix.with_extension("html"),
    ]
}

/// Stages `<prefix>.json`, `<prefix>.md` and `<prefix>.html` in `plan`, which declared [`summary_paths`]; creates
/// their folder when missing.
pub fn stage_summary(run: &PipelineRun, prefix: &Path, plan: &mut OutputPlan) -> Result<()> {
    if let Some(folder) = prefix.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(run)?;
    json.push(b'\n');
    let [json_path, md_path, html_path] = summary_paths(prefix);
    plan.stage_bytes(&json_path, &json)?;
    plan.stage_bytes(&md_path, markdown(run).as_bytes())?;
    let (header, rows) = rows(run);
    plan.stage_bytes(
        &html_path,
        super::html::page(run, &header, &rows).as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant3_writes_what_python_percent_3g_writes() {
        // Python: ['%.3g' % x for x in ...]
        let cases = [
            (0.34956, "0.35"),
            (0.0906, "0.0906"),
            (0.25834, "0.258"),
            (0.09996, "0.1"),
            (1.0, "1"),
            (-0.0123456, "-0.0123"),
            (0.00012345, "0.000123"),
            (0.000012345, "1.23e-05"),
            (1234.5, "1.23e+03"),
            (0.0, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(significant3(x), want, "{x}");
        }
    }
}
