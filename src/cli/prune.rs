//! `shears prune MODEL -o OUT`: run pruning passes on a model and write the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::common::{ensure_lossless_rewrite, grouped, load_model};
use super::ui::Ui;
use crate::job::{Footprint, JobOptions, JobReport, masked_check, masked_model, prune_to_file};
use crate::onnx::{OutputPlan, SaveOptions};
use crate::passes::{
    Importance, PassConfig, PruneChannels, PruneMagnitude, PruneNM, Scope, StoreSparse,
};

/// Prune the convolution weights of a model and write a new model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model to prune (never modified).
    pub model: PathBuf,
    /// Where to write the pruned model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Pruning method.
    #[arg(long, value_enum, default_value_t = Method::Magnitude)]
    pub method: Method,
    /// Fraction of weights (channels, with `--method channel`) to remove, in [0, 1] (not with
    /// --pattern).
    #[arg(
        long,
        required_unless_present = "pattern",
        conflicts_with = "pattern",
        allow_negative_numbers = true
    )]
    pub amount: Option<f64>,
    /// Whether the fraction applies to each layer (channel group) or to all together.
    #[arg(long, value_enum, default_value_t = Scope::Layer)]
    pub scope: Scope,
    /// Channel importance (`--method channel`).
    #[arg(long, value_enum, default_value_t = Importance::L1)]
    pub importance: Importance,
    /// Seed of `--importance random`, a test aid (`--method channel`).
    #[arg(long, hide = true, default_value_t = 0)]
    pub seed: u64,
    /// Kept channel counts are multiples of this (`--method channel`).
    #[arg(long, default_value_t = 8)]
    pub round_to: usize,
    /// No channel group keeps fewer channels (`--method channel`; default max(8, round-to)).
    #[arg(long)]
    pub min_channels: Option<usize>,
    /// Skip checking the channel-pruned model against the masked dense model.
    #[arg(long)]
    pub no_verify: bool,
    /// Also write the masked dense model (the input with the removed channels zeroed) here.
    #[arg(long)]
    pub emit_masked: Option<PathBuf>,
    /// N:M semi-structured sparsity instead of a fraction, e.g. 2:4.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Only prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Never prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// How to store pruned weights.
    #[arg(long, value_enum, default_value_t = Storage::Dense)]
    pub storage: Storage,
    /// Keep tensor data in this file beside the output (automatic for models over 2 GiB).
    #[arg(long)]
    pub external_data: Option<String>,
    /// Skip measuring the zstd-compressed sizes.
    #[arg(long)]
    pub no_zstd: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Rewrite a model even if it holds fields this version of shears does not know (they are lost).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Method {
    /// Zero the weights of smallest magnitude (unstructured or N:M).
    Magnitude,
    /// Remove whole Conv output channels (structured, with graph surgery).
    Channel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// Pruned weights stay dense tensors with zeros.
    Dense,
    /// Weights that are sparse enough are stored as ONNX sparse initializers.
    Sparse,
}

impl Args {
    /// The passes these flags ask for.
    pub fn passes(&self) -> Result<Vec<PassConfig>> {
        if self.emit_masked.is_some() && !matches!(self.method, Method::Channel) {
            bail!("--emit-masked applies to --method channel only");
        }
        let (include, exclude) = (self.include.clone(), self.exclude.clone());
        let mut passes = vec![match (&self.pattern, self.amount) {
            (Some(_), _) if matches!(self.method, Method::Channel) => {
                bail!("--pattern does not apply to --method channel")
            }
            (None, Some(amount)) if matches!(self.method, Method::Channel) => {
                PassConfig::PruneChannels(self.channel_pass(amount))
            }
            (Some(pattern), _) => {
                let (n, m) = PruneNM::parse_pattern(pattern)?;
                PassConfig::PruneNM(PruneNM {
                    n,
                    m,
                    include: include.clone(),
                    exclude: exclude.clone(),
                })
            }
            (None, Some(amount)) => PassConfig::PruneMagnitude(PruneMagnitude {
                amount,
                scope: self.scope,
                include: include.clone(),
                exclude: exclude.clone(),
            }),
            (None, None) => bail!("give --amount or --pattern"),
        }];
        if self.storage == Storage::Sparse {
            passes.push(PassConfig::StoreSparse(StoreSparse { include, exclude }));
        }
        for pass in &passes {
            pass.validate()?;
        }
        Ok(passes)
    }

    fn channel_pass(&self, amount: f64) -> PruneChannels {
        PruneChannels {
            amount,
            importance: self.importance,
            scope: self.scope,
            round_to: self.round_to,
            min_channels: self.min_channels,
            seed: self.seed,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let passes = args.passes()?;
    let model = load_model(&args.model, ui)?;
    ensure_lossless_rewrite(&model, args.force, ui)?;
    let save = SaveOptions {
        external_data: args.external_data.clone(),
    };
    let mut plan = OutputPlan::new();
    plan.input_model(&model);
    plan.output_model("-o", &args.output, &save)?;
    if let Some(path) = &args.emit_masked {
        plan.output("--emit-masked", path)?;
    }
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    let channel_pass = match passes.first() {
        Some(PassConfig::PruneChannels(p)) => Some(p),
        _ => None,
    };
    let masked = match (channel_pass, &args.emit_masked) {
        (Some(pass), Some(_)) => Some(masked_model(pass, &model.proto)?),
        _ => None,
    };
    let options = JobOptions {
        save,
        measure_zstd: !args.no_zstd,
        check: channel_pass
            .filter(|_| !args.no_verify)
            .map(|p| masked_check(p.clone())),
    };
    ui.progress().start("pruning", None);
    let report = prune_to_file(model, &passes, &args.output, &options, &mut plan);
    ui.progress().finish();
    let report = report?;
    if let (Some(masked), Some(path)) = (&masked, &args.emit_masked) {
        plan.stage_model(masked, path, &SaveOptions::default())?;
    }
    if let Some(path) = &args.json {
        plan.stage_bytes(path, &super::common::json_bytes(&report)?)?;
    }
    plan.commit()?;
    print_report(
        &mut std::io::stdout().lock(),
        &report,
        args.emit_masked.as_deref(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(out: &mut impl Write, r: &JobReport, masked: Option<&Path>) -> Result<()> {
    for pass in &r.passes {
        writeln!(out, "{}: {}", pass.pass, pass.summary)?;
    }
    let row = |out: &mut dyn Write, label: &str, f: &Footprint| -> std::io::Result<()> {
        writeln!(
            out,
            "{label:<8} {:>12} {:>12} {:>15} {:>9.4} {:>9.4} {:>14} {:>14}",
            grouped(f.params),
            grouped(f.nonzero_params),
            grouped(f.macs),
            f.sparsity.global,
            f.sparsity.conv_weights,
            grouped(f.file_bytes),
            f.zstd_bytes.map_or("-".to_string(), grouped)
        )
    };
    writeln!(
        out,
        "{:<8} {:>12} {:>12} {:>15} {:>9} {:>9} {:>14} {:>14}",
        "", "params", "non-zero", "MACs", "sparsity", "conv w.", "file bytes", "zstd bytes"
    )?;
    row(out, "before", &r.before)?;
    row(out, "after", &r.after)?;
    if let Some(check) = &r.check {
        writeln!(out, "verify: {check}")?;
    }
    writeln!(out, "wrote {}", r.output.display())?;
    if let Some(path) = masked {
        writeln!(out, "wrote the masked dense model {}", path.display())?;
    }
    Ok(())
}
