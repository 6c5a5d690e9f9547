//! `shears sweep MODEL --data DATA.yaml --amounts 0.1,0.3,0.5 --methods layer,global+obs -o DIR`:
//! every method at every amount, pruned as `prune` does, validated as `val` does, timed in turns
//! as `bench` does; tables and plots in DIR.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::common::{BackendArgs, CalibArgs, ValidationArgs};
use super::ui::Ui;
use shears::sweep::{SweepSpec, TimingSettings, parse_amounts, parse_methods, run_sweep};

/// Prune a model with several methods at several amounts; validate, time and plot every point.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model to sweep (never modified).
    pub model: PathBuf,
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Comma-separated fractions to prune (methods that take one).
    #[arg(long, default_value = "0.1,0.3,0.5")]
    pub amounts: String,
    /// Comma-separated methods: `layer` (magnitude, each layer), `global` (magnitude, one
    /// threshold), `N:M` (e.g. `2:4`; the amount does not apply: one point), `channel` (whole
    /// channels, L1); append `+obs` or `+stats` for recovery (needs --calib), e.g. `global+obs`,
    /// and then `+ft` to fine-tune each point from the dense model on the --calib images
    /// (`shears finetune`'s default schedule), e.g. `channel+obs+ft`.
    #[arg(long, default_value = "layer,global,2:4,channel")]
    pub methods: String,
    /// Only prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Never prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Folder of the results: sweep.json, sweep.csv, sweep.md, plots, points/ and models/.
    /// Points already there with the same settings are reused (an interrupted sweep resumes).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Calibration images of the recovering methods.
    #[command(flatten)]
    pub calibration: CalibArgs,
    /// Timed inferences per model (0: no timing); models take turns as in `bench`.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Untimed warm-up inferences per model.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let backend = args.backend.spec()?;
    let spec = SweepSpec {
        model: args.model.clone(),
        methods: parse_methods(&args.methods)?,
        amounts: parse_amounts(&args.amounts)?,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        validation: args.validation.settings(backend),
        calibration: args.calibration.spec(),
        timing: NonZeroUsize::new(args.runs).map(|runs| TimingSettings {
            warmup: args.warmup,
            runs,
            backend,
        }),
        out: args.output.clone(),
    };
    let report = run_sweep(&spec, ui.progress())?;
    for warning in &report.warnings {
        ui.warn(warning);
    }
    let resumed = std::iter::once(&report.dense)
        .chain(&report.points)
        .filter(|p| p.resumed)
        .count();
    print!("{}", report.markdown_table());
    println!(
        "{} model(s): {} computed, {resumed} resumed from {}",
        report.points.len() + 1,
        report.points.len() + 1 - resumed,
        args.output.join("points").display()
    );
    println!(
        "wrote {} (sweep.json, sweep.csv, sweep.md{})",
        args.output.display(),
        if report.plots.is_empty() {
            ""
        } else {
            ", plots"
        }
    );
    Ok(ExitCode::SUCCESS)
}
