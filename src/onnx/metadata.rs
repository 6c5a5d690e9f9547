//! The entries shears reads and writes in a model's `metadata_props`, and their keys.

use super::proto::{ModelProto, StringStringEntryProto};

/// The passes applied to an output, each with the tool, its version and the pass's options (a
/// JSON array; a later run appends).
pub const PASSES_KEY: &str = "shears.passes";

/// What an output was made from (a JSON object whose `key` is `job::BuildInputs::key`);
/// `shears run` skips a model whose output records its key.
pub const BUILD_KEY: &str = "shears.build";

/// The calibration set recovering passes used (a JSON object).
pub const CALIBRATION_KEY: &str = "shears.calibration";

/// A pipeline output's validation (JSON), so that a later run that finds it up to date still
/// reports and gates it.
pub const VALIDATION_KEY: &str = "shears.validation";

/// How a fine-tuned model was trained (a JSON object: the teacher, the settings, the images'
/// SHA-256 and the losses).
pub const FINETUNE_KEY: &str = "shears.finetune";

/// The value of entry `key`.
pub fn get<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model
        .metadata_props
        .iter()
        .find(|p| p.key() == key)
        .map(|p| p.value())
}

/// The `image_sha256` list of the JSON object recorded under `key` (the calibration or the
/// fine-tuning images), when the model records one.
pub fn image_hashes(model: &ModelProto, key: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(get(model, key)?).ok()?;
    let hashes = value.get("image_sha256")?.as_array()?;
    Some(
        hashes
            .iter()
            .filter_map(|h| h.as_str().map(String::from))
            .collect(),
    )
}

/// Sets entry `key` to `value`, replacing an earlier one in place.
pub fn set(model: &mut ModelProto, key: &str, value: &str) {
    match model.metadata_props.iter_mut().find(|p| p.key() == key) {
        Some(p) => p.value = Some(value.to_string()),
        None => model.metadata_props.push(StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        }),
    }
}
