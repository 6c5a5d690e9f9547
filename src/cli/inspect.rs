//! `shears inspect MODEL`: a YOLOv5-style model summary and per-layer table, or the same as JSON;
//! with `--groups`, also the channel groups structured pruning must remove together.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;

use super::common::load_model;
use super::ui::Ui;
use shears::analysis::grouped;
use shears::analysis::{ChannelGroup, GroupStatus, ModelStats, channel_groups, model_stats};
use shears::onnx::metadata::{self, FINETUNE_KEY, PASSES_KEY};

/// Summarise a model: conv layers, parameters, MACs, size and sparsity.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model file.
    pub model: PathBuf,
    /// Print a JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also list the channel groups: Conv output channels that must be removed together, what
    /// reads them, and whether they can be pruned (JSON: under `groups`).
    #[arg(long)]
    pub groups: bool,
}

/// The JSON document of `inspect --json`; its keys are stable.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub model: String,
    pub file_size: u64,
    #[serde(flatten)]
    pub stats: ModelStats,
    /// What the model's `shears.passes` metadata records (as stored when it is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shears_passes: Option<serde_json::Value>,
    /// What the model's `shears.finetune` metadata records, when it was fine-tuned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shears_finetune: Option<serde_json::Value>,
    /// Present with `--groups`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<ChannelGroup>>,
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let model = load_model(&args.model, ui)?;
    let stats = model_stats(model.graph())
        .with_context(|| format!("cannot analyse {}", args.model.display()))?;
    let groups = if args.groups {
        let analysis = channel_groups(model.graph())
            .with_context(|| format!("cannot analyse channels of {}", args.model.display()))?;
        Some(analysis.groups)
    } else {
        None
    };
    let recorded = |key: &str| {
        metadata::get(&model.proto, key).map(|value| {
            serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()))
        })
    };
    let shears_passes = recorded(PASSES_KEY);
    let shears_finetune = recorded(FINETUNE_KEY);
    let report = InspectReport {
        model: args.model.display().to_string(),
        file_size: model.file_size(),
        stats,
        shears_passes,
        shears_finetune,
        groups,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_summary(&mut out, &report)?;
        if let Some(groups) = &report.groups {
            writeln!(out)?;
            print_groups(&mut out, groups)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(out: &mut impl Write, r: &InspectReport) -> Result<()> {
    let s = &r.stats;
    writeln!(
        out,
        "{}: {} conv layers, {} conv parameters (weights and biases), {} parameters in all \
         float tensors, {:.2} GMACs{}, {:.2} MB",
        r.model,
        s.conv_layers,
        grouped(s.params),
        grouped(s.float_tensor_params),
        s.macs as f64 / 1e9,
        if s.macs_complete {
            ""
        } else {
            " (some layers unknown)"
        },
        r.file_size as f64 / 1e6
    )?;
    writeln!(
        out,
        "sparsity: {:.4} of parameters, {:.4} of conv weights",
        s.sparsity.global, s.sparsity.conv_weights
    )?;
    if let Some(passes) = &r.shears_passes {
        print_provenance(out, passes)?;
    }
    if let Some(record) = &r.shears_finetune {
        print_finetune(out, record)?;
    }
    writeln!(out)?;
    let width = s
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:>4}  {:<width$}  {:<14} {:>11} {:>15} {:>7}",
        "#", "layer", "weight", "params", "MACs", "zeros"
    )?;
    for (i, l) in s.layers.iter().enumerate() {
        let shape: Vec<String> = l.weight_shape.iter().map(i64::to_string).collect();
        writeln!(
            out,
            "{:>4}  {:<width$}  {:<14} {:>11} {:>15} {:>6.1}%",
            i,
            l.name,
            shape.join("x"),
            grouped(l.params),
            l.macs.map_or("?".to_string(), grouped),
            100.0 * l.weight_sparsity()
        )?;
    }
    Ok(())
}

/// What `shears.finetune` records, in one line: teacher, images, schedule, held-out loss.
fn print_finetune(out: &mut impl Write, r: &serde_json::Value) -> Result<()> {
    let s = &r["settings"];
    let last = r["epochs"]
        .as_array()
        .and_then(|e| e.get((r["kept_epoch"].as_u64()? as usize).checked_sub(1)?))
        .map_or_else(|| r["holdout_before"].clone(), |e| e["holdout"].clone());
    writeln!(
        out,
        "fine-tuned ({FINETUNE_KEY}, shears {}) from teacher {}: {} images ({} held out), {} \
         epochs at {}px, batch {}, lr {}; kept epoch {}, held-out loss {} -> {}",
        r["version"].as_str().unwrap_or("?"),
        r["teacher"].as_str().unwrap_or("?"),
        r["train_images"],
        r["holdout_images"],
        s["epochs"],
        s["imgsz"],
        s["batch"],
        s["lr"],
        r["kept_epoch"],
        r["holdout_before"],
        last
    )?;
    Ok(())
}

/// The passes `shears.passes` records, one line each: pass, tool and version, options.
fn print_provenance(out: &mut impl Write, passes: &serde_json::Value) -> Result<()> {
    let Some(entries) = passes.as_array() else {
        writeln!(out, "{PASSES_KEY} (not a JSON list): {passes}")?;
        return Ok(());
    };
    writeln!(out, "passes recorded in {PASSES_KEY}:")?;
    for (i, entry) in entries.iter().enumerate() {
        let text = |key: &str| entry[key].as_str().unwrap_or("?").to_string();
        let options = match entry["options"].as_object() {
            Some(map) => map
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => entry["options"].to_string(),
        };
        let options = if options.is_empty() {
            "no options".to_string()
        } else {
            options
        };
        writeln!(
            out,
            "  {}. {} ({} {}): {options}",
            i + 1,
            text("pass"),
            text("tool"),
            text("version")
        )?;
    }
    Ok(())
}

/// One block per group: id, channels, status, then its producers, consumers and lock reasons.
fn print_groups(out: &mut impl Write, groups: &[ChannelGroup]) -> Result<()> {
    let count = |prunable: bool| {
        let g = groups.iter().filter(|g| g.is_prunable() == prunable);
        let channels: usize = g.clone().map(|g| g.channels).sum();
        (g.count(), channels)
    };
    let ((p, pc), (l, lc)) = (count(true), count(false));
    writeln!(
        out,
        "{} channel groups: {p} prunable ({pc} channels), {l} locked ({lc} channels)",
        groups.len()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>4}  {:>8}  {:<8}  members",
        "id", "channels", "status"
    )?;
    for g in groups {
        let mut lines: Vec<String> = g
            .producer_names
            .iter()
            .map(|p| format!("produced by {p}"))
            .collect();
        lines.extend(g.consumers.iter().map(|c| {
            let end = c.span.offset + c.span.len;
            format!(
                "read by {} (input channels {}..{end})",
                c.name, c.span.offset
            )
        }));
        let status = match &g.status {
            GroupStatus::Prunable => "prunable",
            GroupStatus::Locked { reasons } => {
                lines.extend(reasons.iter().map(|r| format!("locked: {}", r.reason)));
                "locked"
            }
        };
        for (i, line) in lines.iter().enumerate() {
            if i == 0 {
                writeln!(out, "{:>4}  {:>8}  {:<8}  {line}", g.id, g.channels, status)?;
            } else {
                writeln!(out, "{:>4}  {:>8}  {:<8}  {line}", "", "", "")?;
            }
        }
    }
    Ok(())
}
