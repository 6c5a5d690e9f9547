//! `recover: stats`: map each pruned Conv's output channels back toward the dense model's on the
//! calibration images (the BatchNorm re-estimation of pruning without training, folded into the
//! Conv).
//!
//! Before: a pruned model and the dense model it came from. After: for every named Conv and output
//! channel `o`, with mean `m_p` and variance `v_p` of the pruned model's output, mean `m_d` of the
//! dense model's and their covariance `c` at the same sampled positions of the calibration
//! images ([`Calibration::output_samples`]), the channel computes `m_d + a (y - m_p)` with
//! `a = c / v_p`: the least-squares map from the pruned channel to the dense one. Its mean becomes
//! the dense mean; its spread becomes the part of the dense spread the pruned channel still
//! carries. (Scaling the spread all the way back, `a = sqrt(v_d / v_p)`, amplifies what pruning
//! turned into noise: on yolov5n at 30% global magnitude it took COCO AP from 0.258 to 0.004.)
//! Weights are scaled by `a` (zeros stay zeros), the bias becomes `a (b - m_p) + m_d`. A channel
//! whose pruned output is constant only moves its mean. Only Convs whose outputs feed activations
//! are corrected (see [`ACTIVATIONS`]).
//!
//! Layers are corrected level by level (Convs with as many Convs before them on their longest
//! path never feed each other), each level measured on the model corrected so far; the dense
//! model's samples are taken once. Corrected from one run, or in a few stages of graph order,
//! every layer would also undo what the correction of the layers before it already fixed
//! (yolov5n, 30% global magnitude: COCO AP 0.004 from one run, 0.000 in eight stages, 0.309
//! level by level).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use crate::calib::{Calibration, ConvSite, OutputSamples, conv_sites};
use crate::passes::selection::LayerMatrix;

use crate::graph::GraphView;
use crate::onnx::proto::{GraphProto, ModelProto};

/// At most this many calibration images measure the output statistics. Each level of Convs costs
/// a run of the pruned model per image, so the correction would dominate a calibrated prune.
const IMAGES: usize = 32;

/// Pruned variance, relative to the dense one, below which a channel counts as constant (only
/// its mean moves).
const CONSTANT: f64 = 1e-6;

/// Ops that may read a corrected Conv's output: activations, which the folded BatchNorm fed.
/// A Conv whose output goes anywhere else (the Detect head's output convs feed `Reshape`: their
/// channels are box coordinates and scores, not normalised features) is left alone.
const ACTIVATIONS: &[&str] = &[
    "Sigmoid",
    "Mul",
    "Relu",
    "LeakyRelu",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "PRelu",
];

/// Corrects the Conv nodes named `names` in `model` toward `dense`'s output statistics. Each must
/// have a bias initializer. Returns the report line.
pub fn correct_statistics(
    model: &mut ModelProto,
    dense: &ModelProto,
    names: &[String],
    calib: &mut dyn Calibration,
) -> Result<String> {
    let normalised = normalised_convs(model, names)?;
    let sites = conv_sites(model, &normalised)?;
    let reference = calib.output_samples(dense, &sites, IMAGES)?;
    let levels = conv_levels(model)?;
    let mut order: Vec<usize> = (0..sites.len()).collect();
    order.sort_by_key(|&i| (levels[&sites[i].name], i));
    let mut channels = 0;
    let stages: Vec<&[usize]> = order
        .chunk_by(|&a, &b| levels[&sites[a].name] == levels[&sites[b].name])
        .collect();
    calib
        .progress()
        .start("correcting output statistics", Some(stages.len() as u64));
    for stage in stages {
        let stage_sites: Vec<ConvSite> = stage.iter().map(|&i| sites[i].clone()).collect();
        let current = calib.output_samples(model, &stage_sites, IMAGES)?;
        let graph = model.graph.as_mut().context("the model has no graph")?;
        for (&i, pruned) in stage.iter().zip(&current) {
            let moments = Moments::of(&sites[i], pruned, &reference[i])?;
            channels += correct_layer(graph, &sites[i], &moments)?;
        }
        calib.progress().advance(1);
    }
    calib.progress().finish();
    Ok(format!(
        "corrected {channels} output channels of {} conv layers toward the dense model (least squares)",
        sites.len()
    ))
}

/// For every Conv, by name: the most Convs on any path from the graph inputs to it (itself not
/// counted). Convs of one level never feed each other, so they are corrected together.
fn conv_levels(model: &ModelProto) -> Result<HashMap<String, usize>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let view = GraphView::new(graph);
    let mut after: Vec<usize> = vec![0; graph.node.len()];
    let mut levels = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        let level = node
            .input
            .iter()
            .filter_map(|t| view.producer(t))
            .map(|p| after[p])
            .max()
            .unwrap_or(0);
        let is_conv = node.op_type() == "Conv";
        after[i] = level + usize::from(is_conv);
        if is_conv {
            levels.insert(node.name().to_string(), level);
        }
    }
    Ok(levels)
}

/// The Convs of `names` whose outputs only activations read (see [`ACTIVATIONS`]).
fn normalised_convs(model: &ModelProto, names: &[String]) -> Result<Vec<String>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let view = GraphView::new(graph);
    Ok(names
        .iter()
        .filter(|name| {
            graph
                .node
                .iter()
                .find(|n| n.op_type() == "Conv" && n.name() == name.as_str())
                .and_then(|n| n.output.first())
                .is_some_and(|out| {
                    !view.is_graph_output(out)
                        && view
                            .consumers(out)
                            .iter()
                            .all(|&c| ACTIVATIONS.contains(&view.node(c).op_type()))
                })
        })
        .cloned()
        .collect())
}

/// Per output channel of a Conv: the moments of the pruned model's values and of the dense
/// model's at the same positions.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    mean: Vec<f64>,
    variance: Vec<f64>,
    dense_mean: Vec<f64>,
    dense_variance: Vec<f64>,
    covariance: Vec<f64>,
}

impl Moments {
    fn of(site: &ConvSite, pruned: &OutputSamples, dense: &OutputSamples) -> Result<Self> {
        let paired = pruned.values.len() == dense.values.len()
            && pruned
                .values
                .iter()
                .zip(&dense.values)
                .all(|(p, d)| p.len() == d.len());
        if !paired {
            bail!("{}: the pruned and dense samples do not pair up", site.name);
        }
        let mut m = Moments {
            mean: Vec::new(),
            variance: Vec::new(),
            dense_mean: Vec::new(),
            dense_variance: Vec::new(),
            covariance: Vec::new(),
        };
        for (p, d) in pruned.values.iter().zip(&dense.values) {
            let n = p.len().max(1) as f64;
            let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let (mp, md) = (mean(p), mean(d));
            let (mut vp, mut vd, mut c) = (0.0, 0.0, 0.0);
            for (&x, &y) in p.iter().zip(d) {
                let (x, y) = (f64::from(x) - mp, f64::from(y) - md);
                vp += x * x;
                vd += y * y;
                c += x * y;
            }
            m.mean.push(mp);
            m.variance.push(vp / n);
            m.dense_mean.push(md);
            m.dense_variance.push(vd / n);
            m.covariance.push(c / n);
        }
        Ok(m)
    }
}

/// Maps the output channels of `site` by `moments` toward the dense model's; returns the
/// channels.
fn correct_layer(graph: &mut GraphProto, site: &ConvSite, moments: &Moments) -> Result<usize> {
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type() == "Conv" && n.name() == site.name)
        .with_context(|| format!("no Conv node named {:?}", site.name))?;
    let (weight, bias) = (node.input[1].clone(), node.input.get(2).cloned());
    let bias = bias
        .filter(|b| !b.is_empty())
        .with_context(|| format!("{}: statistics correction needs a bias", site.name))?;
    let scale: Vec<f64> = moments
        .covariance
        .iter()
        .zip(&moments.variance)
        .zip(&moments.dense_variance)
        .map(|((&c, &vp), &vd)| {
            if vp > CONSTANT * vd.max(f64::MIN_POSITIVE) {
                c / vp
            } else {
                1.0
            }
        })
        .collect();
    let layer = LayerMatrix::of(site, &weight, &bias);
    let mut w = layer.read(graph)?;
    let n = site.columns();
    for (r, &a) in scale.iter().enumerate() {
        for j in 0..n {
            w[(r, j)] *= a;
        }
        w[(r, n)] = a * (w[(r, n)] - moments.mean[r]) + moments.dense_mean[r];
    }
    layer.write(graph, &w)?;
    Ok(scale.len())
}
