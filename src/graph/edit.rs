//! The one way passes change a graph's initializers, node attributes and value infos, keeping it
//! well formed: names stay unique, a tensor shared by several readers is copied rather than changed under
//! the others, and where the graph lists its initializers as graph inputs too (IR version 3 and
//! older require it) those listings follow every initializer added, reshaped or removed.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result};

use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension};
use crate::onnx::proto::{
    GraphProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

/// A name starting with `base` that no initializer, node output or graph input has.
pub fn fresh_name(graph: &GraphProto, base: &str) -> String {
    let taken = |n: &str| {
        graph.initializer.iter().any(|t| t.name() == n)
            || graph.node.iter().any(|x| x.output.iter().any(|o| o == n))
            || graph.input.iter().any(|i| i.name() == n)
    };
    let mut name = base.to_string();
    let mut i = 1;
    while taken(&name) {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

/// Whether `name` is an initializer listed among the graph inputs only because the graph lists
/// all its initializers there (not an input a caller may override).
fn listed_as_input(graph: &GraphProto, name: &str) -> bool {
    lists_initializers(graph) && graph.input.iter().any(|i| i.name() == name)
}

/// Whether the graph lists its initializers as graph inputs (IR version 3 style): it has
/// initializers and every one of them is listed.
fn lists_initializers(graph: &GraphProto) -> bool {
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    !graph.initializer.is_empty() && graph.initializer.iter().all(|t| inputs.contains(t.name()))
}

/// A graph input describing initializer `t` (its element type and dims).
fn input_for(t: &TensorProto) -> ValueInfoProto {
    ValueInfoProto {
        name: t.name.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: t.data_type,
                shape: Some(TensorShapeProto {
                    dim: t
                        .dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Adds initializer `t` (its name must be fresh), listed as a graph input too when the graph
/// lists its initializers there.
pub fn add_initializer(graph: &mut GraphProto, t: TensorProto) {
    if lists_initializers(graph) {
        graph.input.push(input_for(&t));
    }
    graph.initializer.push(t);
}

/// Makes node `node` read `t` at input `slot`: the tensor it reads there is replaced in place when
/// nothing else reads it (no other node or slot, no graph output, no graph input other than its
/// own listing), else `t` is added under a fresh name read by this node alone. Returns the name
/// of the initializer that lost this reader when it was not replaced in place, for
/// [`drop_unread`].
pub fn put_for_node(
    graph: &mut GraphProto,
    node: usize,
    slot: usize,
    mut t: TensorProto,
) -> Option<String> {
    let name = graph.node[node].input[slot].clone();
    let listed = listed_as_input(graph, &name);
    let readers: usize = graph
        .node
        .iter()
        .map(|n| n.input.iter().filter(|i| **i == name).count())
        .sum::<usize>()
        + graph.output.iter().filter(|o| o.name() == name).count()
        + graph.input.iter().filter(|i| i.name() == name).count()
        - usize::from(listed);
    let existing = graph.initializer.iter().position(|x| x.name() == name);
    match existing {
        Some(index) if readers == 1 => {
            t.name = Some(name.clone());
            if listed {
                for input in graph.input.iter_mut().filter(|i| i.name() == name) {
                    *input = input_for(&t);
                }
            }
            graph.initializer[index] = t;
            None
        }
        _ => Some(put_fresh_for_node(graph, node, slot, t)),
    }
}

/// Makes node `node` read `t` at input `slot` under a fresh name (`<old>_pruned_n<node>`), read
/// by this node alone; returns the name it read before, for [`drop_unread`].
pub fn put_fresh_for_node(
    graph: &mut GraphProto,
    node: usize,
    slot: usize,
    mut t: TensorProto,
) -> String {
    let name = graph.node[node].input[slot].clone();
    let fresh = fresh_name(graph, &format!("{name}_pruned_n{node}"));
    t.name = Some(fresh.clone());
    add_initializer(graph, t);
    graph.node[node].input[slot] = fresh;
    name
}

/// Sets the integer-list attribute `name` of node `node`, which it must have.
pub fn set_attr_ints(
    graph: &mut GraphProto,
    node: usize,
    name: &str,
    values: Vec<i64>,
) -> Result<()> {
    let n = &mut graph.node[node];
    let describe = format!("node {:?}", n.name());
    let a = n
        .attribute
        .iter_mut()
        .find(|a| a.name() == name)
        .with_context(|| format!("{describe}: no attribute {name:?}"))?;
    a.ints = values;
    Ok(())
}

/// Sets the integer attribute `name` of node `node` when it has one (an absent one keeps its
/// default).
pub fn set_attr_int_if_present(graph: &mut GraphProto, node: usize, name: &str, value: i64) {
    if let Some(a) = graph.node[node]
        .attribute
        .iter_mut()
        .find(|a| a.name() == name)
    {
        a.i = Some(value);
    }
}

/// Drops the initializers among `names` that nothing reads any more (no node, no graph output,
/// no graph input a caller may set), with their listings as graph inputs.
pub fn drop_unread(graph: &mut GraphProto, names: &[String]) {
    let listed = lists_initializers(graph);
    let read = |graph: &GraphProto, n: &str| {
        graph.node.iter().any(|x| x.input.iter().any(|i| i == n))
            || graph.output.iter().any(|o| o.name() == n)
            || (!listed && graph.input.iter().any(|i| i.name() == n))
    };
    let unread: BTreeSet<String> = names
        .iter()
        .filter(|n| graph.initializer.iter().any(|t| t.name() == *n) && !read(graph, n))
        .cloned()
        .collect();
    graph.initializer.retain(|t| !unread.contains(t.name()));
    graph.input.retain(|i| !unread.contains(i.name()));
}

/// Removes the initializer at `index`, with its listing as a graph input where the graph lists
/// all its initializers, and returns it.
pub fn take_initializer(graph: &mut GraphProto, index: usize) -> TensorProto {
    let listed = lists_initializers(graph);
    let t = graph.initializer.remove(index);
    if listed {
        graph.input.retain(|i| i.name() != t.name());
    }
    t
}

/// Lowers dimension `axis` of every `value_info` entry named in `lost` by its count.
pub fn shrink_value_info(graph: &mut GraphProto, axis: usize, lost: &HashMap<String, usize>) {
    for info in &mut graph.value_info {
        let Some(&n) = lost.get(info.name()).filter(|&&n| n > 0) else {
            continue;
        };
        let Some(type_proto::Value::TensorType(t)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        if let Some(dimension::Value::DimValue(v)) = t
            .shape
            .as_mut()
            .and_then(|s| s.dim.get_mut(axis))
            .and_then(|d| d.value.as_mut())
        {
            *v -= n as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::NodeProto;
    use crate::onnx::tensor;

    fn reader(inputs: &[&str]) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_tensor_read_by_two_nodes_is_copied_for_the_edited_one() {
        let mut g = GraphProto::default();
        g.initializer.push(tensor::from_f32("w", &[2], &[1.0, 2.0]));
        g.node.push(reader(&["a", "w"]));
        g.node.push(reader(&["b", "w"]));
        let t = tensor::from_f32("w", &[1], &[2.0]);
        let replaced: Vec<String> = put_for_node(&mut g, 1, 1, t.clone()).into_iter().collect();
        assert_eq!(g.node[1].input[1], "w_pruned_n1");
        assert_eq!(g.node[0].input[1], "w");
        drop_unread(&mut g, &replaced);
        assert_eq!(g.initializer.len(), 2);
        assert_eq!(g.initializer[0].dims, [2]);
        // Node 0 is now the only reader: edited in place.
        assert_eq!(put_for_node(&mut g, 0, 1, t), None);
        assert_eq!(g.node[0].input[1], "w");
        assert_eq!(g.initializer[0].dims, [1]);
        assert_eq!(g.initializer.len(), 2);
    }

    #[test]
    fn initializers_listed_as_inputs_keep_their_listing_in_step() {
        let mut g = GraphProto::default();
        for name in ["w", "v"] {
            let t = tensor::from_f32(name, &[2], &[1.0, 2.0]);
            g.input.push(input_for(&t));
            g.initializer.push(t);
        }
        g.node.push(reader(&["x", "w"]));
        g.node.push(reader(&["x", "v"]));
        g.node.push(reader(&["y", "v"]));
        // Its listing is not a reader: w is edited in place, and its listing follows.
        let t = tensor::from_f32("w", &[1], &[2.0]);
        assert_eq!(put_for_node(&mut g, 0, 1, t.clone()), None);
        assert_eq!(g.input[0], input_for(&t));
        // v has two readers: the copy for one is listed too.
        let replaced: Vec<String> = put_for_node(&mut g, 1, 1, t.clone()).into_iter().collect();
        let names = |g: &GraphProto| {
            let inputs: Vec<String> = g.input.iter().map(|i| i.name().to_string()).collect();
            let initializers: Vec<String> =
                g.initializer.iter().map(|i| i.name().to_string()).collect();
            assert_eq!(inputs, initializers);
            inputs
        };
        assert_eq!(names(&g), ["w", "v", "v_pruned_n1"]);
        assert_eq!(g.input[2].r#type, input_for(&t).r#type);
        // Once v has no reader left, it goes with its listing.
        g.node[2].input[1] = "w".into();
        drop_unread(&mut g, &replaced);
        assert_eq!(names(&g), ["w", "v_pruned_n1"]);
    }
}
