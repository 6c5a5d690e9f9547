//! Charts for reports, drawn with plotters as SVG and as PNG (an RGB buffer encoded with
//! `image`): line charts of series of points, and heatmaps of a table of values.
//!
//! Text needs a font to be laid out. None is bundled: [`ensure_font`] loads a TrueType font from
//! `SHEARS_FONT` or the usual system places once per process, and every chart fails with a clear
//! error when none is found (callers then skip their plots and say why).

use std::io::Cursor;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

/// Environment variable naming a TrueType/OpenType font file for chart text.
pub const FONT_ENV: &str = "SHEARS_FONT";

/// Where fonts are looked for when `SHEARS_FONT` is not set: Debian/Ubuntu, Fedora, Arch, macOS.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The font family charts ask for; [`ensure_font`] registers the loaded font under it.
const FAMILY: &str = "sans-serif";

/// Series colours (Tableau 10), in order; series `i` takes `SERIES_COLORS[i % 10]`.
pub const SERIES_COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Loads and registers the chart font once per process: the file `SHEARS_FONT` names, else the
/// first of the usual system fonts that exists. The error says where it looked.
pub fn ensure_font() -> Result<()> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load_font().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(drop)
        .map_err(|e| anyhow!("{e}"))
}

fn load_font() -> Result<PathBuf> {
    let path = match std::env::var_os(FONT_ENV) {
        Some(path) => PathBuf::from(path),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no font for chart text: none of {} exists; set {FONT_ENV} to a .ttf file",
                    FONT_CANDIDATES.join(", ")
                )
            })?,
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the chart font {}", path.display()))?;
    // plotters keeps registered fonts for the whole process: the bytes live as long.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType/OpenType font", path.display()))?;
    Ok(path)
}

/// A chart rendered both ways.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub svg: String,
    pub png: Vec<u8>,
}

/// Something drawn on any plotters canvas.
trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Renders `chart` on an SVG and on a PNG canvas of `size` pixels.
fn render(size: (u32, u32), chart: &impl Draw) -> Result<Rendered> {
    ensure_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("drawing the SVG: {e}"))?;
    }
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("drawing the PNG: {e}"))?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, rgb).context("PNG buffer size")?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding the PNG")?;
    Ok(Rendered { svg, png })
}

/// One named series of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Joined by a line (otherwise markers only, drawn larger: a reference point).
    pub line: bool,
}

/// Points against two labelled axes, one colour per series, with a legend.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    /// Axis descriptions, with units.
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Pixels of a line chart.
pub const LINE_CHART_SIZE: (u32, u32) = (960, 600);

impl LineChart {
    /// The chart as SVG and PNG of [`LINE_CHART_SIZE`]. Errors when no series has a finite
    /// point or no font is found.
    pub fn render(&self) -> Result<Rendered> {
        if self.finite_points().next().is_none() {
            bail!("chart {:?} has no finite point to draw", self.title);
        }
        render(LINE_CHART_SIZE, self)
    }

    /// The corner of the plot with the fewest points near it, where the legend hides least.
    fn legend_corner(&self) -> SeriesLabelPosition {
        let x = padded(self.finite_points().map(|p| p.0));
        let y = padded(self.finite_points().map(|p| p.1));
        let near = |right: bool, top: bool| {
            self.finite_points()
                .filter(|(px, py)| {
                    let u = (px - x.start) / (x.end - x.start);
                    let v = (py - y.start) / (y.end - y.start);
                    (if right { u > 0.7 } else { u < 0.3 }) && (if top { v > 0.6 } else { v < 0.4 })
                })
                .count()
        };
        [
            (SeriesLabelPosition::UpperRight, near(true, true)),
            (SeriesLabelPosition::LowerLeft, near(false, false)),
            (SeriesLabelPosition::UpperLeft, near(false, true)),
            (SeriesLabelPosition::LowerRight, near(true, false)),
        ]
        .into_iter()
        .min_by_key(|(_, n)| *n)
        .map_or(SeriesLabelPosition::UpperRight, |(corner, _)| corner)
    }

    fn finite_points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }
}

impl Draw for LineChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let x = padded(self.finite_points().map(|p| p.0));
        let y = padded(self.finite_points().map(|p| p.1));
        let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {:?}: {e}", self.title);
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, series) in self.series.iter().enumerate() {
            let (r, g, b) = SERIES_COLORS[i % SERIES_COLORS.len()];
            let color = RGBColor(r, g, b);
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let marker = if series.line { 4 } else { 7 };
            let drawn = if series.line {
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| fail(&e))?;
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, marker, color.filled())),
                )
            } else {
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Cross::new(p, marker, color.stroke_width(3))),
                )
            }
            .map_err(|e| fail(&e))?;
            drawn.label(&series.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        }
        chart
            .configure_series_labels()
            .position(self.legend_corner())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 15))
            .draw()
            .map_err(|e| fail(&e))?;
        Ok(())
    }
}

/// The range of `values` widened by 5% on each side (by 0.5 when they are all equal).
fn padded(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
    lo - pad..hi + pad
}

/// A table of values as coloured cells: rows top to bottom, columns left to right.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub row_label: String,
    pub column_label: String,
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    /// `values[row][column]`; `None` cells are drawn grey and empty.
    pub values: Vec<Vec<Option<f64>>>,
    /// What the colour means, with units: positive values are red, negative blue, 0 white.
    pub value_label: String,
}

/// Heights of a heatmap's parts, in pixels.
const HEATMAP_ROW: u32 = 18;
const HEATMAP_FRAME: u32 = 150;

impl Heatmap {
    /// Pixels of the rendered heatmap: fixed width, one row height per row.
    pub fn size(&self) -> (u32, u32) {
        (
            1000,
            HEATMAP_FRAME + HEATMAP_ROW * self.rows.len().max(1) as u32,
        )
    }

    /// The heatmap as SVG and PNG of [`Heatmap::size`]; each cell also shows its value.
    pub fn render(&self) -> Result<Rendered> {
        if self.rows.is_empty() || self.columns.is_empty() {
            bail!("heatmap {:?} has no cells", self.title);
        }
        if self.values.len() != self.rows.len()
            || self.values.iter().any(|r| r.len() != self.columns.len())
        {
            bail!(
                "heatmap {:?}: values do not match its rows and columns",
                self.title
            );
        }
        render(self.size(), self)
    }
}

impl Draw for Heatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {:?}: {e}", self.title);
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let scale = self
            .values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-9);
        let (rows, columns) = (self.rows.len(), self.columns.len());
        let legend = format!(
            "colour: {} (full red = {scale:.3}, full blue = -{scale:.3})",
            self.value_label
        );
        let name_width =
            (self.rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32 * 7 + 16).clamp(60, 420);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(80)
            .y_label_area_size(name_width)
            .build_cartesian_2d(0.0..columns as f64, 0.0..rows as f64)
            .map_err(|e| fail(&e))?;
        let anchored = |h, v, size| {
            TextStyle::from((FAMILY, size).into_font()).pos(text_anchor::Pos::new(h, v))
        };
        // Names beside and below the cells, the axis descriptions beyond them.
        let at = |x: f64, y: f64| chart.backend_coord(&(x, y));
        let draw_text = |text: &str, (x, y): (i32, i32), style: &TextStyle| {
            root.draw(&Text::new(text.to_string(), (x, y), style.clone()))
                .map_err(|e| fail(&e))
        };
        let right = anchored(text_anchor::HPos::Right, text_anchor::VPos::Center, 12);
        for (r, name) in self.rows.iter().enumerate() {
            let (x, y) = at(0.0, (rows - r) as f64 - 0.5);
            draw_text(name, (x - 6, y), &right)?;
        }
        let below = anchored(text_anchor::HPos::Center, text_anchor::VPos::Top, 13);
        for (c, name) in self.columns.iter().enumerate() {
            let (x, y) = at(c as f64 + 0.5, 0.0);
            draw_text(name, (x, y + 6), &below)?;
        }
        let (x0, y0) = at(0.0, 0.0);
        let (x1, _) = at(columns as f64, rows as f64);
        draw_text(
            &self.column_label,
            ((x0 + x1) / 2, y0 + 28),
            &anchored(text_anchor::HPos::Center, text_anchor::VPos::Top, 15),
        )?;
        draw_text(
            &legend,
            ((x0 + x1) / 2, y0 + 52),
            &anchored(text_anchor::HPos::Center, text_anchor::VPos::Top, 13),
        )?;
        draw_text(
            &self.row_label,
            (x0 - 6, y0 + 28),
            &anchored(text_anchor::HPos::Right, text_anchor::VPos::Top, 15),
        )?;
        for (r, row) in self.values.iter().enumerate() {
            let top = (rows - r) as f64;
            for (c, value) in row.iter().enumerate() {
                let cell = [(c as f64, top), (c as f64 + 1.0, top - 1.0)];
                let fill = value.map_or(RGBColor(220, 220, 220), |v| diverging(v / scale));
                chart
                    .draw_series(std::iter::once(Rectangle::new(cell, fill.filled())))
                    .map_err(|e| fail(&e))?;
                if let Some(v) = value {
                    let color = if (v / scale).abs() > 0.6 {
                        &WHITE
                    } else {
                        &BLACK
                    };
                    let style = anchored(text_anchor::HPos::Center, text_anchor::VPos::Center, 12)
                        .color(color);
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{v:.3}"),
                            (c as f64 + 0.5, top - 0.5),
                            style,
                        )))
                        .map_err(|e| fail(&e))?;
                }
            }
        }
        Ok(())
    }
}

/// White at 0, towards red for positive `t` (up to 1) and towards blue for negative.
fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let toward = |to: (f64, f64, f64)| {
        let s = t.abs();
        let mix = |a: f64| (255.0 + (a - 255.0) * s).round() as u8;
        RGBColor(mix(to.0), mix(to.1), mix(to.2))
    };
    if t >= 0.0 {
        toward((178.0, 24.0, 43.0))
    } else {
        toward((33.0, 102.0, 172.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_widens_ranges_and_handles_single_values() {
        assert_eq!(padded([0.0, 1.0].into_iter()), -0.05..1.05);
        assert_eq!(padded([2.0].into_iter()), 1.5..2.5);
    }

    #[test]
    fn diverging_colours_run_from_blue_through_white_to_red() {
        assert_eq!(diverging(0.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging(-2.0), RGBColor(33, 102, 172));
    }
}
