//! `shears sensitivity MODEL --data DATA.yaml [--method magnitude|channel] -o DIR`: each layer
//! (or channel group) pruned on its own at each amount and validated; a table and a heatmap.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::common::{BackendArgs, ValidationArgs};
use super::ui::Ui;
use shears::sweep::parse_amounts;
use shears::sweep::sensitivity::{SensitivityMethod, SensitivitySpec, sensitivity};

/// Prune one layer (or channel group) at a time and validate: which ones accuracy needs most.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model to measure (never modified).
    pub model: PathBuf,
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// What is pruned on its own: a Conv layer's weights or a channel group's channels.
    #[arg(long, value_enum, default_value_t = MethodArg::Magnitude)]
    pub method: MethodArg,
    /// Comma-separated fractions of each unit to prune.
    #[arg(long, default_value = "0.125,0.25,0.5")]
    pub amounts: String,
    /// Only units with a Conv whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// No unit with a Conv whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Folder of the results: sensitivity.json, .csv, .md and heatmap.svg, heatmap.png.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    /// One Conv layer's smallest weights zeroed.
    Magnitude,
    /// One channel group's least important channels removed (L1, widths multiples of 8).
    Channel,
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let spec = SensitivitySpec {
        model: args.model.clone(),
        method: match args.method {
            MethodArg::Magnitude => SensitivityMethod::Magnitude,
            MethodArg::Channel => SensitivityMethod::Channel,
        },
        amounts: parse_amounts(&args.amounts)?,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        validation: args.validation.settings(args.backend.spec()?),
        out: args.output.clone(),
    };
    let report = sensitivity(&spec, ui.progress())?;
    for warning in &report.warnings {
        ui.warn(warning);
    }
    println!(
        "dense {:.4}; drop with one unit pruned at a time ({} image(s)):",
        report.dense_metric, report.images
    );
    print!("{:>9}", "worst");
    for a in &report.amounts {
        print!(" {:>8}", a);
    }
    println!("  unit");
    let mut rows: Vec<_> = report.rows.iter().collect();
    let worst = |r: &&shears::sweep::sensitivity::Row| {
        r.cells
            .iter()
            .filter_map(|c| c.drop)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    rows.sort_by(|a, b| worst(b).total_cmp(&worst(a)));
    for row in rows {
        let w = worst(&row);
        print!(
            "{:>9}",
            if w.is_finite() {
                format!("{w:+.4}")
            } else {
                "-".into()
            }
        );
        for cell in &row.cells {
            print!(
                " {:>8}",
                cell.drop.map_or("-".into(), |d| format!("{d:+.4}"))
            );
        }
        println!("  {}", row.unit);
    }
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
