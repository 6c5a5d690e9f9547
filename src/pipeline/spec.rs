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
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::suggest::with_suggestion;
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
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A path or glob pattern (written as a plain string).
    Path(String),
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = ModelSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model path or glob pattern")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelSource, E> {
                Ok(ModelSource::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSource, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Entry {
                    path: String,
                }
                let entry = Entry::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelSource::Path(entry.path))
            }
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// Reads and parses a pipeline file.
pub fn load_spec(path: &Path) -> Result<PipelineSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec: PipelineSpec = serde_saphyr::from_str(&text).map_err(|e| {
        let message = e
            .to_string()
            .replace("<input>", &path.display().to_string());
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        anyhow::anyhow!("{}: {}", path.display(), with_suggestion(message))
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
