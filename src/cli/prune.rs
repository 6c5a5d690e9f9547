//! `shears prune MODEL -o OUT`: run pruning passes on a model and write the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::common::{BackendArgs, CalibArgs, load_model};
use super::ui::Ui;
use shears::analysis::grouped;
use shears::analysis::model_stats;
use shears::calib::CalibrationSet;
use shears::eval::nms::NmsConfig;
use shears::eval::validate::{DataSource, data_files, load_dataset};
use shears::eval::validator::{ValSettings, Validator};
use shears::job;
use shears::job::{Footprint, JobOptions, JobReport, prune_to_file};
use shears::onnx::Model;
use shears::onnx::{OutputPlan, SaveOptions};
use shears::passes::{
    CalibOrder, Importance, Method, MethodKind, PassConfig, Recover, Scope, SearchAxis, StoreSparse,
};
use shears::pipeline::{Budget, Found, GateMetric, SearchRecord, Searched, recipe, search};
use shears::progress::{Silent, phase};
use shears::verify::Probe;

/// Prune the convolution weights of a model and write a new model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model to prune (never modified).
    pub model: PathBuf,
    /// Where to write the pruned model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Pruning method.
    #[arg(long, value_enum, default_value_t = MethodArg::Magnitude)]
    pub method: MethodArg,
    /// Fraction of weights (channels, with `--method channel`) to remove, in [0, 1] (not with
    /// --pattern); with --max-map-drop, the largest the search tries [default: 1 - resolution].
    #[arg(
        long,
        required_unless_present_any = ["pattern", "target_macs", "max_map_drop"],
        conflicts_with_all = ["pattern", "target_macs"],
        allow_negative_numbers = true
    )]
    pub amount: Option<f64>,
    /// Instead of an amount: search the largest amount (a multiple of --resolution) whose
    /// validated drop of --metric on --data stays within this budget.
    #[arg(
        long,
        value_name = "DROP",
        requires = "data",
        conflicts_with = "pattern"
    )]
    pub max_map_drop: Option<f64>,
    /// With --max-map-drop and --method channel --recover obs: search the MAC target
    /// (--target-macs) instead of the amount.
    #[arg(long, requires = "max_map_drop", conflicts_with = "target_macs")]
    pub search_macs: bool,
    /// Step between the amounts the budget search may try.
    #[arg(long, default_value_t = 0.01, requires = "max_map_drop")]
    pub resolution: f64,
    /// With --max-map-drop: also write a pipeline file that reproduces the model found, byte
    /// for byte (`shears run FILE --force`).
    #[arg(long, value_name = "FILE", requires = "max_map_drop")]
    pub recipe: Option<PathBuf>,
    /// Validation data of the budget search: a YOLOv5 data YAML (its `val` split).
    #[arg(long, value_name = "DATA.yaml", requires = "max_map_drop")]
    pub data: Option<PathBuf>,
    /// COCO annotations for --metric coco_ap [default: the dataset's own, if any].
    #[arg(long, requires = "max_map_drop")]
    pub gt: Option<PathBuf>,
    /// The figure the budget applies to (the pipeline gates' default).
    #[arg(long, value_enum, default_value_t = MetricArg::Map50_95, requires = "max_map_drop")]
    pub metric: MetricArg,
    /// NMS IoU threshold of the budget search's validation (val's default).
    #[arg(long, default_value_t = NmsConfig::default().iou_thres, requires = "max_map_drop")]
    pub iou: f64,
    /// Confidence threshold of the budget search's validation.
    #[arg(long, default_value_t = NmsConfig::default().conf_thres, requires = "max_map_drop")]
    pub conf: f32,
    /// Backend of the budget search's validation.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// With `--method channel --recover obs`: prune until the model has at most this fraction of
    /// its dense MACs, spending channels where they cost least.
    #[arg(long, value_name = "F")]
    pub target_macs: Option<f64>,
    /// Whether the fraction applies to each layer (channel group) or to all together.
    #[arg(long, value_enum, default_value_t = ScopeArg::Layer)]
    pub scope: ScopeArg,
    /// Channel importance (`--method channel`; default l1).
    #[arg(long, value_enum)]
    pub importance: Option<ImportanceArg>,
    /// Seed of `--importance random`, a test aid (`--method channel`).
    #[arg(long, hide = true, default_value_t = 0)]
    pub seed: u64,
    /// Kept channel counts are multiples of this (`--method channel`).
    #[arg(long, default_value_t = 8)]
    pub round_to: usize,
    /// No channel group keeps fewer channels (`--method channel`; default max(8, round-to)).
    #[arg(long)]
    pub min_channels: Option<usize>,
    /// Skip checking the channel-pruned model against the masked dense model.
    #[arg(long)]
    pub no_verify: bool,
    /// Also write the masked dense model (the input with the removed channels zeroed) here.
    #[arg(long)]
    pub emit_masked: Option<PathBuf>,
    /// Verify on the first images of this dataset (a YOLOv5 data YAML) instead of random inputs.
    #[arg(long, value_name = "DATA.yaml")]
    pub verify_data: Option<PathBuf>,
    /// Dataset root replacing the `path:` of the `--verify-data` and `--data` YAMLs.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// N:M semi-structured sparsity instead of a fraction, e.g. 2:4.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Only prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Never prune layers whose node name matches this regular expression (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// How to store pruned weights.
    #[arg(long, value_enum, default_value_t = Storage::Dense)]
    pub storage: Storage,
    /// Keep tensor data in this file beside the output (automatic for models over 2 GiB).
    #[arg(long)]
    pub external_data: Option<String>,
    /// Skip measuring the zstd-compressed sizes.
    #[arg(long)]
    pub no_zstd: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Rewrite a model even if it holds fields this version of shears does not know (they are lost).
    #[arg(long)]
    pub force: bool,
    /// How the remaining weights compensate: `stats` corrects each pruned layer's output mean
    /// and spread, `obs` re-solves the layers (both need --calib).
    #[arg(long, value_enum, default_value_t = RecoverArg::None)]
    pub recover: RecoverArg,
    #[command(flatten)]
    pub calibration: CalibArgs,
    /// Which inputs `--recover obs` solves each layer from.
    #[arg(long, value_enum)]
    pub calib_order: Option<CalibOrderArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    /// Zero the weights of smallest magnitude (unstructured or N:M).
    Magnitude,
    /// Remove whole Conv output channels (structured, with graph surgery).
    Channel,
}

/// `--metric`: the CLI's spelling of [`GateMetric`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MetricArg {
    /// COCOeval AP@[.5:.95] (needs COCO annotations).
    CocoAp,
    /// val.py's mAP@.5:.95.
    #[value(name = "map50_95")]
    Map50_95,
    /// val.py's mAP@.5.
    Map50,
}

impl From<MetricArg> for GateMetric {
    fn from(metric: MetricArg) -> Self {
        match metric {
            MetricArg::CocoAp => GateMetric::CocoAp,
            MetricArg::Map50_95 => GateMetric::Map50_95,
            MetricArg::Map50 => GateMetric::Map50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// Pruned weights stay dense tensors with zeros.
    Dense,
    /// Weights that are sparse enough are stored as ONNX sparse initializers.
    Sparse,
}

/// `--scope`: the CLI's spelling of [`Scope`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    /// The fraction of each layer (channel group).
    Layer,
    /// The fraction of all selected layers (channel groups) together.
    Global,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Layer => Scope::Layer,
            ScopeArg::Global => Scope::Global,
        }
    }
}

/// `--recover`: the CLI's spelling of [`Recover`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RecoverArg {
    /// Nothing: the remaining weights keep their values.
    None,
    /// Correct every Conv's output statistics toward the dense model's (magnitude pruning).
    Stats,
    /// Re-solve the layers by OBS from calibration statistics, then correct the statistics.
    Obs,
}

impl From<RecoverArg> for Recover {
    fn from(recover: RecoverArg) -> Self {
        match recover {
            RecoverArg::None => Recover::None,
            RecoverArg::Stats => Recover::Stats,
            RecoverArg::Obs => Recover::Obs,
        }
    }
}

/// `--calib-order`: the CLI's spelling of [`CalibOrder`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CalibOrderArg {
    /// Every layer from the dense model's inputs.
    Independent,
    /// Stages of graph order, each from the model pruned so far, aiming at the dense outputs.
    Sequential,
}

impl From<CalibOrderArg> for CalibOrder {
    fn from(order: CalibOrderArg) -> Self {
        match order {
            CalibOrderArg::Independent => CalibOrder::Independent,
            CalibOrderArg::Sequential => CalibOrder::Sequential,
        }
    }
}

/// `--importance`: the CLI's spelling of [`Importance`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportanceArg {
    /// Sum of |w| of the channel's filters over all producers.
    L1,
    /// Euclidean norm of the channel's filters over all producers.
    L2,
    /// Seeded random importances: a test aid for trying many channel selections.
    #[value(hide = true)]
    Random,
}

impl From<ImportanceArg> for Importance {
    fn from(importance: ImportanceArg) -> Self {
        match importance {
            ImportanceArg::L1 => Importance::L1,
            ImportanceArg::L2 => Importance::L2,
            ImportanceArg::Random => Importance::Random,
        }
    }
}

impl Args {
    /// The method `--method`, `--scope`, `--pattern` and `--recover` name, in the library's
    /// vocabulary.
    fn method(&self) -> Result<Method> {
        let kind = match (self.method, &self.pattern) {
            (MethodArg::Channel, Some(_)) => bail!("--pattern does not apply to --method channel"),
            (MethodArg::Channel, None) => MethodKind::Channel,
            (MethodArg::Magnitude, Some(pattern)) => MethodKind::parse_pattern(pattern)?,
            (MethodArg::Magnitude, None) => match self.scope.into() {
                Scope::Layer => MethodKind::Layer,
                Scope::Global => MethodKind::Global,
            },
        };
        Ok(Method {
            kind,
            recover: self.recover.into(),
            finetune: false,
        })
    }

    /// The passes these flags ask for.
    pub fn passes(&self) -> Result<Vec<PassConfig>> {
        let channel = matches!(self.method, MethodArg::Channel);
        if !channel {
            if self.emit_masked.is_some() {
                bail!("--emit-masked applies to --method channel only");
            }
            if self.importance.is_some() {
                bail!("--importance applies to --method channel only");
            }
        }
        if self.verify_data.is_some() && !channel {
            bail!("--verify-data applies to --method channel only");
        }
        if self.data_root.is_some() && self.verify_data.is_none() && self.data.is_none() {
            bail!("--data-root replaces the path of --verify-data or --data: give one");
        }
        if self.search_macs && !channel {
            bail!("--search-macs applies to --method channel only");
        }
        let method = self.method()?;
        if channel && self.calib_order.is_some() {
            bail!("--calib-order does not apply to --method channel (it has one order)");
        }
        if self.pattern.is_none()
            && self.amount.is_none()
            && self.max_map_drop.is_none()
            && !channel
        {
            bail!("give --amount, --max-map-drop or --pattern");
        }
        let mut pass = method.pass(
            self.amount.unwrap_or(self.search_limit()),
            &self.include,
            &self.exclude,
        );
        match &mut pass {
            PassConfig::PruneMagnitude(p) => p.order = self.calib_order.map(Into::into),
            PassConfig::PruneNM(p) => p.order = self.calib_order.map(Into::into),
            PassConfig::PruneChannels(p) => {
                p.importance = self.importance.map_or(Importance::L1, Into::into);
                p.scope = self.scope.into();
                p.round_to = self.round_to;
                p.min_channels = self.min_channels;
                p.seed = self.seed;
                p.target_macs = self.target_macs;
            }
            PassConfig::StoreSparse(_) | PassConfig::Finetune(_) => {}
        }
        let mut passes = vec![pass];
        if self.storage == Storage::Sparse {
            passes.push(PassConfig::StoreSparse(StoreSparse {
                include: self.include.clone(),
                exclude: self.exclude.clone(),
            }));
        }
        for pass in &passes {
            pass.validate()?;
        }
        if let Some(searched) = self.searched()? {
            searched.largest_step(&passes)?;
        }
        let calibrated = passes.iter().any(PassConfig::needs_calibration);
        if calibrated && self.calibration.calib.is_none() {
            bail!("--recover stats and obs need calibration images: give --calib DATA");
        }
        if !calibrated && self.calibration.calib.is_some() {
            bail!("--calib is only used with --recover stats or obs");
        }
        Ok(passes)
    }

    /// The amount a budget search may go up to when `--amount` does not say: one step below 1
    /// (0 without a search).
    fn search_limit(&self) -> f64 {
        if self.max_map_drop.is_some() {
            1.0 - self.resolution
        } else {
            0.0
        }
    }

    /// What `--max-map-drop` searches: the first pass's amount, or with `--search-macs` its MAC
    /// target, in steps of `--resolution`.
    fn searched(&self) -> Result<Option<Searched>> {
        let Some(max_drop) = self.max_map_drop else {
            return Ok(None);
        };
        let budget = Budget::with_resolution(max_drop, self.resolution)
            .context("--resolution does not fit")?;
        let axis = match self.search_macs {
            true => SearchAxis::Macs,
            false => SearchAxis::Amount,
        };
        Ok(Some(Searched {
            index: 0,
            axis,
            budget,
        }))
    }
}

pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let passes = args.passes()?;
    let model = load_model(&args.model, ui)?;
    let (probe, probe_files) = match &args.verify_data {
        Some(data) => {
            let source = DataSource::Yaml {
                data: data.clone(),
                root: args.data_root.clone(),
            };
            let (dataset, _) = load_dataset(
                &source,
                shears::eval::preprocess::DEFAULT_MAX_PIXELS,
                &Silent,
            )?;
            let files = data_files(&source, &dataset, None)?;
            (Probe::from_dataset(&dataset), files)
        }
        None => (Probe::default(), Vec::new()),
    };
    let calibration_spec = args.calibration.spec();
    let calibration = calibration_spec
        .as_ref()
        .map(CalibrationSet::resolve)
        .transpose()?;
    for message in calibration.iter().flat_map(|set| &set.messages) {
        ui.warn(message);
    }
    let save = SaveOptions {
        external_data: args.external_data.clone(),
    };
    // Every file the command reads is declared before its outputs, so that none is overwritten.
    let mut plan = OutputPlan::new();
    plan.input_model(&model)?;
    if let Some(path) = &args.data {
        plan.input("--data", path)?;
    }
    plan.inputs("--verify-data file", &probe_files)?;
    if let Some(set) = &calibration {
        plan.inputs("calibration file", set.files())?;
    }
    plan.output_model("-o", &args.output, &save)?;
    if let Some(path) = &args.emit_masked {
        plan.output("--emit-masked", path)?;
    }
    if let Some(path) = &args.json {
        plan.output("--json", path)?;
    }
    if let Some(path) = &args.recipe {
        if args.external_data.is_some() {
            bail!("--recipe cannot reproduce --external-data (pipelines keep tensors inline)");
        }
        plan.output("--recipe", path)?;
    }
    let options = JobOptions {
        calibration,
        save,
        measure_zstd: !args.no_zstd,
        force: args.force,
        verify: !args.no_verify,
        probe,
        emit_masked: args.emit_masked.clone(),
        check: None,
        build_key: None,
    };
    let (report, search) = match args.max_map_drop {
        None => {
            let report = phase(ui.progress(), "pruning", |inside| {
                prune_to_file(model, &passes, &args.output, &options, inside, &mut plan)
            });
            (report?, None)
        }
        Some(_) => {
            let Found {
                pruned,
                passes: resolved,
                record,
                ..
            } = search_budget(args, &model, &passes, &options, &mut plan, ui)?;
            if let Some(path) = &args.recipe {
                let layers = model_stats(
                    pruned
                        .proto
                        .graph
                        .as_ref()
                        .context("the model has no graph")?,
                )?
                .layers;
                let text = recipe(
                    &std::path::absolute(&args.model)?,
                    &std::path::absolute(&args.output)?,
                    &resolved,
                    calibration_spec.as_ref(),
                    &record,
                    &layers,
                )?;
                plan.stage_bytes(path, text.as_bytes())?;
            }
            (
                job::stage(pruned, &args.output, &options, &mut plan)?,
                Some(record),
            )
        }
    };
    for warning in &report.warnings {
        ui.warn(format_args!("{warning}"));
    }
    if let Some(path) = &args.json {
        let json = JsonReport {
            report: &report,
            search: search.as_ref(),
        };
        plan.stage_json(path, &json)?;
    }
    plan.commit()?;
    let mut out = std::io::stdout().lock();
    if let Some(record) = &search {
        print_search(&mut out, record)?;
    }
    print_report(&mut out, &report, args.emit_masked.as_deref())?;
    if let Some(path) = &args.recipe {
        writeln!(out, "wrote the recipe {}", path.display())?;
    }
    // A channel prune that removed nothing changed nothing to warn about.
    if let Some(PassConfig::PruneChannels(p)) = passes.first()
        && report.after.params < report.before.params
    {
        ui.warn(if p.recover.is_none() {
            "channel pruning changes what the model detects, and without `--recover obs` nothing \
             compensates: validate the result (`shears val`) before using it"
        } else {
            "channel pruning changes what the model detects: validate the result (`shears val`) \
             on images it was not calibrated on before using it"
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// The document of `prune --json`: the job's report, and the budget search when there was one.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a JobReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<&'a SearchRecord>,
}

/// Searches the first pass within `--max-map-drop`, validating on `--data` as `val` does; the
/// validation's files are declared in `plan` as read.
fn search_budget(
    args: &Args,
    model: &Model,
    passes: &[PassConfig],
    options: &JobOptions,
    plan: &mut OutputPlan,
    ui: &Ui,
) -> Result<Found> {
    let searched = args.searched()?.context("--max-map-drop is not given")?;
    let data = args.data.clone().context("--max-map-drop needs --data")?;
    let settings = ValSettings {
        data: DataSource::Yaml {
            data,
            root: args.data_root.clone(),
        },
        gt: args.gt.clone(),
        images: None,
        nms: NmsConfig::with(args.conf, args.iou, NmsConfig::default().max_det),
        backend: args.backend.spec()?,
        max_pixels: shears::eval::preprocess::DEFAULT_MAX_PIXELS,
    };
    let metric = GateMetric::from(args.metric);
    let validator = Validator::load(settings, ui.progress())?;
    metric.ensure_measured_by(&validator)?;
    plan.inputs("validation file", &validator.files()?)?;
    for message in &validator.dataset().report.messages {
        ui.warn(message);
    }
    let name = args
        .model
        .file_stem()
        .map_or_else(|| "dense".into(), |s| s.to_string_lossy().into_owned());
    let dense = validator.run(&name, model, ui.progress())?;
    search(
        model,
        passes,
        searched,
        &validator,
        metric,
        &dense,
        options,
        &args.output,
        ui.progress(),
    )
}

/// The search's trials and what it found.
fn print_search(out: &mut impl Write, r: &SearchRecord) -> Result<()> {
    writeln!(
        out,
        "budget search over the amount of {} (resolution {}): dense {} {:.4}",
        r.pass,
        r.resolution,
        r.metric.name(),
        r.dense
    )?;
    for t in &r.trials {
        writeln!(
            out,
            "  amount {:<8} {} {:.4}  drop {:.4}  {}",
            t.amount,
            r.metric.name(),
            t.value,
            t.drop,
            if t.within_budget { "within" } else { "beyond" }
        )?;
    }
    writeln!(
        out,
        "found amount {} within the budget of {} in {} validations ({} pruned models and the dense one)",
        r.amount,
        r.max_drop,
        r.validations,
        r.validations - 1
    )?;
    Ok(())
}

fn print_report(out: &mut impl Write, r: &JobReport, masked: Option<&Path>) -> Result<()> {
    for pass in &r.passes {
        writeln!(out, "{}: {}", pass.pass, pass.summary)?;
    }
    let row = |label: &str, f: &Footprint| {
        vec![
            label.to_string(),
            grouped(f.params),
            grouped(f.nonzero_params),
            grouped(f.macs),
            format!("{:.4}", f.sparsity.global),
            format!("{:.4}", f.sparsity.conv_weights),
            grouped(f.file_bytes),
            f.zstd_bytes.map_or("-".to_string(), grouped),
        ]
    };
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header([
            "",
            "params",
            "non-zero",
            "MACs",
            "sparsity",
            "conv w.",
            "file bytes",
            "zstd bytes",
        ])
        .add_row(row("before", &r.before))
        .add_row(row("after", &r.after));
    for column in table.column_iter_mut().skip(1) {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    for proof in r.passes.iter().filter_map(|p| p.proof.as_ref()) {
        writeln!(out, "verify: {}", proof.summary)?;
    }
    if let Some(check) = &r.check {
        writeln!(out, "check: {check}")?;
    }
    writeln!(out, "wrote {}", r.output.display())?;
    if let Some(path) = masked {
        writeln!(out, "wrote the masked dense model {}", path.display())?;
    }
    Ok(())
}
