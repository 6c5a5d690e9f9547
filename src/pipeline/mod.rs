//! YAML pipeline files: which models, which passes, where outputs go; run over a whole model zoo
//! with a summary table.

mod html;
mod run;
mod spec;
mod suggest;
mod summary;

pub use run::{Input, ModelOutcome, PipelineRun, plan as plan_models, run_pipeline};
pub use spec::{
    ModelSource, PipelineSpec, expand_env, load_spec, parse_spec, resolve as resolve_path,
};
pub use summary::{LatencyRatio, significant3, stage_summary, summary_paths, summary_table};
