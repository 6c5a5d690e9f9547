//! Steps several commands share: loading a model with its warnings, refusing lossy rewrites.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::ui::Ui;
use shears::backend::{BackendSpec, Device, Engine};
use shears::calib::CalibrationSpec;
use shears::eval::nms::NmsConfig;
use shears::eval::preprocess::DEFAULT_MAX_PIXELS;
use shears::eval::validate::DataSource;
use shears::eval::validator::ValSettings;
use shears::onnx::{self, Model};

/// Loads a model and warns about anything the schema does not cover.
pub fn load_model(path: &Path, ui: &Ui) -> Result<Model> {
    let model = onnx::load(path)?;
    for finding in &model.schema_findings {
        ui.warn(format_args!("{}: {finding}", path.display()));
    }
    Ok(model)
}

/// The backend flags, shared by the commands that run models.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Inference engine: `tract` (pure Rust, CPU) or `ort` (ONNX Runtime).
    #[arg(long, value_name = "tract|ort", default_value = "tract")]
    pub backend: Engine,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs `--backend ort`).
    #[arg(long, value_name = "cpu|cuda|cuda:N", default_value = "cpu")]
    pub device: Device,
    /// Threads one inference runs on [default: number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Image size of a model whose input height and width are not fixed (`export.py --dynamic`)
    /// [default: 640, val.py's]; a model that fixes another size is refused.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(32..=8192))]
    pub imgsz: Option<u32>,
}

impl BackendArgs {
    /// The validated backend specification.
    pub fn spec(&self) -> anyhow::Result<BackendSpec> {
        let mut spec = BackendSpec::new(self.backend, self.device)?;
        if let Some(threads) = self.threads {
            spec = spec.with_threads(threads);
        }
        if let Some(imgsz) = self.imgsz {
            spec = spec.with_imgsz(imgsz as usize);
        }
        Ok(spec)
    }
}

/// Where a recovering command's calibration images come from.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibArgs {
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
}

impl CalibArgs {
    /// The calibration set asked for, if any.
    pub fn spec(&self) -> Option<CalibrationSpec> {
        self.calib.as_ref().map(|data| CalibrationSpec {
            data: data.clone(),
            data_root: self.calib_root.clone(),
            images: self.calib_images,
        })
    }
}

/// The dataset and detection settings of a command that validates as `val` does.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidationArgs {
    /// Validation dataset: a YOLOv5 data YAML (its `val` split).
    #[arg(long, value_name = "DATA.yaml")]
    pub data: PathBuf,
    /// Dataset root replacing the data YAML's `path:`.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// COCO annotations for COCOeval [default: the dataset's own, as `val` finds them].
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Validate on the first N images of the dataset only.
    #[arg(long, value_name = "N")]
    pub images: Option<usize>,
    /// Confidence threshold of validation.
    #[arg(long, default_value_t = NmsConfig::default().conf_thres)]
    pub conf: f32,
    /// NMS IoU threshold of validation (val.py's default; the pruning guide used 0.65).
    #[arg(long, default_value_t = NmsConfig::default().iou_thres)]
    pub iou: f64,
    /// Maximum detections per image.
    #[arg(long, default_value_t = NmsConfig::default().max_det)]
    pub max_det: usize,
}

impl ValidationArgs {
    /// The settings these flags ask for, on `backend`.
    pub fn settings(&self, backend: BackendSpec) -> ValSettings {
        ValSettings {
            data: DataSource::Yaml {
                data: self.data.clone(),
                root: self.data_root.clone(),
            },
            gt: self.gt.clone(),
            images: self.images,
            nms: NmsConfig::with(self.conf, self.iou, self.max_det),
            backend,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}
