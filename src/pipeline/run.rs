//! Running a pipeline: resolve its models, run each through the passes (in parallel, each on its
//! own), validate dense and pruned when asked, and collect one outcome per model. A failing
//! model does not stop the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use super::spec::{GateMetric, ModelSource, PipelineSpec, ValidateSpec, resolve};
use super::summary::{LatencyRatio, latency_ratio, lost_over_half};
use crate::backend::{BackendSpec, runnable_bytes};
use crate::calib::CalibrationSet;
use crate::eval::dataset::Dataset;
use crate::eval::nms::NmsConfig;
use crate::eval::validate::{DataSource, ValReport, load_dataset, validate};
use crate::job::{JobOptions, JobReport, prune_to_file};
use crate::onnx::{self, Model, OutputPlan};
use crate::passes::PassConfig;
use crate::progress::Progress;
use crate::synth::{SynthSpec, Variant};
use crate::verify::Probe;

/// Where one model of the run comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    File(PathBuf),
    /// Generated because the file named by the pipeline does not exist.
    Synth {
        variant: String,
        missing: PathBuf,
    },
}

impl Input {
    /// The name `{stem}` stands for in output patterns.
    fn stem(&self) -> String {
        match self {
            Input::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Input::Synth { variant, .. } => format!("{variant}-synth"),
        }
    }

    fn display(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Synth { variant, .. } => format!("{variant} (generated)"),
        }
    }

    fn load(&self) -> Result<Model> {
        match self {
            Input::File(path) => onnx::load(path),
            Input::Synth { variant, .. } => {
                let proto = crate::synth::build(&SynthSpec::new(variant.parse::<Variant>()?))?;
                onnx::load_bytes(onnx::encode(&proto).into(), Path::new(&self.display()))
            }
        }
    }
}

/// Dense and pruned accuracy of one model and the gate's verdict.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub metric: GateMetric,
    pub dense: ValReport,
    pub pruned: ValReport,
    /// `metric` of the dense model minus that of the pruned one.
    pub drop: f64,
    pub max_drop: Option<f64>,
    /// Pruned over dense inference time per image, when both timed the same images.
    pub latency_ratio: Option<LatencyRatio>,
    /// The pruned model kept less than half of the dense model's `metric`.
    pub lost_over_half: bool,
}

/// One model of a pipeline run.
#[derive(Debug, Serialize)]
pub struct ModelOutcome {
    pub model: Input,
    pub output: PathBuf,
    #[serde(flatten)]
    pub result: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        report: JobReport,
        validation: Option<Validation>,
    },
    /// Pruned and written, but the accuracy drop exceeds the budget.
    GateFailed {
        report: JobReport,
        validation: Validation,
        message: String,
    },
    /// The error (with its causes) that stopped this model.
    Failed { error: String },
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct PipelineRun {
    pub pipeline: PathBuf,
    pub passes: Vec<String>,
    pub models: Vec<ModelOutcome>,
    /// What the whole run should tell the user (for example, recovery skipped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl PipelineRun {
    pub fn failures(&self) -> usize {
        self.models
            .iter()
            .filter(|m| matches!(m.result, Outcome::Failed { .. }))
            .count()
    }

    pub fn gate_failures(&self) -> usize {
        self.models
            .iter()
            .filter(|m| matches!(m.result, Outcome::GateFailed { .. }))
            .count()
    }
}

/// The models a spec names, with their output paths. Errors when a pattern matches nothing or
/// two models would write the same output.
pub fn plan(spec: &PipelineSpec, base: &Path) -> Result<Vec<(Input, PathBuf)>> {
    let mut inputs = Vec::new();
    for source in &spec.models {
        let (text, synth) = match source {
            ModelSource::Path(text) => (text, None),
            ModelSource::PathOrSynth { path, synth } => (path, Some(synth)),
        };
        let path = resolve(base, text)?;
        let pattern = path.to_string_lossy();
        if let Some(variant) = synth.filter(|_| !path.exists()) {
            variant
                .parse::<Variant>()
                .with_context(|| format!("or_synth of {text:?}"))?;
            inputs.push(Input::Synth {
                variant: variant.clone(),
                missing: path,
            });
        } else if pattern.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(&pattern)
                .with_context(|| format!("invalid glob pattern {text:?}"))?
                .collect::<Result<_, _>>()?;
            if matched.is_empty() {
                bail!("model pattern {text:?} matches no file");
            }
            matched.sort();
            inputs.extend(matched.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path));
        }
    }
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    let mut planned = Vec::new();
    for input in inputs {
        let output = resolve(base, &spec.output.replace("{stem}", &input.stem()))?;
        if let Some(other) = seen.insert(output.clone(), input.display()) {
            bail!(
                "models {other} and {} would both be written to {} (use {{stem}} in `output`)",
                input.display(),
                output.display()
            );
        }
        planned.push((input, output));
    }
    Ok(planned)
}

/// What validation needs, prepared once for every model of the run.
struct Validator<'a> {
    spec: &'a ValidateSpec,
    backend: BackendSpec,
    dataset: Dataset,
    gt: Option<PathBuf>,
    nms: NmsConfig,
}

impl<'a> Validator<'a> {
    /// `None` when the pipeline has no `validate:` block, or its dataset is missing and
    /// `skip_if_missing` is set. `jobs` models validate at once; they share the cores.
    fn prepare(
        spec: Option<&'a ValidateSpec>,
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
        let (dataset, own_gt) =
            load_dataset(&DataSource::Yaml { data, root }, spec.max_pixels, progress)
                .context("validate")?;
        let gt = match &spec.gt {
            Some(gt) => Some(resolve(base, gt)?),
            None => own_gt,
        };
        if spec.metric == GateMetric::CocoAp && gt.is_none() {
            bail!("validate: metric coco_ap needs COCO annotations: give `gt`");
        }
        let nms = NmsConfig {
            conf_thres: spec.conf,
            iou_thres: spec.iou,
            max_det: spec.max_det,
            ..NmsConfig::default()
        };
        Ok(Some(Validator {
            spec,
            backend: BackendSpec::parse(&spec.backend, &spec.device)?.shared_by(jobs),
            dataset,
            gt,
            nms,
        }))
    }

    /// Validates `model`, advancing `progress` by one step per image.
    fn run(&self, name: &str, model: &Model, progress: &dyn Progress) -> Result<ValReport> {
        let bytes = runnable_bytes(model, self.backend.engine())?;
        let (report, _) = validate(
            name,
            &bytes,
            &self.backend,
            &self.dataset,
            self.gt.as_deref(),
            &self.nms,
            &Steps(progress),
        )?;
        Ok(report)
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

/// Runs every planned model on a pool of `jobs` threads.
pub fn run_pipeline(
    spec: &PipelineSpec,
    spec_path: &Path,
    jobs: usize,
    force: bool,
    progress: &dyn Progress,
) -> Result<PipelineRun> {
    let base = spec_path.parent().unwrap_or(Path::new("."));
    let planned = plan(spec, base)?;
    let validator = Validator::prepare(spec.validate.as_ref(), base, jobs, progress)
        .with_context(|| format!("{}", spec_path.display()))?;
    let mut warnings = Vec::new();
    let mut passes = spec.passes.clone();
    let calibration = match &spec.calibration {
        Some(block) if spec.passes.iter().any(PassConfig::needs_calibration) => {
            let set = block.resolve(base)?;
            if block.skip_if_missing && !set.data.exists() {
                warnings.push(format!(
                    "calibration data {} is missing: pruned without recovery (skip_if_missing)",
                    set.data.display()
                ));
                passes = passes.iter().map(PassConfig::without_recovery).collect();
                None
            } else {
                Some(
                    CalibrationSet::resolve(&set)
                        .with_context(|| format!("{}: calibration", spec_path.display()))?,
                )
            }
        }
        Some(_) => None,
        None if spec.passes.iter().any(PassConfig::needs_calibration) => bail!(
            "{}: a pass recovers accuracy from calibration images; add a `calibration:` block",
            spec_path.display()
        ),
        None => None,
    };
    let options = JobOptions {
        measure_zstd: true,
        calibration,
        force,
        probe: validator
            .as_ref()
            .map_or_else(Probe::default, |v| Probe::from_dataset(&v.dataset)),
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    // Progress counts models, or with validation the images validated (dense and pruned).
    let steps_per_model = validator
        .as_ref()
        .map_or(1, |v| 2 * v.dataset.images.len() as u64);
    let label = if validator.is_some() {
        "images validated"
    } else {
        "models"
    };
    progress.start(label, Some(planned.len() as u64 * steps_per_model));
    let models = pool.install(|| {
        planned
            .par_iter()
            .map(|(input, output)| {
                let result = run_one(
                    &passes,
                    input,
                    output,
                    &options,
                    validator.as_ref(),
                    progress,
                )
                .unwrap_or_else(|e| Outcome::Failed {
                    error: format!("{e:#}"),
                });
                if validator.is_none() {
                    progress.advance(1);
                }
                ModelOutcome {
                    model: input.clone(),
                    output: output.clone(),
                    result,
                }
            })
            .collect()
    });
    progress.finish();
    Ok(PipelineRun {
        pipeline: spec_path.to_path_buf(),
        passes: spec.passes.iter().map(|p| p.name().to_string()).collect(),
        models,
        warnings,
    })
}

fn run_one(
    passes: &[PassConfig],
    input: &Input,
    output: &Path,
    options: &JobOptions,
    validator: Option<&Validator>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let model = input.load()?;
    let mut plan = OutputPlan::new();
    plan.input_model(&model);
    plan.output_model("output", output, &options.save)?;
    if let Some(folder) = output.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let Some(validator) = validator else {
        let report = prune_to_file(model, passes, output, options, progress, &mut plan)?;
        plan.commit()?;
        return Ok(Outcome::Ok {
            report,
            validation: None,
        });
    };
    let dense = validator.run(&input.stem(), &model, progress)?;
    let report = prune_to_file(model, passes, output, options, progress, &mut plan)?;
    plan.commit()?;
    let pruned_name = output
        .file_stem()
        .map_or_else(|| "pruned".into(), |s| s.to_string_lossy().into_owned());
    let pruned = validator.run(&pruned_name, &onnx::load(output)?, progress)?;
    let drop = validator.spec.metric.value(&dense) - validator.spec.metric.value(&pruned);
    let max_drop = validator.spec.max_map_drop;
    let latency = latency_ratio(
        &dense.inference_ms_per_image,
        &pruned.inference_ms_per_image,
    );
    let halved = lost_over_half(
        validator.spec.metric.value(&dense),
        validator.spec.metric.value(&pruned),
    );
    let validation = Validation {
        metric: validator.spec.metric,
        dense,
        pruned,
        drop,
        max_drop,
        latency_ratio: latency,
        lost_over_half: halved,
    };
    Ok(match max_drop {
        Some(budget) if drop.is_nan() || drop > budget => Outcome::GateFailed {
            message: format!(
                "{} dropped by {drop:.4} (from {:.4} to {:.4}), more than the budget of {budget}",
                validation.metric.name(),
                validation.metric.value(&validation.dense),
                validation.metric.value(&validation.pruned)
            ),
            report,
            validation,
        },
        _ => Outcome::Ok {
            report,
            validation: Some(validation),
        },
    })
}
