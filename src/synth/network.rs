//! Traces the forward pass of `models/yolov5*.yaml` and `models/hub/yolov5*6.yaml` (v7.0) into
//! ONNX nodes, in the order and with the names the torch exporter gives them.
//!
//! Parameters are declared in module registration order (the order of `state_dict`, which is
//! the exporter's initializer order): a C3 registers `cv1, cv2, cv3, m.*` but runs
//! `cv1, m.*, cv2, Concat, cv3`.

use super::arch::Layer;
use super::detect;
use super::graph::{GraphBuilder, Init, tensor_f32, tensor_i64};
use super::weights;
use super::{Export, SynthSpec, Upsample};
use crate::onnx::build::{float_attr, int_attr, ints_attr, string_attr};

/// Name of the graph input (float32 `[1, 3, imgsz, imgsz]`).
pub(super) const INPUT: &str = "images";
/// Name of the graph output (float32 `[1, anchors, 5 + nc]`).
pub(super) const OUTPUT: &str = "output0";

/// `base`, `base_1`, `base_2`, ...: how the exporter names the k-th node of one kind in a scope.
pub(super) fn indexed(base: &str, k: usize) -> String {
    if k == 0 {
        base.to_owned()
    } else {
        format!("{base}_{k}")
    }
}

/// Lays out the whole graph for `spec`; weights are generated later by
/// [`GraphBuilder::finish`].
pub(super) fn trace(spec: &SynthSpec) -> GraphBuilder {
    let v = spec.variant;
    let arch = v.arch();
    let size = spec.imgsz as i64;
    // onnxsim names the initializers it folds `_v_<n>` after a value counter that starts past
    // the values of the opset-17 export, which has a fixed offset to those of the opset-12
    // export of the same model.
    let folded_base = match spec.export {
        Export::Opset12 => 0,
        Export::Opset17Simplified => {
            let unsimplified = trace(&SynthSpec {
                export: Export::Opset12,
                ..spec.clone()
            });
            let offset = match spec.upsample {
                Upsample::ComputedSizes => arch.folded.detect_after_sizes,
                Upsample::ConstantScales => arch.folded.detect_after_scales,
            };
            unsimplified.value_count() + offset
        }
    };
    let mut g = GraphBuilder::new(spec.export, INPUT, vec![1, 3, size, size]);
    let upsamples: Vec<usize> = (arch.layers.iter().enumerate())
        .filter(|(_, layer)| matches!(layer, Layer::Upsample))
        .map(|(i, _)| i)
        .collect();
    let mut y: Vec<String> = Vec::with_capacity(arch.layers.len());
    for (i, layer) in arch.layers.iter().enumerate() {
        let x = y.last().map_or(INPUT, String::as_str).to_owned();
        let out = match *layer {
            Layer::Conv { c, k, s, p } => conv_module(&mut g, i, &x, v.width(c), (k, s, p)),
            Layer::C3 { c, n, shortcut } => c3(&mut g, i, &x, v.width(c), v.depth(n), shortcut),
            Layer::Sppf { c } => sppf(&mut g, i, &x, v.width(c)),
            Layer::Upsample => upsample(&mut g, spec, &upsamples, i, &x, folded_base),
            Layer::Concat { with } => concat(&mut g, i, &[&x, &y[with]]),
        };
        y.push(out);
    }
    let detect_inputs: Vec<&str> = arch.detect_from.iter().map(|&i| y[i].as_str()).collect();
    detect::trace(&mut g, spec, &detect_inputs, folded_base);
    g.rename_last_output(OUTPUT);
    g
}

/// Declares the fused weight and bias of a `Conv` module at `prefix` (e.g. `model.2.cv1`),
/// the weight drawn with variance `gain / fan_in`.
fn declare_conv(g: &mut GraphBuilder, prefix: &str, (c1, c2, k): (usize, usize, usize), gain: f64) {
    g.param(
        format!("{prefix}.conv.weight"),
        vec![c2 as i64, c1 as i64, k as i64, k as i64],
        Init::Weight {
            fan_in: c1 * k * k,
            gain,
        },
    );
    g.param(format!("{prefix}.conv.bias"), vec![c2 as i64], Init::Bias);
}

/// A 2-D convolution node named `name` with square kernel `k`, stride `s`, padding `p`.
pub(super) fn conv_node(
    g: &mut GraphBuilder,
    name: &str,
    x: &str,
    weight: &str,
    bias: &str,
    c2: usize,
    (k, s, p): (usize, usize, usize),
) -> String {
    let shape = g.shape(x);
    let out = |d: i64| (d + 2 * p as i64 - k as i64) / s as i64 + 1;
    let out_shape = vec![shape[0], c2 as i64, out(shape[2]), out(shape[3])];
    let (k, s, p) = (k as i64, s as i64, p as i64);
    g.node1(
        "Conv",
        name,
        &[x, weight, bias],
        vec![
            ints_attr("dilations", &[1, 1]),
            int_attr("group", 1),
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("pads", &[p, p, p, p]),
            ints_attr("strides", &[s, s]),
        ],
        out_shape,
    )
}

/// Runs an already declared `Conv` module (conv + SiLU as `Sigmoid`, `Mul`).
fn conv_forward(
    g: &mut GraphBuilder,
    scope: &str,
    prefix: &str,
    x: &str,
    c2: usize,
    ksp: (usize, usize, usize),
) -> String {
    let conv = conv_node(
        g,
        &format!("{scope}/conv/Conv"),
        x,
        &format!("{prefix}.conv.weight"),
        &format!("{prefix}.conv.bias"),
        c2,
        ksp,
    );
    let shape = g.shape(&conv).to_vec();
    let sig = g.node1(
        "Sigmoid",
        &format!("{scope}/act/Sigmoid"),
        &[&conv],
        vec![],
        shape.clone(),
    );
    g.node1(
        "Mul",
        &format!("{scope}/act/Mul"),
        &[&conv, &sig],
        vec![],
        shape,
    )
}

/// Top-level layer `model.<layer>` that is a single `Conv` module.
fn conv_module(
    g: &mut GraphBuilder,
    layer: usize,
    x: &str,
    c2: usize,
    (k, s, p): (usize, usize, usize),
) -> String {
    let c1 = g.shape(x)[1] as usize;
    let prefix = format!("model.{layer}");
    declare_conv(g, &prefix, (c1, c2, k), weights::GAIN);
    conv_forward(g, &format!("/model.{layer}"), &prefix, x, c2, (k, s, p))
}

/// `C3(c1, c2, n, shortcut)`: cv1/cv2 to `c2 / 2` channels, `n` bottlenecks on the cv1 branch,
/// concat, cv3 to `c2`.
fn c3(g: &mut GraphBuilder, layer: usize, x: &str, c2: usize, n: usize, shortcut: bool) -> String {
    let c1 = g.shape(x)[1] as usize;
    let c_ = c2 / 2;
    let prefix = format!("model.{layer}");
    let scope = format!("/model.{layer}");
    declare_conv(g, &format!("{prefix}.cv1"), (c1, c_, 1), weights::GAIN);
    declare_conv(g, &format!("{prefix}.cv2"), (c1, c_, 1), weights::GAIN);
    declare_conv(g, &format!("{prefix}.cv3"), (2 * c_, c2, 1), weights::GAIN);
    for j in 0..n {
        declare_conv(
            g,
            &format!("{prefix}.m.{j}.cv1"),
            (c_, c_, 1),
            weights::GAIN,
        );
        // The branch added to the residual stream gets a smaller range so that n adds do
        // not blow the activations up.
        let gain = if shortcut {
            weights::residual_branch_gain(n)
        } else {
            weights::GAIN
        };
        declare_conv(g, &format!("{prefix}.m.{j}.cv2"), (c_, c_, 3), gain);
    }

    let mut h = conv_forward(
        g,
        &format!("{scope}/cv1"),
        &format!("{prefix}.cv1"),
        x,
        c_,
        (1, 1, 0),
    );
    for j in 0..n {
        let bscope = format!("{scope}/m/m.{j}");
        let bprefix = format!("{prefix}.m.{j}");
        let b1 = conv_forward(
            g,
            &format!("{bscope}/cv1"),
            &format!("{bprefix}.cv1"),
            &h,
            c_,
            (1, 1, 0),
        );
        let b2 = conv_forward(
            g,
            &format!("{bscope}/cv2"),
            &format!("{bprefix}.cv2"),
            &b1,
            c_,
            (3, 1, 1),
        );
        h = if shortcut {
            let shape = g.shape(&b2).to_vec();
            g.node1("Add", &format!("{bscope}/Add"), &[&h, &b2], vec![], shape)
        } else {
            b2
        };
    }
    let side = conv_forward(
        g,
        &format!("{scope}/cv2"),
        &format!("{prefix}.cv2"),
        x,
        c_,
        (1, 1, 0),
    );
    let cat = concat(g, layer, &[&h, &side]);
    conv_forward(
        g,
        &format!("{scope}/cv3"),
        &format!("{prefix}.cv3"),
        &cat,
        c2,
        (1, 1, 0),
    )
}

/// `SPPF(c1, c2, 5)`: cv1 to `c1 / 2`, three chained 5x5 max pools, concat of all four, cv2.
fn sppf(g: &mut GraphBuilder, layer: usize, x: &str, c2: usize) -> String {
    let c1 = g.shape(x)[1] as usize;
    let c_ = c1 / 2;
    let prefix = format!("model.{layer}");
    let scope = format!("/model.{layer}");
    declare_conv(g, &format!("{prefix}.cv1"), (c1, c_, 1), weights::GAIN);
    declare_conv(g, &format!("{prefix}.cv2"), (4 * c_, c2, 1), weights::GAIN);
    let h = conv_forward(
        g,
        &format!("{scope}/cv1"),
        &format!("{prefix}.cv1"),
        x,
        c_,
        (1, 1, 0),
    );
    let shape = g.shape(&h).to_vec();
    let mut pooled = vec![h];
    for k in 0..3 {
        let prev = pooled[k].clone();
        pooled.push(g.node1(
            "MaxPool",
            &format!("{scope}/{}/MaxPool", indexed("m", k)),
            &[&prev],
            vec![
                int_attr("ceil_mode", 0),
                ints_attr("dilations", &[1, 1]),
                ints_attr("kernel_shape", &[5, 5]),
                ints_attr("pads", &[2, 2, 2, 2]),
                ints_attr("strides", &[1, 1]),
            ],
            shape.clone(),
        ));
    }
    let refs: Vec<&str> = pooled.iter().map(String::as_str).collect();
    let cat = concat(g, layer, &refs);
    conv_forward(
        g,
        &format!("{scope}/cv2"),
        &format!("{prefix}.cv2"),
        &cat,
        c2,
        (1, 1, 0),
    )
}

/// Channel concat `/model.<layer>/Concat`.
fn concat(g: &mut GraphBuilder, layer: usize, inputs: &[&str]) -> String {
    let mut shape = g.shape(inputs[0]).to_vec();
    shape[1] = inputs.iter().map(|t| g.shape(t)[1]).sum();
    g.node1(
        "Concat",
        &format!("/model.{layer}/Concat"),
        inputs,
        vec![int_attr("axis", 1)],
        shape,
    )
}

/// `nn.Upsample(None, 2, 'nearest')` at `model.<layer>` in the form `spec` asks for;
/// `upsamples` lists the layers of the model that upsample, `layer` among them.
fn upsample(
    g: &mut GraphBuilder,
    spec: &SynthSpec,
    upsamples: &[usize],
    layer: usize,
    x: &str,
    folded_base: usize,
) -> String {
    let scope = format!("/model.{layer}");
    let in_shape = g.shape(x).to_vec();
    let (h, w) = (in_shape[2], in_shape[3]);
    let out_shape = vec![in_shape[0], in_shape[1], 2 * h, 2 * w];
    let empty_f32 = || tensor_f32(vec![0], &[]);
    let scales = || tensor_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]);
    let inputs: Vec<String> = match (spec.export, spec.upsample) {
        (Export::Opset12, Upsample::ComputedSizes) => {
            // floor(size * 2.0) per spatial dim, appended to the first two dims of Shape(x).
            let mut floors = Vec::new();
            for (k, d) in [h, w].into_iter().enumerate() {
                let c = g.constant(
                    &format!("{scope}/{}", indexed("Constant", k)),
                    tensor_f32(vec![], &[(2 * d) as f32]),
                );
                floors.push(g.node1(
                    "Floor",
                    &format!("{scope}/{}", indexed("Floor", k)),
                    &[&c],
                    vec![],
                    vec![],
                ));
            }
            let mut unsqueezed = Vec::new();
            for (k, f) in floors.iter().enumerate() {
                unsqueezed.push(g.node1(
                    "Unsqueeze",
                    &format!("{scope}/{}", indexed("Unsqueeze", k)),
                    &[f],
                    vec![ints_attr("axes", &[0])],
                    vec![1],
                ));
            }
            let hw = g.node1(
                "Concat",
                &format!("{scope}/Concat"),
                &[&unsqueezed[0], &unsqueezed[1]],
                vec![int_attr("axis", 0)],
                vec![2],
            );
            let shape = g.node1("Shape", &format!("{scope}/Shape"), &[x], vec![], vec![4]);
            let axes = g.constant(&format!("{scope}/Constant_2"), tensor_i64(vec![1], &[0]));
            let starts = g.constant(&format!("{scope}/Constant_3"), tensor_i64(vec![1], &[0]));
            let ends = g.constant(&format!("{scope}/Constant_4"), tensor_i64(vec![1], &[2]));
            let nc = g.node1(
                "Slice",
                &format!("{scope}/Slice"),
                &[&shape, &starts, &ends, &axes],
                vec![],
                vec![2],
            );
            let hw_int = g.node1(
                "Cast",
                &format!("{scope}/Cast"),
                &[&hw],
                vec![int_attr("to", 7)],
                vec![2],
            );
            let sizes = g.node1(
                "Concat",
                &format!("{scope}/Concat_1"),
                &[&nc, &hw_int],
                vec![int_attr("axis", 0)],
                vec![4],
            );
            let roi = g.constant(&format!("{scope}/Constant_5"), empty_f32());
            let scales = g.constant(&format!("{scope}/Constant_6"), empty_f32());
            vec![x.to_owned(), roi, scales, sizes]
        }
        (Export::Opset12, Upsample::ConstantScales) => {
            let scales = g.constant(&format!("{scope}/Constant"), scales());
            let roi = g.constant(&format!("{scope}/Constant_1"), empty_f32());
            vec![x.to_owned(), roi, scales]
        }
        (Export::Opset17Simplified, Upsample::ComputedSizes) => {
            // Folded to the full output shape; onnxsim numbers the last layer's first.
            let from_last = upsamples.iter().rev().position(|&l| l == layer);
            let number = folded_base
                + spec.variant.arch().folded.resize_sizes
                + from_last.expect("layer is an upsample layer");
            let sizes = g.folded(number, tensor_i64(vec![4], &out_shape));
            vec![x.to_owned(), String::new(), String::new(), sizes]
        }
        (Export::Opset17Simplified, Upsample::ConstantScales) => {
            // All layers share the first layer's constant, which onnxsim moves to the front.
            let name = format!("/model.{}/Constant", upsamples[0]);
            let scales = if layer == upsamples[0] {
                g.hoisted_constant(detect::RANK_LAST, &name, scales())
            } else {
                format!("{name}_output_0")
            };
            vec![x.to_owned(), String::new(), scales]
        }
    };
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    g.node1(
        "Resize",
        &format!("{scope}/Resize"),
        &refs,
        vec![
            string_attr("coordinate_transformation_mode", "asymmetric"),
            float_attr("cubic_coeff_a", -0.75),
            string_attr("mode", "nearest"),
            string_attr("nearest_mode", "floor"),
        ],
        out_shape,
    )
}
