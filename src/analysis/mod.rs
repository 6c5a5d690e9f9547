//! Read-only analyses of a model: its convolution layers, parameter and MAC counts, sparsity.

mod convs;
mod stats;

pub use convs::{ConvLayer, conv_layers};
pub use stats::{LayerStats, ModelStats, Sparsity, model_stats};
