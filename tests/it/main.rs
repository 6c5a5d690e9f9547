//! shears' integration tests: one binary, one module per area.

mod backend;
mod bad_input;
mod budget;
mod build_step;
mod channel_groups;
mod common;
mod eval;
mod exports;
mod finetune;
mod fuzz_findings;
mod gates;
mod images;
mod onnx_io;
mod outputs;
mod p6;
mod pipeline;
mod prune;
mod prune_channels;
mod readme;
mod recover;
mod shapes;
mod sweep;
mod synth;
mod val;
