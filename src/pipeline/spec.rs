//! The pipeline file format, parsed strictly: unknown keys, wrong types and unknown pass names
//! are errors naming the file, line, column and key, with "did you mean" for near misses.
//!
//! ```yaml
//! models:                      # paths or glob patterns, relative to this file; ${VAR} and
//!   - ../models/*.onnx         # ${VAR:-default} expand from the environment
//! passes:                      # applied in order
//!   - prune_magnitude: {amount: 0.3, scope: layer}
//! output: out/{stem}-pruned.onnx   # {stem}: the input file name without extension
//! report: out/summary          # optional: writes summary.json and summary.md
//! validate:                    # optional: validate dense and pruned, gate on the drop
//!   data: ../datasets/coco128.yaml
//!   backend: ort               # tract (default) or ort; device: cpu | cuda[:N]
//!   iou: 0.65
//!   metric: coco_ap            # coco_ap | map50_95 (default) | map50
//!   max_map_drop: 0.02         # exit code 1 when the drop is larger
//! calibration:                 # needed by passes with `recover: stats | obs`
//!   data: ../datasets/calib.yaml   # its train images (else val), or a folder of images
//!   images: 128
//!   skip_if_missing: true      # optional: prune without recovery (and warn) when data is missing
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::suggest::with_suggestion;
use crate::eval::nms::NmsConfig;
pub use crate::eval::validator::GateMetric;
use crate::passes::PassConfig;

/// A parsed pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The models to run, each independently.
    pub models: Vec<ModelSource>,
    /// Passes applied to every model, in order.
    pub passes: Vec<PassConfig>,
    /// Output path pattern.
    pub output: String,
    /// Where the summary goes (`<report>.json`, `<report>.md`); default: beside the outputs.
    #[serde(default)]
    pub report: Option<String>,
    /// Validate the dense input and the pruned output, and gate on the accuracy drop.
    #[serde(default)]
    pub validate: Option<ValidateSpec>,
    /// Calibration images of passes with `recover: stats` or `recover: obs`.
    #[serde(default)]
    pub calibration: Option<CalibrationBlock>,
}

/// The `calibration:` block: paths relative to the pipeline file, `${VAR}` expanded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationBlock {
    /// A dataset YAML (its `train` images, else `val`) or a folder of images.
    pub data: String,
    /// Replaces the YAML's `path:`.
    #[serde(default)]
    pub data_root: Option<String>,
    /// How many images, drawn with a fixed seed.
    #[serde(default = "default_calibration_images")]
    pub images: usize,
    /// When `data` does not exist, prune without recovery and warn, instead of failing.
    #[serde(default)]
    pub skip_if_missing: bool,
}

fn default_calibration_images() -> usize {
    crate::calib::DEFAULT_IMAGES
}

impl CalibrationBlock {
    /// The block with its paths resolved against `base`.
    pub fn resolve(&self, base: &Path) -> Result<crate::calib::CalibrationSpec> {
        Ok(crate::calib::CalibrationSpec {
            data: resolve(base, &self.data)?,
            data_root: self
                .data_root
                .as_deref()
                .map(|r| resolve(base, r))
                .transpose()?,
            images: self.images,
        })
    }
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A path or glob pattern (written as a plain string, or as `path:`).
    Path(String),
    /// A path, and the YOLOv5 size (`yolov5n` .. `yolov5x`) to generate with random weights
    /// when the file does not exist (`{path: ..., or_synth: yolov5n}`).
    PathOrSynth { path: String, synth: String },
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = ModelSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model path or glob pattern, or {path, or_synth}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelSource, E> {
                Ok(ModelSource::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSource, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Entry {
                    path: String,
                    #[serde(default)]
                    or_synth: Option<String>,
                }
                let entry = Entry::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match entry.or_synth {
                    Some(synth) => ModelSource::PathOrSynth {
                        path: entry.path,
                        synth,
                    },
                    None => ModelSource::Path(entry.path),
                })
            }
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// The `validate:` block: dataset, backend, NMS settings and the accuracy budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    /// A YOLOv5 data YAML (its `val` split).
    pub data: String,
    /// Dataset root replacing the YAML's `path:`.
    #[serde(default)]
    pub data_root: Option<String>,
    /// COCO annotations for COCOeval (default: the dataset's own `annotations/*.json`).
    #[serde(default)]
    pub gt: Option<String>,
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_conf")]
    pub conf: f32,
    #[serde(default = "default_iou")]
    pub iou: f64,
    #[serde(default = "default_max_det")]
    pub max_det: usize,
    /// Largest allowed drop of `metric` from the dense to the pruned model; none = report only.
    #[serde(default)]
    pub max_map_drop: Option<f64>,
    #[serde(default)]
    pub metric: GateMetric,
    /// When the dataset file does not exist, skip validation with a notice instead of failing.
    #[serde(default)]
    pub skip_if_missing: bool,
    /// Images of more pixels than this are skipped (`val --max-pixels`).
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
}

fn default_max_pixels() -> u64 {
    crate::eval::preprocess::DEFAULT_MAX_PIXELS
}

fn default_backend() -> String {
    "tract".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_conf() -> f32 {
    NmsConfig::default().conf_thres
}
fn default_iou() -> f64 {
    NmsConfig::default().iou_thres
}
fn default_max_det() -> usize {
    NmsConfig::default().max_det
}

/// Reads and parses a pipeline file.
pub fn load_spec(path: &Path) -> Result<PipelineSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_spec(&text, path)
}

/// Parses the text of a pipeline file; `path` names it in messages.
pub fn parse_spec(text: &str, path: &Path) -> Result<PipelineSpec> {
    let spec: PipelineSpec = crate::yaml::parse(text, path).map_err(|mut e| {
        e.message = with_suggestion(&e.message);
        e
    })?;
    if spec.models.is_empty() {
        bail!("{}: `models` lists no model", path.display());
    }
    if spec.passes.is_empty() {
        bail!("{}: `passes` lists no pass", path.display());
    }
    for pass in &spec.passes {
        pass.validate()
            .with_context(|| format!("{}: pass {}", path.display(), pass.name()))?;
    }
    Ok(spec)
}

/// Expands `${VAR}` and `${VAR:-default}` from the environment; an unset variable without a
/// default is an error. A relative path at the start of the text taken from the environment is
/// made absolute against the current directory.
pub fn expand_env(text: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            bail!("unclosed ${{ in {text:?}")
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            // A relative path from the environment means relative to where shears runs.
            (Some(v), _) if start == 0 && out.is_empty() && Path::new(&v).is_relative() => {
                out.push_str(&std::path::absolute(&v)?.to_string_lossy())
            }
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => bail!("environment variable {name} (used in {text:?}) is not set"),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A path from the pipeline file: environment expanded, relative paths against `base`.
pub fn resolve(base: &Path, text: &str) -> Result<PathBuf> {
    let expanded = PathBuf::from(expand_env(text)?);
    Ok(if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_with_defaults() {
        assert_eq!(
            expand_env("${SHEARS_TEST_SURELY_UNSET:-a/b}/c").unwrap(),
            "a/b/c"
        );
        assert!(expand_env("${SHEARS_TEST_SURELY_UNSET}").is_err());
        assert_eq!(expand_env("plain").unwrap(), "plain");
    }
}
