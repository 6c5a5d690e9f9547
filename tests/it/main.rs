//! shears' integration tests: one binary, one module per area.

mod bad_input;
mod channel_groups;
mod common;
mod onnx_io;
mod pipeline;
mod prune;
