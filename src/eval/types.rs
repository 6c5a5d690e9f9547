//! The core types of validation, shared by datasets, NMS, metrics and COCOeval: image ids, the
//! letterbox geometry, detections and the COCO category map. They depend on nothing else in
//! `eval`, so the modules that use them do not depend on each other.

use std::fmt;
use std::path::Path;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// An image id as val.py writes it: `int(stem)` when the stem is numeric, else the stem
/// (a JSON number or string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageId {
    Num(u64),
    Name(String),
}

impl ImageId {
    /// The id val.py derives from an image path.
    pub fn from_path(path: &Path) -> Self {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !stem.is_empty()
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = stem.parse()
        {
            return Self::Num(n);
        }
        Self::Name(stem)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Num(n) => write!(f, "{n}"),
            Self::Name(s) => f.write_str(s),
        }
    }
}

/// One detection: `[x1, y1, x2, y2]` pixels, score, class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: u32,
}

/// COCO category id of each of YOLOv5's 80 classes (`coco80_to_coco91_class`).
pub const COCO80_TO_91: [u64; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// The YOLOv5 class index of a COCO category id, if it is one of the 80.
pub fn coco91_to_80(category_id: u64) -> Option<u32> {
    COCO80_TO_91
        .iter()
        .position(|&c| c == category_id)
        .map(|i| i as u32)
}

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
        let new_w = f64::round_ties_even(f64::from(w) * r2) as u32;
        let new_h = f64::round_ties_even(f64::from(h) * r2) as u32;
        let dw = f64::from(size - new_w) / 2.0;
        let dh = f64::from(size - new_h) / 2.0;
        let top = f64::round_ties_even(dh - 0.1) as u32;
        let bottom = f64::round_ties_even(dh + 0.1) as u32;
        let left = f64::round_ties_even(dw - 0.1) as u32;
        let right = f64::round_ties_even(dw + 0.1) as u32;
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
