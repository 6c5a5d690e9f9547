//! Every input the fuzz targets (`fuzz/`) found a panic on, replayed through what its target
//! runs: each must now give an error or a result, never a panic.

use std::path::Path;

use prost::Message;
use shears::onnx::proto::ModelProto;

/// The findings, kept in `tests/fuzz_findings/` named `TARGET-WHAT.EXT`.
fn findings(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_findings");
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{target}-"))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no findings of {target}");
    found
}

#[test]
fn model_findings_give_errors_or_models() {
    for (name, data) in findings("model_check") {
        let bytes = bytes::Bytes::from(data);
        if let Ok(model) = shears::onnx::load_bytes(bytes.clone(), Path::new(&name)) {
            let _ = ModelProto::decode(bytes).map(|m| m.encode_to_vec());
            let _ = shears::analysis::model_stats(model.graph());
        }
    }
}

#[test]
fn jpeg_findings_give_errors_or_images() {
    for (name, data) in findings("jpeg") {
        let result = shears::eval::jpeg::decode(&data, 1 << 22);
        assert!(result.is_err(), "{name}: decoded a corrupt file");
    }
}
