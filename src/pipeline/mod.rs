//! YAML pipeline files: which models, which passes, where outputs go; run over a whole model zoo
//! with a summary table.

mod budget;
mod html;
mod run;
mod spec;
mod suggest;
mod summary;

pub use budget::{Budget, Found, SearchRecord, Searched, Trial, recipe, search};
pub use run::LatencyRatio;
pub use run::{Input, ModelOutcome, PipelineRun, Validation, plan as plan_models, run_pipeline};
pub use spec::{
    GateMetric, ModelSource, PipelineSpec, expand_env, load_spec, parse_spec,
    resolve as resolve_path,
};
pub use summary::{significant3, stage_summary, summary_paths, summary_table};

/// `err` under the context `block` (a pipeline file's block), saying which of its keys gives
/// what a [`crate::Needs`] asks for.
fn with_yaml_key(err: anyhow::Error, block: &str) -> anyhow::Error {
    let key = match err.downcast_ref::<crate::Needs>() {
        Some(crate::Needs::CocoAnnotations) => "give them as `gt:`",
        Some(crate::Needs::PixelLimit { .. }) => "raise its `max_pixels:`",
        Some(crate::Needs::OrtBackend { .. }) => "set its `backend: ort`",
        Some(crate::Needs::GivenDataRoot { .. }) => "check its `data_root:`",
        Some(crate::Needs::DataRoot { .. }) => "give the dataset's folder as `data_root:`",
        _ => return err.context(block.to_string()),
    };
    anyhow::anyhow!("{block}: {err:#}; {key}")
}
