//! Running a pipeline: resolve its models, run each through the passes (in parallel, each on its
//! own), and collect one outcome per model. A failing model does not stop the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use super::spec::{ModelSource, PipelineSpec, resolve};
use crate::job::{JobOptions, JobReport, prune_to_file};
use crate::onnx::{self, ensure_distinct_output};
use crate::progress::Progress;

/// One model of a pipeline run.
#[derive(Debug, Serialize)]
pub struct ModelOutcome {
    pub model: PathBuf,
    pub output: PathBuf,
    /// The job report, or the error (with its causes) that stopped this model.
    #[serde(flatten)]
    pub result: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok { report: JobReport },
    Failed { error: String },
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct PipelineRun {
    pub pipeline: PathBuf,
    pub passes: Vec<String>,
    pub models: Vec<ModelOutcome>,
}

impl PipelineRun {
    pub fn failures(&self) -> usize {
        self.models
            .iter()
            .filter(|m| matches!(m.result, Outcome::Failed { .. }))
            .count()
    }
}

/// The models a spec names, with their output paths. Errors when a pattern matches nothing or
/// two models would write the same output.
pub fn plan(spec: &PipelineSpec, base: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut inputs = Vec::new();
    for source in &spec.models {
        match source {
            ModelSource::Path(text) => {
                let path = resolve(base, text)?;
                let pattern = path.to_string_lossy();
                if pattern.contains(['*', '?', '[']) {
                    let mut matched: Vec<PathBuf> = glob::glob(&pattern)
                        .with_context(|| format!("invalid glob pattern {text:?}"))?
                        .collect::<Result<_, _>>()?;
                    if matched.is_empty() {
                        bail!("model pattern {text:?} matches no file");
                    }
                    matched.sort();
                    inputs.extend(matched);
                } else {
                    inputs.push(path);
                }
            }
        }
    }
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut planned = Vec::new();
    for input in inputs {
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let output = resolve(base, &spec.output.replace("{stem}", &stem))?;
        if let Some(other) = seen.insert(output.clone(), input.clone()) {
            bail!(
                "models {} and {} would both be written to {} (use {{stem}} in `output`)",
                other.display(),
                input.display(),
                output.display()
            );
        }
        planned.push((input, output));
    }
    Ok(planned)
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
    let options = JobOptions {
        measure_zstd: true,
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    progress.start("models", Some(planned.len() as u64));
    let models = pool.install(|| {
        planned
            .par_iter()
            .map(|(input, output)| {
                let result = run_one(spec, input, output, force, &options);
                progress.advance(1);
                ModelOutcome {
                    model: input.clone(),
                    output: output.clone(),
                    result: match result {
                        Ok(report) => Outcome::Ok { report },
                        Err(e) => Outcome::Failed {
                            error: format!("{e:#}"),
                        },
                    },
                }
            })
            .collect()
    });
    progress.finish();
    Ok(PipelineRun {
        pipeline: spec_path.to_path_buf(),
        passes: spec.passes.iter().map(|p| p.name().to_string()).collect(),
        models,
    })
}

fn run_one(
    spec: &PipelineSpec,
    input: &Path,
    output: &Path,
    force: bool,
    options: &JobOptions,
) -> Result<JobReport> {
    let model = onnx::load(input)?;
    if !model.schema_findings.is_empty() && !force {
        bail!(
            "{} holds data this version of shears cannot preserve ({}); run with --force to rewrite it anyway",
            input.display(),
            model.schema_findings[0]
        );
    }
    ensure_distinct_output(input, output)?;
    if let Some(folder) = output.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    prune_to_file(model, &spec.passes, output, options)
}
