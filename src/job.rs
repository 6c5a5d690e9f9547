//! One model through a list of passes to an output file: the one path `shears prune` and every
//! model of a pipeline take. In order: the options are validated, a rewrite that would lose data
//! is refused, each pass runs and proves its own result (against the reference model it returns,
//! such as channel surgery's masked dense model) and leaves a consistent graph ([`Consistency`]),
//! the passes are recorded in the output's metadata, and the outputs are written atomically, only
//! when every check passed.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::analysis::{Sparsity, model_stats};
use crate::backend::BackendSpec;
use crate::calib::{Calibration, CalibrationSet, Calibrator};
use crate::digest::{hex, sha256_hex};
use crate::eval::validator::{GateMetric, ValidationIdentity};
use crate::graph::Consistency;
use crate::onnx::metadata::{self, BUILD_KEY, CALIBRATION_KEY};
use crate::onnx::proto::ModelProto;
use crate::onnx::{self, Model, OutputPlan, SaveOptions};
use crate::passes::{PassConfig, PassContext, PassReport, Proof, record_provenance};
use crate::progress::Progress;
use crate::verify::{Probe, masked_proof};

/// Counts that describe a model before or after pruning.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub params: u64,
    pub nonzero_params: u64,
    pub macs: u64,
    pub sparsity: Sparsity,
    /// Bytes of the `.onnx` file (plus its external data file, if any).
    pub file_bytes: u64,
    /// Bytes of the same after zstd compression (level 3), when measured.
    pub zstd_bytes: Option<u64>,
}

/// What [`prune_to_file`] did.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub passes: Vec<PassReport>,
    pub before: Footprint,
    pub after: Footprint,
    /// Things the caller should tell the user (e.g. a forced lossy rewrite).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the job's [`Check`] found, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// Options of a job beyond its passes.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub save: SaveOptions,
    /// Also measure the zstd-compressed size of input and output.
    pub measure_zstd: bool,
    /// Rewrite a model holding fields the schema does not know (they are lost).
    pub force: bool,
    /// Run each pass's proof of its result (on by default).
    pub verify: bool,
    /// The inputs proofs run the models on.
    pub probe: Probe,
    /// Also write here the reference model of the job's one pass that returns one (the masked
    /// dense model of channel pruning).
    pub emit_masked: Option<PathBuf>,
    /// Run on the result before anything is written.
    pub check: Option<Check>,
    /// The images passes that recover accuracy calibrate on.
    pub calibration: Option<CalibrationSet>,
    /// The build key to record (default: [`BuildInputs::new`]'s).
    pub build_key: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            save: SaveOptions::default(),
            measure_zstd: false,
            force: false,
            verify: true,
            probe: Probe::default(),
            emit_masked: None,
            check: None,
            calibration: None,
            build_key: None,
        }
    }
}

/// A check of a job's result against its input, run after the passes and before the output is
/// written: an error fails the job and nothing is written. Returns a line for the report.
#[derive(Clone)]
pub struct Check(Arc<CheckFn>);

/// What a [`Check`] calls: `(input, result)` to a report line.
type CheckFn = dyn Fn(&ModelProto, &ModelProto) -> Result<String> + Send + Sync;

impl Check {
    pub fn new(
        f: impl Fn(&ModelProto, &ModelProto) -> Result<String> + Send + Sync + 'static,
    ) -> Self {
        Check(Arc::new(f))
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Check(..)")
    }
}

/// The counts of `model`, whose file (with external data) is `file_bytes` long.
pub fn footprint(
    model: &onnx::proto::ModelProto,
    file_bytes: u64,
    zstd_bytes: Option<u64>,
) -> Result<Footprint> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let stats = model_stats(graph)?;
    let zeros: u64 = stats
        .layers
        .iter()
        .map(|l| l.weight_zeros + l.bias_zeros)
        .sum();
    Ok(Footprint {
        params: stats.params,
        nonzero_params: stats.params - zeros,
        macs: stats.macs,
        sparsity: stats.sparsity,
        file_bytes,
        zstd_bytes,
    })
}

/// Refuses to rewrite a model holding what the schema does not know, unless `force`; then
/// returns the warning to give.
pub fn ensure_lossless_rewrite(model: &Model, force: bool) -> Result<Option<String>> {
    let Some(first) = model.schema_findings.first() else {
        return Ok(None);
    };
    if !force {
        return Err(crate::Needs::LossyRewrite {
            model: model.path.clone(),
            finding: first.to_string(),
        }
        .into());
    }
    Ok(Some(format!(
        "{}: rewriting anyway, as forced; what the schema does not know is lost",
        model.path.display()
    )))
}

/// What a validation recorded in an output depends on: the figure gated and the validation's
/// settings and data ([`ValidationIdentity`]).
#[derive(Debug, Clone, Serialize)]
pub struct GatedValidation {
    pub metric: GateMetric,
    pub identity: ValidationIdentity,
}

/// What an output is derived from. Its [`BuildInputs::key`] changes exactly when one of these
/// does: the input's bytes, the passes and their options, the calibration images' bytes, the
/// storage options, the shears version, and (for pipelines that record a validation) what the
/// validation depends on.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInputs<'a> {
    pub shears: &'static str,
    /// SHA-256 of the input's `.onnx` bytes and then its external data files', in order.
    pub input_sha256: String,
    pub passes: &'a [PassConfig],
    /// [`CalibrationSet::set_sha256`], when a pass calibrates.
    pub calibration_sha256: Option<String>,
    pub external_data: Option<&'a str>,
    /// The settings and data a recorded validation depends on.
    pub validation: Option<&'a GatedValidation>,
}

impl<'a> BuildInputs<'a> {
    /// The inputs of running `passes` on `model` with `options` (no validation recorded).
    pub fn new(model: &Model, passes: &'a [PassConfig], options: &'a JobOptions) -> Self {
        BuildInputs {
            shears: env!("CARGO_PKG_VERSION"),
            input_sha256: model_sha256(model),
            passes,
            calibration_sha256: options
                .calibration
                .as_ref()
                .filter(|_| passes.iter().any(PassConfig::needs_calibration))
                .map(CalibrationSet::set_sha256),
            external_data: options.save.external_data.as_deref(),
            validation: None,
        }
    }

    /// SHA-256 (hex) of these inputs as JSON.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("build inputs serialize");
        sha256_hex(&json)
    }
}

/// SHA-256 (hex) of a model's file bytes followed by its external data files' bytes.
pub fn model_sha256(model: &Model) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&model.bytes[..]);
    for data in &model.external_data {
        hasher.update(&data[..]);
    }
    hex(&hasher.finalize())
}

/// The build key an output records under [`BUILD_KEY`], when it records one and is still the
/// model it recorded: the SHA-256 of its encoding without that entry ([`seal`]) matches, so
/// weights changed in place or an edited recorded validation are not vouched for.
pub fn recorded_build_key(model: &ModelProto) -> Option<String> {
    let record: serde_json::Value = serde_json::from_str(metadata::get(model, BUILD_KEY)?).ok()?;
    let key = record.get("key")?.as_str()?;
    let recorded = record.get("model_sha256")?.as_str()?;
    let mut unsealed = model.clone();
    unsealed.metadata_props.retain(|p| p.key() != BUILD_KEY);
    (sha256_hex(&onnx::encode(&unsealed)) == recorded).then(|| key.to_string())
}

/// Records `key` under [`BUILD_KEY`] (last), with the SHA-256 of the model encoded without that
/// entry: what [`recorded_build_key`] checks.
fn seal(model: &mut ModelProto, key: &str) {
    model.metadata_props.retain(|p| p.key() != BUILD_KEY);
    let model_sha256 = sha256_hex(&onnx::encode(model));
    metadata::set(
        model,
        BUILD_KEY,
        &serde_json::json!({ "key": key, "model_sha256": model_sha256 }).to_string(),
    );
}

/// Runs `passes` on `model`, each proving its result when `options.verify` is set, and stages
/// the result for `output` in `plan` (which has declared it), with the masked model when asked,
/// recording the passes (and the calibration set, when one was used) in the output's metadata.
/// Nothing is in place until the caller commits the plan. Calibration reports to `progress`.
pub fn prune_to_file(
    model: Model,
    passes: &[PassConfig],
    output: &Path,
    options: &JobOptions,
    progress: &dyn Progress,
    plan: &mut OutputPlan,
) -> Result<JobReport> {
    let pruned = prune(model, passes, output, options, progress)?;
    stage(pruned, output, options, plan)
}

/// A model after its passes, with its metadata recorded, not yet written.
pub struct Pruned {
    /// The result; callers may add metadata before [`stage`] writes it.
    pub proto: ModelProto,
    /// Recorded by [`stage`], sealing the model as it is then.
    build_key: String,
    input: PathBuf,
    reports: Vec<PassReport>,
    masked: Option<ModelProto>,
    before: Footprint,
    warnings: Vec<String>,
    check: Option<String>,
}

/// Runs `passes` on `model` (see [`prune_to_file`]) and records in the result's metadata the
/// passes and the calibration set when one was used; [`stage`] adds the build key
/// (`options.build_key`, or [`BuildInputs::new`]'s). `output` only names the file in messages.
pub fn prune(
    mut model: Model,
    passes: &[PassConfig],
    output: &Path,
    options: &JobOptions,
    progress: &dyn Progress,
) -> Result<Pruned> {
    for pass in passes {
        pass.validate()
            .with_context(|| format!("invalid options for pass {}", pass.name()))?;
    }
    let warnings: Vec<String> = ensure_lossless_rewrite(&model, options.force)?
        .into_iter()
        .collect();
    let input_zstd = options
        .measure_zstd
        .then(|| {
            std::iter::once(&model.bytes)
                .chain(&model.external_data)
                .map(|bytes| zstd_size(&bytes[..]))
                .sum::<Result<u64>>()
        })
        .transpose()?;
    let before = footprint(&model.proto, model.total_size(), input_zstd)?;
    let build_key = match &options.build_key {
        Some(key) => key.clone(),
        None => BuildInputs::new(&model, passes, options).key(),
    };
    let input = options.check.as_ref().map(|_| model.proto.clone());
    let calibrated = passes.iter().any(PassConfig::needs_calibration);
    let mut calibrator = match (&options.calibration, calibrated) {
        (Some(set), true) => Some(Calibrator::new(
            set.clone(),
            BackendSpec::default(),
            progress,
        )),
        _ => None,
    };
    let mut reports = Vec::with_capacity(passes.len());
    let mut masked = None;
    let mut state = Consistency::of(
        model
            .proto
            .graph
            .as_ref()
            .context("the model has no graph")?,
    );
    let mut references = 0;
    let input_model = passes
        .iter()
        .any(|p| p.pass().needs_input_model())
        .then(|| model.proto.clone());
    for pass in passes {
        let not_written = || format!("{} not written", output.display());
        let mut cx = PassContext {
            calibration: calibrator.as_mut().map(|c| c as &mut dyn Calibration),
            images: options.calibration.as_ref(),
            input_model: input_model.as_ref(),
            progress,
            wants_reference: options.verify || options.emit_masked.is_some(),
        };
        let (report, masked_model) =
            run_pass(pass, &mut model.proto, options, &mut cx).with_context(not_written)?;
        references += usize::from(masked_model.is_some());
        let next = Consistency::of(
            model
                .proto
                .graph
                .as_ref()
                .context("the model has no graph")?,
        );
        state
            .ensure_kept(&next, pass.name())
            .with_context(not_written)?;
        state = next;
        reports.push(report);
        masked = masked.or(masked_model);
    }
    if options.emit_masked.is_some() && references != 1 {
        bail!(
            "a masked model can be written for exactly one pass that makes a reference model, \
             not {references}; {} not written",
            output.display()
        );
    }
    let check = match (&options.check, &input) {
        (Some(check), Some(input)) => Some(
            (check.0)(input, &model.proto)
                .with_context(|| format!("check failed; {} not written", output.display()))?,
        ),
        _ => None,
    };
    record_provenance(&mut model.proto, passes)?;
    if let Some(calibrator) = &calibrator {
        metadata::set(
            &mut model.proto,
            CALIBRATION_KEY,
            &calibrator.set().record().to_string(),
        );
    }
    Ok(Pruned {
        proto: model.proto,
        build_key,
        input: model.path,
        reports,
        masked,
        before,
        warnings,
        check,
    })
}

/// Stages `pruned` for `output` in `plan` (which has declared it), sealed with its build key
/// ([`seal`]), with the masked model when asked, and reports what the job did.
pub fn stage(
    mut pruned: Pruned,
    output: &Path,
    options: &JobOptions,
    plan: &mut OutputPlan,
) -> Result<JobReport> {
    if let (Some(path), Some(masked)) = (&options.emit_masked, &pruned.masked) {
        plan.stage_model(masked, path, &SaveOptions::default())
            .with_context(|| format!("writing the masked model {}", path.display()))?;
    }
    seal(&mut pruned.proto, &pruned.build_key);
    let saved = plan.stage_model(&pruned.proto, output, &options.save)?;
    let mut file_bytes = saved.bytes;
    let mut zstd_bytes = None;
    if options.measure_zstd {
        let mut total = zstd_size(plan.open_staged(&saved.path)?)?;
        if let Some((data, size)) = &saved.external_data {
            file_bytes += size;
            total += zstd_size(plan.open_staged(data)?)?;
        }
        zstd_bytes = Some(total);
    }
    let after = footprint(&pruned.proto, file_bytes, zstd_bytes)?;
    Ok(JobReport {
        input: pruned.input,
        output: output.to_path_buf(),
        passes: pruned.reports,
        before: pruned.before,
        after,
        warnings: pruned.warnings,
        check: pruned.check,
    })
}

/// Runs one pass on `model` and, when it returns a reference model, proves its result against
/// it ([`masked_proof`]) unless verification is off; returns the report and the reference model.
fn run_pass(
    pass: &PassConfig,
    model: &mut ModelProto,
    options: &JobOptions,
    cx: &mut PassContext,
) -> Result<(PassReport, Option<ModelProto>)> {
    let output = pass
        .pass()
        .run(model, cx)
        .with_context(|| format!("pass {} failed", pass.name()))?;
    let Some(reference) = output.reference else {
        let report = PassReport {
            pass: pass.name().to_string(),
            summary: output.summary,
            proof: None,
        };
        return Ok((report, None));
    };
    let proof = if options.verify {
        masked_proof(&reference, model, &options.probe)?
    } else {
        Proof {
            summary: format!(
                "not verified ({} channels masked)",
                reference.masked_channels
            ),
            max_rel_diff: None,
        }
    };
    let report = PassReport {
        pass: pass.name().to_string(),
        summary: output.summary,
        proof: Some(proof),
    };
    Ok((report, Some(reference.model)))
}

/// Size of `data` compressed with zstd at level 3.
fn zstd_size(data: impl Read) -> Result<u64> {
    let mut counter = CountingSink(0);
    zstd::stream::copy_encode(data, &mut counter, 3).context("zstd compression failed")?;
    Ok(counter.0)
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
