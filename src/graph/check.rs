//! The consistency check run after every pass: every node input defined before it is read, every
//! name defined once, no initializer left unread, declared shapes (`value_info`) agreeing with
//! the shapes inferred from the weights, and the graph outputs unchanged in name and rank. A
//! model may arrive with some of these problems; a pass is blamed only for the ones it adds.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Result, bail};

use super::infer_undeclared_shapes;
use super::shapes::declared_shape;
use super::view::GraphView;
use crate::onnx::proto::{GraphProto, NodeProto};

/// What a graph looks like to the check: its problems (keyed by the tensor they concern) and its
/// outputs' names and ranks.
#[derive(Debug)]
pub struct Consistency {
    problems: BTreeMap<String, String>,
    outputs: Vec<(String, Option<usize>)>,
}

impl Consistency {
    pub fn of(graph: &GraphProto) -> Self {
        Consistency {
            problems: problems(graph),
            outputs: graph
                .output
                .iter()
                .map(|o| (o.name().to_string(), declared_shape(o).map(|s| s.len())))
                .collect(),
        }
    }

    /// Errors, naming `pass`, when `after` (the state of the graph after it) has a problem this
    /// state did not have, or different outputs.
    pub fn ensure_kept(&self, after: &Consistency, pass: &str) -> Result<()> {
        if let Some(problem) = after
            .problems
            .iter()
            .find(|(key, _)| !self.problems.contains_key(*key))
            .map(|(_, problem)| problem)
        {
            bail!("pass {pass} left an inconsistent graph: {problem}");
        }
        for (i, (before, now)) in self.outputs.iter().zip(&after.outputs).enumerate() {
            if before.0 != now.0 || (before.1.is_some() && now.1.is_some() && before.1 != now.1) {
                bail!(
                    "pass {pass} changed graph output {i}: {:?} of rank {:?} became {:?} of rank \
                     {:?}",
                    before.0,
                    before.1,
                    now.0,
                    now.1
                );
            }
        }
        if self.outputs.len() != after.outputs.len() {
            bail!(
                "pass {pass} changed the number of graph outputs from {} to {}",
                self.outputs.len(),
                after.outputs.len()
            );
        }
        Ok(())
    }
}

/// Every problem of `graph`, keyed by kind and tensor name, described with the node concerned.
fn problems(graph: &GraphProto) -> BTreeMap<String, String> {
    let view = GraphView::new(graph);
    let mut found = BTreeMap::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut define = |found: &mut BTreeMap<String, String>, name: &str, by: String| {
        if name.is_empty() {
            return;
        }
        if let Some(first) = defined.insert(name.to_string(), by.clone()) {
            found.insert(
                format!("twice {name}"),
                format!("{name:?} is defined twice, by {first} and by {by}"),
            );
        }
    };
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    for input in &graph.input {
        // An initializer listed as an input (IR version 3 style) is one definition.
        if !initializers.contains(input.name()) {
            define(&mut found, input.name(), "a graph input".into());
        }
    }
    for t in &graph.initializer {
        define(&mut found, t.name(), "an initializer".into());
    }
    for s in &graph.sparse_initializer {
        if let Some(values) = &s.values {
            define(&mut found, values.name(), "a sparse initializer".into());
        }
    }
    let mut available: HashSet<&str> = defined_before_nodes(graph);
    for (index, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !available.contains(input.as_str()) {
                found.insert(
                    format!("undefined {input}"),
                    format!(
                        "{} reads {input:?}, which nothing defines before it",
                        view.describe(index)
                    ),
                );
            }
        }
        for output in &node.output {
            define(&mut found, output, view.describe(index));
            available.insert(output);
        }
    }
    let mut read = HashSet::new();
    reads(&graph.node, &mut read);
    read.extend(graph.output.iter().map(|o| o.name().to_string()));
    for t in &graph.initializer {
        if !read.contains(t.name()) {
            found.insert(
                format!("unread {}", t.name()),
                format!("initializer {:?} is read by nothing", t.name()),
            );
        }
    }
    let inferred = infer_undeclared_shapes(&view);
    for info in &graph.value_info {
        let (Some(declared), Some(inferred)) = (declared_shape(info), inferred.get(info.name()))
        else {
            continue;
        };
        if declared != inferred {
            let by = view
                .producer(info.name())
                .map_or_else(|| "no node".to_string(), |i| view.describe(i));
            found.insert(
                format!("shape {}", info.name()),
                format!(
                    "{:?} (made by {by}) is declared {declared:?} but has shape {inferred:?}",
                    info.name()
                ),
            );
        }
    }
    found
}

/// The names a graph's nodes may read before any node runs.
fn defined_before_nodes(graph: &GraphProto) -> HashSet<&str> {
    graph
        .input
        .iter()
        .map(|i| i.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
        .chain(
            graph
                .sparse_initializer
                .iter()
                .filter_map(|s| Some(s.values.as_ref()?.name())),
        )
        .collect()
}

/// Adds every tensor name `nodes` read, subgraphs included, to `read`.
fn reads(nodes: &[NodeProto], read: &mut HashSet<String>) {
    for node in nodes {
        read.extend(node.input.iter().cloned());
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                reads(&g.node, read);
                read.extend(g.output.iter().map(|o| o.name().to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::node;
    use crate::onnx::tensor::{from_f32, value_info_f32};

    fn graph() -> GraphProto {
        GraphProto {
            input: vec![value_info_f32("x", &[1, 2, 4, 4])],
            output: vec![value_info_f32("y", &[1, 3, 4, 4])],
            initializer: vec![from_f32("w", &[3, 2, 1, 1], &[0.5; 6])],
            node: vec![node("Conv", "c", &["x", "w"], &["y"])],
            ..Default::default()
        }
    }

    #[test]
    fn each_new_problem_names_the_pass_and_the_node() {
        let base = Consistency::of(&graph());
        base.ensure_kept(&Consistency::of(&graph()), "p").unwrap();
        type Change = fn(&mut GraphProto);
        let cases: [(Change, &str); 5] = [
            (
                |g| g.node[0].input[1] = "v".into(),
                "#0 \"c\" Conv reads \"v\"",
            ),
            (
                |g| g.initializer.push(from_f32("u", &[1], &[1.0])),
                "initializer \"u\" is read by nothing",
            ),
            (
                |g| g.node.push(node("Relu", "r", &["x"], &["w"])),
                "\"w\" is defined twice",
            ),
            (
                |g| g.value_info.push(value_info_f32("y", &[1, 2, 4, 4])),
                "declared [1, 2, 4, 4] but has shape [1, 3, 4, 4]",
            ),
            (
                |g| g.output[0].name = Some("z".into()),
                "changed graph output 0",
            ),
        ];
        for (change, needle) in cases {
            let mut g = graph();
            change(&mut g);
            let err = base.ensure_kept(&Consistency::of(&g), "p").unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains("pass p") && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn problems_the_model_came_with_are_not_blamed_on_the_pass() {
        let mut g = graph();
        g.initializer.push(from_f32("u", &[1], &[1.0]));
        let base = Consistency::of(&g);
        base.ensure_kept(&Consistency::of(&g), "p").unwrap();
    }
}
