//! Option pieces several passes share, each written once: [`pass_options!`] declares a pass's
//! options struct with them, and [`Recover`], [`CalibOrder`] and [`validate_budget`] give them
//! their meaning.

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

/// Declares a pass's options struct (with its derives and `#[serde(deny_unknown_fields)]`) with
/// the option pieces passes share, each written here once. In the body, between the pass's own
/// fields, `..layers,` stands for `include` and `exclude` (a [`super::LayerFilter`]),
/// `..recovery,` for `recover` and `order`, and `..budget,` for `max_map_drop`. The pieces stay
/// flat keys of the pass's map: serde's `flatten` would cost pipeline files their unknown-key
/// errors' line, column and "did you mean".
macro_rules! pass_options {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        pass_options!(@munch [$(#[$meta])* pub struct $name] [] [$($body)*]);
    };
    (@munch [$($head:tt)*] [$($done:tt)*] []) => {
        $($head)* { $($done)* }
    };
    (@munch $head:tt [$($done:tt)*] [..layers, $($rest:tt)*]) => {
        pass_options!(@munch $head [$($done)*
            /// Only layers (channel pruning: groups with a producer Conv) whose node name
            /// matches one of these regular expressions.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub include: Vec<String>,
            /// Never layers (groups with a producer Conv) whose node name matches one of these.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub exclude: Vec<String>,
        ] [$($rest)*]);
    };
    (@munch $head:tt [$($done:tt)*] [..recovery, $($rest:tt)*]) => {
        pass_options!(@munch $head [$($done)*
            /// How the remaining weights compensate (`stats` and `obs` need calibration
            /// images).
            #[serde(default, skip_serializing_if = "Recover::is_none")]
            pub recover: Recover,
            /// Which inputs `recover: obs` solves each layer from (default:
            /// [`CalibOrder::default`]).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub order: Option<CalibOrder>,
        ] [$($rest)*]);
    };
    (@munch $head:tt [$($done:tt)*] [..budget, $($rest:tt)*]) => {
        pass_options!(@munch $head [$($done)*
            /// Pipelines: search the fraction within this accuracy budget
            /// (`crate::pipeline::search`, resolution 0.01; needs a `validate:` block), up to
            /// the pass's own limit ([`super::Pass::search_limit`]).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_map_drop: Option<f64>,
        ] [$($rest)*]);
    };
    (@munch $head:tt [$($done:tt)*] [$(#[$field_meta:meta])* pub $field:ident: $ty:ty, $($rest:tt)*]) => {
        pass_options!(@munch $head [$($done)* $(#[$field_meta])* pub $field: $ty,] [$($rest)*]);
    };
}
pub(super) use pass_options;
