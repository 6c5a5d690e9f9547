//! Validation as pipeline gates and budget searches use it: one dataset loaded once, the same
//! code `shears val` runs ([`crate::eval::validate`]), one metric compared.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use rayon::prelude::*;

use super::spec::{GateMetric, ValidateSpec, resolve};
use crate::backend::{BackendSpec, encode_runnable, runnable_bytes};
use crate::calib::file_sha256;
use crate::eval::dataset::Dataset;
use crate::eval::nms::NmsConfig;
use crate::eval::validate::{
    DataSource, ValReport, data_files, data_folders, ensure_labelled, load_dataset, validate,
};
use crate::onnx::Model;
use crate::onnx::proto::ModelProto;
use crate::progress::Progress;

/// A dataset with the settings every model is validated with.
pub struct Validator {
    /// The figure compared between dense and pruned models.
    pub metric: GateMetric,
    source: DataSource,
    backend: BackendSpec,
    dataset: Dataset,
    gt: Option<PathBuf>,
    nms: NmsConfig,
}

impl Validator {
    /// Loads the dataset of `source`; `gt` (default: the dataset's own annotations) is needed
    /// for `metric: coco_ap`.
    pub fn new(
        source: DataSource,
        gt: Option<PathBuf>,
        backend: BackendSpec,
        nms: NmsConfig,
        metric: GateMetric,
        max_pixels: u64,
        progress: &dyn Progress,
    ) -> Result<Self> {
        nms.validate()?;
        let (dataset, own_gt) = load_dataset(&source, max_pixels, progress)?;
        ensure_labelled(&dataset)?;
        let gt = gt.or(own_gt);
        if metric == GateMetric::CocoAp && gt.is_none() {
            bail!("metric coco_ap needs COCO annotations: give them (`gt`, --gt)");
        }
        Ok(Validator {
            metric,
            source,
            backend,
            dataset,
            gt,
            nms,
        })
    }

    /// The validator of a pipeline's `validate:` block (paths relative to `base`); `None` when
    /// there is none, or its dataset is missing and `skip_if_missing` is set. `jobs` models
    /// validate at once; they share the cores.
    pub fn prepare(
        spec: Option<&ValidateSpec>,
        base: &Path,
        jobs: usize,
        progress: &dyn Progress,
    ) -> Result<Option<Self>> {
        let Some(spec) = spec else { return Ok(None) };
        let data = resolve(base, &spec.data)?;
        if spec.skip_if_missing && !data.exists() {
            return Ok(None);
        }
        let root = spec
            .data_root
            .as_deref()
            .map(|r| resolve(base, r))
            .transpose()?;
        let gt = spec.gt.as_deref().map(|gt| resolve(base, gt)).transpose()?;
        let nms = NmsConfig {
            conf_thres: spec.conf,
            iou_thres: spec.iou,
            max_det: spec.max_det,
            ..NmsConfig::default()
        };
        let backend = BackendSpec::parse(&spec.backend, &spec.device)?.shared_by(jobs);
        Validator::new(
            DataSource::Yaml { data, root },
            gt,
            backend,
            nms,
            spec.metric,
            spec.max_pixels,
            progress,
        )
        .map_err(|err| super::with_yaml_key(err, "validate"))
        .map(Some)
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// `metric` in `report`.
    pub fn value(&self, report: &ValReport) -> f64 {
        self.metric.value(report)
    }

    /// `metric` of the dense model's `report`, refused unless above 0: a drop from 0 cannot
    /// exceed any budget, so a gate or search against it would pass without measuring anything.
    pub fn dense_value(&self, report: &ValReport) -> Result<f64> {
        let value = self.value(report);
        if value.is_nan() || value <= 0.0 {
            bail!(
                "the dense model's {} is {value}: the validation measures nothing to compare \
                 against (are these the model's classes and labels?)",
                self.metric.name()
            );
        }
        Ok(value)
    }

    /// Validates `model`, advancing `progress` by one step per image.
    pub fn run(&self, name: &str, model: &Model, progress: &dyn Progress) -> Result<ValReport> {
        self.run_bytes(
            name,
            &runnable_bytes(model, self.backend.engine())?,
            progress,
        )
    }

    /// Validates a model held in memory, advancing `progress` by one step per image.
    pub fn run_proto(
        &self,
        name: &str,
        model: &ModelProto,
        progress: &dyn Progress,
    ) -> Result<ValReport> {
        self.run_bytes(
            name,
            &encode_runnable(model, self.backend.engine())?,
            progress,
        )
    }

    fn run_bytes(&self, name: &str, bytes: &[u8], progress: &dyn Progress) -> Result<ValReport> {
        let (report, _) = validate(
            name,
            bytes,
            &self.backend,
            &self.dataset,
            self.gt.as_deref(),
            &self.nms,
            &Steps(progress),
        )?;
        Ok(report)
    }

    /// The files a validation reads ([`data_files`]).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        data_files(&self.source, &self.dataset, self.gt.as_deref())
    }

    /// The folders whose contents decide the dataset ([`data_folders`]).
    pub fn folders(&self) -> Result<Vec<PathBuf>> {
        data_folders(&self.source, &self.dataset)
    }

    /// What a validation's figures depend on, for build keys: the settings and the SHA-256 of
    /// every file [`Validator::files`] lists, and the labels as parsed.
    pub fn identity(&self) -> Result<serde_json::Value> {
        let files = self.files()?;
        let hashes: Vec<String> = files
            .par_iter()
            .map(|f| file_sha256(f))
            .collect::<Result<_>>()?;
        let labels: Vec<Vec<(u32, [f32; 4], bool)>> = self
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
        let nms = &self.nms;
        Ok(serde_json::json!({
            "metric": self.metric,
            "backend": self.backend.engine().to_string(),
            "device": self.backend.device().to_string(),
            "nms": {
                "conf_thres": nms.conf_thres,
                "iou_thres": nms.iou_thres,
                "max_det": nms.max_det,
                "max_nms": nms.max_nms,
                "agnostic": nms.agnostic,
                "multi_label": nms.multi_label,
            },
            "max_pixels": self.dataset.max_pixels,
            "files_sha256": hashes,
            "labels": labels,
        }))
    }
}

/// Forwards the steps of a nested phase to the enclosing one, ignoring its start and end.
struct Steps<'a>(&'a dyn Progress);

impl Progress for Steps<'_> {
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, n: u64) {
        self.0.advance(n);
    }
    fn finish(&self) {}
}
