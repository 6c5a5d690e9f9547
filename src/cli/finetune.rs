//! `shears finetune STUDENT --teacher DENSE (--data DATA.yaml | --images DIR...) -o OUT`:
//! train a pruned model's Conv values by distillation from the dense model, label-free.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::common::load_model;
use super::ui::Ui;
use shears::backend::Device;
use shears::job::ensure_lossless_rewrite;
use shears::onnx::metadata::{self, FINETUNE_KEY};
use shears::onnx::{OutputPlan, SaveOptions};
use shears::plot::{LineChart, Series};
use shears::train::loss::LossWeights;
use shears::train::{FineTuneReport, FineTuneSettings, data::training_images, fine_tune};

/// Fine-tune a pruned model by distillation from its dense model (no labels needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pruned model to train (never modified).
    pub student: PathBuf,
    /// The dense model it was pruned from: the teacher.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Training images: a YOLOv5 data YAML (its `train` split; never its `val` split).
    #[arg(long, value_name = "DATA.yaml", required_unless_present = "images")]
    pub data: Option<PathBuf>,
    /// Dataset root replacing the data YAML's `path:`.
    #[arg(long, requires = "data")]
    pub data_root: Option<PathBuf>,
    /// Training images: a folder or an image-list file (repeatable).
    #[arg(long, value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Where to write the fine-tuned model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Epochs over the training images [default: 20].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training image size (a multiple of 32).
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// Images per training step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Adam's initial learning rate (cosine decay to 1% of it) [default: 0.0003].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Weight of the feature term of the loss: every convolution block's activation against
    /// the teacher's (0: the head outputs only) [default: 20].
    #[arg(long, value_name = "W")]
    pub feature_weight: Option<f64>,
    /// Seed of the held-out draw, the order and the augmentations.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of the images held out to measure the loss and keep the best epoch.
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Use at most N images (a seeded draw).
    #[arg(long, value_name = "N")]
    pub images_limit: Option<usize>,
    /// Device to train on: `cpu` only for now (asking for `cuda` is an error, never a silent
    /// CPU run).
    #[arg(long, value_name = "cpu", default_value = "cpu")]
    pub device: Device,
    /// Threads [default: number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Continue an interrupted run from its checkpoint (OUT.ckpt) when it matches this run.
    #[arg(long)]
    pub resume: bool,
    /// Also draw the training and held-out loss curves to PREFIX.svg and PREFIX.png.
    #[arg(long, value_name = "PREFIX")]
    pub plot: Option<PathBuf>,
    /// Write the run's report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Rewrite a model even if it holds fields this version of shears does not know (they are lost).
    #[arg(long)]
    pub force: bool,
}

impl Args {
    fn settings(&self) -> FineTuneSettings {
        let d = FineTuneSettings::default();
        FineTuneSettings {
            epochs: self.epochs.unwrap_or(d.epochs),
            imgsz: self.imgsz.unwrap_or(d.imgsz),
            batch: self.batch.unwrap_or(d.batch),
            lr: self.lr.unwrap_or(d.lr),
            seed: self.seed.unwrap_or(d.seed),
            holdout: self.holdout.unwrap_or(d.holdout),
            images_limit: self.images_limit,
            loss: LossWeights {
                feat: self.feature_weight.unwrap_or(d.loss.feat),
                ..d.loss
            },
            ..d
        }
    }
}

/// Where a run keeps its checkpoint: beside its output.
pub fn checkpoint_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".ckpt");
    output.with_file_name(name)
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    if let Device::Cuda(_) = args.device {
        bail!(
            "--device {}: fine-tuning runs on the CPU only (shears' training kernels have no \
             CUDA path yet); leave out --device",
            args.device
        );
    }
    let settings = args.settings();
    settings.validate()?;
    let student = load_model(&args.student, ui)?;
    let teacher = load_model(&args.teacher, ui)?;
    if let Some(warning) = ensure_lossless_rewrite(&student, args.force)? {
        ui.warn(warning);
    }
    let images = training_images(
        args.data.as_deref(),
        args.data_root.as_deref(),
        &args.images,
    )?;
    let checkpoint = checkpoint_path(&args.output);
    let save = SaveOptions::default();
    let mut plan = OutputPlan::new();
    plan.input_model(&student)?;
    plan.input_model(&teacher)?;
    if let Some(data) = &args.data {
        plan.input("--data", data)?;
    }
    plan.inputs("training image", &images)?;
    plan.output_model("-o", &args.output, &save)?;
    plan.output("checkpoint", &checkpoint)?;
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    let plots = args
        .plot
        .as_ref()
        .map(|prefix| ["svg", "png"].map(|ext| prefix.with_extension(ext)));
    for path in plots.iter().flatten() {
        plan.output("--plot", path)?;
    }
    if !args.resume && checkpoint.exists() {
        bail!(
            "{} holds an earlier run's checkpoint: pass --resume to continue it, or remove it",
            checkpoint.display()
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let (mut tuned, report) = pool.install(|| {
        fine_tune(
            &student.proto,
            &teacher.proto,
            &images,
            &settings,
            Some(&checkpoint),
            ui.progress(),
        )
    })?;
    metadata::set(
        &mut tuned,
        FINETUNE_KEY,
        &report
            .provenance(&args.teacher.display().to_string())
            .to_string(),
    );
    plan.stage_model(&tuned, &args.output, &save)?;
    if let Some(path) = &args.json {
        plan.stage_json(path, &report)?;
    }
    if let Some([svg, png]) = &plots {
        match loss_chart(&report).render() {
            Ok(rendered) => {
                plan.stage_bytes(svg, rendered.svg.as_bytes())?;
                plan.stage_bytes(png, &rendered.png)?;
            }
            Err(err) => ui.warn(format_args!("loss curves not drawn: {err:#}")),
        }
    }
    plan.commit()?;
    std::fs::remove_file(&checkpoint).ok();
    print_report(&mut std::io::stdout().lock(), &report, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// Training and held-out loss by epoch (epoch 0: the held-out loss before training).
fn loss_chart(report: &FineTuneReport) -> LineChart {
    let train = report
        .epochs
        .iter()
        .map(|e| (e.epoch as f64, e.train.total))
        .collect();
    let holdout = report
        .holdout_before
        .iter()
        .map(|l| (0.0, l.total))
        .chain(
            report
                .epochs
                .iter()
                .filter_map(|e| e.holdout.map(|h| (e.epoch as f64, h.total))),
        )
        .collect();
    LineChart {
        title: "distillation loss".to_string(),
        x_label: "epoch".to_string(),
        y_label: "loss".to_string(),
        series: vec![
            Series {
                name: "training (augmented)".to_string(),
                points: train,
                line: true,
            },
            Series {
                name: "held out".to_string(),
                points: holdout,
                line: true,
            },
        ],
    }
}

fn print_report(out: &mut impl Write, r: &FineTuneReport, output: &Path) -> Result<()> {
    writeln!(
        out,
        "fine-tuned on {} images ({} held out), {} epochs at {}px, batch {}, lr {}",
        r.train_images,
        r.holdout_images,
        r.settings.epochs,
        r.settings.imgsz,
        r.settings.batch,
        r.settings.lr
    )?;
    if let Some(before) = &r.holdout_before {
        writeln!(out, "epoch  0  held-out loss {:.5}", before.total)?;
    }
    for e in &r.epochs {
        let holdout = e
            .holdout
            .map_or_else(|| "-".to_string(), |h| format!("{:.5}", h.total));
        writeln!(
            out,
            "epoch {:>2}  train loss {:.5}  held-out loss {holdout}  lr {:.2e}  {:.0} s",
            e.epoch, e.train.total, e.lr, e.seconds
        )?;
    }
    if r.kept_epoch == 0 {
        writeln!(
            out,
            "kept epoch 0: no epoch lowered the held-out loss, the student is written unchanged"
        )?;
    } else {
        writeln!(out, "kept epoch {}", r.kept_epoch)?;
    }
    writeln!(out, "wrote {}", output.display())?;
    Ok(())
}
