//! ONNX model files: the protobuf schema, loading, saving and tensor access.
//!
//! A [`Model`] holds the decoded [`proto::ModelProto`]; tensor bytes stay in the memory-mapped
//! file (prost decodes `bytes` fields as zero-copy [`bytes::Bytes`] slices of it).

pub mod attr;
pub mod build;
mod external;
mod load;
pub mod mapping;
pub mod metadata;
pub mod opset;
mod outputs;
pub mod precision;
mod save;
mod schema;
pub mod tensor;

pub use load::{Model, load, load_bytes};
pub use outputs::OutputPlan;
pub use save::{SaveOptions, Saved, Staged, encode, save, write_atomic};
pub use schema::{SCHEMA_IR_VERSION, SchemaFinding};

/// Types generated from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
