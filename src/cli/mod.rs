//! The `shears` command line: one file per command, each with an `Args` struct and a `run`.

mod bench;
mod check;
mod cocoeval;
pub(crate) mod common;
mod finetune;
mod inspect;
mod prune;
mod run;
mod sensitivity;
mod sweep;
mod synth;
mod ui;
mod val;

use clap::{Parser, Subcommand};

pub use ui::{Ui, diagnostic};

/// Prune exported YOLOv5 ONNX models and prove the result.
#[derive(Debug, Parser)]
#[command(name = "shears", version, about, propagate_version = true)]
pub struct Cli {
    /// Print less: only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that models decode and re-encode byte-identical; print their IR version and opsets.
    Check(check::Args),
    /// Summarise a model: conv layers, parameters, MACs, size, sparsity, per-layer table.
    Inspect(inspect::Args),
    /// Prune convolution weights (magnitude, global, N:M) and write a new model.
    Prune(Box<prune::Args>),
    /// Run a YAML pipeline file over its models (a model zoo) and print a summary.
    Run(run::Args),
    /// Time inference of one or more models on one backend, side by side.
    Bench(bench::Args),
    /// Evaluate a COCO results JSON against annotations (pycocotools COCOeval, bbox).
    Cocoeval(cocoeval::Args),
    /// Validate models on COCO like YOLOv5's val.py and pycocotools; several side by side.
    Val(val::Args),
    /// Generate a YOLOv5 v7.0 ONNX model (n, s, m, l, x) with seeded random weights.
    Synth(synth::Args),
    /// Fine-tune a pruned model by distillation from its dense model (label-free).
    Finetune(Box<finetune::Args>),
    /// Prune with several methods at several amounts; validate, time and plot every point.
    Sweep(sweep::Args),
    /// Prune one layer (or channel group) at a time and validate: a table and a heatmap.
    Sensitivity(sensitivity::Args),
}

/// Runs the parsed command line; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ui = Ui::new(cli.quiet, cli.verbose);
    match &cli.command {
        Command::Check(args) => check::run(args, &ui),
        Command::Inspect(args) => inspect::run(args, &ui),
        Command::Prune(args) => prune::run(args, &ui),
        Command::Run(args) => run::run(args, &ui),
        Command::Bench(args) => bench::run(args, &ui),
        Command::Cocoeval(args) => cocoeval::run(args, &ui),
        Command::Val(args) => val::run(args, &ui),
        Command::Synth(args) => synth::run(args, &ui),
        Command::Finetune(args) => finetune::run(args, &ui),
        Command::Sweep(args) => sweep::run(args, &ui),
        Command::Sensitivity(args) => sensitivity::run(args, &ui),
    }
}

/// How to give on the command line what a library error says is needed ([`shears::Needs`]).
pub fn flag_hint(err: &anyhow::Error) -> Option<&'static str> {
    Some(match err.downcast_ref::<shears::Needs>()? {
        shears::Needs::LossyRewrite { .. } => "pass --force to rewrite it anyway",
        shears::Needs::CalibrationImages => "give --calib DATA",
        shears::Needs::CocoAnnotations => "give them with --gt FILE",
        shears::Needs::PixelLimit { .. } => "raise it with --max-pixels N",
        shears::Needs::OrtBackend { .. } => "use --backend ort",
        shears::Needs::GivenDataRoot { .. } => "check --data-root",
        shears::Needs::DataRoot { .. } => "give the dataset's folder with --data-root DIR",
    })
}
