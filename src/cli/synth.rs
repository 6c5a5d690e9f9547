//! `shears synth`: write a YOLOv5 v7.0 ONNX model with seeded random weights.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use shears::onnx::{OutputPlan, SaveOptions};
use shears::synth::{self, Export, SynthSpec, Upsample, Variant};

/// Arguments of `shears synth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: yolov5n, yolov5s, yolov5m, yolov5l, yolov5x or a P6 model (four Detect levels)
    /// yolov5n6, yolov5s6, yolov5m6, yolov5l6, yolov5x6.
    pub model: Variant,
    /// Number of classes (names are COCO's for 80, class0.. otherwise).
    #[arg(long, default_value_t = 80)]
    pub nc: usize,
    /// Square input size in pixels, a multiple of the largest stride (32; 64 for P6 models)
    /// [default: 640; 1280 for P6 models].
    #[arg(long)]
    pub imgsz: Option<usize>,
    /// Export form: 12 is the plain export, 17 the `--simplify` (onnxsim) export.
    #[arg(long, value_enum, default_value = "12")]
    pub opset: Opset,
    /// Resize form of the upsampling layers.
    #[arg(long, value_enum, default_value = "sizes")]
    pub upsample: UpsampleForm,
    /// Seed of the weight generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `--opset`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Opset {
    /// opset 12, not simplified.
    #[value(name = "12")]
    Twelve,
    /// opset 17, simplified by onnxsim.
    #[value(name = "17")]
    Seventeen,
}

/// `--upsample`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UpsampleForm {
    /// Sizes computed in the graph, as the v7.0 release checkpoints export.
    Sizes,
    /// Constant scales, as a model freshly built from the yaml exports.
    Scales,
}

/// Builds the model and writes it atomically.
pub fn run(args: &Args, ui: &super::Ui) -> anyhow::Result<ExitCode> {
    let spec = SynthSpec {
        variant: args.model,
        nc: args.nc,
        imgsz: args.imgsz.unwrap_or(args.model.default_imgsz()),
        export: match args.opset {
            Opset::Twelve => Export::Opset12,
            Opset::Seventeen => Export::Opset17Simplified,
        },
        upsample: match args.upsample {
            UpsampleForm::Sizes => Upsample::ComputedSizes,
            UpsampleForm::Scales => Upsample::ConstantScales,
        },
        seed: args.seed,
    };
    let mut plan = OutputPlan::new();
    plan.output("-o", &args.output)?;
    let start = Instant::now();
    let model = synth::build(&spec)?;
    let saved = plan.stage_model(&model, &args.output, &SaveOptions::default())?;
    plan.commit()?;
    if !ui.quiet {
        let params = synth::parameter_count(&spec)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}: {} ({} parameters, {} bytes) in {:.2} s",
            args.output.display(),
            spec.variant,
            params,
            saved.bytes,
            start.elapsed().as_secs_f64()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
