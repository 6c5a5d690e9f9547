//! The `shears` command line: one file per command, each with an `Args` struct and a `run`.

use clap::{Parser, Subcommand};

pub mod synth;

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
    /// Write a YOLOv5 v7.0 ONNX model (official export layout) with seeded random weights.
    Synth(synth::Args),
}

/// Runs the parsed command line; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Synth(args) => synth::run(&args, cli.quiet),
    }
}
