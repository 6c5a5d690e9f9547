//! shears: prune exported YOLOv5 ONNX models and prove the result.
//!
//! The ONNX protobuf is the source of truth: passes edit [`onnx::proto::ModelProto`] through a
//! light indexed view ([`graph`]), so everything a pass does not understand passes through
//! untouched and an unchanged model writes back byte-identical.

pub mod analysis;
pub mod backend;
pub mod calib;
pub mod eval;
pub mod graph;
pub mod job;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod sweep;
pub mod synth;
pub mod train;
pub mod verify;

/// A quality gate failed (for example an accuracy budget was exceeded): exit code 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateFailed(pub String);
