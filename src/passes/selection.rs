//! Which layers a pass touches, and reading and writing their weights.

use anyhow::{Context, Result, bail};
use faer::Mat;
use regex::Regex;

use crate::analysis::{ConvLayer, conv_layers};
use crate::calib::ConvSite;
use crate::graph::GraphView;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, TensorProto};
use crate::onnx::tensor;
use rayon::prelude::*;

/// `include` / `exclude` regular expressions, searched anywhere in node names. A layer is
/// selected when it matches some `include` pattern (or there is none) and no `exclude` pattern.
pub struct LayerFilter {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl LayerFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        let compile = |patterns: &[String], key: &str| -> Result<Vec<Regex>> {
            patterns
                .iter()
                .map(|p| Regex::new(p).with_context(|| format!("invalid {key} pattern {p:?}")))
                .collect()
        };
        Ok(LayerFilter {
            include: compile(include, "include")?,
            exclude: compile(exclude, "exclude")?,
        })
    }

    pub fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }
}

/// A selected conv layer and where its weight is.
pub struct SelectedWeight {
    pub layer: ConvLayer,
    /// Position of the weight in `graph.initializer`.
    pub initializer: usize,
    pub dims: Vec<i64>,
    /// Number of weight values.
    pub numel: usize,
}

/// The weights of the Conv layers `filter` selects, in node order. A weight shared by several
/// selected convs is returned once. Errors when nothing is selected, a weight is sparse-stored or
/// not a floating-point tensor.
pub fn selected_weights(graph: &GraphProto, filter: &LayerFilter) -> Result<Vec<SelectedWeight>> {
    let view = GraphView::new(graph);
    let layers: Vec<ConvLayer> = conv_layers(&view)?
        .into_iter()
        .filter(|l| filter.selects(&l.name))
        .collect();
    if layers.is_empty() {
        bail!("no Conv layer to prune (the model has none, or include/exclude leave none)");
    }
    let positions: std::collections::HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name(), i))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for layer in layers {
        if layer.sparse {
            bail!(
                "{}: the weight is stored as a sparse initializer; densify it before pruning",
                view.describe(layer.node)
            );
        }
        if !seen.insert(layer.weight.clone()) {
            continue;
        }
        let initializer = positions[layer.weight.as_str()];
        let t = &graph.initializer[initializer];
        if !matches!(
            DataType::try_from(t.data_type()),
            Ok(DataType::Float | DataType::Float16 | DataType::Double)
        ) {
            bail!(
                "{}: weight is {}, not floating point",
                view.describe(layer.node),
                tensor::type_name(t)
            );
        }
        out.push(SelectedWeight {
            dims: t.dims.clone(),
            numel: tensor::numel(&t.dims)?,
            initializer,
            layer,
        });
    }
    Ok(out)
}

/// Reads the values of one selected weight.
pub fn read_values(graph: &GraphProto, w: &SelectedWeight) -> Result<Vec<f32>> {
    tensor::to_f32(&graph.initializer[w.initializer])
        .with_context(|| format!("weight of {}", w.layer.name))
}

/// Rewrites every selected weight in parallel, one at a time per thread: reads its values,
/// lets `edit` change them (returning a count), and stores them back in the same form. Only the
/// weights being edited are held decoded, never all at once, and the input pages of each are
/// handed back once it is rewritten ([`tensor::set_f32`]). Returns the sum of the counts.
pub fn rewrite_weights(
    graph: &mut GraphProto,
    weights: &[SelectedWeight],
    edit: impl Fn(usize, &SelectedWeight, &mut [f32]) -> u64 + Sync,
) -> Result<u64> {
    let by_position: std::collections::HashMap<usize, (usize, &SelectedWeight)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (w.initializer, (i, w)))
        .collect();
    graph
        .initializer
        .par_iter_mut()
        .enumerate()
        .filter_map(|(position, t)| by_position.get(&position).map(|&(i, w)| (i, w, t)))
        .map(|(i, w, t)| {
            let mut values =
                tensor::to_f32(t).with_context(|| format!("weight of {}", w.layer.name))?;
            let count = edit(i, w, &mut values);
            tensor::set_f32(t, values)?;
            Ok(count)
        })
        .sum()
}

/// A Conv's weight and bias initializers seen as one matrix `[W | b]`: `rows` output channels by
/// `columns` weight entries per row plus the bias as last column, in f64.
pub struct LayerMatrix<'a> {
    /// The node's name, for errors.
    pub name: &'a str,
    pub weight: &'a str,
    pub bias: &'a str,
    pub rows: usize,
    pub columns: usize,
}

impl<'a> LayerMatrix<'a> {
    /// The matrix of the Conv at `site` whose weight and bias initializers are named `weight`
    /// and `bias`.
    pub fn of(site: &'a ConvSite, weight: &'a str, bias: &'a str) -> Self {
        LayerMatrix {
            name: &site.name,
            weight,
            bias,
            rows: site.out_channels,
            columns: site.columns(),
        }
    }

    fn find<'g>(&self, graph: &'g GraphProto, tensor: &str) -> Result<&'g TensorProto> {
        graph
            .initializer
            .iter()
            .find(|t| t.name() == tensor)
            .with_context(|| format!("{}: no initializer {tensor:?}", self.name))
    }

    /// Reads `[W | b]`.
    pub fn read(&self, graph: &GraphProto) -> Result<Mat<f64>> {
        let weight = tensor::to_f32(self.find(graph, self.weight)?)?;
        let bias = tensor::to_f32(self.find(graph, self.bias)?)?;
        let n = self.columns;
        Ok(Mat::from_fn(self.rows, n + 1, |r, j| {
            f64::from(if j == n { bias[r] } else { weight[r * n + j] })
        }))
    }

    /// Stores `w` back into the weight and bias, each in its own element type.
    pub fn write(&self, graph: &mut GraphProto, w: &Mat<f64>) -> Result<()> {
        let n = self.columns;
        let weight: Vec<f32> = (0..self.rows)
            .flat_map(|r| (0..n).map(move |j| (r, j)))
            .map(|(r, j)| w[(r, j)] as f32)
            .collect();
        let bias: Vec<f32> = (0..self.rows).map(|r| w[(r, n)] as f32).collect();
        for (name, values) in [(self.weight, weight), (self.bias, bias)] {
            let t = graph
                .initializer
                .iter_mut()
                .find(|t| t.name() == name)
                .with_context(|| format!("{}: no initializer {name:?}", self.name))?;
            tensor::set_f32(t, values)?;
        }
        Ok(())
    }
}

/// Zero with the sign of `v`, as multiplying by a 0/1 mask gives (torch's pruning does), so
/// pruned tensors match the guide's bit for bit.
pub fn zero_like(v: f32) -> f32 {
    0.0f32.copysign(v)
}

/// Python's `round()` (half to even), which the pruning guide's counts follow.
pub fn round_half_even(x: f64) -> u64 {
    x.round_ties_even().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::round_half_even;

    #[test]
    fn rounds_half_to_even_like_python() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(2.4), 2);
        assert_eq!(round_half_even(2.6), 3);
        assert_eq!(round_half_even(0.3 * 432.0), 130);
    }
}
