//! Running a pipeline: resolve its models, run each through the passes (in parallel, each on its
//! own), validate dense and pruned when asked, and collect one outcome per model. A failing
//! model does not stop the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::budget::{SearchRecord, Searched, search};
use super::spec::{GateMetric, ModelSource, PipelineSpec, ValidateSpec, resolve};
use crate::backend::BackendSpec;
use crate::calib::CalibrationSet;
use crate::eval::nms::NmsConfig;
use crate::eval::validate::{DataSource, ValReport};
use crate::eval::validator::{ValSettings, Validator};
use crate::job::{
    self, BuildInputs, GatedValidation, JobOptions, JobReport, footprint, prune_to_file,
    recorded_build_key,
};
use crate::onnx::metadata::{self, VALIDATION_KEY};
use crate::onnx::{self, Model, OutputPlan};
use crate::passes::PassConfig;
use crate::progress::{Progress, phase};
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
#[derive(Debug, Serialize, Deserialize)]
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
    /// How a pass's amount was searched within its `max_map_drop`, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchRecord>,
}

/// One model of a pipeline run.
#[derive(Debug, Serialize)]
pub struct ModelOutcome {
    pub model: Input,
    pub output: PathBuf,
    /// The output recorded this run's build key: nothing was redone.
    pub up_to_date: bool,
    /// The files of its input model (for depfiles).
    #[serde(skip)]
    pub inputs: Vec<PathBuf>,
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
    /// Files every output depends on besides its input model: the pipeline file, calibration
    /// and validation data.
    #[serde(skip)]
    pub shared_inputs: Vec<PathBuf>,
    /// Folders whose contents decide the calibration and validation images and labels: a file
    /// added there can change every output.
    #[serde(skip)]
    pub shared_folders: Vec<PathBuf>,
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

/// What every model of a run shares.
struct Shared<'a> {
    spec: &'a PipelineSpec,
    /// The spec's passes, without recovery when calibration was skipped.
    passes: Vec<PassConfig>,
    options: JobOptions,
    validator: Option<Validator>,
    /// What the recorded validation depends on, for the build key.
    validation: Option<GatedValidation>,
    /// Redo every model, up to date or not.
    rebuild: bool,
    /// The pass whose amount is searched within its `max_map_drop`.
    searched: Option<Searched>,
}

/// Runs every planned model on a pool of `jobs` threads. A model whose output records the build
/// key of this run ([`BuildInputs`]: its input's bytes, the passes, the calibration images, the
/// shears version, and with validation its settings and data) is not redone unless `force`:
/// its output's modification time is set to now, and its recorded validation is judged against
/// the current budget. `force` also rewrites models that hold fields the schema does not know.
pub fn run_pipeline(
    spec: &PipelineSpec,
    spec_path: &Path,
    jobs: usize,
    force: bool,
    progress: &dyn Progress,
) -> Result<PipelineRun> {
    let base = spec_path.parent().unwrap_or(Path::new("."));
    let planned = plan(spec, base)?;
    let validator = prepare_validator(spec.validate.as_ref(), base, jobs, progress)
        .with_context(|| format!("{}", spec_path.display()))?;
    let mut warnings: Vec<String> = validator
        .iter()
        .flat_map(|v| v.dataset().report.messages.iter().cloned())
        .collect();
    let mut passes = spec.passes.clone();
    let calibration = match &spec.calibration {
        Some(block) if spec.passes.iter().any(PassConfig::needs_calibration) => {
            let set = block.resolve(base)?;
            if block.skip_if_missing && !set.data.exists() {
                warnings.push(format!(
                    "calibration data {} is missing: pruned without recovery (skip_if_missing)",
                    set.data.display()
                ));
                passes = passes.iter().map(PassConfig::without_calibration).collect();
                None
            } else {
                Some(
                    CalibrationSet::resolve(&set)
                        .map_err(|err| super::with_yaml_key(err, "calibration"))
                        .with_context(|| spec_path.display().to_string())?,
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
    let mut shared_inputs = vec![spec_path.to_path_buf()];
    if let Some(set) = &calibration {
        warnings.extend(set.messages.iter().cloned());
        shared_inputs.extend(set.files().cloned());
    }
    let mut shared_folders = Vec::new();
    if let Some(set) = &calibration {
        shared_folders.extend(set.folders.iter().cloned());
    }
    if let Some(v) = &validator {
        shared_inputs.extend(v.files()?);
        shared_folders.extend(v.folders()?);
    }
    // No output may be a file the run reads (validation data, calibration images, the spec).
    let mut outputs = OutputPlan::new();
    outputs.inputs("file read by the pipeline", &shared_inputs)?;
    for (_, output) in &planned {
        outputs.output("output", output)?;
    }
    let options = JobOptions {
        measure_zstd: true,
        calibration,
        force,
        probe: validator
            .as_ref()
            .map_or_else(Probe::default, |v| Probe::from_dataset(v.dataset())),
        ..Default::default()
    };
    let searched = searched_pass(spec, validator.as_ref())
        .with_context(|| format!("{}", spec_path.display()))?;
    let shared = Shared {
        searched,
        spec,
        passes,
        options,
        validation: match (&validator, &spec.validate) {
            (Some(validator), Some(block)) => Some(GatedValidation {
                metric: block.metric,
                identity: validator.identity()?,
            }),
            _ => None,
        },
        validator,
        rebuild: force,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    // One phase counts the models; each model in work shows its own phases under it.
    progress.start("model", Some(planned.len() as u64));
    let models = pool.install(|| {
        planned
            .par_iter()
            .map(|(input, output)| {
                let mut inputs = Vec::new();
                let done = phase(&*progress.child(), &input.display(), |work| {
                    run_one(&shared, input, output, &mut inputs, work)
                });
                let (result, up_to_date) = match done {
                    Ok(Done::Redone(outcome)) => (outcome, false),
                    Ok(Done::UpToDate(outcome)) => (outcome, true),
                    Err(e) => (
                        Outcome::Failed {
                            error: format!("{e:#}"),
                        },
                        false,
                    ),
                };
                progress.advance(1);
                ModelOutcome {
                    model: input.clone(),
                    output: output.clone(),
                    up_to_date,
                    inputs,
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
        shared_inputs,
        shared_folders,
    })
}

/// The validator of a pipeline's `validate:` block (paths relative to `base`); `None` when
/// there is none, or its dataset is missing and `skip_if_missing` is set. `jobs` models
/// validate at once; they share the cores.
fn prepare_validator(
    spec: Option<&ValidateSpec>,
    base: &Path,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Option<Validator>> {
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
    let load = || {
        let settings = ValSettings {
            data: DataSource::Yaml { data, root },
            gt,
            images: None,
            nms: NmsConfig::with(spec.conf, spec.iou, spec.max_det),
            backend: BackendSpec::parse(&spec.backend, &spec.device)?.shared_by(jobs),
            max_pixels: spec.max_pixels,
        };
        let validator = Validator::load(settings, progress)?;
        spec.metric.ensure_measured_by(&validator)?;
        Ok(validator)
    };
    load()
        .map_err(|err| super::with_yaml_key(err, "validate"))
        .map(Some)
}

/// The one pass whose amount a run searches within its `max_map_drop`, if any; an error when
/// several do, or when there is no validation to search with.
fn searched_pass(spec: &PipelineSpec, validator: Option<&Validator>) -> Result<Option<Searched>> {
    let searched = Searched::in_pipeline(&spec.passes)?;
    match (searched, validator) {
        (None, _) => Ok(None),
        (Some(searched), Some(_)) => Ok(Some(searched)),
        (Some(searched), None) if spec.validate.is_some() => bail!(
            "pass {} searches its amount within max_map_drop, but the `validate:` dataset is \
             missing",
            spec.passes[searched.index].name()
        ),
        (Some(searched), None) => bail!(
            "pass {} searches its amount within max_map_drop: add a `validate:` block",
            spec.passes[searched.index].name()
        ),
    }
}

/// What became of one model.
enum Done {
    Redone(Outcome),
    /// Its output was up to date: nothing was redone.
    UpToDate(Outcome),
}

/// Runs one model, its phases shown in `progress`; adds the files it read to `inputs`.
fn run_one(
    shared: &Shared,
    input: &Input,
    output: &Path,
    inputs: &mut Vec<PathBuf>,
    progress: &dyn Progress,
) -> Result<Done> {
    if let Input::File(path) = input {
        inputs.push(path.clone());
    }
    let model = input.load()?;
    inputs.extend(model.external_files.iter().cloned());
    let spec = shared.spec;
    let mut build = BuildInputs::new(&model, &shared.passes, &shared.options);
    build.validation = shared.validation.as_ref();
    let key = build.key();
    let budget = spec.validate.as_ref().and_then(|v| v.max_map_drop);
    if !shared.rebuild
        && let Some(outcome) = up_to_date(&model, output, &key, shared.validator.is_some(), budget)?
    {
        return Ok(Done::UpToDate(outcome));
    }
    let options = JobOptions {
        build_key: Some(key),
        ..shared.options.clone()
    };
    let mut plan = OutputPlan::new();
    plan.input_model(&model)?;
    plan.output_model("output", output, &options.save)?;
    if let Some(folder) = output.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let Some(validator) = &shared.validator else {
        let report = phase(progress, "pruning", |inside| {
            prune_to_file(model, &shared.passes, output, &options, inside, &mut plan)
        })?;
        plan.commit()?;
        return Ok(Done::Redone(Outcome::Ok {
            report,
            validation: None,
        }));
    };
    let metric = spec.validate.as_ref().map(|v| v.metric).unwrap_or_default();
    let dense = validator.run(&input.stem(), &model, progress)?;
    metric.dense_value(&dense)?;
    let pruned_name = output
        .file_stem()
        .map_or_else(|| "pruned".into(), |s| s.to_string_lossy().into_owned());
    let (mut pruned, pruned_report, search_record) = match shared.searched {
        Some(searched) => {
            let mut found = search(
                &model,
                &shared.passes,
                searched,
                validator,
                metric,
                &dense,
                &options,
                output,
                progress,
            )?;
            found.report.model = pruned_name;
            (found.pruned, found.report, Some(found.record))
        }
        None => {
            let pruned = phase(progress, "pruning", |inside| {
                job::prune(model, &shared.passes, output, &options, inside)
            })?;
            let report = validator.run_proto(&pruned_name, &pruned.proto, progress)?;
            (pruned, report, None)
        }
    };
    let mut validation = Validation::new(metric, dense, pruned_report, budget);
    validation.search = search_record;
    // Recorded so that a later run that finds the output up to date still reports and gates it.
    metadata::set(
        &mut pruned.proto,
        VALIDATION_KEY,
        &serde_json::to_string(&validation)?,
    );
    let report = job::stage(pruned, output, &options, &mut plan)?;
    plan.commit()?;
    Ok(Done::Redone(judge(report, Some(validation))))
}

/// The outcome of an output already made from `model` with build key `key`, or `None` when it
/// must be redone: it is missing, unreadable, records another key, or lacks the validation
/// a validating run records. Sets its modification time to now, so that make sees it as newer
/// than the inputs it was checked against.
fn up_to_date(
    model: &Model,
    output: &Path,
    key: &str,
    validated: bool,
    budget: Option<f64>,
) -> Result<Option<Outcome>> {
    let Ok(existing) = onnx::load(output) else {
        return Ok(None);
    };
    if recorded_build_key(&existing.proto).as_deref() != Some(key) {
        return Ok(None);
    }
    let validation = match metadata::get(&existing.proto, VALIDATION_KEY)
        .and_then(|v| serde_json::from_str::<Validation>(v).ok())
    {
        Some(mut v) if validated => {
            v.max_drop = budget;
            Some(v)
        }
        None if validated => return Ok(None),
        _ => None,
    };
    std::fs::File::open(output)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .with_context(|| {
            format!(
                "cannot update the modification time of {}",
                output.display()
            )
        })?;
    let report = JobReport {
        input: model.path.clone(),
        output: output.to_path_buf(),
        passes: Vec::new(),
        before: footprint(&model.proto, model.total_size(), None)?,
        after: footprint(&existing.proto, existing.total_size(), None)?,
        warnings: Vec::new(),
        check: None,
    };
    Ok(Some(judge(report, validation)))
}

/// The outcome of a written model: with a validation whose drop exceeds its budget, a failed
/// gate.
fn judge(report: JobReport, validation: Option<Validation>) -> Outcome {
    match validation {
        Some(validation)
            if validation
                .max_drop
                .is_some_and(|budget| validation.drop.is_nan() || validation.drop > budget) =>
        {
            Outcome::GateFailed {
                message: format!(
                    "{} dropped by {:.4} (from {:.4} to {:.4}), more than the budget of {}",
                    validation.metric.name(),
                    validation.drop,
                    validation.metric.value(&validation.dense),
                    validation.metric.value(&validation.pruned),
                    validation.max_drop.unwrap_or_default()
                ),
                report,
                validation,
            }
        }
        validation => Outcome::Ok { report, validation },
    }
}

impl Validation {
    /// The validation of a dense and a pruned model on the same images.
    pub fn new(
        metric: GateMetric,
        dense: ValReport,
        pruned: ValReport,
        max_drop: Option<f64>,
    ) -> Self {
        let (d, p) = (metric.value(&dense), metric.value(&pruned));
        Validation {
            metric,
            latency_ratio: latency_ratio(
                &dense.inference_ms_per_image,
                &pruned.inference_ms_per_image,
            ),
            lost_over_half: lost_over_half(d, p),
            drop: d - p,
            max_drop,
            dense,
            pruned,
            search: None,
        }
    }
}

impl ModelOutcome {
    /// The record of the search of a pass's amount within its `max_map_drop`, when one ran.
    pub fn search(&self) -> Option<&SearchRecord> {
        match &self.result {
            Outcome::Ok {
                validation: Some(v),
                ..
            }
            | Outcome::GateFailed { validation: v, .. } => v.search.as_ref(),
            _ => None,
        }
    }
}

impl PipelineRun {
    /// The dependencies of the outputs in make's format: one rule per output listing the
    /// pipeline file, its input model, the data files that affect it (calibration images,
    /// validation images, labels and image lists) and the folders those were found in (so that
    /// an added image or label is seen), then an empty rule per prerequisite so that make goes
    /// on (and shears reports the problem) when one is deleted. Refused when a path holds a
    /// character make cannot read in a rule ([`make_path`]).
    pub fn depfile(&self) -> Result<String> {
        let mut text = String::new();
        let mut all: Vec<&PathBuf> = Vec::new();
        for model in &self.models {
            let prerequisites: Vec<&PathBuf> = model
                .inputs
                .iter()
                .chain(&self.shared_inputs)
                .chain(&self.shared_folders)
                .collect();
            text += &make_path(&model.output)?;
            text += ":";
            for p in &prerequisites {
                text += " \\\n ";
                text += &make_path(p)?;
            }
            text += "\n";
            all.extend(prerequisites);
        }
        all.sort();
        all.dedup();
        for p in all {
            text += &format!("\n{}:\n", make_path(p)?);
        }
        Ok(text)
    }
}

/// A path as make reads it in a rule: spaces, `#` and `:` escaped with a backslash, `$`
/// doubled. Refused when it holds a character make gives a meaning that no escape removes in
/// every make (a line break, tab, `;`, `=`, `%`, a wildcard or a backslash).
fn make_path(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if let Some(c) = text.chars().find(|c| "\n\r\t;=%*?[]\\".contains(*c)) {
        bail!(
            "cannot write a depfile: make cannot read the path {} (it holds {c:?}); rename it",
            path.display()
        );
    }
    Ok(text
        .replace('$', "$$")
        .replace(' ', "\\ ")
        .replace('#', "\\#")
        .replace(':', "\\:"))
}

/// Pruned over dense inference time, image by image: the median ratio and its 10th and 90th
/// percentiles (nearest rank), so that one noisy image does not move it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyRatio {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

/// The [`LatencyRatio`] of two runs over the same images in the same order; `None` when they
/// timed different numbers of images or none.
pub fn latency_ratio(dense_ms: &[f64], pruned_ms: &[f64]) -> Option<LatencyRatio> {
    if dense_ms.len() != pruned_ms.len() || dense_ms.is_empty() {
        return None;
    }
    let mut ratios: Vec<f64> = pruned_ms.iter().zip(dense_ms).map(|(p, d)| p / d).collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[(q * (ratios.len() - 1) as f64).round() as usize];
    Some(LatencyRatio {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    })
}

/// Whether the pruned model kept less than half of the dense model's accuracy (or none that can
/// be measured): flagged in the summary whether or not a gate is set.
pub fn lost_over_half(dense: f64, pruned: f64) -> bool {
    dense > 0.0 && (pruned.is_nan() || pruned < dense / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ratio_pairs_images_and_takes_percentiles() {
        let dense: Vec<f64> = (1..=11).map(|i| 10.0 * i as f64).collect();
        let mut pruned: Vec<f64> = dense.iter().map(|d| d / 2.0).collect();
        pruned[3] = dense[3] * 3.0; // one noisy image
        let r = latency_ratio(&dense, &pruned).unwrap();
        assert_eq!((r.median, r.p10, r.p90), (0.5, 0.5, 0.5));
        pruned[4] = dense[4] * 3.0;
        pruned[5] = dense[5];
        let r = latency_ratio(&dense, &pruned).unwrap();
        assert_eq!((r.median, r.p10, r.p90), (0.5, 0.5, 3.0));
        assert_eq!(latency_ratio(&dense, &pruned[1..]), None);
        assert_eq!(latency_ratio(&[], &[]), None);
    }

    #[test]
    fn losing_more_than_half_is_flagged() {
        assert!(lost_over_half(0.3496, 0.0884));
        assert!(lost_over_half(0.3496, f64::NAN));
        assert!(!lost_over_half(0.3496, 0.2583));
        assert!(!lost_over_half(0.0, 0.0));
    }
}
