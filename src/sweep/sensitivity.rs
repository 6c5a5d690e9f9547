//! `sensitivity`: how much accuracy each layer (or channel group) costs when pruned on its own.
//!
//! For every unit (a Conv layer for magnitude pruning, a prunable channel group for channel
//! pruning) and every amount, the model is pruned with a pass restricted to that unit
//! (`include: ['^name$']`, through [`prune_to_file`] as `shears prune --include` would) and
//! validated; the pruned models are staged and read back, never kept. A unit an amount leaves
//! unchanged (a channel group too narrow to lose a multiple of 8 channels) is not validated and
//! reported as unchanged. Writes `sensitivity.json`, `.csv`, `.md` and a heatmap (units by
//! amount, colour = accuracy drop) as `heatmap.svg` and `heatmap.png`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{accuracy, csv_field, dense_accuracy, md_cell};
use crate::analysis::{channel_groups, conv_layers};
use crate::eval::validator::{ValSettings, Validator};
use crate::graph::GraphView;
use crate::job::{JobOptions, prune_to_file};
use crate::onnx::{self, OutputPlan};
use crate::passes::{LayerFilter, Method, MethodKind, PassConfig, Recover};
use crate::plot::{Heatmap, Rendered};
use crate::progress::{Progress, phase};

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensitivityMethod {
    /// One Conv layer's smallest weights zeroed (per-layer magnitude pruning).
    Magnitude,
    /// One channel group's channels of least L1 importance removed.
    Channel,
}

impl SensitivityMethod {
    /// What one unit of this method is, in words.
    fn unit(self) -> &'static str {
        match self {
            SensitivityMethod::Magnitude => "Conv layer",
            SensitivityMethod::Channel => "channel group",
        }
    }
}

/// What to measure and where.
#[derive(Debug, Clone)]
pub struct SensitivitySpec {
    pub model: PathBuf,
    pub method: SensitivityMethod,
    pub amounts: Vec<f64>,
    /// Which units: Conv node names (for channel groups, any producer's name) matching
    /// `include` (all when empty) and no `exclude`.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub validation: ValSettings,
    pub out: PathBuf,
}

/// One amount applied to one unit.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub amount: f64,
    /// The metric after pruning; `None` when the amount left the unit unchanged.
    pub metric: Option<f64>,
    /// Dense metric minus `metric`.
    pub drop: Option<f64>,
}

/// One unit: its name, the Conv nodes it prunes, its cells in amount order.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub unit: String,
    pub convs: Vec<String>,
    pub cells: Vec<Cell>,
}

/// The whole measurement, as `sensitivity.json` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityReport {
    pub model: PathBuf,
    pub method: SensitivityMethod,
    /// `coco_ap` or `map50_95`.
    pub metric: &'static str,
    pub images: usize,
    pub backend: String,
    pub dense_metric: f64,
    pub amounts: Vec<f64>,
    pub rows: Vec<Row>,
    /// Heatmap files written.
    pub plots: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

const OUTPUTS: [&str; 5] = [
    "sensitivity.json",
    "sensitivity.csv",
    "sensitivity.md",
    "heatmap.svg",
    "heatmap.png",
];

/// Runs the measurement (see the module doc) and writes its files into `spec.out`.
pub fn sensitivity(spec: &SensitivitySpec, progress: &dyn Progress) -> Result<SensitivityReport> {
    if spec.amounts.is_empty() {
        bail!("no amounts to measure");
    }
    let model = onnx::load(&spec.model)?;
    let units = units(&model.proto, spec)?;
    if units.is_empty() {
        bail!(
            "no prunable {} of {} matches the include/exclude filters",
            spec.method.unit(),
            spec.model.display()
        );
    }
    let mut outputs = OutputPlan::new();
    outputs.input_model(&model)?;
    for name in OUTPUTS {
        outputs.output("sensitivity output", &spec.out.join(name))?;
    }
    let scratch = spec.out.join("sensitivity-unit.onnx");
    let validator = Validator::load(spec.validation.clone(), progress)?;
    outputs.inputs("validation file", &validator.files()?)?;
    outputs.output("pruned unit", &scratch)?;
    let dense = dense_accuracy(&validator, &model, progress)?.headline();
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("cannot create {}", spec.out.display()))?;
    // One phase counts the units; each amount's pruning and validation run under it.
    progress.start(spec.method.unit(), Some(units.len() as u64));
    let cell = progress.child();
    let mut rows = Vec::with_capacity(units.len());
    for (unit, convs, pattern) in units {
        let mut cells = Vec::with_capacity(spec.amounts.len());
        for &amount in &spec.amounts {
            progress.note(&format!("{unit} at {amount}"));
            let pass = spec.pass(amount, &pattern);
            let mut plan = OutputPlan::new();
            plan.input_model(&model)?;
            let options = JobOptions::default();
            plan.output_model("pruned unit", &scratch, &options.save)?;
            let report = phase(&*cell, "pruning", |inside| {
                prune_to_file(
                    model.clone(),
                    std::slice::from_ref(&pass),
                    &scratch,
                    &options,
                    inside,
                    &mut plan,
                )
            })
            .with_context(|| format!("{unit} at {amount}"))?;
            let unchanged = report.after.nonzero_params == report.before.nonzero_params
                && report.after.macs == report.before.macs;
            let metric = if unchanged {
                None
            } else {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut plan.open_staged(&scratch)?, &mut bytes)?;
                let pruned = onnx::load_bytes(bytes.into(), &scratch)?;
                Some(accuracy(&validator, "validating", &pruned, &*cell)?.headline())
            };
            // the plan is dropped uncommitted: the staged model is removed
            cells.push(Cell {
                amount,
                metric,
                drop: metric.map(|m| dense - m),
            });
        }
        rows.push(Row { unit, convs, cells });
        progress.advance(1);
    }
    drop(cell);
    progress.finish();
    let mut report = SensitivityReport {
        model: spec.model.clone(),
        method: spec.method,
        metric: if validator.has_coco() {
            "coco_ap"
        } else {
            "map50_95"
        },
        images: validator.dataset().images.len(),
        backend: spec.validation.backend.to_string(),
        dense_metric: dense,
        amounts: spec.amounts.clone(),
        rows,
        plots: Vec::new(),
        warnings: validator.dataset().report.messages.clone(),
    };
    match report.heatmap().render() {
        Ok(Rendered { svg, png }) => {
            for (name, bytes) in [(OUTPUTS[3], svg.as_bytes()), (OUTPUTS[4], &png[..])] {
                let path = spec.out.join(name);
                outputs.stage_bytes(&path, bytes)?;
                report.plots.push(path);
            }
        }
        Err(err) => report.warnings.push(format!("heatmap not drawn: {err:#}")),
    }
    outputs.stage_json(&spec.out.join(OUTPUTS[0]), &report)?;
    outputs.stage_bytes(&spec.out.join(OUTPUTS[1]), report.csv().as_bytes())?;
    outputs.stage_bytes(&spec.out.join(OUTPUTS[2]), report.markdown().as_bytes())?;
    outputs.commit()?;
    Ok(report)
}

impl SensitivitySpec {
    /// The pass pruning only the unit whose Conv names match `pattern`, with `prune`'s defaults.
    fn pass(&self, amount: f64, pattern: &str) -> PassConfig {
        let kind = match self.method {
            SensitivityMethod::Magnitude => MethodKind::Layer,
            SensitivityMethod::Channel => MethodKind::Channel,
        };
        let method = Method {
            kind,
            recover: Recover::None,
            finetune: false,
        };
        method.pass(amount, &[pattern.to_string()], &[])
    }
}

/// The units of `model` the filters select, in graph order: (name, Conv nodes, the pattern
/// selecting exactly them).
fn units(
    model: &crate::onnx::proto::ModelProto,
    spec: &SensitivitySpec,
) -> Result<Vec<(String, Vec<String>, String)>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let filter = LayerFilter::new(&spec.include, &spec.exclude)?;
    let exact = |name: &str| format!("^{}$", regex::escape(name));
    Ok(match spec.method {
        SensitivityMethod::Magnitude => conv_layers(&GraphView::new(graph))?
            .into_iter()
            .filter(|layer| filter.selects(&layer.name))
            .map(|layer| {
                (
                    layer.name.clone(),
                    vec![layer.name.clone()],
                    exact(&layer.name),
                )
            })
            .collect(),
        SensitivityMethod::Channel => channel_groups(graph)?
            .groups
            .into_iter()
            .filter(|g| g.is_prunable() && g.producer_names.iter().any(|n| filter.selects(n)))
            .map(|g| {
                let first = &g.producer_names[0];
                let name = match g.producer_names.len() {
                    1 => format!("#{} {first}", g.id),
                    n => format!("#{} {first} (+{})", g.id, n - 1),
                };
                let pattern = exact(first);
                (name, g.producer_names, pattern)
            })
            .collect(),
    })
}

impl SensitivityReport {
    fn metric_name(&self) -> &'static str {
        match self.metric {
            "coco_ap" => "COCO AP",
            _ => "mAP@.5:.95",
        }
    }

    /// Units by amount, coloured by the drop.
    pub fn heatmap(&self) -> Heatmap {
        Heatmap {
            title: format!(
                "{} drop, one {} pruned at a time",
                self.metric_name(),
                match self.method {
                    SensitivityMethod::Magnitude => "layer",
                    SensitivityMethod::Channel => "channel group",
                }
            ),
            row_label: match self.method {
                SensitivityMethod::Magnitude => "Conv layer".into(),
                SensitivityMethod::Channel => "channel group (first producer)".into(),
            },
            column_label: "amount pruned (fraction of the unit)".into(),
            rows: self.rows.iter().map(|r| r.unit.clone()).collect(),
            columns: self.amounts.iter().map(|a| a.to_string()).collect(),
            values: self
                .rows
                .iter()
                .map(|r| r.cells.iter().map(|c| c.drop).collect())
                .collect(),
            value_label: format!(
                "{} drop from dense {:.4}; grey = unchanged",
                self.metric_name(),
                self.dense_metric
            ),
        }
    }

    /// One line per (unit, amount).
    pub fn csv(&self) -> String {
        let mut out = String::from("unit,convs,amount,metric,drop\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for row in &self.rows {
            for cell in &row.cells {
                out += &format!(
                    "{},{},{},{},{}\n",
                    csv_field(&row.unit),
                    csv_field(&row.convs.join(" ")),
                    cell.amount,
                    opt(cell.metric),
                    opt(cell.drop)
                );
            }
        }
        out
    }

    fn markdown(&self) -> String {
        let mut md = format!(
            "# Sensitivity of {}\n\n{} drop (dense {:.4}) with one {} pruned at a time, on {} \
             validation image(s), backend {}; `-`: the amount leaves it unchanged.\n\n| unit |",
            self.model.display(),
            self.metric_name(),
            self.dense_metric,
            match self.method {
                SensitivityMethod::Magnitude => "Conv layer",
                SensitivityMethod::Channel => "channel group",
            },
            self.images,
            self.backend,
        );
        for a in &self.amounts {
            md += &format!(" {a} |");
        }
        md += &format!("\n|---|{}\n", "---|".repeat(self.amounts.len()));
        for row in &self.rows {
            md += &format!("| {} |", md_cell(&row.unit));
            for cell in &row.cells {
                md += &cell
                    .drop
                    .map_or(" - |".to_string(), |d| format!(" {d:+.4} |"));
            }
            md.push('\n');
        }
        if !self.plots.is_empty() {
            md += "\n![heatmap](heatmap.svg)\n";
        }
        md
    }
}
