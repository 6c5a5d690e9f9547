//! `shears bench`: inference latency of one or more models on one backend, side by side.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use super::common::{BackendArgs, load_model};
use super::ui::Ui;
use shears::backend::bench::{Contender, Timing, random_input, time_in_turns};
use shears::backend::{self, BackendSpec};
use shears::onnx::OutputPlan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX models to time; ratios are against the first.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Timed inferences per model. Models take turns of up to 5 timed runs, each turn after one
    /// untimed run.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Untimed warm-up inferences per model, before the timed ones.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Seed of the random input (uniform in [0, 1), the model's input shape, batch 1).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    device: String,
    /// Threads per inference (tract always runs on one).
    threads: usize,
    seed: u64,
    models: Vec<ModelResult>,
}

/// One model's result; `error` is set when it could not be timed.
#[derive(Debug, Serialize)]
struct ModelResult {
    model: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_shape: Option<[usize; 4]>,
    /// Time to build the session, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timing: Option<Timing>,
    /// Median latency over the first model's median.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ratio: Option<f64>,
    /// Fastest run over the first model's fastest run. Other load on the machine only ever adds
    /// time, and the same absolute delay weighs more on a faster model, so on a busy machine the
    /// median ratio of a smaller model drifts towards 1 while the minimum ratio holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    min_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Opens every model, times them in turns ([`time_in_turns`]), prints the table, writes the
/// JSON; a model that fails is reported and the others still run (exit code 2 at the end).
pub fn run(args: &Args, ui: &Ui) -> anyhow::Result<ExitCode> {
    let spec = args.backend.spec()?;
    let mut plan = OutputPlan::new();
    for model in &args.models {
        plan.input("model", model)?;
    }
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    let progress = ui.progress();
    let runs =
        NonZeroUsize::new(usize::try_from(args.runs)?).context("--runs must be at least 1")?;
    let warmup = usize::try_from(args.warmup)?;
    let mut results = Vec::with_capacity(args.models.len());
    let mut contenders = Vec::with_capacity(args.models.len());
    let mut opened = Vec::with_capacity(args.models.len());
    for (index, model) in args.models.iter().enumerate() {
        ui.info(format_args!(
            "[{}/{}] opening {} on {spec}",
            index + 1,
            args.models.len(),
            model.display()
        ));
        match open_model(&spec, model, args.seed, ui) {
            Ok((result, contender)) => {
                opened.push(index);
                results.push(result);
                contenders.push(contender);
            }
            Err(err) => results.push(failed(model, &err)),
        }
    }
    ui.info(format_args!(
        "timing {} model(s) in turns: {warmup} warm-up and {runs} timed runs each",
        contenders.len()
    ));
    let timings = time_in_turns(&mut contenders, warmup, runs, progress);
    for (index, timing) in opened.into_iter().zip(timings) {
        let model = &args.models[index];
        match timing {
            Ok(timing) => results[index].timing = Some(timing),
            Err(err) => results[index] = failed(model, &err.context(model.display().to_string())),
        }
    }
    let baseline = results.first().and_then(|first| first.timing.clone());
    for result in &mut results {
        if let (Some(base), Some(t)) = (&baseline, &result.timing) {
            result.latency_ratio = Some(t.median_ms / base.median_ms);
            result.min_ratio = Some(t.min_ms / base.min_ms);
        }
    }
    let report = Report {
        backend: spec.engine().to_string(),
        device: spec.device().to_string(),
        threads: spec.threads(),
        seed: args.seed,
        models: results,
    };
    print_table(&report, args)?;
    if let Some(path) = &args.json {
        plan.stage_json(path, &report)?;
        plan.commit()?;
    }
    let failures = report.models.iter().filter(|m| m.error.is_some()).count();
    if failures > 0 {
        bail!(
            "{failures} of {} models could not be timed",
            report.models.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads `model` and opens its session: the result so far (timing still missing) and what
/// [`time_in_turns`] runs.
fn open_model(
    spec: &BackendSpec,
    model: &Path,
    seed: u64,
    ui: &Ui,
) -> anyhow::Result<(ModelResult, Contender)> {
    let loaded = load_model(model, ui)?;
    let bytes = backend::runnable_bytes(&loaded, spec.engine())?;
    let start = Instant::now();
    let session = backend::open(spec, &bytes).with_context(|| model.display().to_string())?;
    let session_ms = start.elapsed().as_secs_f64() * 1e3;
    let input = random_input(session.input_shape(), seed);
    let result = ModelResult {
        model: model.to_path_buf(),
        provider: Some(session.provider().to_string()),
        input_shape: Some(session.input_shape()),
        session_ms: Some(session_ms),
        timing: None,
        latency_ratio: None,
        min_ratio: None,
        error: None,
    };
    Ok((
        result,
        Contender {
            backend: session,
            input,
        },
    ))
}

fn failed(model: &Path, err: &anyhow::Error) -> ModelResult {
    super::diagnostic(format_args!("error: {err:#}"));
    ModelResult {
        model: model.to_path_buf(),
        provider: None,
        input_shape: None,
        session_ms: None,
        timing: None,
        latency_ratio: None,
        min_ratio: None,
        error: Some(format!("{err:#}")),
    }
}

/// One header line, then one row per model: latency statistics in ms and, for two or more
/// models, the median and minimum latency ratios against the first.
fn print_table(report: &Report, args: &Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "backend {} on {}, {} thread(s); {} warm-up + {} timed runs per model, random input (seed {})",
        report.backend, report.device, report.threads, args.warmup, args.runs, report.seed
    )?;
    let name_width = report
        .models
        .iter()
        .map(|m| m.model.display().to_string().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let with_ratio = report.models.len() > 1;
    write!(
        out,
        "{:<name_width$}  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "model", "provider", "median", "p10", "p90", "min", "max"
    )?;
    if with_ratio {
        write!(out, " {:>8} {:>9}", "ratio", "min ratio")?;
    }
    writeln!(out)?;
    for m in &report.models {
        let name = m.model.display().to_string();
        match &m.timing {
            Some(t) => {
                write!(
                    out,
                    "{name:<name_width$}  {:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    m.provider.as_deref().unwrap_or(""),
                    t.median_ms,
                    t.p10_ms,
                    t.p90_ms,
                    t.min_ms,
                    t.max_ms
                )?;
                if let (true, Some(ratio), Some(min_ratio)) =
                    (with_ratio, m.latency_ratio, m.min_ratio)
                {
                    write!(out, " {ratio:>7.3}x {min_ratio:>8.3}x")?;
                }
                writeln!(out)?;
            }
            None => writeln!(out, "{name:<name_width$}  failed (error above)")?,
        }
    }
    writeln!(
        out,
        "(milliseconds per inference{})",
        if with_ratio {
            "; ratio = median latency / median of the first model; min ratio = the same for the \
             fastest runs, which other load on the machine disturbs least"
        } else {
            ""
        }
    )?;
    Ok(())
}
