//! What recovering passes need to know about real inputs, and the interface through which they
//! ask for it. The passes stay pure functions of a model and these statistics;
//! [`super::Calibrator`] implements [`Calibration`] by running a backend on calibration images.

use anyhow::{Context, Result, bail};
use faer::Mat;

use crate::graph::{GraphView, attr_ints, attr_str, infer_shapes};
use crate::onnx::proto::ModelProto;
use crate::progress::{Progress, Silent};

/// A Conv node as calibration sees it: the tensors it reads and writes and the geometry of its
/// im2col columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConvSite {
    /// The node's name (found again by name after other nodes were edited).
    pub name: String,
    pub input: String,
    pub output: String,
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
}

impl ConvSite {
    /// Length of an im2col column without the bias row: `in_channels * kh * kw`.
    pub fn columns(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Convs with equal keys read the same columns and share their statistics.
    pub fn input_key(&self) -> (String, [usize; 2], [usize; 2], [usize; 2], [usize; 4]) {
        (
            self.input.clone(),
            self.kernel,
            self.strides,
            self.dilations,
            self.pads,
        )
    }
}

/// Second moments of a Conv's im2col input columns `x` (with a 1 appended for the bias), summed
/// over calibration images and sampled output positions, in f64. Row and column `j < columns`
/// is weight entry `[o, c, ky, kx]` with `j = (c * kh + ky) * kw + kx`; the last is the bias.
#[derive(Debug, Clone)]
pub struct InputStats {
    /// `H = sum x xT` of the model being pruned.
    pub gram: Mat<f64>,
}

/// A Conv's output (before any activation) at sampled positions of calibration images:
/// `values[c]` holds channel `c`'s values, image after image. Samples of one site taken from two
/// models with the same tensor names are at the same positions of the same images.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSamples {
    pub values: Vec<Vec<f32>>,
}

/// A source of calibration statistics.
pub trait Calibration {
    /// Input statistics of each of `sites` in `model`.
    fn input_stats(&mut self, model: &ModelProto, sites: &[ConvSite]) -> Result<Vec<InputStats>>;

    /// The outputs of each of `sites` in `model` at a fixed sample of positions of each of at most
    /// `images` of the calibration images (the first ones: the set is drawn at random).
    fn output_samples(
        &mut self,
        model: &ModelProto,
        sites: &[ConvSite],
        images: usize,
    ) -> Result<Vec<OutputSamples>>;

    /// What the calibration set is, for provenance: a JSON object.
    fn describe(&self) -> serde_json::Value;

    /// Where the work these statistics serve reports its phases (solves, allocation).
    fn progress(&self) -> &dyn Progress {
        &Silent
    }
}

/// The [`ConvSite`]s of the Conv nodes named `names` (in that order). Errors name the node when
/// its input shape is unknown or its geometry is not one calibration supports.
pub fn conv_sites(model: &ModelProto, names: &[String]) -> Result<Vec<ConvSite>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let view = GraphView::new(graph);
    let shapes = infer_shapes(&view);
    names
        .iter()
        .map(|name| {
            let index = graph
                .node
                .iter()
                .position(|n| n.op_type() == "Conv" && n.name() == name)
                .with_context(|| format!("no Conv node named {name:?}"))?;
            let node = view.node(index);
            let describe = || view.describe(index);
            let input = node.input.first().cloned().unwrap_or_default();
            let weight = view
                .initializer(node.input.get(1).map_or("", String::as_str))
                .with_context(|| format!("{}: the weight is not a dense initializer", describe()))?;
            let [out_channels, in_channels, kh, kw] = weight.dims[..] else {
                bail!("{}: calibration supports 2-D convolutions only", describe());
            };
            let group = crate::graph::attr_int(node, "group").unwrap_or(1);
            if group != 1 {
                bail!("{}: grouped convolution (group {group}) is not supported by calibrated recovery", describe());
            }
            let pair = |key: &str| -> [usize; 2] {
                attr_ints(node, key).map_or([1, 1], |v| [v[0] as usize, v[1] as usize])
            };
            let (kernel, strides, dilations) =
                ([kh as usize, kw as usize], pair("strides"), pair("dilations"));
            let pads = match attr_str(node, "auto_pad").unwrap_or("NOTSET") {
                "NOTSET" => attr_ints(node, "pads").map_or([0; 4], |p| {
                    [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
                }),
                "VALID" => [0; 4],
                mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                    let Some(&[_, _, height, width]) = shapes.get(&input) else {
                        bail!("{}: auto_pad {mode} needs the input's shape, which is unknown", describe());
                    };
                    let same = |axis: usize, size: i64| {
                        let stride = strides[axis] as i64;
                        let out = (size + stride - 1) / stride;
                        let span = (kernel[axis] as i64 - 1) * dilations[axis] as i64 + 1;
                        let total = ((out - 1) * stride + span - size).max(0) as usize;
                        let small = total / 2;
                        if mode == "SAME_UPPER" { [small, total - small] } else { [total - small, small] }
                    };
                    let ([top, bottom], [left, right]) = (same(0, height), same(1, width));
                    [top, left, bottom, right]
                }
                other => bail!("{}: unknown auto_pad {other:?}", describe()),
            };
            Ok(ConvSite {
                name: name.clone(),
                input,
                output: node.output.first().cloned().unwrap_or_default(),
                in_channels: in_channels as usize,
                out_channels: out_channels as usize,
                kernel,
                strides,
                dilations,
                pads,
            })
        })
        .collect()
}
