//! A budget instead of an amount: the largest amount of one pruning pass whose validated drop
//! stays within an accuracy budget.
//!
//! The searched amount is `amount` of `prune_magnitude` (layer or global scope) and of
//! `prune_channels`, or with `target_macs` the fraction of MACs removed (`1 - target_macs`);
//! the pass's own value is the largest the search may try. N:M sparsity and `store_sparse`
//! have no amount.
//!
//! Assumption: the validated metric falls as the amount grows (pruning more removes more of
//! what the model uses; on few images noise can break this locally). The search bisects over
//! the amounts `k / steps` (the resolution is `1 / steps`) up to that limit: amount 0 is the
//! dense model, whose drop is 0 by definition, and each validation halves the interval between
//! the largest amount known to be within the budget and the smallest known to exceed it (or
//! the limit). It takes at most `ceil(log2(limit_steps + 1))` validations of pruned models (7
//! for the resolution 0.01 and no limit) and one of the dense model. The amount found was
//! validated within the budget and, unless it is the limit, its next step was validated beyond
//! it; when the metric is not monotone a larger amount may also be within the budget.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::spec::GateMetric;
use crate::analysis::LayerStats;
use crate::calib::CalibrationSpec;
use crate::eval::validate::ValReport;
use crate::eval::validator::Validator;
use crate::job::{self, JobOptions, Pruned};
use crate::onnx::Model;
use crate::passes::{PassConfig, SearchAxis};
use crate::progress::{Progress, phase};

/// Amount steps of pipeline searches: a resolution of 0.01.
pub const DEFAULT_STEPS: u32 = 100;

/// The largest drop allowed and the resolution of the amounts tried.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Largest allowed drop of the validator's metric, dense minus pruned.
    pub max_drop: f64,
    /// Amounts tried are multiples of `1 / steps`.
    pub steps: u32,
}

/// One validated amount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub amount: f64,
    /// The metric of the model pruned at `amount`.
    pub value: f64,
    /// Dense minus `value`.
    pub drop: f64,
    pub within_budget: bool,
}

/// What a search did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchRecord {
    pub pass: String,
    pub metric: GateMetric,
    pub max_drop: f64,
    /// The step between the amounts that may be tried.
    pub resolution: f64,
    /// The metric of the dense model.
    pub dense: f64,
    /// Every pruned model validated, in order.
    pub trials: Vec<Trial>,
    /// The largest amount found within the budget.
    pub amount: f64,
    /// Validations run, the dense model's included.
    pub validations: usize,
}

/// What a search varies: the fraction on `axis` of `passes[index]`, within `budget`.
#[derive(Debug, Clone, Copy)]
pub struct Searched {
    pub index: usize,
    pub axis: SearchAxis,
    pub budget: Budget,
}

impl Budget {
    /// A budget of `max_drop` over the amounts that are multiples of `resolution`, which must
    /// divide 1 into at least two steps.
    pub fn with_resolution(max_drop: f64, resolution: f64) -> Result<Budget> {
        let steps = (1.0 / resolution).round();
        let divides = (2.0..=1e6).contains(&steps) && (steps * resolution - 1.0).abs() < 1e-9;
        if !divides {
            bail!(
                "the resolution {resolution} must divide 1 into at least two steps (0.01, 0.05, \
                 0.015625 ...)"
            );
        }
        Ok(Budget {
            max_drop,
            steps: steps as u32,
        })
    }
}

impl Searched {
    /// The one pass of `passes` whose [`crate::passes::Pass::budget`] asks for a search, at the
    /// pipelines' resolution (0.01); an error naming the count when several do.
    pub fn in_pipeline(passes: &[PassConfig]) -> Result<Option<Searched>> {
        let searched: Vec<(usize, (f64, SearchAxis))> = passes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.pass().budget()?)))
            .collect();
        match searched.as_slice() {
            [] => Ok(None),
            &[(index, (max_drop, axis))] => Ok(Some(Searched {
                index,
                axis,
                budget: Budget {
                    max_drop,
                    steps: DEFAULT_STEPS,
                },
            })),
            many => bail!(
                "{} passes have max_map_drop; one pass's amount can be searched",
                many.len()
            ),
        }
    }

    /// The largest step the search may try: the pass's limit on the axis in steps, rounded
    /// down (and below 1 where the axis must stay below it). Checks first that the passes at
    /// that step are valid, so that a search that cannot run fails before any work.
    pub fn largest_step(&self, passes: &[PassConfig]) -> Result<u32> {
        if self.budget.steps < 2 {
            bail!("the search needs at least two amount steps (resolution below 0.5)");
        }
        if self.budget.max_drop.is_nan() || self.budget.max_drop < 0.0 {
            bail!(
                "the accuracy budget must be 0 or more, not {}",
                self.budget.max_drop
            );
        }
        let steps = self.budget.steps;
        let (limit, below_one) = passes[self.index].search_limit(self.axis)?;
        let k = (limit * f64::from(steps) + 1e-9)
            .floor()
            .clamp(0.0, f64::from(steps)) as u32;
        let k = if below_one { k.min(steps - 1) } else { k };
        if k == 0 {
            bail!(
                "the search may go up to {limit}, less than one step of {}",
                1.0 / f64::from(steps)
            );
        }
        for pass in self.at_step(passes, k)? {
            pass.validate()
                .with_context(|| format!("invalid options for pass {}", pass.name()))?;
        }
        Ok(k)
    }

    /// `passes` with the searched one at step `k`.
    fn at_step(&self, passes: &[PassConfig], k: u32) -> Result<Vec<PassConfig>> {
        passes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i == self.index {
                    p.at_search_step(self.axis, k, self.budget.steps)
                } else {
                    Ok(p.clone())
                }
            })
            .collect()
    }
}

/// What a search found: the model pruned at the amount found (its metadata recorded, not
/// written), the passes that make it, its validation, and the search's record.
pub struct Found {
    pub pruned: Pruned,
    pub passes: Vec<PassConfig>,
    pub report: ValReport,
    pub record: SearchRecord,
}

/// The one budget search (`prune --max-map-drop` and pipelines): searches the fraction
/// `searched` names, up to the pass's own limit (see the module doc), pruning `model` (as
/// [`job::prune`] with `options`) at each step tried and validating it, `dense` being the dense
/// model's validation by the same `validator`, `metric` the figure compared. The pass at its largest step is validated before
/// anything runs. When even the smallest amount exceeds the budget, a [`crate::GateFailed`]
/// error. `progress` counts the trials (at most the base-2 logarithm of the steps, rounded
/// up), each trial's pruning and validation nested under it.
#[allow(clippy::too_many_arguments)]
pub fn search(
    model: &Model,
    passes: &[PassConfig],
    searched: Searched,
    validator: &Validator,
    metric: GateMetric,
    dense: &ValReport,
    options: &JobOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<Found> {
    let budget = searched.budget;
    let largest = searched.largest_step(passes)?;
    let dense_value = metric.dense_value(dense)?;
    let mut record = SearchRecord {
        pass: passes[searched.index].name().to_string(),
        metric,
        max_drop: budget.max_drop,
        resolution: 1.0 / f64::from(budget.steps),
        dense: dense_value,
        trials: Vec::new(),
        amount: 0.0,
        validations: 1,
    };
    // Invariant: step `within` is within the budget (0: the dense model), `beyond` is not (or
    // is past the largest step allowed).
    let (mut within, mut beyond) = (0, largest + 1);
    let mut best = None;
    // bisection halves the `largest + 1` steps until one is left
    let trials = (largest + 1).next_power_of_two().trailing_zeros();
    progress.start("budget search trial", Some(trials.into()));
    let trial = progress.child();
    while beyond - within > 1 {
        let k = within + (beyond - within) / 2;
        let amount = f64::from(k) / f64::from(budget.steps);
        progress.note(&format!("amount {amount}"));
        let candidate = searched.at_step(passes, k)?;
        let pruned = phase(&*trial, "pruning", |inside| {
            job::prune(model.clone(), &candidate, output, options, inside)
        })?;
        let report = validator.run_proto(&format!("amount {amount}"), &pruned.proto, &*trial)?;
        progress.advance(1);
        let value = metric.value(&report);
        let drop = dense_value - value;
        let ok = drop <= budget.max_drop;
        record.trials.push(Trial {
            amount,
            value,
            drop,
            within_budget: ok,
        });
        record.validations += 1;
        if ok {
            within = k;
            best = Some((pruned, candidate, report));
        } else {
            beyond = k;
        }
    }
    drop(trial);
    progress.finish();
    let Some((pruned, passes, report)) = best else {
        let first = record.trials.last().expect("the smallest amount was tried");
        return Err(crate::GateFailed(format!(
            "even the smallest amount, {}, drops {} by {:.4} (from {:.4} to {:.4}), more than the \
             budget of {}; nothing written",
            first.amount,
            record.metric.name(),
            first.drop,
            dense_value,
            first.value,
            budget.max_drop
        ))
        .into());
    };
    record.amount = f64::from(within) / f64::from(budget.steps);
    Ok(Found {
        pruned,
        passes,
        report,
        record,
    })
}

/// A pipeline file whose run writes, byte for byte, the model a search found: `model` through
/// `passes` (the amount found in place) to `output`, calibrated on `calibration` when a pass
/// recovers. Comments give the search's record and the per-layer weight sparsity of `layers`
/// (the found model's Conv layers).
pub fn recipe(
    model: &Path,
    output: &Path,
    passes: &[PassConfig],
    calibration: Option<&CalibrationSpec>,
    record: &SearchRecord,
    layers: &[LayerStats],
) -> Result<String> {
    let quoted = |path: &Path| serde_json::to_string(&path.to_string_lossy());
    let mut text = format!(
        "# Written by `shears prune --max-map-drop {}`: the largest amount of {}\n\
         # (resolution {}) whose {} dropped within the budget, found in {} validations.\n\
         # `shears run` of this file writes the same model byte for byte (`--force` to redo an\n\
         # up-to-date output). dense {:.4}\n",
        record.max_drop,
        record.pass,
        record.resolution,
        record.metric.name(),
        record.validations,
        record.dense
    );
    for t in &record.trials {
        text += &format!(
            "# amount {}: {:.4}, drop {:.4}, {} the budget\n",
            t.amount,
            t.value,
            t.drop,
            if t.within_budget { "within" } else { "beyond" }
        );
    }
    text += "# weight sparsity per Conv layer of the model found:\n";
    for layer in layers {
        text += &format!("#   {} {:.4}\n", layer.name, layer.weight_sparsity());
    }
    text += &format!("models:\n  - {}\npasses:\n", quoted(model)?);
    for pass in passes {
        text += &format!("  - {}\n", serde_json::to_string(pass)?);
    }
    text += &format!("output: {}\n", quoted(output)?);
    if let Some(c) = calibration {
        text += &format!(
            "calibration:\n  data: {}\n  images: {}\n",
            quoted(&std::path::absolute(&c.data)?)?,
            c.images
        );
        if let Some(root) = &c.data_root {
            text += &format!("  data_root: {}\n", quoted(&std::path::absolute(root)?)?);
        }
    }
    Ok(text)
}
