//! The YOLOv5 v7.0 architecture (`models/yolov5*.yaml`) and its scaling rules.

use std::fmt;
use std::str::FromStr;

/// One of the five official model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    N,
    S,
    M,
    L,
    X,
}

/// Strides of the three Detect levels (P3, P4, P5).
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Largest stride, written as the `stride` metadata.
pub const MAX_STRIDE: usize = 32;
/// Default anchors of the yaml, `(w, h)` in input pixels, per level.
pub const ANCHORS: [[(u16, u16); 3]; 3] = [
    [(10, 13), (16, 30), (33, 23)],
    [(30, 61), (62, 45), (59, 119)],
    [(116, 90), (156, 198), (373, 326)],
];
/// Anchors per level.
pub const NA: usize = 3;

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

const fn conv(c: usize, k: usize, s: usize) -> Layer {
    // autopad: p = k // 2
    Layer::Conv { c, k, s, p: k / 2 }
}

const fn c3(c: usize, n: usize, shortcut: bool) -> Layer {
    Layer::C3 { c, n, shortcut }
}

/// Layers 0..=23 of `models/yolov5*.yaml` v7.0 (widths and repeats before scaling).
pub(super) const LAYERS: [Layer; 24] = [
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

/// Layer 24, Detect, reads these layers (P3, P4, P5).
pub(super) const DETECT_FROM: [usize; 3] = [17, 20, 23];

impl Variant {
    /// All sizes, smallest first.
    pub const ALL: [Variant; 5] = [Variant::N, Variant::S, Variant::M, Variant::L, Variant::X];

    /// The yaml name, e.g. `yolov5n`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::N => "yolov5n",
            Variant::S => "yolov5s",
            Variant::M => "yolov5m",
            Variant::L => "yolov5l",
            Variant::X => "yolov5x",
        }
    }

    /// `(depth_multiple, width_multiple)` of the yaml.
    pub fn multiples(self) -> (f64, f64) {
        match self {
            Variant::N => (0.33, 0.25),
            Variant::S => (0.33, 0.50),
            Variant::M => (0.67, 0.75),
            Variant::L => (1.0, 1.0),
            Variant::X => (1.33, 1.25),
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

    /// Accepts `yolov5n` .. `yolov5x` (or the bare letter).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let letter = s.strip_prefix("yolov5").unwrap_or(s);
        Ok(match letter {
            "n" => Variant::N,
            "s" => Variant::S,
            "m" => Variant::M,
            "l" => Variant::L,
            "x" => Variant::X,
            _ => anyhow::bail!(
                "unknown model {s:?}: expected yolov5n, yolov5s, yolov5m, yolov5l or yolov5x"
            ),
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
    }

    #[test]
    fn names_parse_back() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
        }
        assert!("yolov5q".parse::<Variant>().is_err());
    }
}
