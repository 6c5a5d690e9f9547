//! A dataset loaded once with the settings every model is validated with: the code `shears val`
//! runs ([`super::validate::validate`]), shared by pipeline gates, budget searches, sweeps and
//! sensitivity scans, and the one identity of what a validation's figures depend on
//! ([`ValidationIdentity`]), which build keys and sweep point keys record.

use std::path::PathBuf;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::nms::NmsConfig;
use super::validate::{
    DataSource, ValReport, data_files, data_folders, ensure_labelled, load_dataset, validate,
};
use crate::backend::{BackendSpec, encode_runnable, runnable_bytes};
use crate::digest::file_sha256;
use crate::onnx::Model;
use crate::onnx::proto::ModelProto;
use crate::progress::Progress;

/// How models are validated: the settings `shears val` takes, on the first `images` images of
/// the dataset when set.
#[derive(Debug, Clone)]
pub struct ValSettings {
    pub data: DataSource,
    /// COCO annotations for COCOeval (default: the dataset's own, as `val` finds them).
    pub gt: Option<PathBuf>,
    pub images: Option<usize>,
    pub nms: NmsConfig,
    pub backend: BackendSpec,
    pub max_pixels: u64,
}

/// A loaded validation set: its images (the first `images` when limited) and annotations.
pub struct Validator {
    settings: ValSettings,
    dataset: Dataset,
    gt: Option<PathBuf>,
}

/// What a validation's figures depend on, by value: the settings, the SHA-256 of every file
/// [`Validator::files`] lists (data YAML, image lists, images, labels, annotations) and the
/// labels as parsed. Paths are not part of it: the same data elsewhere is the same validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationIdentity {
    pub backend: String,
    pub device: String,
    /// The image size asked for, for inputs the model does not fix (absent when not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgsz: Option<usize>,
    pub nms: NmsConfig,
    pub max_pixels: u64,
    /// Images validated.
    pub images: usize,
    pub files_sha256: Vec<String>,
    /// Per image: (class, normalised xywh, crowd) of each label.
    pub labels: Vec<Vec<(u32, [f32; 4], bool)>>,
}

impl ValidationIdentity {
    /// SHA-256 of the identity as JSON.
    pub fn sha256(&self) -> String {
        let json = serde_json::to_vec(self).expect("a validation identity serializes");
        crate::digest::sha256_hex(&json)
    }
}

impl Validator {
    /// Loads the dataset as `val` does; refuses invalid NMS settings, a dataset with no images
    /// left and one without labels.
    pub fn load(settings: ValSettings, progress: &dyn Progress) -> Result<Self> {
        settings.nms.validate()?;
        let (mut dataset, own_gt) = load_dataset(&settings.data, settings.max_pixels, progress)?;
        if let Some(n) = settings.images {
            dataset.images.truncate(n);
        }
        if dataset.images.is_empty() {
            bail!("the validation dataset has no images");
        }
        ensure_labelled(&dataset)?;
        let gt = settings.gt.clone().or(own_gt);
        Ok(Validator {
            settings,
            dataset,
            gt,
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Whether COCO AP is measured (annotations were given or found).
    pub fn has_coco(&self) -> bool {
        self.gt.is_some()
    }

    /// Every file a validation reads ([`data_files`]).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        data_files(&self.settings.data, &self.dataset, self.gt.as_deref())
    }

    /// The folders whose contents decide the dataset ([`data_folders`]).
    pub fn folders(&self) -> Result<Vec<PathBuf>> {
        data_folders(&self.settings.data, &self.dataset)
    }

    /// Validates `model` exactly as `shears val` does; `name` labels its progress.
    pub fn run(&self, name: &str, model: &Model, progress: &dyn Progress) -> Result<ValReport> {
        let bytes = runnable_bytes(model, self.settings.backend.engine())?;
        self.run_bytes(name, &bytes, progress)
    }

    /// Validates a model held in memory, as [`Validator::run`].
    pub fn run_proto(
        &self,
        name: &str,
        model: &ModelProto,
        progress: &dyn Progress,
    ) -> Result<ValReport> {
        let bytes = encode_runnable(model, self.settings.backend.engine())?;
        self.run_bytes(name, &bytes, progress)
    }

    fn run_bytes(&self, name: &str, bytes: &[u8], progress: &dyn Progress) -> Result<ValReport> {
        let (report, _) = validate(
            name,
            bytes,
            &self.settings.backend,
            &self.dataset,
            self.gt.as_deref(),
            &self.settings.nms,
            progress,
        )?;
        Ok(report)
    }

    /// What this validation's figures depend on ([`ValidationIdentity`]); reads every file.
    pub fn identity(&self) -> Result<ValidationIdentity> {
        let files_sha256 = self
            .files()?
            .par_iter()
            .map(|f| file_sha256(f))
            .collect::<Result<_>>()?;
        let labels = self
            .dataset
            .images
            .iter()
            .map(|i| {
                i.labels
                    .iter()
                    .map(|l| (l.class, l.xywhn, l.crowd))
                    .collect()
            })
            .collect();
        let backend = &self.settings.backend;
        Ok(ValidationIdentity {
            backend: backend.engine().to_string(),
            device: backend.device().to_string(),
            imgsz: backend.imgsz(),
            nms: self.settings.nms,
            max_pixels: self.dataset.max_pixels,
            images: self.dataset.images.len(),
            files_sha256,
            labels,
        })
    }
}

/// Which accuracy figure a validation gate compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    /// COCOeval AP@[.5:.95] (needs COCO annotations).
    CocoAp,
    /// val.py's mAP@.5:.95.
    #[default]
    Map50_95,
    /// val.py's mAP@.5.
    Map50,
}

impl GateMetric {
    /// This metric in a validation report (NaN for COCO AP without COCO stats).
    pub fn value(self, report: &ValReport) -> f64 {
        match self {
            GateMetric::CocoAp => report.coco.as_ref().map_or(f64::NAN, |c| c.stats[0]),
            GateMetric::Map50_95 => report.metrics.map50_95,
            GateMetric::Map50 => report.metrics.map50,
        }
    }

    /// This metric of the dense model's `report`, refused unless above 0: a drop from 0 cannot
    /// exceed any budget, so a gate or search against it would pass without measuring anything.
    pub fn dense_value(self, report: &ValReport) -> Result<f64> {
        let value = self.value(report);
        if value.is_nan() || value <= 0.0 {
            bail!(
                "the dense model's {} is {value}: the validation measures nothing to compare \
                 against (are these the model's classes and labels?)",
                self.name()
            );
        }
        Ok(value)
    }

    /// The name pipeline files use.
    pub fn name(self) -> &'static str {
        match self {
            GateMetric::CocoAp => "coco_ap",
            GateMetric::Map50_95 => "map50_95",
            GateMetric::Map50 => "map50",
        }
    }

    /// Refuses a metric `validator` cannot measure: COCO AP without annotations
    /// ([`crate::Needs::CocoAnnotations`]).
    pub fn ensure_measured_by(self, validator: &Validator) -> Result<()> {
        if self == GateMetric::CocoAp && !validator.has_coco() {
            return Err(crate::Needs::CocoAnnotations.into());
        }
        Ok(())
    }
}
