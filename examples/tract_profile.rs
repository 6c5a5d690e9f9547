//! Where tract spends an inference: optimises the model as shears' tract backend does (batch 1,
//! IMGSZ x IMGSZ, default 640, the same tract and allocator settings, one thread), times every
//! node of the plan over RUNS runs on the input `shears bench` uses, after one untimed run, and
//! prints the mean time per run in all and in its nodes, of each tract op, then of each ONNX node
//! (the tract nodes it became: a Conv's padding, packing and matrix product count as that
//! Conv's).
//!
//! usage: cargo run --release --example tract_profile -- MODEL.onnx [RUNS] [IMGSZ]
//!
//! Per-node timing adds a little overhead and the machine's load moves single figures: compare
//! models from runs made back to back, and ratios rather than times.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: tract_profile MODEL.onnx [RUNS] [IMGSZ]")?;
    let runs: u32 = args.next().map_or(Ok(10), |r| r.parse()).context("RUNS")?;
    let imgsz: usize = args
        .next()
        .map_or(Ok(640), |r| r.parse())
        .context("IMGSZ")?;
    let shape = [1, 3, imgsz, imgsz];
    shears::backend::keep_freed_memory();
    let model = tract_onnx::onnx()
        .model_for_path(&path)
        .with_context(|| format!("reading {path}"))?
        .with_input_fact(0, f32::fact(shape).into())?;
    let plan = shears::backend::tract::optimise(model)?.into_runnable()?;
    let mut state = plan.spawn()?;
    // the input `shears bench` times
    let input: Tensor = shears::backend::bench::random_input(shape, 0)
        .into_dyn()
        .into();
    let mut per_op: BTreeMap<String, f64> = BTreeMap::new();
    // ONNX node -> (the tract ops it became, seconds)
    let mut per_source: BTreeMap<String, (BTreeSet<String>, f64)> = BTreeMap::new();
    let mut wall = 0.0;
    for run in 0..=runs {
        let inputs = tvec![input.clone().into_tvalue()];
        let run_start = Instant::now();
        state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
            let start = Instant::now();
            let outputs = eval(ctx, op_state, node, inputs);
            let seconds = start.elapsed().as_secs_f64();
            if run > 0 {
                let op = node.op().name().to_string();
                *per_op.entry(op.clone()).or_default() += seconds;
                let source = per_source
                    .entry(source_node(&node.name).to_string())
                    .or_default();
                source.0.insert(op);
                source.1 += seconds;
            }
            outputs
        })?;
        if run > 0 {
            wall += run_start.elapsed().as_secs_f64();
        }
    }
    let ms = |seconds: f64| seconds * 1e3 / f64::from(runs);
    let mut per_op: Vec<_> = per_op.into_iter().collect();
    per_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = per_op.iter().map(|(_, seconds)| seconds).sum();
    println!(
        "{path}: {:.2} ms per run in its nodes, {:.2} ms in all, mean of {runs}",
        ms(total),
        ms(wall)
    );
    for (op, seconds) in &per_op {
        println!("{:>10.3} ms  {op}", ms(*seconds));
    }
    println!();
    for (name, (ops, seconds)) in &per_source {
        let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
        println!("{:>10.3} ms  {name}  [{}]", ms(*seconds), ops.join(" "));
    }
    Ok(())
}

/// The ONNX node a tract node comes from: tract names the nodes it derives from
/// `/model.9/cv2/conv/Conv` as `/model.9/cv2/conv/Conv.einsum...`, `...Conv.pad` and so on.
fn source_node(name: &str) -> &str {
    let last = name.rfind('/').map_or(0, |slash| slash + 1);
    name[last..]
        .find('.')
        .map_or(name, |dot| &name[..last + dot])
}
