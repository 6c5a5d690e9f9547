//! The Detect head (layer 24 of P5 models, 33 of P6 models) in export mode, as `Detect.forward`
//! traces with `inplace=False`:
//! per level a 1x1 conv to `3 * (5 + nc)` channels, then
//! `view(1, 3, 5 + nc, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()`, split into xy / wh / conf,
//! `xy = (xy * 2 + grid) * stride`, `wh = (wh * 2) ** 2 * anchor_grid`, concat, and
//! `view(1, 3 * ny * nx, 5 + nc)`; the levels (three, or four for P6) are concatenated into the
//! output.
//!
//! `grid` holds `(x - 0.5, y - 0.5)` and `anchor_grid` the anchors in input pixels, both of
//! shape `[1, 3, ny, nx, 2]`: they depend only on the input size, the strides and the anchors.

use super::arch::{NA, level_stride};
use super::graph::{GraphBuilder, Init, tensor_f32, tensor_i64};
use super::network::{conv_node, indexed};
use super::weights;
use super::{Export, SynthSpec, Upsample};
use crate::onnx::build::{int_attr, ints_attr};

/// Hoisting rank of a constant that onnxsim puts after all the others.
pub(super) const RANK_LAST: u32 = 1000;

/// The `grid` constant of one level: `(x - 0.5, y - 0.5)` for every anchor and cell.
pub(super) fn grid(ny: usize, nx: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(NA * ny * nx * 2);
    for _ in 0..NA {
        for y in 0..ny {
            for x in 0..nx {
                values.push(x as f32 - 0.5);
                values.push(y as f32 - 0.5);
            }
        }
    }
    values
}

/// The `anchor_grid` constant of one level: each anchor's `(w, h)` in pixels at every cell.
pub(super) fn anchor_grid(anchors: &[(u16, u16); NA], ny: usize, nx: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(NA * ny * nx * 2);
    for &(w, h) in anchors {
        for _ in 0..ny * nx {
            values.push(f32::from(w));
            values.push(f32::from(h));
        }
    }
    values
}

/// Appends the Detect head over `inputs` (the outputs of the layers it reads, P3 first); its
/// last node is the final concat. Declares the output convs' parameters.
pub(super) fn trace(g: &mut GraphBuilder, spec: &SynthSpec, inputs: &[&str], folded_base: usize) {
    let arch = spec.variant.arch();
    let layer = arch.layers.len();
    let scope = &format!("/model.{layer}");
    let no = spec.nc + 5;
    let simplified = spec.export == Export::Opset17Simplified;
    for (i, x) in inputs.iter().enumerate() {
        let c1 = g.shape(x)[1] as usize;
        g.param(
            format!("model.{layer}.m.{i}.weight"),
            vec![(NA * no) as i64, c1 as i64, 1, 1],
            Init::Weight {
                fan_in: c1,
                gain: weights::GAIN,
            },
        );
        g.param(
            format!("model.{layer}.m.{i}.bias"),
            vec![(NA * no) as i64],
            Init::Bias,
        );
    }

    // onnxsim keeps one scalar 2.0 (the first level's) and hoists it with the level constants;
    // where it lands among them depends on the upsample form.
    let two_rank = match spec.upsample {
        Upsample::ComputedSizes => RANK_LAST - 1,
        Upsample::ConstantScales => 0,
    };
    let mut level_outputs = Vec::with_capacity(inputs.len());
    for (i, x) in inputs.iter().enumerate() {
        let stride = level_stride(i);
        let (ny, nx) = (spec.imgsz / stride, spec.imgsz / stride);
        let (ny64, nx64, no64, na64) = (ny as i64, nx as i64, no as i64, NA as i64);
        let cell_shape = |last: i64| vec![1, na64, ny64, nx64, last];
        // Names of the k-th Constant / Mul of this level.
        let constant_name = |k: usize| format!("{scope}/{}", indexed("Constant", 8 * i + k));
        let mul_name = |k: usize| format!("{scope}/{}", indexed("Mul", 4 * i + k));
        let two = |g: &mut GraphBuilder, k: usize| -> String {
            if simplified {
                let name = format!("{scope}/Constant_1");
                if i == 0 && k == 1 {
                    g.hoisted_constant(two_rank, &name, tensor_f32(vec![], &[2.0]))
                } else {
                    format!("{name}_output_0")
                }
            } else {
                g.constant(&constant_name(k), tensor_f32(vec![], &[2.0]))
            }
        };
        let level_constant = |g: &mut GraphBuilder, k: usize, rank: u32, dims, values: &[f32]| {
            let value = tensor_f32(dims, values);
            if simplified {
                g.hoisted_constant(rank, &constant_name(k), value)
            } else {
                g.constant(&constant_name(k), value)
            }
        };
        // Folded shape initializers: the first level's view shape, the split sizes, then the
        // remaining shapes in order.
        let view_number = |k: usize| folded_base + 2 * i + usize::from(i > 0) + k;

        let conv = conv_node(
            g,
            &format!("{scope}/m.{i}/Conv"),
            x,
            &format!("model.{layer}.m.{i}.weight"),
            &format!("model.{layer}.m.{i}.bias"),
            NA * no,
            (1, 1, 0),
        );
        let view5 = [1, na64, no64, ny64, nx64];
        let shape5 = if simplified {
            g.folded(view_number(0), tensor_i64(vec![5], &view5))
        } else {
            g.constant(&constant_name(0), tensor_i64(vec![5], &view5))
        };
        let reshape_attrs = if simplified {
            vec![int_attr("allowzero", 0)]
        } else {
            vec![]
        };
        let reshaped = g.node1(
            "Reshape",
            &format!("{scope}/{}", indexed("Reshape", 2 * i)),
            &[&conv, &shape5],
            reshape_attrs.clone(),
            view5.to_vec(),
        );
        let permuted = g.node1(
            "Transpose",
            &format!("{scope}/{}", indexed("Transpose", i)),
            &[&reshaped],
            vec![ints_attr("perm", &[0, 1, 3, 4, 2])],
            cell_shape(no64),
        );
        let sig = g.node1(
            "Sigmoid",
            &format!("{scope}/{}", indexed("Sigmoid", i)),
            &[&permuted],
            vec![],
            cell_shape(no64),
        );
        let split_sizes = [2, 2, no64 - 4];
        let split_name = format!("{scope}/{}", indexed("Split", i));
        let split_shapes = split_sizes.iter().map(|&s| cell_shape(s)).collect();
        let parts = if simplified {
            let sizes = if i == 0 {
                g.folded(folded_base + 1, tensor_i64(vec![3], &split_sizes))
            } else {
                format!("_v_{}", folded_base + 1)
            };
            g.node(
                "Split",
                &split_name,
                &[&sig, &sizes],
                vec![int_attr("axis", 4)],
                split_shapes,
            )
        } else {
            g.node(
                "Split",
                &split_name,
                &[&sig],
                vec![int_attr("axis", 4), ints_attr("split", &split_sizes)],
                split_shapes,
            )
        };

        // xy = (xy * 2 + grid) * stride
        let c = two(g, 1);
        let xy2 = g.node1("Mul", &mul_name(0), &[&parts[0], &c], vec![], cell_shape(2));
        let rank = 10 + 3 * i as u32;
        let grid_c = level_constant(g, 2, rank, cell_shape(2), &grid(ny, nx));
        let xy_grid = g.node1(
            "Add",
            &format!("{scope}/{}", indexed("Add", i)),
            &[&xy2, &grid_c],
            vec![],
            cell_shape(2),
        );
        let stride_c = level_constant(g, 3, rank + 1, vec![], &[stride as f32]);
        let xy = g.node1(
            "Mul",
            &mul_name(1),
            &[&xy_grid, &stride_c],
            vec![],
            cell_shape(2),
        );

        // wh = (wh * 2) ** 2 * anchor_grid
        let c = two(g, 4);
        let wh2 = g.node1("Mul", &mul_name(2), &[&parts[1], &c], vec![], cell_shape(2));
        let c = two(g, 5);
        let pow = g.node1(
            "Pow",
            &format!("{scope}/{}", indexed("Pow", i)),
            &[&wh2, &c],
            vec![],
            cell_shape(2),
        );
        let anchor_c = level_constant(
            g,
            6,
            rank + 2,
            cell_shape(2),
            &anchor_grid(&arch.anchors[i], ny, nx),
        );
        let wh = g.node1(
            "Mul",
            &mul_name(3),
            &[&pow, &anchor_c],
            vec![],
            cell_shape(2),
        );

        let cat = g.node1(
            "Concat",
            &format!("{scope}/{}", indexed("Concat", i)),
            &[&xy, &wh, &parts[2]],
            vec![int_attr("axis", 4)],
            cell_shape(no64),
        );
        let view3 = [1, na64 * ny64 * nx64, no64];
        let shape3 = if simplified {
            g.folded(
                view_number(1) + usize::from(i == 0),
                tensor_i64(vec![3], &view3),
            )
        } else {
            g.constant(&constant_name(7), tensor_i64(vec![3], &view3))
        };
        level_outputs.push(g.node1(
            "Reshape",
            &format!("{scope}/{}", indexed("Reshape", 2 * i + 1)),
            &[&cat, &shape3],
            reshape_attrs,
            view3.to_vec(),
        ));
    }

    let rows: i64 = level_outputs.iter().map(|t| g.shape(t)[1]).sum();
    let refs: Vec<&str> = level_outputs.iter().map(String::as_str).collect();
    g.node1(
        "Concat",
        &format!("{scope}/{}", indexed("Concat", inputs.len())),
        &refs,
        vec![int_attr("axis", 1)],
        vec![1, rows, no as i64],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_and_anchor_layout() {
        // torch: stack(meshgrid(arange(ny), arange(nx), indexing='ij')[::-1], 2) - 0.5
        let g = grid(2, 3);
        assert_eq!(&g[..6], &[-0.5, -0.5, 0.5, -0.5, 1.5, -0.5]);
        assert_eq!(&g[6..8], &[-0.5, 0.5]);
        assert_eq!(g.len(), 3 * 2 * 3 * 2);
        let a = anchor_grid(&crate::synth::arch::P5.anchors[2], 1, 2);
        assert_eq!(
            a,
            [
                116.0, 90.0, 116.0, 90.0, 156.0, 198.0, 156.0, 198.0, 373.0, 326.0, 373.0, 326.0
            ]
        );
    }
}
