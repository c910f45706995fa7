/*!
Drawing: figures described by plain structs ([`Figure`] of [`Panel`]s: [`Chart`]s and
[`Heatmap`]s) rendered by plotters into an SVG string and a PNG byte buffer.

Nothing here reads tables or knows what a run is: the report's data preparation builds the
structs, this module draws them. Every figure is drawn twice from the same description (once per
backend) and each drawing ends with `present()`, so backend errors surface as errors.

Conventions:
- Log axes are drawn by transforming values with `log10` onto a linear axis whose ticks are put at
  whole decades (or 1-2-5 steps inside one decade) and labelled with the untransformed value.
  Values that are not positive are left out on a log axis; non-finite values are always left out.
- Legends are drawn outside the plotting area, in a column on the panel's right, so they never
  hide data; a heatmap's legend is its colour bar.
- Text uses DejaVu Sans from the `dejavu` crate (registered once as `sans-serif`), so rendering
  does not depend on the system's fonts and is byte-for-byte reproducible.
*/

mod draw;
mod ticks;

#[cfg(test)]
mod tests;

use anyhow::{Context, Result};

pub use ticks::{fmt_sig, nice_ticks, tick_label};

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color(pub u8, pub u8, pub u8);

impl Color {
    /// Black, for reference marks.
    pub const BLACK: Color = Color(0, 0, 0);
    /// Mid grey, for secondary marks.
    pub const GREY: Color = Color(110, 110, 110);
}

/// The `i`-th colour of a 10-colour qualitative palette (matplotlib's `tab10`), cycling.
pub fn palette(i: usize) -> Color {
    const TAB10: [Color; 10] = [
        Color(31, 119, 180),
        Color(255, 127, 14),
        Color(44, 160, 44),
        Color(214, 39, 40),
        Color(148, 103, 189),
        Color(140, 86, 75),
        Color(227, 119, 194),
        Color(127, 127, 127),
        Color(188, 189, 34),
        Color(23, 190, 207),
    ];
    TAB10[i % TAB10.len()]
}

/// Interpolates a colour map given by evenly spaced anchors; `t` is clamped to `[0, 1]`.
fn ramp(anchors: &[Color], t: f64) -> Color {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (anchors.len() - 1) as f64;
    let i = (x.floor() as usize).min(anchors.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (anchors[i], anchors[i + 1]);
    Color(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Viridis (approximated by five anchors), for heatmaps: `t = 0` dark purple, `t = 1` yellow.
pub fn viridis(t: f64) -> Color {
    ramp(&[Color(68, 1, 84), Color(59, 82, 139), Color(33, 145, 140), Color(94, 201, 98), Color(253, 231, 37)], t)
}

/// Colour of an attention rate `α ∈ [0, 1]`: blue (Pizza end, α = 0) through purple to red
/// (Clock end, α = 1); all shades stay dark enough to read on white.
pub fn alpha_color(alpha: f64) -> Color {
    ramp(&[Color(33, 102, 172), Color(118, 42, 131), Color(202, 0, 32)], alpha)
}

/// One axis of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Label, with the unit in brackets where there is one.
    pub label: String,
    /// Logarithmic (base 10).
    pub log: bool,
    /// Fixed lower end (data units); from the data when `None`.
    pub min: Option<f64>,
    /// Fixed upper end (data units); from the data when `None`.
    pub max: Option<f64>,
    /// Ticks only at whole numbers (a linear axis of counts or indices).
    pub integer: bool,
    /// A categorical axis: category `i` sits at `x = i`, ticked and labelled with its name, and
    /// the axis spans `[−0.5, n − 0.5]`. Empty for a numeric axis.
    pub categories: Vec<String>,
}

impl Axis {
    /// A linear axis fitted to the data.
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), log: false, min: None, max: None, integer: false, categories: Vec::new() }
    }
    /// A log axis fitted to the data.
    pub fn log(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), log: true, min: None, max: None, integer: false, categories: Vec::new() }
    }
    /// A categorical axis (see [`Axis::categories`]).
    pub fn categorical(label: impl Into<String>, names: Vec<String>) -> Axis {
        let n = names.len().max(1) as f64;
        Axis { categories: names, ..Axis::linear(label).range(-0.5, n - 0.5) }
    }
    /// Ticks at whole numbers only.
    pub fn integer(mut self) -> Axis {
        self.integer = true;
        self
    }
    /// Fixes the range.
    pub fn range(mut self, min: f64, max: f64) -> Axis {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
}

/// Marker shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Filled circle.
    Circle,
    /// Filled square.
    Square,
    /// Filled triangle (point up).
    Triangle,
    /// Filled diamond.
    Diamond,
    /// Diagonal cross (not filled).
    Cross,
}

/// How a series is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// Solid line of the given stroke width (pixels).
    Line {
        /// Stroke width.
        width: u32,
    },
    /// Dashed line.
    Dashed {
        /// Stroke width.
        width: u32,
    },
    /// Markers only.
    Points {
        /// Marker shape.
        shape: Shape,
        /// Marker radius (pixels).
        size: u32,
    },
    /// A line with a marker at each point.
    LinePoints {
        /// Stroke width.
        width: u32,
        /// Marker shape.
        shape: Shape,
        /// Marker radius.
        size: u32,
    },
    /// A translucent band between `lower[i]` and `upper[i]` at each point's `x` (the points' `y`
    /// is not drawn; add a line series for the centre).
    Band {
        /// Lower edge, one per point.
        lower: Vec<f64>,
        /// Upper edge, one per point.
        upper: Vec<f64>,
    },
    /// Markers with vertical error bars from `lower[i]` to `upper[i]`.
    ErrorBars {
        /// Lower end, one per point.
        lower: Vec<f64>,
        /// Upper end, one per point.
        upper: Vec<f64>,
        /// Marker shape.
        shape: Shape,
        /// Marker radius.
        size: u32,
    },
    /// Vertical bars from the bottom of the axis (or 0 on a linear axis that contains it).
    Stems {
        /// Bar width (pixels).
        width: u32,
    },
    /// Box plots: at each point's `x`, a box from `lower[i]` to `upper[i]` (e.g. the hinges)
    /// with a line at the point's `y` (the median) and whiskers out to `low[i]` and `high[i]`.
    Boxes {
        /// Bottom of each box.
        lower: Vec<f64>,
        /// Top of each box.
        upper: Vec<f64>,
        /// End of each lower whisker.
        low: Vec<f64>,
        /// End of each upper whisker.
        high: Vec<f64>,
        /// Half the box's width, in x data units.
        half_width: f64,
    },
}

/// One data series of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text; `None` keeps the series out of the legend.
    pub label: Option<String>,
    /// Colour.
    pub color: Color,
    /// How to draw it.
    pub mark: Mark,
    /// `(x, y)` in data units.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A labelled series.
    pub fn new(label: impl Into<String>, color: Color, mark: Mark, points: Vec<(f64, f64)>) -> Series {
        Series { label: Some(label.into()), color, mark, points }
    }
    /// A series left out of the legend.
    pub fn unlabelled(color: Color, mark: Mark, points: Vec<(f64, f64)>) -> Series {
        Series { label: None, color, mark, points }
    }
}

/// A reference line across the whole plotting area (dashed).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `true`: vertical line at `x = at`; `false`: horizontal line at `y = at`.
    pub vertical: bool,
    /// Position in data units.
    pub at: f64,
    /// Colour.
    pub color: Color,
    /// Legend text, if any.
    pub label: Option<String>,
}

/// A 2-D chart: series and reference lines on one pair of axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Panel title.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Series, drawn in order (later on top).
    pub series: Vec<Series>,
    /// Reference lines, drawn under the series.
    pub rules: Vec<Rule>,
}

impl Chart {
    /// An empty chart.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Chart {
        Chart { title: title.into(), x, y, series: Vec::new(), rules: Vec::new() }
    }
}

/// A heatmap of values on a grid of cell centres, with a colour bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Panel title.
    pub title: String,
    /// Horizontal axis (its range comes from the cells).
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Column centres, increasing (data units).
    pub x_centres: Vec<f64>,
    /// Row centres, increasing.
    pub y_centres: Vec<f64>,
    /// Values, row-major: `values[iy * x_centres.len() + ix]`; NaN draws a grey cell.
    pub values: Vec<f64>,
    /// Label of the colour bar (the legend).
    pub colorbar_label: String,
    /// Write each cell's value in it (for small grids).
    pub annotate: bool,
}

/// One panel of a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Panel {
    /// Series on axes.
    Chart(Chart),
    /// Values on a grid.
    Heatmap(Heatmap),
}

/// A figure: a title and panels laid out in a grid, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Title drawn above the panels.
    pub title: String,
    /// The panels.
    pub panels: Vec<Panel>,
    /// Panels per row (at least 1).
    pub cols: usize,
}

/// Size of one panel in pixels, legend column included.
pub const PANEL_SIZE: (u32, u32) = (640, 400);
/// Height of the figure title band.
pub const TITLE_HEIGHT: u32 = 36;

impl Figure {
    /// A figure with panels side by side, `cols` per row.
    pub fn new(title: impl Into<String>, panels: Vec<Panel>, cols: usize) -> Figure {
        Figure { title: title.into(), panels, cols: cols.max(1) }
    }

    /// Rows and columns of the panel grid.
    pub fn grid(&self) -> (usize, usize) {
        let cols = self.cols.max(1).min(self.panels.len().max(1));
        (self.panels.len().div_ceil(cols).max(1), cols)
    }

    /// Size in pixels of the whole figure.
    pub fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        (PANEL_SIZE.0 * cols as u32, TITLE_HEIGHT + PANEL_SIZE.1 * rows as u32)
    }
}

/// A figure drawn by both backends.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The SVG document.
    pub svg: String,
    /// The PNG file's bytes (8-bit RGB).
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Draws `fig` as SVG and as PNG.
pub fn render(fig: &Figure) -> Result<Rendered> {
    draw::register_fonts()?;
    let (width, height) = fig.size();
    let mut svg = String::new();
    {
        let root = plotters::backend::SVGBackend::with_string(&mut svg, (width, height));
        draw::figure(root, fig).with_context(|| format!("drawing `{}` as SVG", fig.title))?;
    }
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = plotters::backend::BitMapBackend::with_buffer(&mut rgb, (width, height));
        draw::figure(root, fig).with_context(|| format!("drawing `{}` as PNG", fig.title))?;
    }
    let png = encode_png(&rgb, width, height)?;
    Ok(Rendered { svg, png, width, height })
}

/// Encodes an 8-bit RGB buffer as a PNG file in memory.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("writing the PNG header")?;
        w.write_image_data(rgb).context("encoding PNG pixels")?;
        w.finish().context("finishing the PNG")?;
    }
    Ok(out)
}
