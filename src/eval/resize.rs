//! `cv2.resize` on 8-bit three-channel images, reproducing OpenCV 4.x's arithmetic.
//!
//! - INTER_LINEAR: half-pixel centres `f = (d + 0.5) * scale - 0.5` (f32), coefficients
//!   rounded to 11-bit fixed point, a horizontal pass into `i32` and a vertical pass with
//!   the rounding of OpenCV's SIMD kernel (`((s >> 4) * b) >> 16` per row, then
//!   `(sum + 2) >> 2`); border rows keep their unclamped weights on a repeated row.
//!   Checked against `cv2.resize` 4.11 (opencv-python wheel): identical on every pixel.
//! - INTER_AREA (only used when shrinking): integer scale factors average whole cells
//!   (`(sum + 2) >> 2` for 2x2, else `round(sum / area)`); other factors use OpenCV's
//!   fractional cell weights accumulated in f32.

use image::RgbImage;

/// Resampling filter, named as in OpenCV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Linear,
    Area,
}

const COEF_BITS: i32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;
const CN: usize = 3;

/// OpenCV's `cvRound` on f32 (round half to even), saturated to `u8`.
fn sat_u8(v: f32) -> u8 {
    let r = v.round_ties_even();
    r.clamp(0.0, 255.0) as u8
}

/// Resizes an RGB image to `dst_w x dst_h` as `cv2.resize(img, (dst_w, dst_h), interpolation)`.
pub fn resize_rgb(src: &RgbImage, dst_w: u32, dst_h: u32, interp: Interpolation) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (dst_w as usize, dst_h as usize);
    if (sw, sh) == (dw, dh) {
        return src.clone();
    }
    let inv_sx = dw as f64 / sw as f64;
    let inv_sy = dh as f64 / sh as f64;
    let (scale_x, scale_y) = (1.0 / inv_sx, 1.0 / inv_sy);
    let (isx, isy) = (scale_x.round() as i64, scale_y.round() as i64);
    let area_fast =
        (scale_x - isx as f64).abs() < f64::EPSILON && (scale_y - isy as f64).abs() < f64::EPSILON;
    let mut interp = interp;
    if interp == Interpolation::Linear && area_fast && isx == 2 && isy == 2 {
        interp = Interpolation::Area;
    }
    let out = if interp == Interpolation::Area && scale_x >= 1.0 && scale_y >= 1.0 {
        if area_fast {
            area_fast_resize(src.as_raw(), sw, sh, dw, dh, isx as usize, isy as usize)
        } else {
            area_resize(src.as_raw(), sw, sh, dw, dh, scale_x, scale_y)
        }
    } else {
        linear_resize(
            src.as_raw(),
            sw,
            sh,
            dw,
            dh,
            scale_x,
            scale_y,
            interp == Interpolation::Area,
            inv_sx,
            inv_sy,
        )
    };
    RgbImage::from_raw(dst_w, dst_h, out).expect("buffer sized for the destination")
}

/// Source index and 11-bit weights per destination coordinate (OpenCV `resizeGeneric_`
/// setup). Columns clamp index and weight at the borders; rows keep the raw weights and
/// only their two source rows are clamped, as OpenCV does.
fn linear_tab(
    ssize: usize,
    dsize: usize,
    scale: f64,
    area_mode: bool,
    inv_scale: f64,
    columns: bool,
) -> Vec<(i64, [i32; 2])> {
    (0..dsize)
        .map(|d| {
            let (mut s, mut f) = if area_mode {
                let s = (d as f64 * scale).floor() as i64;
                let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
                (s, if f <= 0.0 { 0.0 } else { f - f.floor() })
            } else {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let s = f.floor();
                (s as i64, f - s)
            };
            if columns && s < 0 {
                s = 0;
                f = 0.0;
            }
            if columns && s >= ssize as i64 - 1 {
                s = ssize as i64 - 1;
                f = 0.0;
            }
            let a0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let a1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s, [a0, a1])
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn linear_resize(
    src: &[u8],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    scale_x: f64,
    scale_y: f64,
    area_mode: bool,
    inv_sx: f64,
    inv_sy: f64,
) -> Vec<u8> {
    let xtab = linear_tab(sw, dw, scale_x, area_mode, inv_sx, true);
    let ytab = linear_tab(sh, dh, scale_y, area_mode, inv_sy, false);
    let width = dw * CN;
    let hrow = |sy: usize| -> Vec<i32> {
        let row = &src[sy * sw * CN..(sy + 1) * sw * CN];
        let mut out = vec![0i32; width];
        for (dx, &(sx, [a0, a1])) in xtab.iter().enumerate() {
            let sx = sx as usize;
            for c in 0..CN {
                let s0 = i32::from(row[sx * CN + c]);
                out[dx * CN + c] = if sx + 1 < sw {
                    s0 * a0 + i32::from(row[(sx + 1) * CN + c]) * a1
                } else {
                    s0 << COEF_BITS
                };
            }
        }
        out
    };
    // OpenCV's vertical kernel (its SIMD arithmetic, which the wheels run on every column):
    // `((s >> 4) * b) >> 16` per source row, saturating i16 sum, then `(sum + 2) >> 2`.
    let last = sh as i64 - 1;
    let mut dst = vec![0u8; dh * width];
    for (dy, &(sy, [b0, b1])) in ytab.iter().enumerate() {
        let r0 = hrow(sy.clamp(0, last) as usize);
        let r1 = hrow((sy + 1).clamp(0, last) as usize);
        let out = &mut dst[dy * width..(dy + 1) * width];
        for x in 0..width {
            let p0 = ((r0[x] >> 4) * b0) >> 16;
            let p1 = ((r1[x] >> 4) * b1) >> 16;
            let s = (p0 as i16).saturating_add(p1 as i16);
            out[x] = ((i32::from(s) + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    dst
}

fn area_fast_resize(
    src: &[u8],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    kx: usize,
    ky: usize,
) -> Vec<u8> {
    let width = dw * CN;
    let full_w = (sw / kx) * CN;
    let scale = 1.0f32 / (kx * ky) as f32;
    let mut dst = vec![0u8; dh * width];
    for dy in 0..dh {
        let sy0 = dy * ky;
        let w = if sy0 + ky <= sh { full_w } else { 0 };
        for x in 0..width {
            let (dx, c) = (x / CN, x % CN);
            let sx0 = dx * kx;
            let v = if x < w {
                let mut sum = 0i32;
                for yy in 0..ky {
                    for xx in 0..kx {
                        sum += i32::from(src[((sy0 + yy) * sw + sx0 + xx) * CN + c]);
                    }
                }
                if kx == 2 && ky == 2 {
                    ((sum + 2) >> 2) as u8
                } else {
                    sat_u8(sum as f32 * scale)
                }
            } else {
                let (mut sum, mut count) = (0i32, 0i32);
                for yy in 0..ky {
                    if sy0 + yy >= sh {
                        break;
                    }
                    for xx in 0..kx {
                        if sx0 + xx >= sw {
                            break;
                        }
                        sum += i32::from(src[((sy0 + yy) * sw + sx0 + xx) * CN + c]);
                        count += 1;
                    }
                }
                if count == 0 {
                    0
                } else {
                    sat_u8(sum as f32 / count as f32)
                }
            };
            dst[dy * width + x] = v;
        }
    }
    dst
}

/// OpenCV `computeResizeAreaTab`: (destination index, source index, weight) triples.
fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<(usize, usize, f32)> {
    let mut tab = Vec::new();
    for d in 0..dsize {
        let fs1 = d as f64 * scale;
        let fs2 = fs1 + scale;
        let cell = scale.min(ssize as f64 - fs1);
        let mut s2 = fs2.floor() as i64;
        let mut s1 = fs1.ceil() as i64;
        s2 = s2.min(ssize as i64 - 1);
        s1 = s1.min(s2);
        if s1 as f64 - fs1 > 1e-3 {
            tab.push((d, (s1 - 1) as usize, ((s1 as f64 - fs1) / cell) as f32));
        }
        for s in s1..s2 {
            tab.push((d, s as usize, (1.0 / cell) as f32));
        }
        if fs2 - s2 as f64 > 1e-3 {
            tab.push((
                d,
                s2 as usize,
                ((fs2 - s2 as f64).min(1.0).min(cell) / cell) as f32,
            ));
        }
    }
    tab
}

fn area_resize(
    src: &[u8],
    sw: usize,
    _sh: usize,
    dw: usize,
    dh: usize,
    scale_x: f64,
    scale_y: f64,
) -> Vec<u8> {
    let xtab = area_tab(sw, dw, scale_x);
    let ytab = area_tab(_sh, dh, scale_y);
    let width = dw * CN;
    let mut dst = vec![0u8; dh * width];
    let mut sum = vec![0f32; width];
    let mut buf = vec![0f32; width];
    let mut prev_dy = ytab.first().map_or(0, |t| t.0);
    for &(dy, sy, beta) in &ytab {
        buf.iter_mut().for_each(|b| *b = 0.0);
        let row = &src[sy * sw * CN..(sy + 1) * sw * CN];
        for &(dx, sx, alpha) in &xtab {
            for c in 0..CN {
                buf[dx * CN + c] += f32::from(row[sx * CN + c]) * alpha;
            }
        }
        if dy != prev_dy {
            let out = &mut dst[prev_dy * width..(prev_dy + 1) * width];
            for x in 0..width {
                out[x] = sat_u8(sum[x]);
                sum[x] = beta * buf[x];
            }
            prev_dy = dy;
        } else {
            for x in 0..width {
                sum[x] += beta * buf[x];
            }
        }
    }
    let out = &mut dst[prev_dy * width..(prev_dy + 1) * width];
    for x in 0..width {
        out[x] = sat_u8(sum[x]);
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_upscale_of_constant_is_constant_and_area_halves() {
        let img = RgbImage::from_pixel(5, 4, image::Rgb([10, 200, 255]));
        let up = resize_rgb(&img, 7, 9, Interpolation::Linear);
        assert!(up.pixels().all(|p| p.0 == [10, 200, 255]));
        let mut grad = RgbImage::new(4, 2);
        for (x, _, p) in grad.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8 * 10, 0, 0]);
        }
        let half = resize_rgb(&grad, 2, 1, Interpolation::Area);
        // (0 + 10 + 0 + 10 + 2) >> 2 = 5, (20 + 30 + 20 + 30 + 2) >> 2 = 25
        assert_eq!(half.get_pixel(0, 0).0[0], 5);
        assert_eq!(half.get_pixel(1, 0).0[0], 25);
    }
}
