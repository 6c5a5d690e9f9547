//! Passes over a model, one per file. A pass edits the `ModelProto` in place and returns a report;
//! what it does not touch stays bit-identical.
//!
//! Every pass implements [`Pass`]. [`PassConfig`] is the one registry of passes and the one
//! description of a pass with its options: the CLI builds it (through [`Method`]), pipeline files
//! deserialize it (unknown keys are errors), and outputs record it in their metadata
//! (`shears.passes`). A new pass is its own file(s) plus one line in the `registry!` call below.

mod finetune;
mod method;
mod options;
mod prune_channels;
mod prune_magnitude;
mod prune_n_m;
mod recovery;
mod selection;
mod store_sparse;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use finetune::Finetune;
pub use method::{Method, MethodKind, SearchAxis};
pub use options::{CalibOrder, Recover};
pub use prune_channels::{ChannelPlan, Importance, PruneChannels};
pub use prune_magnitude::{PruneMagnitude, Scope};
pub use prune_n_m::PruneNM;
pub use recovery::obs;
pub use selection::LayerFilter;
pub use store_sparse::StoreSparse;

use crate::calib::{Calibration, CalibrationSet};
use crate::onnx::metadata::{self, PASSES_KEY};
use crate::onnx::proto::ModelProto;
use crate::progress::Progress;

/// A transformation of a model, with its options.
pub trait Pass {
    /// The pass's name in pipeline files, metadata and reports: its [`PassConfig`] key.
    fn name(&self) -> &'static str;

    /// Checks options that the types alone do not constrain, before any work is done.
    fn validate(&self) -> Result<()>;

    /// Whether [`Pass::run`] needs [`PassContext::calibration`] (and its images).
    fn needs_calibration(&self) -> bool {
        false
    }

    /// Drops what needs calibration (a pipeline whose images are missing runs without).
    fn drop_calibration(&mut self) {}

    /// Whether [`Pass::run`] needs [`PassContext::input_model`].
    fn needs_input_model(&self) -> bool {
        false
    }

    /// Runs on `model` in place. Errors need not name the pass: the caller adds it.
    fn run(&self, model: &mut ModelProto, cx: &mut PassContext) -> Result<PassOutput>;

    /// The accuracy budget (`max_map_drop`) within which a pipeline searches this pass, and the
    /// axis searched; `None` for a pass that asks for no search.
    fn budget(&self) -> Option<(f64, SearchAxis)> {
        None
    }

    /// The largest fraction a budget search may try on `axis`, and whether the search must stay
    /// below 1; `None` when the pass has no such fraction.
    fn search_limit(&self, _axis: SearchAxis) -> Option<(f64, bool)> {
        None
    }

    /// Sets the fraction `k / steps` on `axis` (one that [`Pass::search_limit`] accepts) and
    /// clears the budget: the pass a search tries.
    fn set_search_step(&mut self, _axis: SearchAxis, _k: u32, _steps: u32) {}
}

/// What a pass may use besides its model.
pub struct PassContext<'a> {
    /// Statistics of the calibration images, for a pass that [`Pass::needs_calibration`].
    pub calibration: Option<&'a mut dyn Calibration>,
    /// The calibration images themselves, when there are some.
    pub images: Option<&'a CalibrationSet>,
    /// The job's input model, before any pass, for a pass that [`Pass::needs_input_model`]
    /// (fine-tuning's teacher).
    pub input_model: Option<&'a ModelProto>,
    /// Where long work reports.
    pub progress: &'a dyn Progress,
    /// Whether the caller wants [`PassOutput::reference`] (to prove the result or to write it).
    pub wants_reference: bool,
}

/// What a pass hands back.
pub struct PassOutput {
    /// One line saying what changed.
    pub summary: String,
    /// A model the result must compute the same as, when the pass has one and it was asked for.
    pub reference: Option<Reference>,
}

impl PassOutput {
    /// A summary with no reference.
    pub fn summary(summary: String) -> Self {
        PassOutput {
            summary,
            reference: None,
        }
    }
}

/// A model that computes what a pass's result computes, and the tensors to compare: the pass's
/// proof ([`crate::verify::masked_proof`]).
pub struct Reference {
    /// For channel pruning: the input with exactly the removed channels zeroed.
    pub model: ModelProto,
    /// The tensors to compare by name (names of the reference, which the result keeps), with
    /// the channel positions (axis 1) the result no longer has.
    pub tensors: Vec<(String, BTreeSet<usize>)>,
    /// Channels the reference has zeroed, for the report when the proof is skipped.
    pub masked_channels: usize,
}

/// Declares the registry: `Variant(Options)` per pass, the variant's snake_case name being the
/// pass's name (checked against [`Pass::name`] by a test).
macro_rules! registry {
    ($($(#[doc = $doc:expr])* $variant:ident($options:ty),)+) => {
        /// A pass with its options.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub enum PassConfig {
            $($(#[doc = $doc])* $variant($options),)+
        }

        impl PassConfig {
            /// The pass these options configure.
            pub fn pass(&self) -> &dyn Pass {
                match self {
                    $(PassConfig::$variant(p) => p,)+
                }
            }

            fn pass_mut(&mut self) -> &mut dyn Pass {
                match self {
                    $(PassConfig::$variant(p) => p,)+
                }
            }
        }
    };
}

registry! {
    /// Zero the smallest-magnitude Conv weights (unstructured).
    PruneMagnitude(PruneMagnitude),
    /// Keep the N largest of every M consecutive Conv weights along the input-channel axis.
    PruneNM(PruneNM),
    /// Store Conv weights as sparse initializers where that makes the file smaller.
    StoreSparse(StoreSparse),
    /// Remove whole Conv output channels (structured pruning with graph surgery).
    PruneChannels(PruneChannels),
    /// Train the pruned model's Conv values by distillation from the job's input model.
    Finetune(Finetune),
}

impl PassConfig {
    /// The pass's name as pipeline files spell it.
    pub fn name(&self) -> &'static str {
        self.pass().name()
    }

    /// See [`Pass::validate`].
    pub fn validate(&self) -> Result<()> {
        self.pass().validate()
    }

    /// See [`Pass::needs_calibration`].
    pub fn needs_calibration(&self) -> bool {
        self.pass().needs_calibration()
    }

    /// The same pass without what needs calibration ([`Pass::drop_calibration`]).
    pub fn without_calibration(&self) -> PassConfig {
        let mut pass = self.clone();
        pass.pass_mut().drop_calibration();
        pass
    }

    /// The same pass at the fraction `k / steps` of `axis`, with no budget left to search; an
    /// error for a pass without such a fraction.
    pub fn at_search_step(&self, axis: SearchAxis, k: u32, steps: u32) -> Result<PassConfig> {
        self.search_limit(axis)?;
        let mut pass = self.clone();
        pass.pass_mut().set_search_step(axis, k, steps);
        Ok(pass)
    }

    /// See [`Pass::search_limit`]; an error naming the pass when it has no fraction on `axis`.
    pub fn search_limit(&self, axis: SearchAxis) -> Result<(f64, bool)> {
        self.pass().search_limit(axis).with_context(|| {
            format!(
                "pass {} has no {} to search for an accuracy budget (N:M sparsity is a pattern, \
                 not an amount); prune_magnitude and prune_channels have one",
                self.name(),
                axis.noun()
            )
        })
    }
}

/// What a pass did, for people and for reports.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub pass: String,
    /// One line saying what changed.
    pub summary: String,
    /// How the result was checked against what the pass claims, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

/// A pass's check of its own result, run before anything is written.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    /// One line: what was compared and what was found.
    pub summary: String,
    /// The figure the check judged: the largest difference found, relative to the largest
    /// reference value of its tensor; absent when the check compared nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel_diff: Option<f64>,
}

/// Records in the model's metadata ([`PASSES_KEY`]) that shears ran `passes` on it: the tool,
/// its version and each pass with its options, appended to what an earlier run recorded.
pub fn record_provenance(model: &mut ModelProto, passes: &[PassConfig]) -> Result<()> {
    let mut entries: Vec<serde_json::Value> = metadata::get(model, PASSES_KEY)
        .map(|value| serde_json::from_str(value).unwrap_or_default())
        .unwrap_or_default();
    for pass in passes {
        entries.push(serde_json::json!({
            "tool": "shears",
            "version": env!("CARGO_PKG_VERSION"),
            "pass": pass.name(),
            "options": serde_json::to_value(pass)?[pass.name()],
        }));
    }
    metadata::set(model, PASSES_KEY, &serde_json::to_string(&entries)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pass_is_named_by_its_registry_key() {
        let passes = [
            PassConfig::PruneMagnitude(serde_saphyr::from_str("amount: 0.3").unwrap()),
            PassConfig::PruneNM(serde_saphyr::from_str("{n: 2, m: 4}").unwrap()),
            PassConfig::StoreSparse(StoreSparse::default()),
            PassConfig::PruneChannels(PruneChannels::new(0.3)),
        ];
        for pass in passes {
            let json = serde_json::to_value(&pass).unwrap();
            let key = json.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(key, pass.name());
        }
    }
}
