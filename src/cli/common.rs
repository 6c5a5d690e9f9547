//! Steps several commands share: loading a model with its warnings, refusing lossy rewrites.

use std::path::Path;

use anyhow::Result;

use super::ui::Ui;
use shears::backend::{BackendSpec, Device, Engine};
use shears::onnx::{self, Model};

/// Loads a model and warns about anything the schema does not cover.
pub fn load_model(path: &Path, ui: &Ui) -> Result<Model> {
    let model = onnx::load(path)?;
    for finding in &model.schema_findings {
        ui.warn(format_args!("{}: {finding}", path.display()));
    }
    Ok(model)
}

/// The backend flags, shared by the commands that run models.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Inference engine: `tract` (pure Rust, CPU) or `ort` (ONNX Runtime).
    #[arg(long, value_name = "tract|ort", default_value = "tract")]
    pub backend: Engine,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs `--backend ort`).
    #[arg(long, value_name = "cpu|cuda|cuda:N", default_value = "cpu")]
    pub device: Device,
    /// Threads one inference runs on [default: number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl BackendArgs {
    /// The validated backend specification.
    pub fn spec(&self) -> anyhow::Result<BackendSpec> {
        let spec = BackendSpec::new(self.backend, self.device)?;
        Ok(match self.threads {
            Some(threads) => spec.with_threads(threads),
            None => spec,
        })
    }
}
