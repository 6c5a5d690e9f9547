//! im2col columns of a Conv input at sampled output positions, and their moment matrices.

use anyhow::{Result, bail};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, Par};
use ndarray::ArrayViewD;
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::ConvSite;

/// The output positions `(oy, ox)` of `site` on an input of `height x width` whose columns are
/// summed: all of them when there are at most `limit`, else `limit` drawn without replacement
/// with `seed`, in increasing order.
pub fn sampled_positions(
    site: &ConvSite,
    height: usize,
    width: usize,
    limit: usize,
    seed: u64,
) -> Vec<(usize, usize)> {
    let out = |size: usize, axis: usize| {
        let span = (site.kernel[axis] - 1) * site.dilations[axis] + 1;
        let padded = size + site.pads[axis] + site.pads[axis + 2];
        if padded < span {
            0
        } else {
            (padded - span) / site.strides[axis] + 1
        }
    };
    let (oh, ow) = (out(height, 0), out(width, 1));
    let total = oh * ow;
    let mut chosen: Vec<usize> = if total <= limit {
        (0..total).collect()
    } else {
        sample(&mut ChaCha8Rng::seed_from_u64(seed), total, limit).into_vec()
    };
    chosen.sort_unstable();
    chosen.into_iter().map(|p| (p / ow, p % ow)).collect()
}

/// The im2col columns of `site` at `positions` of `input` (`[1, C, H, W]`), one matrix column
/// per position: `C * kh * kw` values in weight order (zero where the kernel reads padding) and a
/// final 1. Each position's values are contiguous in memory.
pub fn columns(
    site: &ConvSite,
    input: &ArrayViewD<'_, f32>,
    positions: &[(usize, usize)],
) -> Result<Mat<f64>> {
    let &[1, channels, height, width] = input.shape() else {
        bail!(
            "{}: input {:?} has shape {:?}, expected [1, C, H, W]",
            site.name,
            site.input,
            input.shape()
        );
    };
    if channels != site.in_channels {
        bail!(
            "{}: input {:?} has {channels} channels, the weight expects {}",
            site.name,
            site.input,
            site.in_channels
        );
    }
    let [kh, kw] = site.kernel;
    let n = site.columns();
    let data = input.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    let mut x = Mat::<f64>::zeros(n + 1, positions.len());
    for (p, &(oy, ox)) in positions.iter().enumerate() {
        let column = x
            .col_mut(p)
            .try_as_col_major_mut()
            .expect("a Mat's columns are contiguous")
            .as_slice_mut();
        for c in 0..channels {
            let plane = &data[c * height * width..(c + 1) * height * width];
            for ky in 0..kh {
                let iy = (oy * site.strides[0] + ky * site.dilations[0]) as isize
                    - site.pads[0] as isize;
                if iy < 0 || iy >= height as isize {
                    continue;
                }
                let row = &plane[iy as usize * width..(iy as usize + 1) * width];
                let taps = &mut column[(c * kh + ky) * kw..(c * kh + ky + 1) * kw];
                for (kx, tap) in taps.iter_mut().enumerate() {
                    let ix = (ox * site.strides[1] + kx * site.dilations[1]) as isize
                        - site.pads[1] as isize;
                    if ix >= 0 && ix < width as isize {
                        *tap = f64::from(row[ix as usize]);
                    }
                }
            }
        }
        column[n] = 1.0;
    }
    Ok(x)
}

/// Adds `x xT` (`x`: one column per sample) to the lower triangle (diagonal included) of `gram`,
/// half the work of the full product; [`mirror_lower`] completes the matrix once all terms are
/// in.
pub fn add_gram_lower(gram: &mut Mat<f64>, x: &Mat<f64>) {
    triangular::matmul(
        gram,
        BlockStructure::TriangularLower,
        Accum::Add,
        x,
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// Copies the lower triangle of the square `m` onto its upper triangle.
pub fn mirror_lower(m: &mut Mat<f64>) {
    for j in 1..m.ncols() {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn site(kernel: usize, stride: usize, pad: usize, channels: usize) -> ConvSite {
        ConvSite {
            name: "conv".into(),
            input: "x".into(),
            output: "y".into(),
            in_channels: channels,
            out_channels: 1,
            kernel: [kernel; 2],
            strides: [stride; 2],
            dilations: [1; 2],
            pads: [pad; 4],
        }
    }

    #[test]
    fn a_column_dotted_with_the_weight_is_the_convolution() {
        // 2 channels of 5x5, 3x3 kernel, stride 2, pad 1: outputs 3x3.
        let values: Vec<f32> = (0..50).map(|v| v as f32 * 0.1 - 2.0).collect();
        let input = ArrayD::from_shape_vec(vec![1, 2, 5, 5], values.clone()).unwrap();
        let s = site(3, 2, 1, 2);
        let weight: Vec<f64> = (0..18).map(|v| (v as f64 - 9.0) * 0.05).collect();
        let positions = sampled_positions(&s, 5, 5, usize::MAX, 0);
        assert_eq!(positions.len(), 9);
        let x = columns(&s, &input.view(), &positions).unwrap();
        for (p, &(oy, ox)) in positions.iter().enumerate() {
            let mut direct = 0.0;
            for c in 0..2 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if (0..5).contains(&iy) && (0..5).contains(&ix) {
                            direct += weight[(c * 3 + ky) * 3 + kx]
                                * f64::from(values[c * 25 + iy as usize * 5 + ix as usize]);
                        }
                    }
                }
            }
            let dot: f64 = (0..18).map(|j| x[(j, p)] * weight[j]).sum();
            assert!((dot - direct).abs() < 1e-12);
            assert_eq!(x[(18, p)], 1.0);
        }
    }

    #[test]
    fn sampling_is_seeded_and_bounded() {
        let s = site(1, 1, 0, 1);
        let a = sampled_positions(&s, 100, 100, 500, 7);
        assert_eq!(a.len(), 500);
        assert_eq!(a, sampled_positions(&s, 100, 100, 500, 7));
        assert_ne!(a, sampled_positions(&s, 100, 100, 500, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_lower_gram_mirrored_is_the_full_product() {
        let x = Mat::from_fn(6, 37, |i, j| ((i * 11 + j * 5) % 13) as f64 * 0.25 - 1.5);
        let mut gram = Mat::zeros(6, 6);
        add_gram_lower(&mut gram, &x);
        add_gram_lower(&mut gram, &x);
        mirror_lower(&mut gram);
        let full = &x * x.transpose() * 2.0;
        for i in 0..6 {
            for j in 0..6 {
                assert!((gram[(i, j)] - full[(i, j)]).abs() < 1e-9, "{i} {j}");
            }
        }
    }
}
