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
//! [`Letterbox`] ([`super::types`]) is the geometry alone (a pure function of the image size), so boxes and
//! labels can be mapped without pixels.

use std::io::Cursor;
use std::path::Path;

use anyhow::Context;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use ndarray::Array4;

use super::jpeg;
use super::resize::{Interpolation, resize_rgb};
use super::types::Letterbox;

/// val.py's default network input size.
pub const DEFAULT_SIZE: u32 = 640;

/// Pad value of the letterbox border.
pub const PAD_VALUE: u8 = 114;

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
        return Err(crate::Needs::PixelLimit {
            image: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        }
        .into());
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
}
