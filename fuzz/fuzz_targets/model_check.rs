//! Model decoding as `shears check` and `shears inspect` do it: load from bytes (schema scan,
//! sanity checks, external data), re-encode, and compute the statistics (shape inference).
//! Any input must give a model or an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shears::onnx::proto::ModelProto;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let Ok(model) = shears::onnx::load_bytes(bytes.clone(), Path::new("fuzz.onnx")) else {
        return;
    };
    if let Ok(decoded) = ModelProto::decode(bytes) {
        let _ = decoded.encode_to_vec() == data;
    }
    let _ = shears::analysis::model_stats(model.graph());
});
