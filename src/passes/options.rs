//! Option pieces several passes share.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// How a pruning pass compensates for what it removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recover {
    /// Nothing: the remaining weights keep their values.
    #[default]
    None,
    /// Magnitude pruning, then every Conv's output channels are mapped toward the dense model's
    /// on the calibration images ([`super::recovery::correct_statistics`]).
    Stats,
    /// What goes and the new values of the rest are solved by OBS from calibration statistics,
    /// then the statistics are corrected as with `stats`.
    Obs,
}

impl Recover {
    pub fn is_none(&self) -> bool {
        *self == Recover::None
    }
}

/// Which inputs a layer's re-solve sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibOrder {
    /// Every layer from the dense model's inputs.
    #[default]
    Independent,
    /// Layers in stages of graph order, each from the inputs of the model pruned so far.
    Sequential,
}

/// Checks a pass's `max_map_drop`: none, or a drop of 0 or more.
pub(super) fn validate_budget(max_map_drop: Option<f64>) -> Result<()> {
    match max_map_drop {
        Some(b) if b.is_nan() || b < 0.0 => bail!("max_map_drop {b} must be 0 or more"),
        _ => Ok(()),
    }
}
