//! YOLOv5 v7.0 validation pre-processing (ONNX path: batch 1, square letterbox).
//!
//! Per image, as `LoadImagesAndLabels.__getitem__` with `augment=False, rect=False`:
//! 1. decode to 8-bit colour as `cv2.imread` (libjpeg-turbo's pixels, grey replicated);
//! 2. `r = size / max(h0, w0)`; if `r != 1` resize to `(ceil(w0 * r), ceil(h0 * r))`,
//!    INTER_LINEAR when `r > 1`, INTER_AREA when shrinking ([`super::resize`]);
//! 3. letterbox to `size x size` without up-scaling: `r2 = min(size / h, size / w, 1)`,
//!    `new = (round(w * r2), round(h * r2))` (round half to even, resized with INTER_LINEAR
//!    when it differs), padding `top = round(dh - 0.1)`, `bottom = round(dh + 0.1)` (and
//!    left/right likewise), value 114;
//! 4. RGB, CHW, `f32 / 255`, batch 1.
//!
//! [`Letterbox`] is the geometry alone (a pure function of the image size), so boxes and
//! labels can be mapped without pixels.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, bail};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use ndarray::Array4;

use super::jpeg;
use super::resize::{Interpolation, resize_rgb};

/// val.py's default network input size.
pub const DEFAULT_SIZE: u32 = 640;

/// Pad value of the letterbox border.
pub const PAD_VALUE: u8 = 114;

/// Geometry of one letterboxed image; every field follows YOLOv5's own variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Original image height and width (`h0, w0`).
    pub orig_hw: [u32; 2],
    /// Size after the first resize (`load_image`'s `h, w`).
    pub resized_hw: [u32; 2],
    /// Size after the letterbox's own resize (equals `resized_hw` except in rare rounding
    /// cases where `ceil` overshoots `size`).
    pub unpadded_hw: [u32; 2],
    /// Side of the square network input.
    pub size: u32,
    /// Letterbox padding per side `(dw, dh)`, possibly `x.5` (`shapes[1][1]`).
    pub pad: [f64; 2],
    /// Border in pixels: `[top, bottom, left, right]`.
    pub border: [u32; 4],
}

/// Images whose header claims more pixels than this are refused before decoding (the default of
/// `--max-pixels`): 250 million, above any camera's photo (decoding one takes about 2 GB).
pub const DEFAULT_MAX_PIXELS: u64 = 250_000_000;

/// A network input ready for a backend plus the geometry to map boxes back.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `[1, 3, size, size]`, RGB, values in `[0, 1]`.
    pub tensor: Array4<f32>,
    pub letterbox: Letterbox,
    /// How the file was decoded, where that weakens parity with val.py.
    pub notes: DecodeNotes,
}

/// What decoding an image found that its pixels do not show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeNotes {
    /// A JPEG that does not end with an EOI marker: truncated, decoded as far as it goes (val.py
    /// checks the same two bytes and re-saves such a file before using it).
    pub truncated: bool,
    /// Why the exact JPEG decoder could not decode the file, when the `image` crate did instead:
    /// its pixels may differ from `cv2.imread`'s.
    pub fallback: Option<String>,
}

/// A decoded image and what decoding it found.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: RgbImage,
    pub notes: DecodeNotes,
}

/// Python's `round` on a float: half to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

impl Letterbox {
    /// The geometry for an image of `h0 x w0` pixels letterboxed to `size`.
    pub fn new(h0: u32, w0: u32, size: u32) -> anyhow::Result<Self> {
        if h0 == 0 || w0 == 0 || size == 0 {
            bail!("cannot letterbox a {w0}x{h0} image to {size}");
        }
        let r = f64::from(size) / f64::from(h0.max(w0));
        let (h, w) = if r != 1.0 {
            (
                (f64::from(h0) * r).ceil() as u32,
                (f64::from(w0) * r).ceil() as u32,
            )
        } else {
            (h0, w0)
        };
        let s = f64::from(size);
        let r2 = (s / f64::from(h)).min(s / f64::from(w)).min(1.0);
        let new_w = round_half_even(f64::from(w) * r2) as u32;
        let new_h = round_half_even(f64::from(h) * r2) as u32;
        let dw = f64::from(size - new_w) / 2.0;
        let dh = f64::from(size - new_h) / 2.0;
        let top = round_half_even(dh - 0.1) as u32;
        let bottom = round_half_even(dh + 0.1) as u32;
        let left = round_half_even(dw - 0.1) as u32;
        let right = round_half_even(dw + 0.1) as u32;
        Ok(Self {
            orig_hw: [h0, w0],
            resized_hw: [h, w],
            unpadded_hw: [new_h, new_w],
            size,
            pad: [dw, dh],
            border: [top, bottom, left, right],
        })
    }

    /// Height and width of the padded image (`size` except in YOLOv5's rounding corner cases).
    pub fn padded_hw(&self) -> [u32; 2] {
        let [t, b, l, r] = self.border;
        [self.unpadded_hw[0] + t + b, self.unpadded_hw[1] + l + r]
    }

    /// The gain `scale_boxes` divides by: the first resize's height ratio `h / h0`.
    pub fn gain(&self) -> f64 {
        f64::from(self.resized_hw[0]) / f64::from(self.orig_hw[0])
    }

    /// YOLOv5 `scale_boxes` with val.py's `ratio_pad`, in f32: an xyxy box in network-input
    /// pixels to original-image pixels, clipped to the image.
    pub fn box_to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let (pw, ph) = (self.pad[0] as f32, self.pad[1] as f32);
        let gain = self.gain() as f32;
        let (h0, w0) = (self.orig_hw[0] as f32, self.orig_hw[1] as f32);
        [
            ((b[0] - pw) / gain).clamp(0.0, w0),
            ((b[1] - ph) / gain).clamp(0.0, h0),
            ((b[2] - pw) / gain).clamp(0.0, w0),
            ((b[3] - ph) / gain).clamp(0.0, h0),
        ]
    }

    /// A YOLO label box (normalised `xc, yc, w, h`) in original-image xyxy pixels, through
    /// the exact f32 chain val.py applies: `xywhn2xyxy` onto the letterboxed image,
    /// `xyxy2xywhn(clip=True, eps=1e-3)`, times the input size, `xywh2xyxy`, `scale_boxes`.
    pub fn label_to_original(&self, xywhn: [f32; 4]) -> [f32; 4] {
        let [x, y, w, h] = xywhn;
        // letterbox ratio r2 times the resized size, as Python floats, then used in f32
        let r2 = {
            let s = f64::from(self.size);
            (s / f64::from(self.resized_hw[0]))
                .min(s / f64::from(self.resized_hw[1]))
                .min(1.0)
        };
        let sw = (r2 * f64::from(self.resized_hw[1])) as f32;
        let sh = (r2 * f64::from(self.resized_hw[0])) as f32;
        let (pw, ph) = (self.pad[0] as f32, self.pad[1] as f32);
        let mut b = [
            sw * (x - w / 2.0) + pw,
            sh * (y - h / 2.0) + ph,
            sw * (x + w / 2.0) + pw,
            sh * (y + h / 2.0) + ph,
        ];
        // xyxy2xywhn on the padded image, clipped to (h - 1e-3, w - 1e-3)
        let [ih, iw] = self.padded_hw();
        let (iwf, ihf) = (iw as f32, ih as f32);
        let cw = (f64::from(iw) - 1e-3) as f32;
        let ch = (f64::from(ih) - 1e-3) as f32;
        b = [
            b[0].clamp(0.0, cw),
            b[1].clamp(0.0, ch),
            b[2].clamp(0.0, cw),
            b[3].clamp(0.0, ch),
        ];
        let n = [
            ((b[0] + b[2]) / 2.0) / iwf,
            ((b[1] + b[3]) / 2.0) / ihf,
            (b[2] - b[0]) / iwf,
            (b[3] - b[1]) / ihf,
        ];
        // val.py: targets *= (width, height, width, height), then xywh2xyxy
        let p = [n[0] * iwf, n[1] * ihf, n[2] * iwf, n[3] * ihf];
        let xyxy = [
            p[0] - p[2] / 2.0,
            p[1] - p[3] / 2.0,
            p[0] + p[2] / 2.0,
            p[1] + p[3] / 2.0,
        ];
        self.box_to_original(xyxy)
    }
}

/// Decodes an image file to 8-bit RGB with EXIF orientation applied, like `cv2.imread`.
/// JPEGs go through [`super::jpeg`] (libjpeg-turbo's exact pixels); JPEG features it does
/// not reproduce and other formats use the `image` crate, which the notes record. An image of
/// more than `max_pixels` pixels is refused from its header, before decoding.
pub fn load_rgb(path: &Path, max_pixels: u64) -> anyhow::Result<Decoded> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let is_jpeg = reader.format() == Some(ImageFormat::Jpeg);
    let mut decoder = reader
        .into_decoder()
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        bail!(
            "image {} is {width}x{height} = {pixels} pixels, over the limit of {max_pixels} \
             (--max-pixels)",
            path.display()
        );
    }
    let orientation = decoder.orientation().ok();
    let mut notes = DecodeNotes {
        truncated: is_jpeg && !bytes.ends_with(&[0xFF, 0xD9]),
        fallback: None,
    };
    let exact = if is_jpeg {
        match jpeg::decode(&bytes, max_pixels) {
            Ok(rgb) => Some(rgb),
            Err(e) if e.is::<jpeg::Unsupported>() => {
                notes.fallback = Some(e.to_string());
                None
            }
            Err(e) => return Err(e.context(format!("cannot decode image {}", path.display()))),
        }
    } else {
        None
    };
    let mut img = match exact {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder)
            .with_context(|| format!("cannot decode image {}", path.display()))?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(Decoded {
        image: img.into_rgb8(),
        notes,
    })
}

/// Resizes and pads an RGB image exactly as YOLOv5 (steps 2 and 3 of the module doc).
pub fn letterbox_rgb(img: &RgbImage, size: u32) -> anyhow::Result<(RgbImage, Letterbox)> {
    let lb = Letterbox::new(img.height(), img.width(), size)?;
    let [h, w] = lb.resized_hw;
    let resized;
    let mut cur = img;
    if [h, w] != lb.orig_hw {
        let interp = if h > lb.orig_hw[0] || w > lb.orig_hw[1] {
            Interpolation::Linear
        } else {
            Interpolation::Area
        };
        resized = resize_rgb(cur, w, h, interp);
        cur = &resized;
    }
    let second;
    let [nh, nw] = lb.unpadded_hw;
    if [nh, nw] != [h, w] {
        second = resize_rgb(cur, nw, nh, Interpolation::Linear);
        cur = &second;
    }
    let [ph, pw] = lb.padded_hw();
    let [top, _, left, _] = lb.border;
    let mut out = RgbImage::from_pixel(pw, ph, image::Rgb([PAD_VALUE; 3]));
    for (y, row) in cur.rows().enumerate() {
        for (x, px) in row.enumerate() {
            out.put_pixel(x as u32 + left, y as u32 + top, *px);
        }
    }
    Ok((out, lb))
}

/// `[1, 3, H, W]` f32 tensor of an RGB image, each value `v as f32 / 255`.
pub fn to_tensor(img: &RgbImage) -> Array4<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    let (r, rest) = data.split_at_mut(h * w);
    let (g, b) = rest.split_at_mut(h * w);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = f32::from(px[0]) / 255.0;
        g[i] = f32::from(px[1]) / 255.0;
        b[i] = f32::from(px[2]) / 255.0;
    }
    Array4::from_shape_vec((1, 3, h, w), data).expect("3 planes of h x w")
}

/// The whole pre-processing of one image file: a pure function, safe to call from rayon.
pub fn preprocess_file(path: &Path, size: u32, max_pixels: u64) -> anyhow::Result<Preprocessed> {
    let decoded = load_rgb(path, max_pixels)?;
    let (boxed, letterbox) = letterbox_rgb(&decoded.image, size)
        .with_context(|| format!("cannot letterbox {}", path.display()))?;
    Ok(Preprocessed {
        tensor: to_tensor(&boxed),
        letterbox,
        notes: decoded.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_yolov5_for_fixture_shapes() {
        // (h0, w0) -> resized, pad, border as printed by yolov5 (fixtures meta.json)
        let lb = Letterbox::new(640, 481, 640).unwrap();
        assert_eq!(lb.resized_hw, [640, 481]);
        assert_eq!(lb.pad, [79.5, 0.0]);
        assert_eq!(lb.border, [0, 0, 79, 80]);
        let lb = Letterbox::new(500, 381, 640).unwrap();
        assert_eq!(lb.resized_hw, [640, 488]);
        assert_eq!(lb.pad, [76.0, 0.0]);
        assert_eq!(lb.gain(), 1.28);
        let lb = Letterbox::new(612, 612, 640).unwrap();
        assert_eq!(lb.resized_hw, [640, 640]);
        assert_eq!(lb.padded_hw(), [640, 640]);
    }

    #[test]
    fn ceil_overshoot_gets_a_second_resize_like_yolov5() {
        // 525 * (640 / 525) = 640.0000000000001 -> ceil 641; values from Python
        let lb = Letterbox::new(525, 400, 640).unwrap();
        assert_eq!(lb.resized_hw, [641, 488]);
        assert_eq!(lb.unpadded_hw, [640, 487]);
        assert_eq!(lb.pad, [76.5, 0.0]);
        assert_eq!(lb.border, [0, 0, 76, 77]);
        assert_eq!(lb.padded_hw(), [640, 640]);
        assert_eq!(lb.gain(), 1.220952380952381);
        let img = RgbImage::from_pixel(400, 525, image::Rgb([9, 8, 7]));
        let (boxed, _) = letterbox_rgb(&img, 640).unwrap();
        assert_eq!(boxed.dimensions(), (640, 640));
        assert_eq!(boxed.get_pixel(76, 0).0, [9, 8, 7]);
        assert_eq!(boxed.get_pixel(75, 0).0, [PAD_VALUE; 3]);
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(79.4), 79.0);
        assert_eq!(round_half_even(79.6), 80.0);
    }
}
