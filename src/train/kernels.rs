//! The numeric kernels of the trainable network and their gradients: convolution by im2col and
//! matrix products (faer), max pooling, nearest-neighbour upsampling by an integer factor, and
//! the element-wise ops. Tensors are NCHW, contiguous.
//!
//! Written here rather than taken from an autodiff crate: see `docs/autodiff-choice.md` for the
//! measurements. Every kernel is generic over [`Real`] so that the gradient tests can run in f64
//! against central finite differences.

use std::ops::Range;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// The scalar of a network: f32 for training, f64 for gradient checks.
pub trait Real:
    faer::traits::RealField
    + num_traits::Float
    + Copy
    + Default
    + Send
    + Sync
    + std::iter::Sum
    + std::fmt::Debug
    + 'static
{
    fn of(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn as_f64(self) -> f64;
    /// `e^self`, without branches so that loops over slices vectorise: [`exp_f32`] in f32
    /// (training), the standard library's in f64 (gradient checks).
    fn exp_vec(self) -> Self;
    /// `ln(1 + self)` for `self` in [0, 1], without branches: [`ln_1p_unit_f32`] in f32, the
    /// standard library's in f64.
    fn ln_1p_unit(self) -> Self;
}

impl Real for f32 {
    fn of(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn exp_vec(self) -> Self {
        exp_f32(self)
    }
    fn ln_1p_unit(self) -> Self {
        ln_1p_unit_f32(self)
    }
}

impl Real for f64 {
    fn of(x: f32) -> Self {
        f64::from(x)
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn exp_vec(self) -> Self {
        self.exp()
    }
    fn ln_1p_unit(self) -> Self {
        self.ln_1p()
    }
}

/// `ln(1 + e)` for `e` in [0, 1] to within 2e-7 absolute, without branches:
/// `ln(1 + e) = 2 atanh(z)` with `z = e / (2 + e)` in [0, 1/3], by its odd series to `z^13`.
#[inline(always)]
pub fn ln_1p_unit_f32(e: f32) -> f32 {
    let z = e / (2.0 + e);
    let z2 = z * z;
    2.0 * z
        * (1.0
            + z2 * (1.0 / 3.0
                + z2 * (1.0 / 5.0
                    + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 / 13.0))))))
}

/// `e^x` in f32 to within 3e-7 relative (2 ulp) over its range (clamped to [-87.3, 88]), without
/// branches: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial
/// (error below 2e-8 relative there), and `2^n` built in the exponent bits. glibc's `expf` is
/// a scalar call that the sigmoids of a training step spent a third of its time in.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to an integer (ties to even) in one
    // vectorisable step, where `f32::round` is a library call
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the bits of 2^23 + 127 + n, whose low mantissa bits hold the biased exponent
    // 127 + n (in 1..=254): shifting them into the exponent field needs no float-to-int
    // conversion, which Rust's saturating `as` would do one lane at a time
    const BIASED: f32 = 8_388_608.0 + 127.0;
    p * f32::from_bits((n + BIASED).to_bits() << 23)
}

/// An NCHW tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    pub shape: [usize; 4],
    pub data: Vec<T>,
}

impl<T: Real> Tensor<T> {
    pub fn zeros(shape: [usize; 4]) -> Self {
        Tensor {
            shape,
            data: vec![T::zero(); shape.iter().product()],
        }
    }

    /// Values per image (`C * H * W`).
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Values per channel plane (`H * W`).
    pub fn plane(&self) -> usize {
        self.shape[2] * self.shape[3]
    }
}

/// Geometry of a 2-D convolution with one group and no dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
}

impl ConvShape {
    /// Rows of the im2col matrix: one per input channel and kernel tap.
    pub fn columns(&self) -> usize {
        self.cin * self.kernel[0] * self.kernel[1]
    }

    /// The output height and width for an input of `hw`; `None` when the kernel does not fit.
    pub fn out_hw(&self, [h, w]: [usize; 2]) -> Option<[usize; 2]> {
        let span = |size: usize, axis: usize| {
            let padded = size + self.pads[axis] + self.pads[axis + 2];
            (padded >= self.kernel[axis])
                .then(|| (padded - self.kernel[axis]) / self.stride[axis] + 1)
        };
        Some([span(h, 0)?, span(w, 1)?])
    }

    /// A 1x1, stride-1, unpadded convolution: its im2col matrix is its input.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pads == [0; 4]
    }
}

/// The outputs `o` in `0..outputs` whose tap `tap` reads inside an input of `len` (at
/// `o * stride + tap - pad`): the others read the padding.
fn inside(len: usize, pad: usize, tap: usize, stride: usize, outputs: usize) -> Range<usize> {
    let end = (len + pad)
        .saturating_sub(tap)
        .div_ceil(stride)
        .min(outputs);
    pad.saturating_sub(tap).div_ceil(stride).min(end)..end
}

/// Fills `cols` (`[cin * kh * kw, oh * ow]`, row-major) with the patches of one image `x`
/// (`[cin, h, w]`); taps in the padding are 0.
fn im2col<T: Real>(x: &[T], hw: [usize; 2], s: &ConvShape, out: [usize; 2], cols: &mut [T]) {
    let [h, w] = hw;
    let [oh, ow] = out;
    let [kh, kw] = s.kernel;
    let [sy, sx] = s.stride;
    cols.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(row, dst)| {
            let (c, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
            let plane = &x[c * h * w..(c + 1) * h * w];
            let (rows, xs) = (
                inside(h, s.pads[0], i, sy, oh),
                inside(w, s.pads[1], j, sx, ow),
            );
            for (oy, line) in dst.chunks_mut(ow).enumerate() {
                if !rows.contains(&oy) || xs.is_empty() {
                    line.fill(T::zero());
                    continue;
                }
                line[..xs.start].fill(T::zero());
                line[xs.end..].fill(T::zero());
                let src = &plane[(oy * sy + i - s.pads[0]) * w..][..w];
                let from = xs.start * sx + j - s.pads[1];
                if sx == 1 {
                    line[xs.clone()].copy_from_slice(&src[from..from + xs.len()]);
                } else {
                    for (v, &x) in line[xs.clone()]
                        .iter_mut()
                        .zip(src[from..].iter().step_by(sx))
                    {
                        *v = x;
                    }
                }
            }
        });
}

/// Adds the patches `cols` back into the image gradient `dx` (`[cin, h, w]`): the adjoint of
/// [`im2col`].
fn col2im<T: Real>(cols: &[T], hw: [usize; 2], s: &ConvShape, out: [usize; 2], dx: &mut [T]) {
    let [h, w] = hw;
    let [oh, ow] = out;
    let [kh, kw] = s.kernel;
    let [sy, sx] = s.stride;
    dx.par_chunks_mut(h * w).enumerate().for_each(|(c, plane)| {
        for i in 0..kh {
            for j in 0..kw {
                let row = (c * kh + i) * kw + j;
                let src = &cols[row * oh * ow..(row + 1) * oh * ow];
                let xs = inside(w, s.pads[1], j, sx, ow);
                if xs.is_empty() {
                    continue;
                }
                let from = xs.start * sx + j - s.pads[1];
                for oy in inside(h, s.pads[0], i, sy, oh) {
                    let line = &mut plane[(oy * sy + i - s.pads[0]) * w..][..w];
                    let taps = &src[oy * ow..][xs.clone()];
                    for (d, &g) in line[from..].iter_mut().step_by(sx).zip(taps) {
                        *d += g;
                    }
                }
            }
        }
    });
}

/// `dst = lhs * rhs` (or `dst += ...` with [`Accum::Add`]) on the rayon pool: `dst` is cut
/// along its longer side into one block per thread, each a sequential faer product. (faer's own
/// parallel products spin at barriers between steps: a third of a training step's time went
/// there.)
fn par_matmul<T: Real>(dst: MatMut<'_, T>, accum: Accum, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    split_matmul(dst, accum, lhs, rhs, rayon::current_num_threads());
}

fn split_matmul<T: Real>(
    dst: MatMut<'_, T>,
    accum: Accum,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    pieces: usize,
) {
    /// Below this many rows or columns a block is not split further.
    const MIN_SIDE: usize = 32;
    let (rows, cols) = (dst.nrows(), dst.ncols());
    let half = pieces / 2;
    if pieces < 2 || rows.max(cols) < 2 * MIN_SIDE {
        matmul(dst, accum, lhs, rhs, T::one(), Par::Seq);
    } else if cols >= rows {
        let at = cols * half / pieces;
        let (left, right) = dst.split_at_col_mut(at);
        let (r0, r1) = rhs.split_at_col(at);
        rayon::join(
            || split_matmul(left, accum, lhs, r0, half),
            || split_matmul(right, accum, lhs, r1, pieces - half),
        );
    } else {
        let at = rows * half / pieces;
        let (top, bottom) = dst.split_at_row_mut(at);
        let (l0, l1) = lhs.split_at_row(at);
        rayon::join(
            || split_matmul(top, accum, l0, rhs, half),
            || split_matmul(bottom, accum, l1, rhs, pieces - half),
        );
    }
}

fn mat<T: Real>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(data, rows, cols)
}

fn mat_mut<T: Real>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(data, rows, cols)
}

/// `y = conv(x, weight) + bias`; `weight` is `[cout, cin, kh, kw]`, `bias` `[cout]` or empty.
pub fn conv_forward<T: Real>(x: &Tensor<T>, s: &ConvShape, weight: &[T], bias: &[T]) -> Tensor<T> {
    let [n, _, h, w] = x.shape;
    let [oh, ow] = s.out_hw([h, w]).expect("the network checked the shapes");
    let p = oh * ow;
    let mut y = Tensor::zeros([n, s.cout, oh, ow]);
    let mut cols = if s.is_pointwise() {
        Vec::new()
    } else {
        vec![T::zero(); s.columns() * p]
    };
    let wm = mat(weight, s.cout, s.columns());
    for (xb, yb) in x
        .data
        .chunks(x.image_len())
        .zip(y.data.chunks_mut(s.cout * p))
    {
        let patches = if s.is_pointwise() {
            xb
        } else {
            im2col(xb, [h, w], s, [oh, ow], &mut cols);
            &cols
        };
        par_matmul(
            mat_mut(yb, s.cout, p),
            Accum::Replace,
            wm,
            mat(patches, s.columns(), p),
        );
        if !bias.is_empty() {
            yb.par_chunks_mut(p)
                .zip(bias)
                .for_each(|(row, &b)| row.iter_mut().for_each(|v| *v += b));
        }
    }
    y
}

/// Gradients of [`conv_forward`] given `dy`: adds the weight and bias gradients to `dweight`
/// and `dbias` (empty when there is no bias), and returns the input gradient when `want_dx`.
pub fn conv_backward<T: Real>(
    x: &Tensor<T>,
    s: &ConvShape,
    weight: &[T],
    dy: &Tensor<T>,
    dweight: &mut [T],
    dbias: &mut [T],
    want_dx: bool,
) -> Option<Tensor<T>> {
    let [_, _, h, w] = x.shape;
    let [_, _, oh, ow] = dy.shape;
    let p = oh * ow;
    let k = s.columns();
    let mut dx = want_dx.then(|| Tensor::zeros(x.shape));
    let mut cols = if s.is_pointwise() {
        Vec::new()
    } else {
        vec![T::zero(); k * p]
    };
    let mut dcols = if s.is_pointwise() || !want_dx {
        Vec::new()
    } else {
        vec![T::zero(); k * p]
    };
    let wm = mat(weight, s.cout, k);
    for (b, dyb) in dy.data.chunks(s.cout * p).enumerate() {
        let xb = &x.data[b * x.image_len()..(b + 1) * x.image_len()];
        let patches = if s.is_pointwise() {
            xb
        } else {
            im2col(xb, [h, w], s, [oh, ow], &mut cols);
            &cols
        };
        let dym = mat(dyb, s.cout, p);
        par_matmul(
            mat_mut(dweight, s.cout, k),
            Accum::Add,
            dym,
            mat(patches, k, p).transpose(),
        );
        if !dbias.is_empty() {
            dbias
                .par_iter_mut()
                .zip(dyb.par_chunks(p))
                .for_each(|(db, row)| *db += row.iter().copied().sum::<T>());
        }
        if let Some(dx) = dx.as_mut() {
            let dxb = &mut dx.data[b * x.image_len()..(b + 1) * x.image_len()];
            if s.is_pointwise() {
                par_matmul(mat_mut(dxb, k, p), Accum::Replace, wm.transpose(), dym);
            } else {
                par_matmul(
                    mat_mut(&mut dcols, k, p),
                    Accum::Replace,
                    wm.transpose(),
                    dym,
                );
                col2im(&dcols, [h, w], s, [oh, ow], dxb);
            }
        }
    }
    dx
}

/// Max pooling of every channel plane; taps in the padding are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
}

impl PoolShape {
    pub fn out_hw(&self, hw: [usize; 2]) -> Option<[usize; 2]> {
        ConvShape {
            cin: 1,
            cout: 1,
            kernel: self.kernel,
            stride: self.stride,
            pads: self.pads,
        }
        .out_hw(hw)
    }

    /// For each output of one plane, the index in the input plane of its maximum (the first
    /// one in row-major order on ties).
    fn argmax<T: Real>(&self, plane: &[T], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<u32> {
        let mut best = Vec::with_capacity(oh * ow);
        for oy in 0..oh {
            let y0 = (oy * self.stride[0]) as isize - self.pads[0] as isize;
            for ox in 0..ow {
                let x0 = (ox * self.stride[1]) as isize - self.pads[1] as isize;
                let mut at = usize::MAX;
                let mut max = T::neg_infinity();
                for iy in y0.max(0)..(y0 + self.kernel[0] as isize).min(h as isize) {
                    for ix in x0.max(0)..(x0 + self.kernel[1] as isize).min(w as isize) {
                        let i = iy as usize * w + ix as usize;
                        if at == usize::MAX || plane[i] > max {
                            (at, max) = (i, plane[i]);
                        }
                    }
                }
                best.push(at as u32);
            }
        }
        best
    }
}

pub fn maxpool_forward<T: Real>(x: &Tensor<T>, s: &PoolShape) -> Tensor<T> {
    let [n, c, h, w] = x.shape;
    let [oh, ow] = s.out_hw([h, w]).expect("the network checked the shapes");
    let mut y = Tensor::zeros([n, c, oh, ow]);
    y.data
        .par_chunks_mut(oh * ow)
        .zip(x.data.par_chunks(h * w))
        .for_each(|(out, plane)| {
            for (v, i) in out.iter_mut().zip(s.argmax(plane, [h, w], [oh, ow])) {
                *v = plane[i as usize];
            }
        });
    y
}

/// The input gradient of [`maxpool_forward`]: each output's gradient goes to its maximum.
pub fn maxpool_backward<T: Real>(x: &Tensor<T>, s: &PoolShape, dy: &Tensor<T>) -> Tensor<T> {
    let [_, _, h, w] = x.shape;
    let [_, _, oh, ow] = dy.shape;
    let mut dx = Tensor::zeros(x.shape);
    dx.data
        .par_chunks_mut(h * w)
        .zip(x.data.par_chunks(h * w))
        .zip(dy.data.par_chunks(oh * ow))
        .for_each(|((dplane, plane), dout)| {
            for (&g, i) in dout.iter().zip(s.argmax(plane, [h, w], [oh, ow])) {
                dplane[i as usize] += g;
            }
        });
    dx
}

/// Nearest-neighbour upsampling by integer factors: each value repeated `scale` times.
pub fn upsample_forward<T: Real>(x: &Tensor<T>, scale: [usize; 2]) -> Tensor<T> {
    let [n, c, h, w] = x.shape;
    let (oh, ow) = (h * scale[0], w * scale[1]);
    let mut y = Tensor::zeros([n, c, oh, ow]);
    y.data
        .par_chunks_mut(oh * ow)
        .zip(x.data.par_chunks(h * w))
        .for_each(|(out, plane)| {
            for (oy, line) in out.chunks_mut(ow).enumerate() {
                let src = &plane[(oy / scale[0]) * w..(oy / scale[0] + 1) * w];
                for (ox, v) in line.iter_mut().enumerate() {
                    *v = src[ox / scale[1]];
                }
            }
        });
    y
}

/// The input gradient of [`upsample_forward`]: the sum over each value's copies.
pub fn upsample_backward<T: Real>(dy: &Tensor<T>, scale: [usize; 2]) -> Tensor<T> {
    let [n, c, oh, ow] = dy.shape;
    let (h, w) = (oh / scale[0], ow / scale[1]);
    let mut dx = Tensor::zeros([n, c, h, w]);
    dx.data
        .par_chunks_mut(h * w)
        .zip(dy.data.par_chunks(oh * ow))
        .for_each(|(plane, dout)| {
            for (oy, line) in dout.chunks(ow).enumerate() {
                let dst = &mut plane[(oy / scale[0]) * w..(oy / scale[0] + 1) * w];
                for (ox, &g) in line.iter().enumerate() {
                    dst[ox / scale[1]] += g;
                }
            }
        });
    dx
}

/// Logistic sigmoid `1 / (1 + e^-x)`: exactly 0 or 1 only where f32 rounds it so.
#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_vec())
}

/// Values per task of the element-wise ops: long enough to vectorise, short enough to share.
pub const CHUNK: usize = 1 << 14;

/// `f` of each pair of values of two tensors of one shape, in parallel.
pub fn zip_map<T: Real>(a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T + Sync) -> Tensor<T> {
    debug_assert_eq!(a.shape, b.shape);
    let mut out = Tensor::zeros(a.shape);
    out.data
        .par_chunks_mut(CHUNK)
        .zip(a.data.par_chunks(CHUNK).zip(b.data.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| zip_map_slice(o, x, y, &f));
    out
}

/// `f` of each value, in parallel.
pub fn map<T: Real>(a: &Tensor<T>, f: impl Fn(T) -> T + Sync) -> Tensor<T> {
    let mut out = Tensor::zeros(a.shape);
    out.data
        .par_chunks_mut(CHUNK)
        .zip(a.data.par_chunks(CHUNK))
        .for_each(|(o, x)| map_slice(o, x, &f));
    out
}

/// The CPU extensions the element-wise loops are compiled for besides the baseline, chosen at
/// run time (AVX-512 and AVX2 lanes are four and two times SSE's): the loops of a training step
/// that are not matrix products spent two fifths of its time in SSE code. Rust fuses no multiply
/// and add on its own, so every version computes the same values.
macro_rules! vector_targets {
    ($item:item) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
            "x86_64+avx2+fma"
        ))]
        $item
    };
}
pub(crate) use vector_targets;

vector_targets! {
    /// `out[i] = f(x[i])`.
    fn map_slice<T: Real, F: Fn(T) -> T>(out: &mut [T], x: &[T], f: &F) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = f(x);
        }
    }
}

vector_targets! {
    /// `out[i] = f(x[i], y[i])`.
    fn zip_map_slice<T: Real, F: Fn(T, T) -> T>(out: &mut [T], x: &[T], y: &[T], f: &F) {
        for ((o, &x), &y) in out.iter_mut().zip(x).zip(y) {
            *o = f(x, y);
        }
    }
}

/// `a += b`, element-wise.
pub fn add_assign<T: Real>(a: &mut Tensor<T>, b: &Tensor<T>) {
    debug_assert_eq!(a.shape, b.shape);
    a.data
        .par_iter_mut()
        .zip(&b.data)
        .for_each(|(x, &y)| *x += y);
}

/// The tensors joined along the channel axis.
pub fn concat_channels<T: Real>(parts: &[&Tensor<T>]) -> Tensor<T> {
    let [n, _, h, w] = parts[0].shape;
    let c: usize = parts.iter().map(|t| t.shape[1]).sum();
    let mut data = Vec::with_capacity(n * c * h * w);
    for b in 0..n {
        for t in parts {
            data.extend_from_slice(&t.data[b * t.image_len()..(b + 1) * t.image_len()]);
        }
    }
    Tensor {
        shape: [n, c, h, w],
        data,
    }
}

/// The channels `start..start + len` of `t`.
pub fn slice_channels<T: Real>(t: &Tensor<T>, start: usize, len: usize) -> Tensor<T> {
    let [n, _, h, w] = t.shape;
    let plane = h * w;
    let mut data = Vec::with_capacity(n * len * plane);
    for b in 0..n {
        let from = b * t.image_len() + start * plane;
        data.extend_from_slice(&t.data[from..from + len * plane]);
    }
    Tensor {
        shape: [n, len, h, w],
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct convolution: the definition, for comparison.
    fn conv_direct(x: &Tensor<f64>, s: &ConvShape, wt: &[f64], b: &[f64]) -> Tensor<f64> {
        let [n, _, h, w] = x.shape;
        let [oh, ow] = s.out_hw([h, w]).unwrap();
        let mut y = Tensor::zeros([n, s.cout, oh, ow]);
        let [kh, kw] = s.kernel;
        for bi in 0..n {
            for o in 0..s.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b.get(o).copied().unwrap_or(0.0);
                        for c in 0..s.cin {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (oy * s.stride[0] + i) as isize - s.pads[0] as isize;
                                    let ix = (ox * s.stride[1] + j) as isize - s.pads[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        acc += wt[((o * s.cin + c) * kh + i) * kw + j]
                                            * x.data[((bi * s.cin + c) * h + iy as usize) * w
                                                + ix as usize];
                                    }
                                }
                            }
                        }
                        y.data[((bi * s.cout + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// im2col convolutions equal the definition, and col2im is im2col's adjoint:
    /// `<im2col(x), c> = <x, col2im(c)>`.
    #[test]
    fn im2col_convolution_equals_the_definition() {
        for s in [
            ConvShape {
                cin: 2,
                cout: 3,
                kernel: [3, 3],
                stride: [1, 1],
                pads: [1, 1, 1, 1],
            },
            ConvShape {
                cin: 2,
                cout: 2,
                kernel: [5, 4],
                stride: [3, 2],
                pads: [4, 0, 3, 5],
            },
            ConvShape {
                cin: 3,
                cout: 4,
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1, 1, 1, 1],
            },
            ConvShape {
                cin: 2,
                cout: 5,
                kernel: [6, 6],
                stride: [2, 2],
                pads: [2, 2, 2, 2],
            },
            ConvShape {
                cin: 4,
                cout: 3,
                kernel: [1, 1],
                stride: [1, 1],
                pads: [0; 4],
            },
        ] {
            let x = Tensor {
                shape: [2, s.cin, 9, 8],
                data: values(2 * s.cin * 72, 1),
            };
            let wt = values(s.cout * s.columns(), 2);
            let b = values(s.cout, 3);
            let y = conv_forward(&x, &s, &wt, &b);
            let expected = conv_direct(&x, &s, &wt, &b);
            assert_eq!(y.shape, expected.shape);
            for (a, e) in y.data.iter().zip(&expected.data) {
                assert!((a - e).abs() < 1e-12, "{a} {e} for {s:?}");
            }
            let out = [y.shape[2], y.shape[3]];
            let mut cols = vec![0.0; s.columns() * out[0] * out[1]];
            im2col(&x.data[..s.cin * 72], [9, 8], &s, out, &mut cols);
            let c = values(cols.len(), 4);
            let mut dx = vec![0.0; s.cin * 72];
            col2im(&c, [9, 8], &s, out, &mut dx);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
            let (lhs, rhs) = (dot(&cols, &c), dot(&x.data[..s.cin * 72], &dx));
            assert!((lhs - rhs).abs() < 1e-10, "{lhs} {rhs} for {s:?}");
        }
    }

    #[test]
    fn the_vectorised_exponential_and_logarithm_are_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp_f32(x), (f64::from(x)).exp());
            let error = (f64::from(ours) - exact).abs() / exact;
            assert!(error <= 3e-7, "exp({x}) = {ours}, not {exact}");
            x += 0.000_37;
        }
        assert_eq!(exp_f32(-200.0), exp_f32(-87.3));
        assert!(exp_f32(200.0).is_finite());
        for i in 0..=10_000 {
            let e = i as f32 / 10_000.0;
            let error = (f64::from(ln_1p_unit_f32(e)) - f64::from(e).ln_1p()).abs();
            assert!(error <= 2e-7, "ln(1 + {e}): error {error}");
        }
    }

    #[test]
    fn split_products_equal_faers_sequential_product() {
        let (m, k, n) = (16, 108, 300);
        let a = values(m * k, 4);
        let b = values(k * n, 5);
        let product = |dst: &mut [f64], accum, lhs: MatRef<'_, f64>, rhs, split: bool| {
            let dst = mat_mut(dst, lhs.nrows(), dst.len() / lhs.nrows());
            if split {
                par_matmul(dst, accum, lhs, rhs);
            } else {
                matmul(dst, accum, lhs, rhs, 1.0, Par::Seq);
            }
        };
        let (mut c1, mut c2) = (vec![0.0; m * n], vec![0.0; m * n]);
        product(&mut c1, Accum::Replace, mat(&a, m, k), mat(&b, k, n), true);
        product(&mut c2, Accum::Replace, mat(&a, m, k), mat(&b, k, n), false);
        assert_eq!(c1, c2);
        let (mut d1, mut d2) = (vec![1.0; m * k], vec![1.0; m * k]);
        product(
            &mut d1,
            Accum::Add,
            mat(&c1, m, n),
            mat(&b, k, n).transpose(),
            true,
        );
        product(
            &mut d2,
            Accum::Add,
            mat(&c1, m, n),
            mat(&b, k, n).transpose(),
            false,
        );
        assert_eq!(d1, d2);
    }

    #[test]
    fn pooling_and_upsampling_gradients_route_to_their_sources() {
        let x = Tensor {
            shape: [1, 1, 3, 3],
            data: vec![1.0, 5.0, 2.0, 0.0, 3.0, 9.0, 4.0, 8.0, 7.0],
        };
        let s = PoolShape {
            kernel: [3, 3],
            stride: [1, 1],
            pads: [1, 1, 1, 1],
        };
        let y = maxpool_forward(&x, &s);
        assert_eq!(y.data, vec![5.0, 9.0, 9.0, 8.0, 9.0, 9.0, 8.0, 9.0, 9.0]);
        let dx = maxpool_backward(&x, &s, &map(&y, |_| 1.0));
        assert_eq!(dx.data, vec![0.0, 1.0, 0.0, 0.0, 0.0, 6.0, 0.0, 2.0, 0.0]);
        let up = upsample_forward(&x, [2, 2]);
        assert_eq!(up.shape, [1, 1, 6, 6]);
        assert_eq!(up.data[..6], [1.0, 1.0, 5.0, 5.0, 2.0, 2.0]);
        assert_eq!(
            upsample_backward(&up, [2, 2]).data,
            map(&x, |v| 4.0 * v).data
        );
    }
}
