//! Experiments over many pruned versions of one model: [`run_sweep`] (every method at every
//! amount, validated and timed, with tables and plots) and [`sensitivity`] (one layer or channel
//! group at a time). Every pruned model goes through [`crate::job::prune_to_file`], exactly as
//! `shears prune` writes it, and is validated by [`crate::eval::validate::validate`] with the
//! settings `shears val` takes.

mod points;
pub mod sensitivity;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::eval::validate::ValReport;
use crate::eval::validator::Validator;
use crate::onnx::Model;
use crate::passes::Method;
use crate::progress::Progress;

pub use points::{
    PointMethod, PointRecord, PointResult, SweepReport, SweepSpec, TimingSettings, run_sweep,
};

/// Parses a comma-separated list of methods (`layer,global+obs,2:4`).
pub fn parse_methods(text: &str) -> Result<Vec<Method>> {
    let methods: Vec<Method> = text
        .split(',')
        .map(|m| m.trim().parse())
        .collect::<Result<_>>()?;
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].contains(m) {
            bail!("method {m} is listed twice");
        }
    }
    Ok(methods)
}

/// Parses a comma-separated list of amounts in [0, 1], each listed once.
pub fn parse_amounts(text: &str) -> Result<Vec<f64>> {
    let mut amounts = Vec::new();
    for part in text.split(',') {
        let amount: f64 = part
            .trim()
            .parse()
            .with_context(|| format!("amount {part:?} is not a number"))?;
        if !(0.0..=1.0).contains(&amount) {
            bail!("amount {amount} is outside [0, 1]");
        }
        if amounts.contains(&amount) {
            bail!("amount {amount} is listed twice");
        }
        amounts.push(amount);
    }
    Ok(amounts)
}

/// What validation measured, as `val` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub images: usize,
    pub instances: usize,
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map50_95: f64,
    /// The 12 COCOeval stats (the first is COCO AP), when annotations were found.
    pub coco: Option<Vec<f64>>,
}

impl Accuracy {
    /// COCO AP when measured, else val.py's mAP@.5:.95.
    pub fn headline(&self) -> f64 {
        self.coco.as_ref().map_or(self.map50_95, |c| c[0])
    }
}

impl From<ValReport> for Accuracy {
    fn from(report: ValReport) -> Self {
        let m = report.metrics;
        Accuracy {
            images: m.images,
            instances: m.instances,
            precision: m.precision,
            recall: m.recall,
            map50: m.map50,
            map50_95: m.map50_95,
            coco: report.coco.map(|c| c.stats.to_vec()),
        }
    }
}

/// Validates `model` as `shears val` does; `name` labels its progress.
fn accuracy(
    validator: &Validator,
    name: &str,
    model: &Model,
    progress: &dyn Progress,
) -> Result<Accuracy> {
    validator.run(name, model, progress).map(Accuracy::from)
}

/// Validates the dense `model`, refusing a headline of 0: every drop measured against it would
/// be 0 or less, proving nothing.
fn dense_accuracy(
    validator: &Validator,
    model: &Model,
    progress: &dyn Progress,
) -> Result<Accuracy> {
    let accuracy = accuracy(validator, "dense", model, progress)?;
    if accuracy.headline().is_nan() || accuracy.headline() <= 0.0 {
        bail!(
            "the dense model's accuracy on the validation data is {}: it measures nothing to \
             compare against (are these the model's classes and labels?)",
            accuracy.headline()
        );
    }
    Ok(accuracy)
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A Markdown table cell (pipes escaped).
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `path` relative to `base` when under it (for links in reports), else as given.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base).unwrap_or(path).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_lists_name_each_method_once() {
        assert!(parse_methods("layer,global,layer").is_err());
        assert_eq!(parse_methods("layer, 2:4").unwrap().len(), 2);
    }

    #[test]
    fn amounts_are_fractions_listed_once() {
        assert_eq!(parse_amounts("0.1,0.3").unwrap(), vec![0.1, 0.3]);
        assert!(parse_amounts("0.1,1.5").is_err());
        assert!(parse_amounts("0.1,0.1").is_err());
        assert!(parse_amounts("x").is_err());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("global+obs"), "global+obs");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
