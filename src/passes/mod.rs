//! Passes over a model, one per file. A pass edits the `ModelProto` in place and returns a report;
//! what it does not touch stays bit-identical.
//!
//! [`PassConfig`] is the one description of a pass and its options: the CLI builds it from flags,
//! pipeline files deserialize it (unknown keys are errors), and outputs record it in their
//! metadata (`shears.passes`).

mod densify_sparse;
mod prune_channels;
mod prune_magnitude;
mod prune_n_m;
mod selection;
mod store_sparse;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use densify_sparse::densify_sparse;
pub use prune_channels::{Importance, PruneChannels};
pub use prune_magnitude::{PruneMagnitude, Scope};
pub use prune_n_m::PruneNM;
pub use selection::LayerFilter;
pub use store_sparse::StoreSparse;

use crate::onnx::proto::{ModelProto, StringStringEntryProto};

/// A pass with its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PassConfig {
    /// Zero the smallest-magnitude Conv weights (unstructured).
    PruneMagnitude(PruneMagnitude),
    /// Keep the N largest of every M consecutive Conv weights along the input-channel axis.
    PruneNM(PruneNM),
    /// Store Conv weights as sparse initializers where that makes the file smaller.
    StoreSparse(StoreSparse),
    /// Remove whole Conv output channels (structured pruning with graph surgery).
    PruneChannels(PruneChannels),
}

/// The names pipeline files may use, for "did you mean" suggestions.
pub const PASS_NAMES: &[&str] = &[
    "prune_magnitude",
    "prune_n_m",
    "store_sparse",
    "prune_channels",
];

/// What a pass did, for people and for reports.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub pass: String,
    /// One line saying what changed.
    pub summary: String,
}

impl PassConfig {
    /// The pass's name as pipeline files spell it.
    pub fn name(&self) -> &'static str {
        match self {
            PassConfig::PruneMagnitude(_) => "prune_magnitude",
            PassConfig::PruneNM(_) => "prune_n_m",
            PassConfig::StoreSparse(_) => "store_sparse",
            PassConfig::PruneChannels(_) => "prune_channels",
        }
    }

    /// Checks options that the types alone do not constrain, before any work is done.
    pub fn validate(&self) -> Result<()> {
        match self {
            PassConfig::PruneMagnitude(p) => p.validate(),
            PassConfig::PruneNM(p) => p.validate(),
            PassConfig::StoreSparse(_) => Ok(()),
            PassConfig::PruneChannels(p) => p.validate(),
        }
    }

    /// Runs the pass on `model`.
    pub fn run(&self, model: &mut ModelProto) -> Result<PassReport> {
        self.validate()?;
        if let PassConfig::StoreSparse(p) = self {
            return Ok(PassReport {
                pass: self.name().to_string(),
                summary: p
                    .run_model(model)
                    .with_context(|| format!("pass {} failed", self.name()))?,
            });
        }
        let graph = model.graph.as_mut().context("the model has no graph")?;
        let summary = match self {
            PassConfig::PruneMagnitude(p) => p.run(graph),
            PassConfig::PruneNM(p) => p.run(graph),
            PassConfig::StoreSparse(p) => p.run(graph),
            PassConfig::PruneChannels(p) => p.run(graph),
        }
        .with_context(|| format!("pass {} failed", self.name()))?;
        Ok(PassReport {
            pass: self.name().to_string(),
            summary,
        })
    }
}

/// The metadata key under which outputs list the passes applied to them (a JSON array).
pub const PROVENANCE_KEY: &str = "shears.passes";

/// Records in `model.metadata_props` that shears ran `passes` on it: the tool, its version and
/// each pass with its options, appended to what an earlier run recorded.
pub fn record_provenance(model: &mut ModelProto, passes: &[PassConfig]) -> Result<()> {
    let mut entries: Vec<serde_json::Value> = match model
        .metadata_props
        .iter()
        .find(|p| p.key() == PROVENANCE_KEY)
    {
        Some(p) => serde_json::from_str(p.value()).unwrap_or_default(),
        None => Vec::new(),
    };
    for pass in passes {
        entries.push(serde_json::json!({
            "tool": "shears",
            "version": env!("CARGO_PKG_VERSION"),
            "pass": pass.name(),
            "options": serde_json::to_value(pass)?[pass.name()],
        }));
    }
    let value = serde_json::to_string(&entries)?;
    match model
        .metadata_props
        .iter_mut()
        .find(|p| p.key() == PROVENANCE_KEY)
    {
        Some(p) => p.value = Some(value),
        None => model.metadata_props.push(StringStringEntryProto {
            key: Some(PROVENANCE_KEY.to_string()),
            value: Some(value),
        }),
    }
    Ok(())
}
