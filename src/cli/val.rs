//! `shears val MODEL... --data DATA.yaml`: COCO validation like YOLOv5's val.py and pycocotools,
//! side by side with deltas when several models are given.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use super::common::{BackendArgs, load_model};
use super::ui::Ui;
use shears::backend::runnable_bytes;
use shears::digest::file_sha256;
use shears::eval::coco::results_json;
use shears::eval::dataset::{Dataset, ScanReport};
use shears::eval::nms::NmsConfig;
use shears::eval::preprocess::DEFAULT_MAX_PIXELS;
use shears::eval::validate::{DataSource, ValReport, data_files, load_dataset, validate};
use shears::onnx::{OutputPlan, metadata};

/// The SHA-256 of every image file of `dataset`.
fn dataset_hashes(dataset: &Dataset) -> Result<Vec<String>> {
    dataset
        .images
        .par_iter()
        .map(|image| file_sha256(&image.path))
        .collect()
}

/// Validate models on a COCO-style dataset (val.py metrics and the 12 COCOeval stats).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("dataset").required(true).args(["data", "coco_json"])))]
pub struct Args {
    /// ONNX models; with several, deltas are against the first.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// YOLOv5 data YAML (its `val` split).
    #[arg(long, conflicts_with = "coco_json")]
    pub data: Option<PathBuf>,
    /// Dataset root replacing the data YAML's `path:`.
    #[arg(long, requires = "data")]
    pub data_root: Option<PathBuf>,
    /// A COCO instances JSON as the dataset (with --images).
    #[arg(long, requires = "images")]
    pub coco_json: Option<PathBuf>,
    /// The image folder of --coco-json.
    #[arg(long, requires = "coco_json")]
    pub images: Option<PathBuf>,
    /// COCO annotations for COCOeval [default: the dataset's own, if any].
    #[arg(long)]
    pub gt: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Confidence threshold.
    #[arg(long, default_value_t = NmsConfig::default().conf_thres)]
    pub conf: f32,
    /// NMS IoU threshold (val.py's default; the pruning guide used 0.65).
    #[arg(long, default_value_t = NmsConfig::default().iou_thres)]
    pub iou: f64,
    /// Maximum detections per image.
    #[arg(long, default_value_t = NmsConfig::default().max_det)]
    pub max_det: usize,
    /// Class-agnostic NMS.
    #[arg(long)]
    pub agnostic: bool,
    /// Write predictions in COCO results format; `{stem}` is replaced by the model's file stem
    /// (needed with several models).
    #[arg(long, value_name = "FILE")]
    pub save_json: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Skip images of more pixels than this (checked in the header, before decoding).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Make every data warning an error: skipped, truncated or too large images, images decoded
    /// without pixel parity with val.py, a dataset without labels.
    #[arg(long)]
    pub strict: bool,
}

/// The JSON document of `val --json`; keys are stable.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// What the dataset scan found: label counts, skipped images, their messages.
    pub dataset: &'a ScanReport,
    pub models: &'a [ValReport],
}

impl Args {
    pub fn source(&self) -> DataSource {
        match (&self.data, &self.coco_json, &self.images) {
            (Some(data), _, _) => DataSource::Yaml {
                data: data.clone(),
                root: self.data_root.clone(),
            },
            (None, Some(annotations), Some(images)) => DataSource::CocoJson {
                annotations: annotations.clone(),
                images: images.clone(),
            },
            _ => unreachable!("clap requires --data or --coco-json with --images"),
        }
    }

    pub fn nms(&self) -> NmsConfig {
        NmsConfig {
            agnostic: self.agnostic,
            ..NmsConfig::with(self.conf, self.iou, self.max_det)
        }
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Where `--save-json` writes the predictions of `model`.
fn predictions_path(save: &Path, model: &Path) -> PathBuf {
    PathBuf::from(save.to_string_lossy().replace("{stem}", &stem(model)))
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    if let Some(save) = &args.save_json
        && args.models.len() > 1
        && !save.to_string_lossy().contains("{stem}")
    {
        bail!(
            "--save-json {} needs {{stem}} in its name with several models",
            save.display()
        );
    }
    args.nms().validate()?;
    let mut plan = OutputPlan::new();
    for model in &args.models {
        plan.input("model", model)?;
    }
    for (role, path) in [
        ("--data", &args.data),
        ("--coco-json", &args.coco_json),
        ("--gt", &args.gt),
    ] {
        if let Some(path) = path {
            plan.input(role, path)?;
        }
    }
    if let Some(save) = &args.save_json {
        for model in &args.models {
            plan.output("--save-json", &predictions_path(save, model))?;
        }
    }
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    let spec = args.backend.spec()?;
    let (dataset, own_gt) = load_dataset(&args.source(), args.max_pixels, ui.progress())?;
    let gt = args.gt.clone().or(own_gt);
    plan.inputs(
        "validation file",
        &data_files(&args.source(), &dataset, gt.as_deref())?,
    )?;
    for message in &dataset.report.messages {
        ui.warn(message);
    }
    if args.strict && dataset.report.has_problems() {
        bail!("the dataset has problems (warned above) and --strict is set");
    }
    if gt.is_none() {
        ui.info("no COCO annotation file (--gt): COCOeval stats are skipped");
    }
    let mut reports = Vec::new();
    let mut image_hashes = None;
    let mut warned = HashSet::new();
    for path in &args.models {
        let model = load_model(path, ui)?;
        // how many validation images the model was calibrated or fine-tuned on, when it says
        let mut overlap = |recorded: Option<Vec<String>>, use_: &str| -> Result<Option<usize>> {
            let Some(used) = recorded else {
                return Ok(None);
            };
            let hashes = match &image_hashes {
                Some(h) => h,
                None => image_hashes.insert(dataset_hashes(&dataset)?),
            };
            let used: HashSet<String> = used.into_iter().collect();
            let shared = hashes.iter().filter(|h| used.contains(*h)).count();
            if shared > 0 {
                ui.warn(format_args!(
                    "{}: {shared} of the {} validation images were used to {use_} this model; \
                     its accuracy here is not a fair measure",
                    path.display(),
                    hashes.len()
                ));
            }
            Ok(Some(shared))
        };
        let calibration_overlap = overlap(
            metadata::image_hashes(&model.proto, metadata::CALIBRATION_KEY),
            "calibrate",
        )?;
        let finetune_overlap = overlap(
            metadata::image_hashes(&model.proto, metadata::FINETUNE_KEY),
            "fine-tune",
        )?;
        let bytes = runnable_bytes(&model, spec.engine())?;
        let (mut report, results) = validate(
            &stem(path),
            &bytes,
            &spec,
            &dataset,
            gt.as_deref(),
            &args.nms(),
            ui.progress(),
        )?;
        report.calibration_overlap = calibration_overlap;
        report.finetune_overlap = finetune_overlap;
        warn_about_images(&report, ui, &mut warned);
        if args.strict && report.has_image_problems() {
            bail!(
                "{}: images were skipped, truncated or decoded without parity (warned above) and \
                 --strict is set",
                path.display()
            );
        }
        if let Some(save) = &args.save_json {
            plan.stage_bytes(&predictions_path(save, path), &results_json(&results)?)?;
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let report = Report {
            dataset: &dataset.report,
            models: &reports,
        };
        plan.stage_json(path, &report)?;
    }
    plan.commit()?;
    let mut out = std::io::stdout().lock();
    for report in &reports {
        print_report(&mut out, report, &dataset.names, ui.verbose > 0)?;
    }
    if reports.len() > 1 {
        print_comparison(&mut out, &reports)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One warning per image problem of `report`, each printed once even when several models
/// meet it.
fn warn_about_images(report: &ValReport, ui: &Ui, warned: &mut HashSet<String>) {
    let lines = (report.skipped.iter().map(|s| format!("skipped {s}")))
        .chain(
            report
                .truncated
                .iter()
                .map(|p| format!("{p}: truncated JPEG (no EOI marker): used as far as it decodes")),
        )
        .chain(report.decoder_fallback.iter().map(|p| {
            format!("{p}: decoded by the image crate instead: pixels may differ from val.py's")
        }));
    for line in lines {
        if warned.insert(line.clone()) {
            ui.warn(line);
        }
    }
}

fn print_report(
    out: &mut impl Write,
    r: &ValReport,
    names: &[String],
    per_class: bool,
) -> Result<()> {
    if r.backend == r.provider {
        writeln!(out, "{} ({})", r.model, r.backend)?;
    } else {
        writeln!(out, "{} ({} {})", r.model, r.backend, r.provider)?;
    }
    writeln!(
        out,
        "{:>22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"
    )?;
    let row = |out: &mut dyn Write,
               class: &str,
               images: usize,
               n: usize,
               p: f64,
               rc: f64,
               a50: f64,
               a: f64| {
        writeln!(
            out,
            "{class:>22}{images:>11}{n:>11}{p:>11.3}{rc:>11.3}{a50:>11.3}{a:>11.3}"
        )
    };
    let m = &r.metrics;
    row(
        out,
        "all",
        m.images,
        m.instances,
        m.precision,
        m.recall,
        m.map50,
        m.map50_95,
    )?;
    if per_class {
        for c in &m.per_class {
            let name = names
                .get(c.class as usize)
                .map_or_else(|| c.class.to_string(), Clone::clone);
            row(
                out,
                &name,
                m.images,
                c.instances,
                c.precision,
                c.recall,
                c.ap50,
                c.ap50_95,
            )?;
        }
    }
    if let Some(coco) = &r.coco {
        for line in &coco.lines {
            writeln!(out, "{line}")?;
        }
    }
    let [n, c, h, w] = r.input_shape;
    writeln!(
        out,
        "Speed: {:.1}ms pre-process, {:.1}ms inference, {:.1}ms NMS per image at shape ({n}, {c}, {h}, {w})\n",
        r.speed_ms.pre, r.speed_ms.inference, r.speed_ms.nms
    )?;
    Ok(())
}

/// Reads one figure of a report, if it has it.
type MetricOf = fn(&ValReport) -> Option<f64>;

/// Models side by side: each metric, and its change against the first model.
fn print_comparison(out: &mut impl Write, reports: &[ValReport]) -> Result<()> {
    let base = &reports[0];
    let metrics: [(&str, MetricOf); 8] = [
        ("P", |r| Some(r.metrics.precision)),
        ("R", |r| Some(r.metrics.recall)),
        ("mAP50", |r| Some(r.metrics.map50)),
        ("mAP50-95", |r| Some(r.metrics.map50_95)),
        ("COCO AP", |r| r.coco.as_ref().map(|c| c.stats[0])),
        ("COCO AP50", |r| r.coco.as_ref().map(|c| c.stats[1])),
        ("inference ms", |r| Some(r.speed_ms.inference)),
        ("NMS ms", |r| Some(r.speed_ms.nms)),
    ];
    let width = reports
        .iter()
        .map(|r| r.model.len())
        .max()
        .unwrap_or(0)
        .max(20)
        + 2;
    write!(out, "{:<14}", "")?;
    for r in reports {
        write!(out, "{:>width$}", r.model)?;
    }
    writeln!(out)?;
    for (label, get) in metrics {
        write!(out, "{label:<14}")?;
        for r in reports {
            let cell = match (get(r), get(base)) {
                (Some(v), Some(b)) if !std::ptr::eq(r, base) => format!("{v:.4} ({:+.4})", v - b),
                (Some(v), _) => format!("{v:.4}"),
                (None, _) => "-".to_string(),
            };
            write!(out, "{cell:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
