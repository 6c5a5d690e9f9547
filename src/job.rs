//! One model through a list of passes to an output file: the unit of work of `shears prune` and of
//! every model of a pipeline.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::analysis::{Sparsity, model_stats};
use crate::onnx::{self, Model, SaveOptions};
use crate::passes::{PassConfig, PassReport, record_provenance};

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
}

/// Options of a job beyond its passes.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    pub save: SaveOptions,
    /// Also measure the zstd-compressed size of input and output.
    pub measure_zstd: bool,
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

/// Runs `passes` on `model` and writes the result to `output` atomically, recording the passes
/// in the output's metadata. The caller has checked that `output` is not the input.
pub fn prune_to_file(
    mut model: Model,
    passes: &[PassConfig],
    output: &Path,
    options: &JobOptions,
) -> Result<JobReport> {
    for pass in passes {
        pass.validate()
            .with_context(|| format!("invalid options for pass {}", pass.name()))?;
    }
    let input_zstd = options
        .measure_zstd
        .then(|| zstd_size(&model.bytes[..]))
        .transpose()?;
    let before = footprint(&model.proto, model.file_size(), input_zstd)?;
    let reports = passes
        .iter()
        .map(|p| p.run(&mut model.proto))
        .collect::<Result<Vec<_>>>()?;
    record_provenance(&mut model.proto, passes)?;
    let saved = onnx::save(&model.proto, output, &options.save)?;
    let mut file_bytes = saved.bytes;
    let mut zstd_bytes = None;
    if options.measure_zstd {
        let mut total = zstd_size(std::fs::File::open(&saved.path)?)?;
        if let Some((data, size)) = &saved.external_data {
            file_bytes += size;
            total += zstd_size(std::fs::File::open(data)?)?;
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
    })
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
