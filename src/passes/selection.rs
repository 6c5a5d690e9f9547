//! Which layers a pass touches, and reading and writing their weights.

use anyhow::{Context, Result, bail};
use regex::Regex;

use crate::analysis::{ConvLayer, conv_layers};
use crate::graph::GraphView;
use crate::onnx::proto::GraphProto;
use crate::onnx::tensor;

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

/// A selected conv layer and its weight values.
pub struct SelectedWeight {
    pub layer: ConvLayer,
    /// Position of the weight in `graph.initializer`.
    pub initializer: usize,
    pub dims: Vec<i64>,
    pub values: Vec<f32>,
}

/// The weights of the Conv layers `filter` selects, in node order. A weight shared by several
/// selected convs is returned once. Errors when nothing is selected or a weight is sparse-stored.
pub fn selected_weights(graph: &GraphProto, filter: &LayerFilter) -> Result<Vec<SelectedWeight>> {
    let view = GraphView::new(graph);
    let layers: Vec<ConvLayer> = conv_layers(&view)?
        .into_iter()
        .filter(|l| filter.selects(&l.name))
        .collect();
    if layers.is_empty() {
        bail!("no Conv layer to prune (the model has none, or include/exclude leave none)");
    }
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
        let initializer = graph
            .initializer
            .iter()
            .position(|t| t.name() == layer.weight)
            .expect("conv_layers found it");
        let t = &graph.initializer[initializer];
        let values =
            tensor::to_f32(t).with_context(|| format!("{}: weight", view.describe(layer.node)))?;
        out.push(SelectedWeight {
            dims: t.dims.clone(),
            initializer,
            values,
            layer,
        });
    }
    Ok(out)
}

/// Writes pruned values back into their initializers.
pub fn write_back(graph: &mut GraphProto, weights: &[SelectedWeight]) -> Result<()> {
    for w in weights {
        tensor::set_f32(&mut graph.initializer[w.initializer], &w.values)?;
    }
    Ok(())
}

/// Zero with the sign of `v`, as multiplying by a 0/1 mask gives (torch's pruning does), so
/// pruned tensors match the guide's bit for bit.
pub fn zero_like(v: f32) -> f32 {
    0.0f32.copysign(v)
}

/// Python's `round()` (half to even), which the pruning guide's counts follow.
pub fn round_half_even(x: f64) -> u64 {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as u64
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
