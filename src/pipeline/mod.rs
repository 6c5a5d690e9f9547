//! YAML pipeline files: which models, which passes, where outputs go; run over a whole model zoo
//! with a summary table.

mod budget;
mod html;
mod run;
mod spec;
mod suggest;
mod summary;
mod validator;

pub use budget::{Budget, Found, SearchRecord, Trial, at_step, recipe, search};
pub use run::{
    Input, ModelOutcome, PipelineRun, VALIDATION_KEY, Validation, plan as plan_models, run_pipeline,
};
pub use spec::{
    GateMetric, ModelSource, PipelineSpec, expand_env, load_spec, parse_spec,
    resolve as resolve_path,
};
pub use summary::{LatencyRatio, significant3, stage_summary, summary_paths, summary_table};
pub use validator::Validator;
