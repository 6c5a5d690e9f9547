//! Read-only analyses of a model: its convolution layers, parameter and MAC counts, sparsity,
//! channel dependency groups.

mod channel_groups;
mod convs;
mod stats;

pub use channel_groups::{
    ChannelAnalysis, ChannelGroup, ConsumerUse, Edit, GroupStatus, Lock, Span, TensorSpan, UseKind,
    channel_groups,
};
pub use convs::{ConvLayer, conv_layers, head_convs};
pub use stats::{LayerStats, ModelStats, Sparsity, grouped, model_stats};
