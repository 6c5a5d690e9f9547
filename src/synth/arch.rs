//! The YOLOv5 v7.0 architecture (`models/yolov5*.yaml`) and its scaling rules.

use std::fmt;
use std::str::FromStr;

/// One of the official model sizes: the five P5 models of `models/yolov5{n,s,m,l,x}.yaml` and
/// the five P6 models of `models/hub/yolov5{n,s,m,l,x}6.yaml` (the layout of `yolov5-p6.yaml`
/// with its own anchors, scaled by the same multiples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    N,
    S,
    M,
    L,
    X,
    N6,
    S6,
    M6,
    L6,
    X6,
}

/// Anchors per level.
pub const NA: usize = 3;

/// A yaml's layout: its layers, which of them Detect reads, and its anchors.
#[derive(Debug)]
pub(super) struct Arch {
    /// Layers before Detect, in yaml order (widths and repeats before scaling).
    pub layers: &'static [Layer],
    /// The layers Detect reads, smallest stride first; Detect itself is layer `layers.len()`.
    pub detect_from: &'static [usize],
    /// Default anchors, `(w, h)` in input pixels, per Detect level.
    pub anchors: &'static [[(u16, u16); NA]],
    /// The input size the official models were trained and are exported at.
    pub default_imgsz: usize,
    /// How onnxsim numbers the initializers it folds.
    pub folded: FoldedNumbers,
}

/// Where onnxsim 0.8.1 numbers the initializers it folds (`_v_<n>`) in an opset-17 export,
/// measured on exports of every size (the numbers count every value onnxsim created, most of
/// them folded away again, so they follow no simpler rule).
#[derive(Debug)]
pub(super) struct FoldedNumbers {
    /// The first folded Detect initializer's number past the value count of the opset-12 export
    /// of the same model, with computed Resize sizes.
    pub detect_after_sizes: usize,
    /// The same with constant Resize scales.
    pub detect_after_scales: usize,
    /// The folded sizes of the last `Resize` (the others follow it, last layer first), counted
    /// from the first folded Detect initializer.
    pub resize_sizes: usize,
}

/// `models/yolov5*.yaml`: Detect on P3, P4, P5 (strides 8, 16, 32).
pub(super) const P5: Arch = Arch {
    layers: &P5_LAYERS,
    detect_from: &[17, 20, 23],
    anchors: &[
        [(10, 13), (16, 30), (33, 23)],
        [(30, 61), (62, 45), (59, 119)],
        [(116, 90), (156, 198), (373, 326)],
    ],
    default_imgsz: 640,
    folded: FoldedNumbers {
        detect_after_sizes: 8,
        detect_after_scales: 1,
        resize_sizes: 25,
    },
};

/// `models/hub/yolov5*6.yaml`: an extra stride-64 stage, Detect on P3 to P6.
pub(super) const P6: Arch = Arch {
    layers: &P6_LAYERS,
    detect_from: &[23, 26, 29, 32],
    anchors: &[
        [(19, 27), (44, 40), (38, 94)],
        [(96, 68), (86, 152), (180, 137)],
        [(140, 301), (303, 264), (238, 542)],
        [(436, 615), (739, 380), (925, 792)],
    ],
    default_imgsz: 1280,
    folded: FoldedNumbers {
        detect_after_sizes: 10,
        detect_after_scales: 0,
        resize_sizes: 34,
    },
};

/// One layer of the yaml; its input is the previous layer's output.
#[derive(Debug, Clone, Copy)]
pub(super) enum Layer {
    /// `Conv(c, k, s, p)`: conv (BN fused) + SiLU.
    Conv {
        c: usize,
        k: usize,
        s: usize,
        p: usize,
    },
    /// `C3(c, shortcut)` listed with `n` repeats (scaled by the depth multiple).
    C3 { c: usize, n: usize, shortcut: bool },
    /// `SPPF(c, 5)`.
    Sppf { c: usize },
    /// `nn.Upsample(None, 2, 'nearest')`.
    Upsample,
    /// `Concat` along channels of the previous layer and layer `with`.
    Concat { with: usize },
}

/// Stride of Detect level `level` (P3 is level 0): 8, 16, 32, 64.
pub fn level_stride(level: usize) -> usize {
    8 << level
}

const fn conv(c: usize, k: usize, s: usize) -> Layer {
    // autopad: p = k // 2
    Layer::Conv { c, k, s, p: k / 2 }
}

const fn c3(c: usize, n: usize, shortcut: bool) -> Layer {
    Layer::C3 { c, n, shortcut }
}

/// Layers 0..=23 of `models/yolov5*.yaml` v7.0.
const P5_LAYERS: [Layer; 24] = [
    // backbone
    Layer::Conv {
        c: 64,
        k: 6,
        s: 2,
        p: 2,
    },
    conv(128, 3, 2),
    c3(128, 3, true),
    conv(256, 3, 2),
    c3(256, 6, true),
    conv(512, 3, 2),
    c3(512, 9, true),
    conv(1024, 3, 2),
    c3(1024, 3, true),
    Layer::Sppf { c: 1024 },
    // head
    conv(512, 1, 1),
    Layer::Upsample,
    Layer::Concat { with: 6 },
    c3(512, 3, false),
    conv(256, 1, 1),
    Layer::Upsample,
    Layer::Concat { with: 4 },
    c3(256, 3, false),
    conv(256, 3, 2),
    Layer::Concat { with: 14 },
    c3(512, 3, false),
    conv(512, 3, 2),
    Layer::Concat { with: 10 },
    c3(1024, 3, false),
];

/// Layers 0..=32 of `models/hub/yolov5*6.yaml` v7.0.
const P6_LAYERS: [Layer; 33] = [
    // backbone
    Layer::Conv {
        c: 64,
        k: 6,
        s: 2,
        p: 2,
    },
    conv(128, 3, 2),
    c3(128, 3, true),
    conv(256, 3, 2),
    c3(256, 6, true),
    conv(512, 3, 2),
    c3(512, 9, true),
    conv(768, 3, 2),
    c3(768, 3, true),
    conv(1024, 3, 2),
    c3(1024, 3, true),
    Layer::Sppf { c: 1024 },
    // head
    conv(768, 1, 1),
    Layer::Upsample,
    Layer::Concat { with: 8 },
    c3(768, 3, false),
    conv(512, 1, 1),
    Layer::Upsample,
    Layer::Concat { with: 6 },
    c3(512, 3, false),
    conv(256, 1, 1),
    Layer::Upsample,
    Layer::Concat { with: 4 },
    c3(256, 3, false),
    conv(256, 3, 2),
    Layer::Concat { with: 20 },
    c3(512, 3, false),
    conv(512, 3, 2),
    Layer::Concat { with: 16 },
    c3(768, 3, false),
    conv(768, 3, 2),
    Layer::Concat { with: 12 },
    c3(1024, 3, false),
];

impl Variant {
    /// All sizes, the P5 models smallest first, then the P6 models.
    pub const ALL: [Variant; 10] = [
        Variant::N,
        Variant::S,
        Variant::M,
        Variant::L,
        Variant::X,
        Variant::N6,
        Variant::S6,
        Variant::M6,
        Variant::L6,
        Variant::X6,
    ];

    /// The yaml name, e.g. `yolov5n` or `yolov5n6`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::N => "yolov5n",
            Variant::S => "yolov5s",
            Variant::M => "yolov5m",
            Variant::L => "yolov5l",
            Variant::X => "yolov5x",
            Variant::N6 => "yolov5n6",
            Variant::S6 => "yolov5s6",
            Variant::M6 => "yolov5m6",
            Variant::L6 => "yolov5l6",
            Variant::X6 => "yolov5x6",
        }
    }

    /// The layout of the yaml.
    pub(super) fn arch(self) -> &'static Arch {
        match self {
            Variant::N | Variant::S | Variant::M | Variant::L | Variant::X => &P5,
            Variant::N6 | Variant::S6 | Variant::M6 | Variant::L6 | Variant::X6 => &P6,
        }
    }

    /// The input size the official model is exported at: 640 (P5) or 1280 (P6).
    pub fn default_imgsz(self) -> usize {
        self.arch().default_imgsz
    }

    /// Number of Detect levels: 3 (P5) or 4 (P6).
    pub fn levels(self) -> usize {
        self.arch().detect_from.len()
    }

    /// Stride of the coarsest Detect level (32 or 64), the `stride` metadata export.py writes;
    /// the input size must be a multiple of it.
    pub fn max_stride(self) -> usize {
        level_stride(self.levels() - 1)
    }

    /// `(depth_multiple, width_multiple)` of the yaml.
    pub fn multiples(self) -> (f64, f64) {
        match self {
            Variant::N | Variant::N6 => (0.33, 0.25),
            Variant::S | Variant::S6 => (0.33, 0.50),
            Variant::M | Variant::M6 => (0.67, 0.75),
            Variant::L | Variant::L6 => (1.0, 1.0),
            Variant::X | Variant::X6 => (1.33, 1.25),
        }
    }

    /// Repeats of a block listed `n` times in the yaml: `max(round(n * gd), 1)` for `n > 1`,
    /// with Python's round-half-even.
    pub fn depth(self, n: usize) -> usize {
        if n <= 1 {
            return n;
        }
        let (gd, _) = self.multiples();
        ((n as f64 * gd).round_ties_even() as usize).max(1)
    }

    /// Output channels of a layer listed with `c` channels: `ceil(c * gw / 8) * 8`.
    pub fn width(self, c: usize) -> usize {
        let (_, gw) = self.multiples();
        ((c as f64 * gw) / 8.0).ceil() as usize * 8
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;

    /// Accepts `yolov5n` .. `yolov5x` and `yolov5n6` .. `yolov5x6` (or the bare letter, `n6`).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let short = s.strip_prefix("yolov5").unwrap_or(s);
        Variant::ALL
            .into_iter()
            .find(|v| &v.name()["yolov5".len()..] == short)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown model {s:?}: expected yolov5n, yolov5s, yolov5m, yolov5l, yolov5x \
                     or a P6 model yolov5n6 .. yolov5x6"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_follows_the_yaml_multiples() {
        // parse_model of yolov5 v7.0: C3 repeats 3/6/9 and widths 64..1024 per size.
        assert_eq!(
            [3, 6, 9].map(|n| Variant::N.depth(n)),
            [1, 2, 3],
            "yolov5n depth"
        );
        assert_eq!([3, 6, 9].map(|n| Variant::M.depth(n)), [2, 4, 6]);
        assert_eq!([3, 6, 9].map(|n| Variant::L.depth(n)), [3, 6, 9]);
        assert_eq!([3, 6, 9].map(|n| Variant::X.depth(n)), [4, 8, 12]);
        assert_eq!(Variant::N.width(64), 16);
        assert_eq!(Variant::S.width(1024), 512);
        assert_eq!(Variant::M.width(64), 48);
        assert_eq!(Variant::X.width(1024), 1280);
        assert_eq!(Variant::X.width(64), 80);
        // yolov5n6: the extra 768-channel stage at width 0.25
        assert_eq!(Variant::N6.width(768), 192);
        assert_eq!(Variant::X6.depth(3), 4);
    }

    #[test]
    fn p6_models_have_four_levels_up_to_stride_64() {
        assert_eq!(Variant::N.levels(), 3);
        assert_eq!(Variant::N.max_stride(), 32);
        assert_eq!(Variant::X6.levels(), 4);
        assert_eq!(Variant::X6.max_stride(), 64);
        assert_eq!(Variant::S6.default_imgsz(), 1280);
        // Detect reads the last layer before it, and each level's inputs exist.
        for arch in [&P5, &P6] {
            assert_eq!(arch.detect_from.last(), Some(&(arch.layers.len() - 1)));
            assert_eq!(arch.anchors.len(), arch.detect_from.len());
        }
    }

    #[test]
    fn names_parse_back() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
        }
        assert_eq!("n6".parse::<Variant>().unwrap(), Variant::N6);
        assert!("yolov5q".parse::<Variant>().is_err());
        assert!("yolov5n7".parse::<Variant>().is_err());
    }
}
