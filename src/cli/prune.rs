//! `shears prune MODEL -o OUT`: run pruning passes on a model and write the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::common::load_model;
use super::ui::Ui;
use shears::analysis::grouped;
use shears::calib::{CalibrationSet, CalibrationSpec};
use shears::eval::validate::{DataSource, load_dataset};
use shears::job::{Footprint, JobOptions, JobReport, prune_to_file};
use shears::onnx::{OutputPlan, SaveOptions};
use shears::passes::{
    CalibOrder, Importance, PassConfig, PruneChannels, PruneMagnitude, PruneNM, Recover, Scope,
    StoreSparse,
};
use shears::progress::Silent;
use shears::verify::Probe;

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
        required_unless_present_any = ["pattern", "target_macs"],
        conflicts_with_all = ["pattern", "target_macs"],
        allow_negative_numbers = true
    )]
    pub amount: Option<f64>,
    /// With `--method channel --recover obs`: prune until the model has at most this fraction of
    /// its dense MACs, spending channels where they cost least.
    #[arg(long, value_name = "F")]
    pub target_macs: Option<f64>,
    /// Whether the fraction applies to each layer (channel group) or to all together.
    #[arg(long, value_enum, default_value_t = ScopeArg::Layer)]
    pub scope: ScopeArg,
    /// Channel importance (`--method channel`; default l1).
    #[arg(long, value_enum)]
    pub importance: Option<ImportanceArg>,
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
    /// Verify on the first images of this dataset (a YOLOv5 data YAML) instead of random inputs.
    #[arg(long, value_name = "DATA.yaml")]
    pub verify_data: Option<PathBuf>,
    /// Dataset root replacing the `--verify-data` YAML's `path:`.
    #[arg(long, requires = "verify_data")]
    pub data_root: Option<PathBuf>,
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
    /// How the remaining weights compensate: `stats` corrects each pruned layer's output mean
    /// and spread, `obs` re-solves the layers (both need --calib).
    #[arg(long, value_enum, default_value_t = RecoverArg::None)]
    pub recover: RecoverArg,
    /// Calibration images: a dataset YAML (its train images, else val) or a folder of images.
    /// Never the images you report accuracy on.
    #[arg(long, value_name = "DATA")]
    pub calib: Option<PathBuf>,
    /// Replaces the calibration YAML's `path:`.
    #[arg(long, value_name = "DIR", requires = "calib")]
    pub calib_root: Option<PathBuf>,
    /// How many calibration images, drawn with a fixed seed.
    #[arg(long, value_name = "N", default_value_t = shears::calib::DEFAULT_IMAGES)]
    pub calib_images: usize,
    /// Which inputs `--recover obs` solves each layer from.
    #[arg(long, value_enum)]
    pub calib_order: Option<CalibOrderArg>,
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

/// `--scope`: the CLI's spelling of [`Scope`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    /// The fraction of each layer (channel group).
    Layer,
    /// The fraction of all selected layers (channel groups) together.
    Global,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Layer => Scope::Layer,
            ScopeArg::Global => Scope::Global,
        }
    }
}

/// `--recover`: the CLI's spelling of [`Recover`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RecoverArg {
    /// Nothing: the remaining weights keep their values.
    None,
    /// Correct every Conv's output statistics toward the dense model's (magnitude pruning).
    Stats,
    /// Re-solve the layers by OBS from calibration statistics, then correct the statistics.
    Obs,
}

impl From<RecoverArg> for Recover {
    fn from(recover: RecoverArg) -> Self {
        match recover {
            RecoverArg::None => Recover::None,
            RecoverArg::Stats => Recover::Stats,
            RecoverArg::Obs => Recover::Obs,
        }
    }
}

/// `--calib-order`: the CLI's spelling of [`CalibOrder`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CalibOrderArg {
    /// Every layer from the dense model's inputs.
    Independent,
    /// Stages of graph order, each from the model pruned so far, aiming at the dense outputs.
    Sequential,
}

impl From<CalibOrderArg> for CalibOrder {
    fn from(order: CalibOrderArg) -> Self {
        match order {
            CalibOrderArg::Independent => CalibOrder::Independent,
            CalibOrderArg::Sequential => CalibOrder::Sequential,
        }
    }
}

/// `--importance`: the CLI's spelling of [`Importance`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportanceArg {
    /// Sum of |w| of the channel's filters over all producers.
    L1,
    /// Euclidean norm of the channel's filters over all producers.
    L2,
    /// Seeded random importances: a test aid for trying many channel selections.
    #[value(hide = true)]
    Random,
}

impl From<ImportanceArg> for Importance {
    fn from(importance: ImportanceArg) -> Self {
        match importance {
            ImportanceArg::L1 => Importance::L1,
            ImportanceArg::L2 => Importance::L2,
            ImportanceArg::Random => Importance::Random,
        }
    }
}

impl Args {
    /// The passes these flags ask for.
    pub fn passes(&self) -> Result<Vec<PassConfig>> {
        if !matches!(self.method, Method::Channel) {
            if self.emit_masked.is_some() {
                bail!("--emit-masked applies to --method channel only");
            }
            if self.importance.is_some() {
                bail!("--importance applies to --method channel only");
            }
        }
        if self.verify_data.is_some() && !matches!(self.method, Method::Channel) {
            bail!("--verify-data applies to --method channel only");
        }
        let (include, exclude) = (self.include.clone(), self.exclude.clone());
        let mut passes = vec![match (&self.pattern, self.amount) {
            (Some(_), _) if matches!(self.method, Method::Channel) => {
                bail!("--pattern does not apply to --method channel")
            }
            (None, _) if matches!(self.method, Method::Channel) && self.calib_order.is_some() => {
                bail!("--calib-order does not apply to --method channel (it has one order)")
            }
            (None, amount) if matches!(self.method, Method::Channel) => {
                PassConfig::PruneChannels(self.channel_pass(amount.unwrap_or(0.0)))
            }
            (Some(pattern), _) => {
                let (n, m) = PruneNM::parse_pattern(pattern)?;
                PassConfig::PruneNM(PruneNM {
                    n,
                    m,
                    include: include.clone(),
                    exclude: exclude.clone(),
                    recover: self.recover.into(),
                    order: self.calib_order.map(Into::into),
                })
            }
            (None, Some(amount)) => PassConfig::PruneMagnitude(PruneMagnitude {
                amount,
                scope: self.scope.into(),
                include: include.clone(),
                exclude: exclude.clone(),
                recover: self.recover.into(),
                order: self.calib_order.map(Into::into),
            }),
            (None, None) => bail!("give --amount or --pattern"),
        }];
        if self.storage == Storage::Sparse {
            passes.push(PassConfig::StoreSparse(StoreSparse { include, exclude }));
        }
        for pass in &passes {
            pass.validate()?;
        }
        let calibrated = passes.iter().any(PassConfig::needs_calibration);
        if calibrated && self.calib.is_none() {
            bail!("--recover stats and obs need calibration images: give --calib DATA");
        }
        if !calibrated && self.calib.is_some() {
            bail!("--calib is only used with --recover stats or obs");
        }
        Ok(passes)
    }

    fn channel_pass(&self, amount: f64) -> PruneChannels {
        PruneChannels {
            amount,
            importance: self.importance.map_or(Importance::L1, Into::into),
            scope: self.scope.into(),
            round_to: self.round_to,
            min_channels: self.min_channels,
            seed: self.seed,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            recover: self.recover.into(),
            target_macs: self.target_macs,
        }
    }
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let passes = args.passes()?;
    let model = load_model(&args.model, ui)?;
    let probe = match &args.verify_data {
        Some(data) => {
            let source = DataSource::Yaml {
                data: data.clone(),
                root: args.data_root.clone(),
            };
            Probe::from_dataset(
                &load_dataset(
                    &source,
                    shears::eval::preprocess::DEFAULT_MAX_PIXELS,
                    &Silent,
                )?
                .0,
            )
        }
        None => Probe::default(),
    };
    let calibration = args
        .calib
        .as_ref()
        .map(|data| {
            CalibrationSet::resolve(&CalibrationSpec {
                data: data.clone(),
                data_root: args.calib_root.clone(),
                images: args.calib_images,
            })
        })
        .transpose()?;
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
    let options = JobOptions {
        calibration,
        save,
        measure_zstd: !args.no_zstd,
        force: args.force,
        verify: !args.no_verify,
        probe,
        emit_masked: args.emit_masked.clone(),
        check: None,
    };
    ui.progress().start("pruning", None);
    let report = prune_to_file(
        model,
        &passes,
        &args.output,
        &options,
        ui.progress(),
        &mut plan,
    );
    ui.progress().finish();
    let report = report?;
    for warning in &report.warnings {
        ui.warn(format_args!("{warning}"));
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
    if let Some(PassConfig::PruneChannels(p)) = passes.first() {
        ui.warn(if p.recover.is_none() {
            "channel pruning changes what the model detects, and without `--recover obs` nothing \
             compensates: validate the result (`shears val`) before using it"
        } else {
            "channel pruning changes what the model detects: validate the result (`shears val`) \
             on images it was not calibrated on before using it"
        });
    }
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
    for proof in r.passes.iter().filter_map(|p| p.proof.as_ref()) {
        writeln!(out, "verify: {}", proof.summary)?;
    }
    if let Some(check) = &r.check {
        writeln!(out, "check: {check}")?;
    }
    writeln!(out, "wrote {}", r.output.display())?;
    if let Some(path) = masked {
        writeln!(out, "wrote the masked dense model {}", path.display())?;
    }
    Ok(())
}
