//! Training images: decoded and letterboxed once as validation does (pad 114, square), then
//! augmented per use with a seeded generator: horizontal flip, random scale and translation
//! (bilinear, the border filled with 114), and HSV jitter with YOLOv5's default gains. The
//! teacher and the student see the same augmented image, so no label has to follow it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::Tensor;
use crate::eval::preprocess::{DEFAULT_MAX_PIXELS, PAD_VALUE, letterbox_rgb, load_rgb};

/// How much images are varied. The defaults are YOLOv5's `hyp.scratch-low.yaml` values for
/// the augmentations kept (mosaic and mixup are not used: the teacher labels any image).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Probability of a left-right flip.
    pub flip: f64,
    /// Scale gain: a factor drawn from `[1 - scale, 1 + scale]`.
    pub scale: f64,
    /// Translation: a shift drawn from `[-translate, translate]` of the size, on each axis.
    pub translate: f64,
    /// HSV gains: each channel multiplied by a factor drawn from `[1 - g, 1 + g]`.
    pub hsv: [f64; 3],
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip: 0.5,
            scale: 0.5,
            translate: 0.1,
            hsv: [0.015, 0.7, 0.4],
        }
    }
}

impl Augment {
    /// No augmentation: the letterboxed image as it is.
    pub fn none() -> Self {
        Augment {
            flip: 0.0,
            scale: 0.0,
            translate: 0.0,
            hsv: [0.0; 3],
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..=1.0).contains(&self.flip)
            && (0.0..1.0).contains(&self.scale)
            && (0.0..=0.5).contains(&self.translate)
            && self.hsv.iter().all(|g| (0.0..=1.0).contains(g));
        if !ok {
            anyhow::bail!(
                "augmentation out of range: flip in [0, 1], scale in [0, 1), translate in \
                 [0, 0.5], hsv gains in [0, 1] ({self:?})"
            );
        }
        Ok(())
    }
}

/// The letterboxed images of a training set, in memory.
pub struct Images {
    pub paths: Vec<PathBuf>,
    boxed: Vec<RgbImage>,
    size: u32,
}

impl Images {
    /// Decodes and letterboxes every image to `size` (in parallel); a file that cannot be
    /// decoded is an error naming it.
    pub fn load(paths: &[PathBuf], size: u32) -> Result<Self> {
        let boxed = paths
            .par_iter()
            .map(|p| -> Result<RgbImage> {
                let decoded = load_rgb(p, DEFAULT_MAX_PIXELS)?;
                Ok(letterbox_rgb(&decoded.image, size)
                    .with_context(|| format!("cannot letterbox {}", p.display()))?
                    .0)
            })
            .collect::<Result<_>>()?;
        Ok(Images {
            paths: paths.to_vec(),
            boxed,
            size,
        })
    }

    pub fn len(&self) -> usize {
        self.boxed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxed.is_empty()
    }

    /// A batch of the images `indices`, each augmented by a generator seeded with `seed` and
    /// its index (the same for any thread count): `[n, 3, size, size]`, RGB in `[0, 1]`.
    pub fn batch(&self, indices: &[usize], augment: &Augment, seed: u64) -> Tensor<f32> {
        let s = self.size as usize;
        let planes: Vec<Vec<f32>> = indices
            .par_iter()
            .map(|&i| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                planar(&augmented(&self.boxed[i], augment, &mut rng))
            })
            .collect();
        Tensor {
            shape: [indices.len(), 3, s, s],
            data: planes.concat(),
        }
    }
}

/// The image's pixels as three planes of `v / 255`.
fn planar(img: &RgbImage) -> Vec<f32> {
    let n = (img.width() * img.height()) as usize;
    let mut data = vec![0f32; 3 * n];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * n + i] = f32::from(px[c]) / 255.0;
        }
    }
    data
}

/// One draw of the augmentations applied to `img`.
fn augmented(img: &RgbImage, a: &Augment, rng: &mut ChaCha8Rng) -> RgbImage {
    let mut out = if a.scale > 0.0 || a.translate > 0.0 {
        let scale = 1.0 + rng.random_range(-a.scale..=a.scale);
        let size = f64::from(img.width());
        let shift = [
            rng.random_range(-a.translate..=a.translate) * size,
            rng.random_range(-a.translate..=a.translate) * size,
        ];
        affine(img, scale, shift)
    } else {
        img.clone()
    };
    if a.hsv.iter().any(|&g| g > 0.0) {
        let gains = a.hsv.map(|g| 1.0 + rng.random_range(-g..=g));
        jitter_hsv(&mut out, gains);
    }
    if rng.random_bool(a.flip) {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// `img` scaled by `scale` about its centre and shifted by `shift` pixels (x, y), sampled
/// bilinearly; what falls outside is the letterbox's grey.
fn affine(img: &RgbImage, scale: f64, shift: [f64; 2]) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let src = img.as_raw();
    let mut out = vec![PAD_VALUE; w * h * 3];
    out.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
        let sy = (y as f64 + 0.5 - cy - shift[1]) / scale + cy - 0.5;
        for x in 0..w {
            let sx = (x as f64 + 0.5 - cx - shift[0]) / scale + cx - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            for c in 0..3 {
                let at = |xx: f64, yy: f64| -> f64 {
                    if xx < 0.0 || yy < 0.0 || xx >= w as f64 || yy >= h as f64 {
                        f64::from(PAD_VALUE)
                    } else {
                        f64::from(src[(yy as usize * w + xx as usize) * 3 + c])
                    }
                };
                let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1.0, y0) * fx * (1.0 - fy)
                    + at(x0, y0 + 1.0) * (1.0 - fx) * fy
                    + at(x0 + 1.0, y0 + 1.0) * fx * fy;
                row[x * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    });
    RgbImage::from_raw(w as u32, h as u32, out).expect("w x h x 3 values")
}

/// Multiplies hue, saturation and value by `gains` (hue wraps around), as YOLOv5's
/// `augment_hsv` does with OpenCV's 8-bit HSV.
fn jitter_hsv(img: &mut RgbImage, gains: [f64; 3]) {
    img.as_mut().par_chunks_mut(3).for_each(|px| {
        let [r, g, b] = [px[0], px[1], px[2]].map(|v| f64::from(v) / 255.0);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let hue = if delta == 0.0 {
            0.0
        } else if max == r {
            60.0 * ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            60.0 * ((b - r) / delta + 2.0)
        } else {
            60.0 * ((r - g) / delta + 4.0)
        };
        let sat = if max == 0.0 { 0.0 } else { delta / max };
        let hue = (hue * gains[0]).rem_euclid(360.0);
        let sat = (sat * gains[1]).clamp(0.0, 1.0);
        let val = (max * gains[2]).clamp(0.0, 1.0);
        let c = val * sat;
        let x = c * (1.0 - ((hue / 60.0).rem_euclid(2.0) - 1.0).abs());
        let m = val - c;
        let (r, g, b) = match (hue / 60.0) as u32 {
            0 => (c, x, 0.0),
            1 => (x, c, 0.0),
            2 => (0.0, c, x),
            3 => (0.0, x, c),
            4 => (x, 0.0, c),
            _ => (c, 0.0, x),
        };
        for (out, v) in px.iter_mut().zip([r, g, b]) {
            *out = ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    });
}

/// The image files of the training sources: a data YAML's `train` split, or folders and image
/// lists, without repeats (in YOLOv5's order).
pub fn training_images(
    data: Option<&Path>,
    data_root: Option<&Path>,
    folders: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    use crate::eval::dataset::{DataConfig, Split, list_images};
    let mut sources = folders.to_vec();
    if let Some(yaml) = data {
        let config = DataConfig::load(yaml, data_root)?;
        sources.extend(config.split(Split::Train)?.iter().cloned());
    }
    list_images(&sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_augmentation_is_the_identity_and_a_seed_repeats_its_draw() {
        let img = RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 30) as u8, 77])
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(augmented(&img, &Augment::none(), &mut rng), img);
        let draw = |seed| {
            augmented(
                &img,
                &Augment::default(),
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // unit gains leave colours as they are (up to rounding)
        let mut same = img.clone();
        jitter_hsv(&mut same, [1.0; 3]);
        for (a, b) in same.as_raw().iter().zip(img.as_raw()) {
            assert!(a.abs_diff(*b) <= 1, "{a} {b}");
        }
        assert_eq!(affine(&img, 1.0, [0.0, 0.0]), img);
    }
}
