//! One model through a list of passes to an output file: the unit of work of `shears prune` and of
//! every model of a pipeline.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::analysis::{Sparsity, model_stats};
use crate::backend::{self, BackendSpec, bench::random_input};
use crate::onnx::proto::ModelProto;
use crate::onnx::{self, Model, OutputPlan, SaveOptions};
use crate::passes::{PassConfig, PassReport, PruneChannels, record_provenance};

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
    /// What the job's [`Check`] found, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// Options of a job beyond its passes.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    pub save: SaveOptions,
    /// Also measure the zstd-compressed size of input and output.
    pub measure_zstd: bool,
    /// Run on the result before anything is written.
    pub check: Option<Check>,
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

fn footprint(
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

/// Runs `passes` on `model` and stages the result for `output` in `plan` (which has declared
/// it), recording the passes in the output's metadata. Nothing is in place until the caller
/// commits the plan.
pub fn prune_to_file(
    mut model: Model,
    passes: &[PassConfig],
    output: &Path,
    options: &JobOptions,
    plan: &mut OutputPlan,
) -> Result<JobReport> {
    for pass in passes {
        pass.validate()
            .with_context(|| format!("invalid options for pass {}", pass.name()))?;
    }
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
    let input = options.check.as_ref().map(|_| model.proto.clone());
    let reports = passes
        .iter()
        .map(|p| p.run(&mut model.proto))
        .collect::<Result<Vec<_>>>()?;
    let check = match (&options.check, &input) {
        (Some(check), Some(input)) => Some(
            (check.0)(input, &model.proto)
                .with_context(|| format!("check failed; {} not written", output.display()))?,
        ),
        _ => None,
    };
    record_provenance(&mut model.proto, passes)?;
    let saved = plan.stage_model(&model.proto, output, &options.save)?;
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
    let after = footprint(&model.proto, file_bytes, zstd_bytes)?;
    Ok(JobReport {
        input: model.path,
        output: output.to_path_buf(),
        passes: reports,
        before,
        after,
        check,
    })
}

/// Largest difference between the outputs of two models, and the largest |output| of the first.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutputDiff {
    pub max_abs_diff: f64,
    pub max_abs: f64,
}

/// Runs `reference` and `candidate` with tract on batch-1 inputs uniform in [0, 1) from each of
/// `seeds`, comparing every output; a non-finite difference counts as infinite.
pub fn compare_outputs(
    reference: &ModelProto,
    candidate: &ModelProto,
    seeds: &[u64],
) -> Result<OutputDiff> {
    let bytes = |m: &ModelProto| backend::encode_runnable(m, backend::Engine::Tract);
    let spec = BackendSpec::default();
    let mut a = backend::open(&spec, &bytes(reference)?).context("reference model")?;
    let mut b = backend::open(&spec, &bytes(candidate)?).context("candidate model")?;
    if a.input_shape() != b.input_shape() {
        bail!(
            "input shapes differ: {:?} and {:?}",
            a.input_shape(),
            b.input_shape()
        );
    }
    let mut diff = OutputDiff {
        max_abs_diff: 0.0,
        max_abs: 0.0,
    };
    for &seed in seeds {
        let x = random_input(a.input_shape(), seed);
        let (ya, yb) = (a.run_all(x.view())?, b.run_all(x.view())?);
        if ya.len() != yb.len() {
            bail!("{} outputs against {}", ya.len(), yb.len());
        }
        for (i, (p, q)) in ya.iter().zip(&yb).enumerate() {
            if p.shape() != q.shape() {
                bail!(
                    "output {i} has shape {:?} against {:?}",
                    q.shape(),
                    p.shape()
                );
            }
            for (u, v) in p.iter().zip(q) {
                let d = f64::from((u - v).abs());
                diff.max_abs_diff =
                    diff.max_abs_diff
                        .max(if d.is_nan() { f64::INFINITY } else { d });
                diff.max_abs = diff.max_abs.max(f64::from(u.abs()));
            }
        }
    }
    Ok(diff)
}

/// Seeds of the inputs [`masked_check`] runs.
pub const VERIFY_SEEDS: [u64; 2] = [0, 1];

/// Relative tolerance of [`masked_check`]: outputs may differ by this times max(1, max |output|).
pub const VERIFY_TOLERANCE: f64 = 1e-4;

/// The check of `shears prune --method channel --verify`: builds the masked dense model (the
/// input with exactly the channels `pass` removes zeroed, [`PruneChannels::mask`]) and requires
/// that the pruned model's outputs match it within [`VERIFY_TOLERANCE`] on the [`VERIFY_SEEDS`]
/// inputs.
pub fn masked_check(pass: PruneChannels) -> Check {
    Check::new(move |input, output| {
        let masked = masked_model(&pass, input)?;
        let diff = compare_outputs(&masked, output, &VERIFY_SEEDS)?;
        let limit = VERIFY_TOLERANCE * diff.max_abs.max(1.0);
        if diff.max_abs_diff > limit {
            bail!(
                "the pruned model's outputs differ from the masked model's by {:.3e} (max |output| \
                 {:.4}, limit {limit:.3e}): the surgery changed what the network computes",
                diff.max_abs_diff,
                diff.max_abs
            );
        }
        Ok(format!(
            "verified against the masked dense model with tract on {} random inputs: max |diff| \
             {:.3e}, max |output| {:.4}, limit {limit:.3e}",
            VERIFY_SEEDS.len(),
            diff.max_abs_diff,
            diff.max_abs
        ))
    })
}

/// The input with exactly the channels `pass` removes zeroed ([`PruneChannels::mask`]).
pub fn masked_model(pass: &PruneChannels, input: &ModelProto) -> Result<ModelProto> {
    let mut masked = input.clone();
    let graph = masked.graph.as_mut().context("the model has no graph")?;
    pass.mask(graph)?;
    Ok(masked)
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
