//! ONNX model files: the protobuf schema, loading, saving and tensor access.

/// Types generated from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
