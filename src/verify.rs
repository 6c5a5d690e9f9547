//! Proofs that run models: a candidate model must compute what a reference computes, compared on
//! the tensors that carry the signal (not only the final outputs, which a saturating activation
//! can flatten), on inputs that excite the model (real images when a dataset is at hand), and a
//! reference that is constant proves nothing, so it fails the check instead of passing it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use ndarray::{Array4, ArrayD, Axis};

use crate::backend::{self, BackendSpec, Engine, bench::random_input};
use crate::eval::dataset::Dataset;
use crate::eval::preprocess::preprocess_file;
use crate::onnx::precision::widen_fp16;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{ModelProto, TypeProto, ValueInfoProto, type_proto};
use crate::passes::{Proof, Reference};

/// Largest difference a check allows, relative to the largest |value| of the reference tensor.
pub const TOLERANCE: f64 = 1e-4;

/// A reference tensor whose values span less than this times its largest |value| is constant
/// for the check's purpose.
const CONSTANT_SPREAD: f64 = 1e-6;

/// Images of a dataset a [`Probe`] takes.
pub const PROBE_IMAGES: usize = 4;

/// The inputs a check runs the models on.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Batch-1 inputs uniform in [0, 1), one per seed.
    Random(Vec<u64>),
    /// Image files, letterboxed to the model's square input as validation does.
    Images(Vec<PathBuf>),
}

impl Default for Probe {
    fn default() -> Self {
        Probe::Random(vec![0, 1])
    }
}

impl Probe {
    /// The first [`PROBE_IMAGES`] images of `dataset`; random inputs when it has none.
    pub fn from_dataset(dataset: &Dataset) -> Probe {
        if dataset.images.is_empty() {
            return Probe::default();
        }
        Probe::Images(
            dataset
                .images
                .iter()
                .take(PROBE_IMAGES)
                .map(|i| i.path.clone())
                .collect(),
        )
    }

    /// The inputs for a model whose input has `shape`.
    fn inputs(&self, shape: [usize; 4]) -> Result<Vec<Array4<f32>>> {
        match self {
            Probe::Random(seeds) => Ok(seeds.iter().map(|&s| random_input(shape, s)).collect()),
            Probe::Images(paths) => {
                let [_, c, h, w] = shape;
                ensure!(
                    c == 3 && h == w,
                    "cannot letterbox images to the model input {shape:?}: it is not [1, 3, S, S]"
                );
                paths
                    .iter()
                    .map(|p| {
                        Ok(preprocess_file(
                            p,
                            h as u32,
                            crate::eval::preprocess::DEFAULT_MAX_PIXELS,
                        )?
                        .tensor)
                    })
                    .collect()
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Probe::Random(seeds) => format!("{} random inputs", seeds.len()),
            Probe::Images(paths) => format!("{} dataset images", paths.len()),
        }
    }
}

/// A tensor both models compute, by name, and the positions on its axis 1 that the candidate
/// lacks (the reference's are dropped there before comparing).
pub type Probed = (String, BTreeSet<usize>);

/// What [`compare_tensors`] found.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub inputs: usize,
    /// Per compared tensor: its name and its largest |difference| over its largest |reference
    /// value| (infinite where a difference is not a number).
    pub relative: Vec<(String, f64)>,
}

impl Comparison {
    /// The tensor that differs most, relatively, and by how much.
    pub fn worst(&self) -> (&str, f64) {
        self.relative
            .iter()
            .rev()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(("-", 0.0), |(name, r)| (name.as_str(), *r))
    }
}

/// Running statistics of one compared tensor.
#[derive(Default)]
struct Spread {
    min: f64,
    max: f64,
    max_abs: f64,
    max_abs_diff: f64,
    seen: bool,
}

/// Runs `reference` and `candidate` with tract on `probe`'s inputs, both with `tensors` exposed as
/// extra graph outputs, and compares each tensor. Errors when a reference tensor is constant over
/// every input (the comparison would prove nothing) or the shapes disagree.
///
/// The sessions run on a thread of their own: tract's worker pool must not wait from inside
/// another rayon pool (a pipeline's), whose worker would steal a second session's work meanwhile.
pub fn compare_tensors(
    reference: &ModelProto,
    candidate: &ModelProto,
    tensors: &[Probed],
    probe: &Probe,
) -> Result<Comparison> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| compare_on_this_thread(reference, candidate, tensors, probe))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn compare_on_this_thread(
    reference: &ModelProto,
    candidate: &ModelProto,
    tensors: &[Probed],
    probe: &Probe,
) -> Result<Comparison> {
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let (a_model, a_slots) = exposing(reference, &names)?;
    let (b_model, b_slots) = exposing(candidate, &names)?;
    let spec = BackendSpec::default();
    let open = |m: &ModelProto| backend::open(&spec, &backend::encode_runnable(m, Engine::Tract)?);
    let mut a = open(&a_model).context("reference model")?;
    let mut b = open(&b_model).context("candidate model")?;
    ensure!(
        a.input_shape() == b.input_shape(),
        "input shapes differ: {:?} and {:?}",
        a.input_shape(),
        b.input_shape()
    );
    let inputs = probe.inputs(a.input_shape())?;
    let mut spreads: Vec<Spread> = tensors.iter().map(|_| Spread::default()).collect();
    for x in &inputs {
        let (ya, yb) = (a.run_all(x.view())?, b.run_all(x.view())?);
        for (((name, removed), spread), (&i, &j)) in tensors
            .iter()
            .zip(&mut spreads)
            .zip(a_slots.iter().zip(&b_slots))
        {
            let reference = without(&ya[i], removed).with_context(|| format!("tensor {name}"))?;
            let candidate = &yb[j];
            ensure!(
                reference.shape() == candidate.shape(),
                "tensor {name} has shape {:?} in the candidate against {:?} (kept channels of the \
                 reference)",
                candidate.shape(),
                reference.shape()
            );
            for (&u, &v) in reference.iter().zip(candidate) {
                let (u, v) = (f64::from(u), f64::from(v));
                let d = (u - v).abs();
                spread.max_abs_diff =
                    spread
                        .max_abs_diff
                        .max(if d.is_nan() { f64::INFINITY } else { d });
                if !spread.seen {
                    (spread.min, spread.max, spread.seen) = (u, u, true);
                }
                spread.min = spread.min.min(u);
                spread.max = spread.max.max(u);
                spread.max_abs = spread.max_abs.max(u.abs());
            }
        }
    }
    let mut relative = Vec::with_capacity(tensors.len());
    for ((name, _), s) in tensors.iter().zip(&spreads) {
        let varies = s.max_abs.is_finite() && s.max - s.min > CONSTANT_SPREAD * s.max_abs;
        if !varies {
            bail!(
                "the reference tensor {name} is constant ({:.6e}) over {}: comparing it proves \
                 nothing; check on inputs that excite the model (real images)",
                s.max,
                probe.describe()
            );
        }
        relative.push((name.clone(), s.max_abs_diff / s.max_abs));
    }
    Ok(Comparison {
        inputs: inputs.len(),
        relative,
    })
}

/// `model` computed in float32 ([`widen_fp16`]: a FLOAT16 model's proof runs in f32) with
/// `names` listed as graph outputs (those not already outputs appended as float tensors), and the
/// position of each name among the outputs.
fn exposing(model: &ModelProto, names: &[&str]) -> Result<(ModelProto, Vec<usize>)> {
    let mut model = model.clone();
    widen_fp16(&mut model)?;
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let mut slot: HashMap<String, usize> = graph
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name().to_string(), i))
        .collect();
    let mut slots = Vec::with_capacity(names.len());
    for &name in names {
        let next = graph.output.len();
        let at = *slot.entry(name.to_string()).or_insert(next);
        if at == next {
            graph.output.push(float_output(name));
        }
        slots.push(at);
    }
    Ok((model, slots))
}

fn float_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `t` without the positions `removed` on axis 1.
fn without(t: &ArrayD<f32>, removed: &BTreeSet<usize>) -> Result<ArrayD<f32>> {
    if removed.is_empty() {
        return Ok(t.clone());
    }
    ensure!(t.ndim() > 1, "has no channel axis (shape {:?})", t.shape());
    let n = t.shape()[1];
    ensure!(
        removed.last().is_some_and(|&k| k < n),
        "removed channel {:?} is outside its {n} channels",
        removed.last()
    );
    let kept: Vec<usize> = (0..n).filter(|k| !removed.contains(k)).collect();
    Ok(t.select(Axis(1), &kept))
}

/// The proof of a pass that returns a [`Reference`] (`prune_channels`: the masked dense model,
/// its input with exactly the removed channels zeroed): the pruned model must compute what the
/// reference computes on each of its tensors (graph outputs and the outputs of the pruned
/// groups' consumer convs), within [`TOLERANCE`] of each tensor's largest value.
pub fn masked_proof(reference: &Reference, pruned: &ModelProto, probe: &Probe) -> Result<Proof> {
    let found = compare_tensors(&reference.model, pruned, &reference.tensors, probe)?;
    let over: Vec<String> = found
        .relative
        .iter()
        .filter(|(_, r)| r.is_nan() || *r > TOLERANCE)
        .map(|(name, r)| format!("{name} by {r:.3e}"))
        .collect();
    if !over.is_empty() {
        bail!(
            "the pruned model's values differ from the masked model's, relative to the largest \
             |value| of each tensor (limit {TOLERANCE:.0e}), over {}: {}; the surgery changed \
             what the network computes",
            probe.describe(),
            over.join(", ")
        );
    }
    let (worst, max_rel_diff) = found.worst();
    Ok(Proof {
        summary: format!(
            "verified against the masked dense model with tract on {}: {} tensors (graph \
             outputs and the pruned groups' consumer convs), max |diff| {max_rel_diff:.3e} of the \
             largest |value| (in {worst}), limit {TOLERANCE:.0e}",
            probe.describe(),
            found.relative.len(),
        ),
        max_rel_diff: Some(max_rel_diff),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_drops_channel_positions() {
        let t = ArrayD::from_shape_vec(vec![1, 3, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let r = without(&t, &BTreeSet::from([1])).unwrap();
        assert_eq!(r.shape(), [1, 2, 2]);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [0., 1., 4., 5.]);
        assert!(without(&t, &BTreeSet::from([3])).is_err());
    }
}
