//! Synthetic YOLOv5 v7.0 models: the official exporter's ONNX graph with seeded random weights.
//!
//! [`build`] lays out the graph that `export.py` of ultralytics/yolov5 v7.0 writes for
//! `models/yolov5{n,s,m,l,x}.yaml` and the P6 `models/hub/yolov5{n,s,m,l,x}6.yaml` (Conv+BN fused,
//! SiLU as `Sigmoid` + `Mul`, the Detect head in export mode): the same nodes in the same order,
//! the same node, tensor and initializer names, attributes, non-weight constants, graph
//! input/output and `stride`/`names` metadata. Only the weight values differ: they are drawn from a
//! seeded ChaCha generator with fan-in scaling.
//!
//! Two export forms are reproduced ([`Export`]):
//! - opset 12 as `torch.onnx.export` writes it, unsimplified;
//! - opset 17 after `--simplify` (onnxsim): constants folded, `value_info` for every
//!   intermediate tensor. onnxsim's own `onnxsim.*` metadata entries are *not* written: they
//!   describe a simplifier run that never happened here; the graph itself is the simplified one.
//!
//! How the exporter writes `nn.Upsample` depends on the checkpoint ([`Upsample`]): the v7.0
//! release checkpoints carry `recompute_scale_factor=True`, so their export computes the Resize
//! sizes (Shape/Slice/Floor/Cast/Concat); a model built from the yaml by current torch exports a
//! Resize with constant scales.
//!
//! onnxsim also merges equal constants: at sizes where twice an upsampling layer's input height
//! equals a Detect stride (small inputs such as 256), the simplified export keeps that layer's
//! constant node (first) where this one keeps the stride's; the values computed are the same.
//!
//! Deliberate differences from an exporter-written file: `producer_name`/`producer_version` name
//! shears instead of pytorch, and `doc_string` says the weights are synthetic.

mod arch;
mod detect;
mod graph;
mod names;
mod network;
mod weights;

use anyhow::bail;

use crate::onnx::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

pub use arch::Variant;

/// Which exporter output to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `torch.onnx.export` at opset 12, not simplified (IR version 7).
    Opset12,
    /// `torch.onnx.export` at opset 17 followed by onnxsim (`export.py --simplify`, IR version 8).
    Opset17Simplified,
}

/// How the exported graph feeds the `Resize` nodes of the neck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsample {
    /// Output sizes computed in the graph, as the v7.0 release checkpoints export
    /// (`recompute_scale_factor=True` pickled in them).
    ComputedSizes,
    /// A constant `scales` input, as a model freshly built from the yaml exports.
    ConstantScales,
}

/// What to generate. [`SynthSpec::new`] gives the exporter's defaults (80 classes, 640 pixels for
/// P5 models and 1280 for P6 models, opset 12, computed sizes, seed 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSpec {
    /// Model size: depth and width multiples of the yaml.
    pub variant: Variant,
    /// Number of classes: the Detect convs have `3 * (5 + nc)` outputs.
    pub nc: usize,
    /// Square input size in pixels; a multiple of the largest stride (32 for P5, 64 for P6).
    pub imgsz: usize,
    /// Exporter output form.
    pub export: Export,
    /// Resize form of the upsampling layers.
    pub upsample: Upsample,
    /// Seed of the weight generator: equal specs give byte-identical models.
    pub seed: u64,
}

/// Largest accepted input size: keeps the grid constants (3 x (imgsz/8)^2 x 2 floats) small.
pub const MAX_IMGSZ: usize = 8192;
/// Largest accepted class count.
pub const MAX_NC: usize = 10_000;

impl SynthSpec {
    /// The exporter's defaults for `variant`.
    pub fn new(variant: Variant) -> Self {
        SynthSpec {
            variant,
            nc: 80,
            imgsz: variant.default_imgsz(),
            export: Export::Opset12,
            upsample: Upsample::ComputedSizes,
            seed: 0,
        }
    }

    /// Checks the ranges [`build`] relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.nc == 0 || self.nc > MAX_NC {
            bail!("nc must be in 1..={MAX_NC}, got {}", self.nc);
        }
        let stride = self.variant.max_stride();
        if self.imgsz == 0 || !self.imgsz.is_multiple_of(stride) || self.imgsz > MAX_IMGSZ {
            bail!(
                "imgsz must be a positive multiple of {stride} (the largest stride of {}) up to \
                 {MAX_IMGSZ}, got {}",
                self.variant,
                self.imgsz
            );
        }
        Ok(())
    }
}

/// Builds the model in memory. Pure: the same spec always gives the same model.
pub fn build(spec: &SynthSpec) -> anyhow::Result<ModelProto> {
    spec.validate()?;
    let graph = network::trace(spec).finish(spec.seed, network::OUTPUT);
    let (ir_version, opset_domain, opset) = match spec.export {
        Export::Opset12 => (7, None, 12),
        Export::Opset17Simplified => (8, Some(String::new()), 17),
    };
    let names = names::class_names(spec.nc);
    let metadata = [
        ("stride", spec.variant.max_stride().to_string()),
        ("names", names::python_dict_repr(&names)),
    ];
    Ok(ModelProto {
        ir_version: Some(ir_version),
        opset_import: vec![OperatorSetIdProto {
            domain: opset_domain,
            version: Some(opset),
        }],
        producer_name: Some("shears".to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        doc_string: Some(format!(
            "synthetic {} (random weights, seed {}): layout of the yolov5 v7.0 ONNX export",
            spec.variant.name(),
            spec.seed
        )),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.to_owned()),
                value: Some(value),
            })
            .collect(),
        ..Default::default()
    })
}

/// Number of parameters (conv weights and biases) of the model `spec` describes, without
/// generating any weight.
pub fn parameter_count(spec: &SynthSpec) -> anyhow::Result<u64> {
    spec.validate()?;
    Ok(network::trace(spec).parameter_count())
}
