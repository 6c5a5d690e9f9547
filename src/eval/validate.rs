//! One model over one dataset, as val.py runs it: pre-process in parallel (overlapping
//! inference), run the backend, NMS, accumulate val.py's metrics and COCO results, then COCOeval.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::coco::{CocoResult, CocoStats, evaluate, load_ground_truth, to_coco_results};
use super::dataset::{Dataset, ImageRecord};
use super::metrics::{ValAccumulator, ValMetrics};
use super::nms::{NmsConfig, non_max_suppression, output_rows, scale_to_original};
use super::preprocess::{Preprocessed, preprocess_file};
use super::types::ImageId;
use crate::backend::{self, BackendSpec};
use crate::progress::Progress;

/// Images pre-processed together; results go to inference in dataset order.
const PREPROCESS_CHUNK: usize = 8;

/// Milliseconds per image of each stage, as val.py's "Speed:" line. `pre` covers decoding and
/// letterboxing too (val.py's data loader does those outside its timer).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Speed {
    pub pre: f64,
    pub inference: f64,
    pub nms: f64,
}

/// The validation of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValReport {
    pub model: String,
    pub backend: String,
    /// The execution provider that really ran.
    pub provider: String,
    pub input_shape: [usize; 4],
    /// val.py's figures (in JSON, its fields sit at the top level of the report).
    #[serde(flatten)]
    pub metrics: ValMetrics,
    /// The 12 COCOeval bbox stats, when ground-truth annotations were given.
    pub coco: Option<CocoStats>,
    pub speed_ms: Speed,
    /// Inference milliseconds of each image validated, in dataset order (not in JSON reports).
    #[serde(skip)]
    pub inference_ms_per_image: Vec<f64>,
    /// Images that could not be decoded at validation time (reported, not counted).
    pub skipped: Vec<String>,
    /// How many of the validated images the model records as its calibration images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_overlap: Option<usize>,
    /// How many of the validated images the model records as its fine-tuning images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune_overlap: Option<usize>,
    /// JPEGs without an EOI marker (truncated), used as far as they decode.
    pub truncated: Vec<String>,
    /// Images the exact JPEG decoder could not decode, decoded by the `image` crate instead
    /// (pixels may differ from val.py's), with the reason.
    pub decoder_fallback: Vec<String>,
}

impl ValReport {
    /// Whether any image was skipped, truncated or decoded without pixel parity.
    pub fn has_image_problems(&self) -> bool {
        !(self.skipped.is_empty() && self.truncated.is_empty() && self.decoder_fallback.is_empty())
    }
}

/// Runs `model_bytes` (see [`backend::runnable_bytes`]) over `dataset`. `gt` is a COCO
/// annotation file for COCOeval; without it only val.py's metrics are computed.
pub fn validate(
    name: &str,
    model_bytes: &[u8],
    spec: &BackendSpec,
    dataset: &Dataset,
    gt: Option<&Path>,
    nms: &NmsConfig,
    progress: &dyn Progress,
) -> Result<(ValReport, Vec<CocoResult>)> {
    let mut session = backend::open(spec, model_bytes)?;
    let shape = session.input_shape();
    let size = u32::try_from(shape[2])?;
    if shape[2] != shape[3] {
        anyhow::bail!(
            "{name}: input {}x{} is not square; val letterboxes to a square",
            shape[2],
            shape[3]
        );
    }
    let mut acc = ValAccumulator::new();
    let mut results = Vec::new();
    let (mut skipped, mut truncated, mut decoder_fallback) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pre_ms, mut nms_ms) = (0.0, 0.0);
    let mut inference_ms_per_image = Vec::with_capacity(dataset.images.len());
    progress.start(name, Some(dataset.images.len() as u64));
    let outcome = std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) =
            mpsc::sync_channel::<(&ImageRecord, Result<Preprocessed>, f64)>(2 * PREPROCESS_CHUNK);
        scope.spawn(move || {
            for chunk in dataset.images.chunks(PREPROCESS_CHUNK) {
                let done: Vec<_> = chunk
                    .par_iter()
                    .map(|record| {
                        let start = Instant::now();
                        let result = preprocess_file(&record.path, size, dataset.max_pixels);
                        (record, result, start.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect();
                for item in done {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        });
        for (record, pre, ms) in rx {
            progress.advance(1);
            pre_ms += ms;
            let pre = match pre {
                Ok(pre) => pre,
                Err(e) => {
                    skipped.push(format!("{}: {e:#}", record.path.display()));
                    continue;
                }
            };
            if pre.notes.truncated {
                truncated.push(record.path.display().to_string());
            }
            if let Some(why) = &pre.notes.fallback {
                decoder_fallback.push(format!("{}: {why}", record.path.display()));
            }
            let start = Instant::now();
            let output = session
                .run(pre.tensor.view())
                .with_context(|| format!("{name}: inference on {}", record.path.display()))?;
            inference_ms_per_image.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            let mut dets = non_max_suppression(output_rows(output.view())?, nms);
            scale_to_original(&mut dets, &pre.letterbox);
            nms_ms += start.elapsed().as_secs_f64() * 1e3;
            acc.add_image(&dets, &record.ground_truth(&pre.letterbox));
            results.extend(to_coco_results(&record.id, &dets, dataset.is_coco));
        }
        Ok(())
    });
    progress.finish();
    outcome?;
    let metrics = acc.finish();
    let coco = match gt {
        Some(path) => {
            let ids: Vec<u64> = dataset
                .images
                .iter()
                .filter_map(|r| match r.id {
                    ImageId::Num(n) => Some(n),
                    ImageId::Name(_) => None,
                })
                .collect();
            Some(
                evaluate(load_ground_truth(path)?, &results, Some(&ids))
                    .with_context(|| format!("{name}: COCOeval"))?,
            )
        }
        None => None,
    };
    let images = metrics.images.max(1) as f64;
    let per_image = |ms: f64| ms / images;
    let report = ValReport {
        model: name.to_string(),
        backend: spec.engine().to_string(),
        provider: session.provider().to_string(),
        input_shape: shape,
        metrics,
        coco,
        speed_ms: Speed {
            pre: per_image(pre_ms),
            inference: per_image(inference_ms_per_image.iter().sum()),
            nms: per_image(nms_ms),
        },
        inference_ms_per_image,
        skipped,
        calibration_overlap: None,
        finetune_overlap: None,
        truncated,
        decoder_fallback,
    };
    Ok((report, results))
}

/// Where validation images and labels come from.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum DataSource {
    /// A YOLOv5 data YAML (its `val` split); `root` replaces its `path:`.
    Yaml {
        data: std::path::PathBuf,
        root: Option<std::path::PathBuf>,
    },
    /// A COCO instances JSON and the folder of its images.
    CocoJson {
        annotations: std::path::PathBuf,
        images: std::path::PathBuf,
    },
}

/// Every file a validation on `source` reads: the data YAML and the image lists of its `val`
/// split (or the COCO annotations), each image of `dataset` with its label file when it has one,
/// and the COCO annotations `gt`; sorted, without repeats.
pub fn data_files(
    source: &DataSource,
    dataset: &Dataset,
    gt: Option<&Path>,
) -> Result<Vec<std::path::PathBuf>> {
    let mut files = match source {
        DataSource::Yaml { data, root } => super::dataset::DataConfig::load(data, root.as_deref())?
            .files_read(super::dataset::Split::Val)?,
        DataSource::CocoJson { annotations, .. } => vec![annotations.clone()],
    };
    for image in &dataset.images {
        files.push(image.path.clone());
        let label = super::dataset::label_path(&image.path);
        if matches!(source, DataSource::Yaml { .. }) && label.is_file() {
            files.push(label);
        }
    }
    files.extend(gt.map(Path::to_path_buf));
    files.sort();
    files.dedup();
    Ok(files)
}

/// The folders whose contents decide a validation's images and labels on `source`, for
/// depfiles (a file added there changes the dataset): the folders of its `val` split walked to
/// list the images, and the label folder of each image of `dataset` that exists; sorted, without
/// repeats. A COCO JSON names its images itself: none.
pub fn data_folders(source: &DataSource, dataset: &Dataset) -> Result<Vec<std::path::PathBuf>> {
    let DataSource::Yaml { data, root } = source else {
        return Ok(Vec::new());
    };
    let config = super::dataset::DataConfig::load(data, root.as_deref())?;
    let mut folders =
        super::dataset::ImageListing::of(config.split(super::dataset::Split::Val)?)?.folders;
    folders.extend(
        dataset
            .images
            .iter()
            .filter_map(|i| {
                super::dataset::label_path(&i.path)
                    .parent()
                    .map(Path::to_path_buf)
            })
            .filter(|folder| folder.is_dir()),
    );
    folders.sort();
    folders.dedup();
    Ok(folders)
}

/// Refuses a dataset on which no accuracy can be measured: without a single label every mAP
/// is 0, so a drop measured on it (a gate, a budget search, a sweep) would prove nothing.
pub fn ensure_labelled(dataset: &Dataset) -> Result<()> {
    if dataset.instances() == 0 {
        let why = dataset
            .report
            .messages
            .iter()
            .find(|m| m.contains("no labels") || m.contains("no annotations"))
            .map_or("its images have no labelled object", String::as_str);
        anyhow::bail!("the validation data measures nothing: {why}");
    }
    Ok(())
}

/// Loads the dataset and finds the COCO annotation file for COCOeval: the JSON itself, or for a
/// data YAML the one `annotations/*.json` under the dataset root (none when there are several).
pub fn load_dataset(
    source: &DataSource,
    max_pixels: u64,
    progress: &dyn Progress,
) -> Result<(Dataset, Option<std::path::PathBuf>)> {
    match source {
        DataSource::CocoJson {
            annotations,
            images,
        } => Ok((
            Dataset::from_coco_json(annotations, images, max_pixels)?,
            Some(annotations.clone()),
        )),
        DataSource::Yaml { data, root } => {
            let config = super::dataset::DataConfig::load(data, root.as_deref())?;
            let dataset =
                Dataset::from_yolo(&config, super::dataset::Split::Val, max_pixels, progress)?;
            let mut found: Vec<_> = std::fs::read_dir(config.root.join("annotations"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            let gt = if found.len() == 1 { found.pop() } else { None };
            Ok((dataset, gt))
        }
    }
}
