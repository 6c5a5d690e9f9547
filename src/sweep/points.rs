//! `run_sweep`: the dense model and every (method, amount) point pruned, validated and timed.
//!
//! Each point is pruned to `DIR/models/<id>.onnx` by [`prune_to_file`] (as `shears prune`
//! writes it), validated, and recorded in `DIR/points/<id>.json` with a key of everything its
//! result depends on (the input model's SHA-256, the pass, the calibration set, the validation
//! settings and data by content ([`crate::eval::validator::ValidationIdentity`]), the shears
//! version). Both files are written atomically. A later sweep into the same folder reuses a point
//! whose record parses and is as written (its own SHA-256), whose key matches and whose model
//! file still has the recorded SHA-256: an interrupted sweep resumes where it stopped. Timing is never resumed:
//! all models (dense and every point) are timed together, taking turns as `shears bench` does,
//! so that their latencies are comparable. Then `sweep.json`, `sweep.csv`, `sweep.md` and the
//! plots are written.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Accuracy, accuracy, csv_field, dense_accuracy, md_cell, relative_to};
use crate::analysis::model_stats;
use crate::backend::bench::{Contender, Timing, random_input, time_in_turns};
use crate::backend::{self, BackendSpec, runnable_bytes};
use crate::calib::{CalibrationSet, CalibrationSpec};
use crate::digest::sha256_hex;
use crate::eval::validator::{ValSettings, Validator};
use crate::job::{JobOptions, prune_to_file};
use crate::onnx::{self, Model, OutputPlan};
use crate::passes::Method;
use crate::plot::{LineChart, Rendered, Series};
use crate::progress::{Progress, phase};

/// What to sweep and where the results go.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub model: PathBuf,
    pub methods: Vec<Method>,
    pub amounts: Vec<f64>,
    /// Layer filters of every pass (regular expressions on Conv node names).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub validation: ValSettings,
    /// Calibration images of the methods that recover.
    pub calibration: Option<CalibrationSpec>,
    /// Timing of every model; `None` skips it (no latency column or plot).
    pub timing: Option<TimingSettings>,
    pub out: PathBuf,
}

/// How models are timed: [`time_in_turns`] with `warmup` and `runs`, on `backend`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimingSettings {
    pub warmup: usize,
    pub runs: NonZeroUsize,
    #[serde(skip)]
    pub backend: BackendSpec,
}

/// One validated model of the sweep, as `DIR/points/<id>.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// Everything the result depends on; a point is reused only when its key is unchanged.
    pub key: serde_json::Value,
    /// `dense`, or the method and amount (`global-obs-0.3`): names its files.
    pub id: String,
    /// `dense`, or the method as `--methods` spells it.
    pub method: PointMethod,
    pub amount: Option<f64>,
    /// The model validated: the input for `dense`, else `models/<id>.onnx` under the sweep's
    /// folder.
    pub model: PathBuf,
    pub model_sha256: String,
    /// Conv weights and biases.
    pub params: u64,
    pub nonzero_params: u64,
    pub macs: u64,
    /// Zeros over Conv weights.
    pub sparsity: f64,
    pub file_bytes: u64,
    /// What each pass did and how it was verified (empty for `dense`).
    pub passes: Vec<String>,
    pub accuracy: Accuracy,
    /// SHA-256 of this record without this field ([`PointRecord::sealed`]): a record edited by
    /// hand no longer matches and is recomputed.
    pub record_sha256: String,
}

impl PointRecord {
    /// The record with `record_sha256` set to the digest of what a reader of its JSON parses
    /// back (numbers may come back a last bit apart; the digest is of what comes back).
    fn sealed(mut self) -> Result<Self> {
        let read_back: PointRecord = serde_json::from_slice(&serde_json::to_vec(&self)?)?;
        self.record_sha256 = read_back.digest()?;
        Ok(self)
    }

    /// SHA-256 of the record's JSON without its `record_sha256`.
    fn digest(&self) -> Result<String> {
        let mut unsealed = self.clone();
        unsealed.record_sha256.clear();
        Ok(sha256_hex(&serde_json::to_vec(&unsealed)?))
    }
}

/// What a point is: the dense model, or a method's pruned model. Written `dense` or as
/// `--methods` spells the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointMethod {
    Dense,
    Pruned(Method),
}

impl std::fmt::Display for PointMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointMethod::Dense => f.write_str("dense"),
            PointMethod::Pruned(method) => method.fmt(f),
        }
    }
}

impl Serialize for PointMethod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PointMethod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "dense" => Ok(PointMethod::Dense),
            _ => text
                .parse()
                .map(PointMethod::Pruned)
                .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}"))),
        }
    }
}

/// A point of the report: its record, its timing, and how it compares with the dense model.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    #[serde(flatten)]
    pub record: PointRecord,
    /// Taken from an earlier sweep into the same folder instead of computed now.
    pub resumed: bool,
    /// The plotted metric (COCO AP when measured, else mAP@.5:.95) of dense minus this one.
    pub metric_drop: f64,
    /// MACs over the dense model's.
    pub mac_ratio: f64,
    pub timing: Option<Timing>,
    /// Median latency over the dense model's median.
    pub latency_ratio: Option<f64>,
    /// Fastest run over the dense model's fastest run, which other load on the machine disturbs
    /// least (as `shears bench` reports it).
    pub min_ratio: Option<f64>,
}

impl PointResult {
    /// The x of the accuracy plot: zeros over Conv weights, or for channel pruning the share of
    /// MACs removed.
    fn pruned_fraction(&self, structured: bool) -> f64 {
        if structured {
            1.0 - self.mac_ratio
        } else {
            self.record.sparsity
        }
    }
}

/// The whole sweep, as `sweep.json` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub model: PathBuf,
    pub model_sha256: String,
    /// What the plots and the drop measure: `coco_ap` or `map50_95`.
    pub metric: &'static str,
    pub images: usize,
    pub backend: String,
    pub timing: Option<TimingSettings>,
    pub calibration: Option<serde_json::Value>,
    pub dense: PointResult,
    pub points: Vec<PointResult>,
    /// Plot files written (relative to the sweep's folder).
    pub plots: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// The sweep's own files in `DIR`, declared before any work.
const TABLES: [&str; 3] = ["sweep.json", "sweep.csv", "sweep.md"];
/// Plot stems; each is written as `.svg` and `.png`.
const PLOTS: [&str; 2] = ["ap_vs_sparsity", "ap_vs_latency"];

/// Runs the sweep (see the module doc). Points already in `spec.out` with a matching key are
/// reused. `progress` shows the point being worked on.
pub fn run_sweep(spec: &SweepSpec, progress: &dyn Progress) -> Result<SweepReport> {
    if spec.methods.is_empty() {
        bail!("no methods to sweep");
    }
    if spec.amounts.is_empty() && spec.methods.iter().any(Method::takes_amount) {
        bail!("no amounts to sweep");
    }
    let model = onnx::load(&spec.model)?;
    let model_sha256 = sha256_hex(&model.bytes);
    let mut warnings = Vec::new();
    let jobs = jobs(spec)?;
    let calibration = match (
        jobs.iter()
            .flat_map(|j| &j.passes)
            .any(|p| p.needs_calibration()),
        &spec.calibration,
    ) {
        (true, Some(calib)) => {
            let set = CalibrationSet::resolve(calib)?;
            warnings.extend(set.messages.iter().cloned());
            Some(set)
        }
        (true, None) => Err(crate::Needs::CalibrationImages).context(
            "methods with +obs or +stats recover from calibration images (never the validation \
             images)",
        )?,
        (false, Some(_)) => {
            warnings.push(
                "no method recovers (+obs, +stats): the calibration images are not used"
                    .to_string(),
            );
            None
        }
        (false, None) => None,
    };
    if spec.out.exists() && !spec.out.is_dir() {
        bail!(
            "{} is a file: a sweep writes a folder of results, give a folder's path",
            spec.out.display()
        );
    }
    let points_dir = spec.out.join("points");
    let models_dir = spec.out.join("models");
    let mut outputs = OutputPlan::new();
    outputs.input_model(&model)?;
    for name in TABLES {
        outputs.output("sweep output", &spec.out.join(name))?;
    }
    for stem in PLOTS {
        for ext in ["svg", "png"] {
            outputs.output("plot", &spec.out.join(format!("{stem}.{ext}")))?;
        }
    }
    let validator = Validator::load(spec.validation.clone(), progress)?;
    warnings.extend(validator.dataset().report.messages.iter().cloned());
    // Every file the sweep reads against every file it may write, before any work.
    outputs.inputs("validation file", &validator.files()?)?;
    if let Some(set) = &calibration {
        outputs.inputs("calibration file", set.files())?;
    }
    outputs.output("point record", &points_dir.join("dense.json"))?;
    for job in &jobs {
        outputs.output("point record", &points_dir.join(format!("{}.json", job.id)))?;
        outputs.output("point model", &models_dir.join(format!("{}.onnx", job.id)))?;
    }
    if let Some(set) = &calibration {
        let overlap = calibration_overlap(set, &validator)?;
        if overlap > 0 {
            warnings.push(format!(
                "{overlap} of the {} validation images are calibration images: the recovered \
                 points' accuracy is not a fair measure",
                validator.dataset().images.len()
            ));
        }
    }
    let base_key = serde_json::json!({
        "shears": env!("CARGO_PKG_VERSION"),
        "model_sha256": model_sha256,
        "validation_sha256": validator.identity()?.sha256(),
    });
    // One phase counts the points; each point's own phases (pruning, validation) run under it.
    progress.start("sweep point", Some(jobs.len() as u64 + 1));
    progress.note("dense");
    let point = progress.child();
    let dense = {
        let key = point_key(&base_key, &[], None);
        match reuse(&points_dir.join("dense.json"), &key, None)? {
            Some(mut record) => {
                record.model = spec.model.clone();
                (record, true)
            }
            None => {
                let accuracy = dense_accuracy(&validator, &model, &*point)?;
                let record = record_of(
                    "dense",
                    PointMethod::Dense,
                    None,
                    key,
                    &model,
                    &[],
                    accuracy,
                )?;
                (record, false)
            }
        }
    };
    progress.advance(1);
    // the sweep's folders appear once the dense model has measured something
    for dir in [&spec.out, &points_dir, &models_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the sweep folder {}", dir.display()))?;
    }
    if !dense.1 {
        write_record(&points_dir.join("dense.json"), &dense.0, &model)?;
    }
    let mut records = Vec::with_capacity(jobs.len());
    for job in &jobs {
        progress.note(&job.name());
        let key = point_key(&base_key, &job.passes, calibration.as_ref());
        let record_path = points_dir.join(format!("{}.json", job.id));
        let model_path = models_dir.join(format!("{}.onnx", job.id));
        if let Some(mut record) = reuse(&record_path, &key, Some(&model_path))? {
            progress.advance(1);
            // where the model is now, however the folder was named when it was recorded
            record.model = model_path;
            records.push((record, true));
            continue;
        }
        let options = JobOptions {
            calibration: calibration.clone(),
            ..JobOptions::default()
        };
        let mut plan = OutputPlan::new();
        plan.input_model(&model)?;
        plan.output_model("point model", &model_path, &options.save)?;
        let report = phase(&*point, "pruning", |inside| {
            prune_to_file(
                model.clone(),
                &job.passes,
                &model_path,
                &options,
                inside,
                &mut plan,
            )
        });
        let report = report.with_context(|| format!("{}: pruning", job.name()))?;
        warnings.extend(report.warnings.iter().cloned());
        plan.commit()?;
        let pruned = onnx::load(&model_path)?;
        let accuracy = accuracy(&validator, "validating", &pruned, &*point)
            .with_context(|| format!("{}: validation", job.name()))?;
        let passes: Vec<String> = report
            .passes
            .iter()
            .flat_map(|p| {
                std::iter::once(format!("{}: {}", p.pass, p.summary)).chain(
                    p.proof
                        .iter()
                        .map(|proof| format!("verify: {}", proof.summary)),
                )
            })
            .collect();
        let record = record_of(
            &job.id,
            PointMethod::Pruned(job.method),
            job.amount,
            key,
            &pruned,
            &passes,
            accuracy,
        )?;
        write_record(&record_path, &record, &pruned)?;
        records.push((record, false));
        progress.advance(1);
    }
    drop(point);
    progress.finish();
    let timings = match &spec.timing {
        Some(timing) => time_all(&model, &records, *timing, progress)?,
        None => vec![None; records.len() + 1],
    };
    let report = assemble(
        spec,
        &model_sha256,
        &validator,
        calibration.as_ref(),
        dense,
        records,
        timings,
        warnings,
    );
    write_outputs(spec, report, outputs)
}

/// One point to compute: its method, amount and pass.
struct Job {
    id: String,
    method: Method,
    amount: Option<f64>,
    passes: Vec<crate::passes::PassConfig>,
}

impl Job {
    fn name(&self) -> String {
        match self.amount {
            Some(amount) => format!("{} {amount}", self.method),
            None => self.method.to_string(),
        }
    }
}

/// Every (method, amount) point in order: methods as listed, amounts as listed; N:M once.
fn jobs(spec: &SweepSpec) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for &method in &spec.methods {
        let slug: String = method
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let amounts: Vec<Option<f64>> = if method.takes_amount() {
            spec.amounts.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for amount in amounts {
            let passes = method.passes(amount.unwrap_or(0.0), &spec.include, &spec.exclude);
            for pass in &passes {
                pass.validate().with_context(|| match amount {
                    Some(amount) => format!("method {method} at amount {amount}"),
                    None => format!("method {method}"),
                })?;
            }
            jobs.push(Job {
                id: match amount {
                    Some(a) => format!("{slug}-{a}"),
                    None => slug.clone(),
                },
                method,
                amount,
                passes,
            });
        }
    }
    Ok(jobs)
}

/// The key of one point: the sweep's, plus its passes (none for the dense model) and the
/// calibration set when they use it.
fn point_key(
    base: &serde_json::Value,
    passes: &[crate::passes::PassConfig],
    calibration: Option<&CalibrationSet>,
) -> serde_json::Value {
    let mut key = base.clone();
    key["passes"] = serde_json::to_value(passes).unwrap_or_default();
    key["calibration"] = match calibration {
        Some(set) if passes.iter().any(|p| p.needs_calibration()) => set.set_sha256().into(),
        _ => serde_json::Value::Null,
    };
    key
}

/// The record at `path` when it can be reused: it parses, it is as it was written (its
/// `record_sha256`), its key is `key`, and its model (`model`, when the point has its own) has
/// the SHA-256 it recorded.
fn reuse(
    path: &Path,
    key: &serde_json::Value,
    model: Option<&Path>,
) -> Result<Option<PointRecord>> {
    let Ok(text) = std::fs::read(path) else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<PointRecord>(&text) else {
        return Ok(None);
    };
    if &record.key != key || record.digest()? != record.record_sha256 {
        return Ok(None);
    }
    if let Some(model) = model {
        match std::fs::read(model) {
            Ok(bytes) if sha256_hex(&bytes) == record.model_sha256 => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(record))
}

fn record_of(
    id: &str,
    method: PointMethod,
    amount: Option<f64>,
    key: serde_json::Value,
    model: &Model,
    passes: &[String],
    accuracy: Accuracy,
) -> Result<PointRecord> {
    let graph = model
        .proto
        .graph
        .as_ref()
        .context("the model has no graph")?;
    let stats = model_stats(graph)?;
    let zeros: u64 = stats
        .layers
        .iter()
        .map(|l| l.weight_zeros + l.bias_zeros)
        .sum();
    PointRecord {
        key,
        id: id.to_string(),
        method,
        amount,
        model: model.path.clone(),
        model_sha256: sha256_hex(&model.bytes),
        params: stats.params,
        nonzero_params: stats.params - zeros,
        macs: stats.macs,
        sparsity: stats.sparsity.conv_weights,
        file_bytes: model.total_size(),
        passes: passes.to_vec(),
        accuracy,
        record_sha256: String::new(),
    }
    .sealed()
}

/// Writes a point's record atomically; `model` is declared as read (never overwritten).
fn write_record(path: &Path, record: &PointRecord, model: &Model) -> Result<()> {
    let mut plan = OutputPlan::new();
    plan.input_model(model)?;
    plan.output("point record", path)?;
    plan.stage_json(path, record)?;
    plan.commit()
}

/// How many validation images are calibration images (by content).
fn calibration_overlap(set: &CalibrationSet, validator: &Validator) -> Result<usize> {
    use rayon::prelude::*;
    let calibrated: std::collections::HashSet<&String> = set.image_sha256.iter().collect();
    let hashes: Vec<String> = validator
        .dataset()
        .images
        .par_iter()
        .map(|image| crate::digest::file_sha256(&image.path))
        .collect::<Result<_>>()?;
    Ok(hashes.iter().filter(|h| calibrated.contains(h)).count())
}

/// Times the dense model and every point in turns; one timing per model, dense first. A model
/// that fails to time gets `None` (and the error is returned when all fail).
fn time_all(
    dense: &Model,
    records: &[(PointRecord, bool)],
    timing: TimingSettings,
    progress: &dyn Progress,
) -> Result<Vec<Option<Timing>>> {
    let spec = timing.backend;
    let mut contenders = Vec::with_capacity(records.len() + 1);
    let open = |model: &Model| -> Result<Contender> {
        let bytes = runnable_bytes(model, spec.engine())?;
        let session = backend::open(&spec, &bytes)
            .with_context(|| format!("opening {}", model.path.display()))?;
        let input = random_input(session.input_shape(), 0);
        Ok(Contender {
            backend: session,
            input,
        })
    };
    progress.start("opening the models to time", None);
    contenders.push(open(dense)?);
    for (record, _) in records {
        contenders.push(open(&onnx::load(&record.model)?)?);
    }
    progress.finish();
    let timings = time_in_turns(&mut contenders, timing.warmup, timing.runs, progress);
    if let Some(Err(err)) = timings.iter().find(|t| t.is_err())
        && timings.iter().all(Result::is_err)
    {
        bail!("no model could be timed: {err:#}");
    }
    Ok(timings.into_iter().map(Result::ok).collect())
}

/// Puts records and timings together with the figures relative to the dense model.
#[allow(clippy::too_many_arguments)]
fn assemble(
    spec: &SweepSpec,
    model_sha256: &str,
    validator: &Validator,
    calibration: Option<&CalibrationSet>,
    dense: (PointRecord, bool),
    records: Vec<(PointRecord, bool)>,
    timings: Vec<Option<Timing>>,
    warnings: Vec<String>,
) -> SweepReport {
    let dense_metric = dense.0.accuracy.headline();
    let dense_macs = dense.0.macs.max(1) as f64;
    let dense_timing = timings.first().cloned().flatten();
    let result = |(record, resumed): (PointRecord, bool), timing: Option<Timing>| {
        let ratio = |of: fn(&Timing) -> f64| match (&timing, &dense_timing) {
            (Some(t), Some(d)) => Some(of(t) / of(d)),
            _ => None,
        };
        let (latency_ratio, min_ratio) = (ratio(|t| t.median_ms), ratio(|t| t.min_ms));
        PointResult {
            metric_drop: dense_metric - record.accuracy.headline(),
            mac_ratio: record.macs as f64 / dense_macs,
            record,
            resumed,
            timing,
            latency_ratio,
            min_ratio,
        }
    };
    let mut timings = timings.into_iter();
    let dense = result(dense, timings.next().flatten());
    let points = records
        .into_iter()
        .zip(timings)
        .map(|(r, t)| result(r, t))
        .collect();
    SweepReport {
        model: spec.model.clone(),
        model_sha256: model_sha256.to_string(),
        metric: if validator.has_coco() {
            "coco_ap"
        } else {
            "map50_95"
        },
        images: validator.dataset().images.len(),
        backend: spec.validation.backend.to_string(),
        timing: spec.timing,
        calibration: calibration.map(|set| {
            serde_json::json!({
                "source": set.source.display().to_string(),
                "images": set.images.len(),
                "sha256": set.set_sha256(),
            })
        }),
        dense,
        points,
        plots: Vec::new(),
        warnings,
    }
}

impl SweepReport {
    /// The metric's name for people.
    pub fn metric_label(&self) -> &'static str {
        match self.metric {
            "coco_ap" => "COCO AP (mAP@.5:.95, COCOeval)",
            _ => "mAP@.5:.95 (val.py)",
        }
    }

    /// Methods in the order of their first point.
    fn methods(&self) -> Vec<PointMethod> {
        let mut methods: Vec<PointMethod> = Vec::new();
        for p in &self.points {
            if !methods.contains(&p.record.method) {
                methods.push(p.record.method);
            }
        }
        methods
    }

    /// The metric against the share of weights (or MACs, for channels) removed, one line per
    /// method from the dense model.
    pub fn accuracy_chart(&self) -> LineChart {
        let dense = (0.0, self.dense.record.accuracy.headline());
        let mut series: Vec<Series> = self
            .methods()
            .into_iter()
            .map(|method| {
                let structured = matches!(method, PointMethod::Pruned(m) if m.is_structured());
                let mut points: Vec<(f64, f64)> = self
                    .points
                    .iter()
                    .filter(|p| p.record.method == method)
                    .map(|p| (p.pruned_fraction(structured), p.record.accuracy.headline()))
                    .collect();
                points.push(dense);
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: method.to_string(),
                    points,
                    line: true,
                }
            })
            .collect();
        series.push(Series {
            name: "dense".to_string(),
            points: vec![dense],
            line: false,
        });
        LineChart {
            title: format!("{} against sparsity", self.metric_name()),
            x_label: "sparsity: fraction of conv weights zero (channel methods: of MACs removed)"
                .to_string(),
            y_label: self.metric_label().to_string(),
            series,
        }
    }

    /// The metric against median latency, one line per method, the dense model marked; `None`
    /// when nothing was timed.
    pub fn latency_chart(&self) -> Option<LineChart> {
        let point = |p: &PointResult| {
            p.timing
                .as_ref()
                .map(|t| (t.median_ms, p.record.accuracy.headline()))
        };
        let dense = point(&self.dense)?;
        let mut series: Vec<Series> = self
            .methods()
            .into_iter()
            .map(|method| Series {
                name: method.to_string(),
                points: self
                    .points
                    .iter()
                    .filter(|p| p.record.method == method)
                    .filter_map(point)
                    .collect(),
                line: true,
            })
            .collect();
        series.push(Series {
            name: "dense".to_string(),
            points: vec![dense],
            line: false,
        });
        let threads = self.timing.map_or(1, |t| t.backend.threads());
        Some(LineChart {
            title: format!("{} against latency", self.metric_name()),
            x_label: format!(
                "median latency (ms per inference, batch 1, {}, {threads} thread(s))",
                self.backend
            ),
            y_label: self.metric_label().to_string(),
            series,
        })
    }

    fn metric_name(&self) -> &'static str {
        match self.metric {
            "coco_ap" => "COCO AP",
            _ => "mAP@.5:.95",
        }
    }

    /// Every point, dense first.
    fn rows(&self) -> impl Iterator<Item = &PointResult> {
        std::iter::once(&self.dense).chain(&self.points)
    }

    /// `sweep.csv`: one row per model, dense first.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "method,amount,sparsity,mac_ratio,params,nonzero_params,macs,file_bytes,map50,\
             map50_95,coco_ap,metric_drop,latency_median_ms,latency_p10_ms,latency_p90_ms,\
             latency_ratio,min_ratio,model,resumed\n",
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for p in self.rows() {
            let r = &p.record;
            let fields = [
                csv_field(&r.method.to_string()),
                opt(r.amount),
                r.sparsity.to_string(),
                p.mac_ratio.to_string(),
                r.params.to_string(),
                r.nonzero_params.to_string(),
                r.macs.to_string(),
                r.file_bytes.to_string(),
                r.accuracy.map50.to_string(),
                r.accuracy.map50_95.to_string(),
                opt(r.accuracy.coco.as_ref().map(|c| c[0])),
                p.metric_drop.to_string(),
                opt(p.timing.as_ref().map(|t| t.median_ms)),
                opt(p.timing.as_ref().map(|t| t.p10_ms)),
                opt(p.timing.as_ref().map(|t| t.p90_ms)),
                opt(p.latency_ratio),
                opt(p.min_ratio),
                csv_field(&r.model.display().to_string()),
                p.resumed.to_string(),
            ];
            out += &fields.join(",");
            out.push('\n');
        }
        out
    }

    /// The table as Markdown rows (header included), for `sweep.md` and the README.
    pub fn markdown_table(&self) -> String {
        let mut out = format!(
            "| method | amount | sparsity | MACs | params (non-zero) | {} | drop | mAP50 | latency ms (ratio, fastest-run ratio) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            self.metric_name()
        );
        for p in self.rows() {
            let r = &p.record;
            let latency = match (&p.timing, p.latency_ratio, p.min_ratio) {
                (Some(t), Some(ratio), Some(min)) => {
                    format!("{:.1} ({ratio:.2}, {min:.2})", t.median_ms)
                }
                _ => "-".to_string(),
            };
            out += &format!(
                "| {} | {} | {:.3} | {:.3} | {} ({}) | {:.4} | {:.4} | {:.4} | {latency} |\n",
                md_cell(&r.method.to_string()),
                r.amount.map_or("-".to_string(), |a| a.to_string()),
                r.sparsity,
                p.mac_ratio,
                crate::analysis::grouped(r.params),
                crate::analysis::grouped(r.nonzero_params),
                r.accuracy.headline(),
                p.metric_drop + 0.0, // no "-0.0000" for the dense row
                r.accuracy.map50,
            );
        }
        out
    }

    fn markdown(&self, out: &Path) -> String {
        let mut md = format!(
            "# Sweep of {}\n\n{} on {} validation image(s), backend {}{}.\n\n",
            self.model.display(),
            self.metric_label(),
            self.images,
            self.backend,
            self.calibration.as_ref().map_or(String::new(), |c| format!(
                "; recovery calibrated on {} image(s) of {}",
                c["images"],
                c["source"].as_str().unwrap_or_default()
            ))
        );
        md += "sparsity: zeros over conv weights; MACs: over the dense model's; drop: the dense \
               model's figure minus this one (positive when accuracy falls); latency: median of timed runs, the models taking turns, its \
               ratio to the dense model's and the ratio of the fastest runs.\n\n";
        md += &self.markdown_table();
        for plot in &self.plots {
            if plot.extension().is_some_and(|e| e == "svg") {
                let rel = relative_to(plot, out);
                md += &format!("\n![{}]({})\n", rel.display(), rel.display());
            }
        }
        for warning in &self.warnings {
            md += &format!("\nwarning: {warning}\n");
        }
        md
    }
}

/// Renders the plots and stages every output of the sweep, then commits them together.
fn write_outputs(
    spec: &SweepSpec,
    mut report: SweepReport,
    mut plan: OutputPlan,
) -> Result<SweepReport> {
    let charts: Vec<(&str, Option<LineChart>)> = vec![
        (PLOTS[0], Some(report.accuracy_chart())),
        (PLOTS[1], report.latency_chart()),
    ];
    for (stem, chart) in charts {
        let Some(chart) = chart else { continue };
        match chart.render() {
            Ok(Rendered { svg, png }) => {
                for (ext, bytes) in [("svg", svg.as_bytes()), ("png", &png[..])] {
                    let path = spec.out.join(format!("{stem}.{ext}"));
                    plan.stage_bytes(&path, bytes)?;
                    report.plots.push(path);
                }
            }
            Err(err) => report
                .warnings
                .push(format!("plot {stem} not drawn: {err:#}")),
        }
    }
    plan.stage_json(&spec.out.join(TABLES[0]), &report)?;
    plan.stage_bytes(&spec.out.join(TABLES[1]), report.csv().as_bytes())?;
    plan.stage_bytes(
        &spec.out.join(TABLES[2]),
        report.markdown(&spec.out).as_bytes(),
    )?;
    plan.commit()?;
    Ok(report)
}
