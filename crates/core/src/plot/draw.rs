//! The plotters calls: one function per panel kind, generic over the backend.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ticks::{axis_range, axis_ticks, fmt_sig, nice_ticks, tick_label, transform};
use super::{viridis, Chart, Color as Rgb, Figure, Heatmap, Mark, Panel, Shape, TITLE_HEIGHT};

/// Width of the legend column to the right of a chart.
const LEGEND_W: u32 = 190;
/// Width of the colour-bar column to the right of a heatmap.
const COLORBAR_W: u32 = 130;
/// Legend row height.
const ROW_H: i32 = 18;
/// Longest legend label, in characters.
const MAX_LABEL: usize = 28;
const FONT: &str = "sans-serif";

type Ctx<'a, DB> = ChartContext<'a, DB, Cartesian2d<TickAxis, TickAxis>>;

/// A linear coordinate over `[lo, hi]` (transformed units) with our own tick positions and
/// labels (plotters' own key points cannot be told to sit on decades of a transformed axis).
#[derive(Debug, Clone)]
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
    log: bool,
    /// Category names of a categorical axis (tick `i` is labelled `names[i]`).
    names: Vec<String>,
}

impl TickAxis {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>, step: f64, log: bool) -> TickAxis {
        TickAxis { lo, hi, ticks, step, log, names: Vec::new() }
    }

    fn named(mut self, names: &[String]) -> TickAxis {
        self.names = names.to_vec();
        self
    }
}

impl Ranged for TickAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for TickAxis {
    fn format_ext(&self, value: &f64) -> String {
        let i = value.round();
        if !self.names.is_empty() && (value - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < self.names.len() {
            return self.names[i as usize].clone();
        }
        tick_label(*value, self.step, self.log)
    }
}

/// plotters' errors are generic over the backend; keep their message.
fn de<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotters: {e}")
}

/// Registers DejaVu Sans as `sans-serif` (once per process).
pub(super) fn register_fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if !ok {
        bail!("the embedded DejaVu Sans font could not be registered");
    }
    Ok(())
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

fn line_style(c: Rgb, width: u32) -> ShapeStyle {
    ShapeStyle { color: rgb(c).to_rgba(), filled: false, stroke_width: width }
}

/// Draws a marker centred at `$at` (in `$area`'s coordinates) on a drawing area.
macro_rules! marker {
    ($area:expr, $at:expr, $shape:expr, $size:expr, $color:expr) => {{
        let s = $size as i32;
        let fill = rgb($color).filled();
        let edge = ShapeStyle { color: BLACK.mix(0.6), filled: false, stroke_width: 1 };
        match $shape {
            Shape::Circle => {
                $area.draw(&(EmptyElement::at($at) + Circle::new((0, 0), s, fill) + Circle::new((0, 0), s, edge)))
            }
            Shape::Square => $area.draw(
                &(EmptyElement::at($at) + Rectangle::new([(-s, -s), (s, s)], fill) + Rectangle::new([(-s, -s), (s, s)], edge)),
            ),
            Shape::Triangle => $area.draw(
                &(EmptyElement::at($at)
                    + Polygon::new(vec![(0, -s - 1), (s + 1, s), (-s - 1, s)], fill)
                    + PathElement::new(vec![(0, -s - 1), (s + 1, s), (-s - 1, s), (0, -s - 1)], edge)),
            ),
            Shape::Diamond => $area.draw(
                &(EmptyElement::at($at)
                    + Polygon::new(vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0)], fill)
                    + PathElement::new(vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0), (0, -s - 1)], edge)),
            ),
            Shape::Cross => {
                let st = line_style($color, 2);
                $area.draw(
                    &(EmptyElement::at($at)
                        + PathElement::new(vec![(-s, -s), (s, s)], st)
                        + PathElement::new(vec![(-s, s), (s, -s)], st)),
                )
            }
        }
        .map_err(de)
    }};
}

/// Draws a whole figure on a backend and presents it.
pub(super) fn figure<DB: DrawingBackend>(backend: DB, fig: &Figure) -> Result<()> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(de)?;
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    top.draw(&Text::new(fig.title.clone(), (14, 9), (FONT, 19).into_font().color(&BLACK))).map_err(de)?;
    let (rows, cols) = fig.grid();
    let areas = body.split_evenly((rows, cols));
    for (panel, area) in fig.panels.iter().zip(areas.iter()) {
        match panel {
            Panel::Chart(c) => chart(area, c)?,
            Panel::Heatmap(h) => heatmap(area, h)?,
        }
    }
    root.present().map_err(de)?;
    Ok(())
}

/// What a legend row shows left of its label.
#[derive(Clone, Copy)]
enum Sample {
    Line(u32),
    Dashed,
    Marker(Shape, u32),
    LineMarker(u32, Shape, u32),
    Band,
}

fn clip_label(s: &str) -> String {
    if s.chars().count() > MAX_LABEL {
        let mut t: String = s.chars().take(MAX_LABEL - 1).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(String, Rgb, Sample)]) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let max_rows = ((h as i32 - 60) / ROW_H).max(1) as usize;
    let font = (FONT, 12).into_font().color(&BLACK);
    let x0 = 6;
    let mut y = 44;
    for (i, (label, color, sample)) in entries.iter().enumerate() {
        if i + 1 == max_rows && entries.len() > max_rows {
            area.draw(&Text::new(format!("… {} more", entries.len() - i), (x0, y - 7), font.clone())).map_err(de)?;
            break;
        }
        match *sample {
            Sample::Line(w) => area.draw(&PathElement::new(vec![(x0, y), (x0 + 24, y)], line_style(*color, w))).map_err(de)?,
            Sample::Dashed => area
                .draw(&DashedPathElement::new(vec![(x0, y), (x0 + 24, y)], 5, 3, line_style(*color, 2)))
                .map_err(de)?,
            Sample::Marker(shape, size) => marker!(area, (x0 + 12, y), shape, size.min(6), *color)?,
            Sample::LineMarker(w, shape, size) => {
                area.draw(&PathElement::new(vec![(x0, y), (x0 + 24, y)], line_style(*color, w))).map_err(de)?;
                marker!(area, (x0 + 12, y), shape, size.min(5), *color)?
            }
            Sample::Band => {
                area.draw(&Rectangle::new([(x0, y - 6), (x0 + 24, y + 6)], rgb(*color).mix(0.25).filled())).map_err(de)?
            }
        }
        area.draw(&Text::new(clip_label(label), (x0 + 30, y - 7), font.clone())).map_err(de)?;
        y += ROW_H;
    }
    Ok(())
}

fn chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<()> {
    let tx = |v: f64| transform(&c.x, v);
    let ty = |v: f64| transform(&c.y, v);

    // Legend rows: rules first, then series, in order.
    let mut entries = Vec::new();
    for r in &c.rules {
        if let Some(l) = &r.label {
            entries.push((l.clone(), r.color, Sample::Dashed));
        }
    }
    for s in &c.series {
        if let Some(l) = &s.label {
            let sample = match &s.mark {
                Mark::Line { width } => Sample::Line(*width),
                Mark::Dashed { .. } => Sample::Dashed,
                Mark::Points { shape, size } => Sample::Marker(*shape, *size),
                Mark::ErrorBars { shape, size, .. } => Sample::LineMarker(1, *shape, *size),
                Mark::LinePoints { width, shape, size } => Sample::LineMarker(*width, *shape, *size),
                Mark::Band { .. } | Mark::Boxes { .. } => Sample::Band,
                Mark::Stems { width } => Sample::Line(*width),
            };
            entries.push((l.clone(), s.color, sample));
        }
    }
    let (w, _) = area.dim_in_pixel();
    let (plot, leg) = if entries.is_empty() {
        (area.clone(), None)
    } else {
        let (a, b) = area.split_horizontally(w as i32 - LEGEND_W as i32);
        (a, Some(b))
    };

    // Ranges over everything drawn, in transformed units.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for s in &c.series {
        for (i, &(x, y)) in s.points.iter().enumerate() {
            let Some(x) = tx(x) else { continue };
            match &s.mark {
                Mark::Band { lower, upper } | Mark::ErrorBars { lower, upper, .. } => {
                    xs.push(x);
                    ys.extend(lower.get(i).copied().and_then(ty));
                    ys.extend(upper.get(i).copied().and_then(ty));
                    if matches!(s.mark, Mark::ErrorBars { .. }) {
                        ys.extend(ty(y));
                    }
                }
                Mark::Boxes { low, high, half_width, .. } => {
                    xs.extend(tx(s.points[i].0 - half_width));
                    xs.extend(tx(s.points[i].0 + half_width));
                    ys.extend(low.get(i).copied().and_then(ty));
                    ys.extend(high.get(i).copied().and_then(ty));
                    ys.extend(ty(y));
                }
                _ => {
                    if let Some(y) = ty(y) {
                        xs.push(x);
                        ys.push(y);
                    }
                }
            }
        }
    }
    for r in &c.rules {
        if r.vertical {
            xs.extend(tx(r.at));
        } else {
            ys.extend(ty(r.at));
        }
    }
    let has_data = !xs.is_empty();
    let (xlo, xhi) = axis_range(&c.x, xs.into_iter());
    let (ylo, yhi) = axis_range(&c.y, ys.into_iter());
    let (xt, xstep) = axis_ticks(&c.x, xlo, xhi);
    let (yt, ystep) = axis_ticks(&c.y, ylo, yhi);

    let mut ch: Ctx<DB> = ChartBuilder::on(&plot)
        .caption(&c.title, (FONT, 15))
        .margin(10)
        .margin_right(18)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .build_cartesian_2d(
            TickAxis::new(xlo, xhi, xt, xstep, c.x.log).named(&c.x.categories),
            TickAxis::new(ylo, yhi, yt, ystep, c.y.log).named(&c.y.categories),
        )
        .map_err(de)?;
    ch.configure_mesh()
        .x_desc(c.x.label.as_str())
        .y_desc(c.y.label.as_str())
        .bold_line_style(RGBColor(226, 226, 226))
        .light_line_style(TRANSPARENT)
        .axis_desc_style((FONT, 13))
        .label_style((FONT, 11))
        .draw()
        .map_err(de)?;

    if !has_data {
        let (pw, ph) = ch.plotting_area().dim_in_pixel();
        let style = (FONT, 14).into_font().color(&RGBColor(120, 120, 120)).pos(Pos::new(HPos::Center, VPos::Center));
        ch.plotting_area().strip_coord_spec().draw(&Text::new("no data", (pw as i32 / 2, ph as i32 / 2), style)).map_err(de)?;
    }

    for r in &c.rules {
        let st = line_style(r.color, 1);
        if r.vertical {
            if let Some(x) = tx(r.at).filter(|x| (xlo..=xhi).contains(x)) {
                ch.draw_series(std::iter::once(DashedPathElement::new(vec![(x, ylo), (x, yhi)], 6, 4, st))).map_err(de)?;
            }
        } else if let Some(y) = ty(r.at).filter(|y| (ylo..=yhi).contains(y)) {
            ch.draw_series(std::iter::once(DashedPathElement::new(vec![(xlo, y), (xhi, y)], 6, 4, st))).map_err(de)?;
        }
    }

    for s in &c.series {
        let pts: Vec<(f64, f64)> = s.points.iter().filter_map(|&(x, y)| Some((tx(x)?, ty(y)?))).collect();
        let clamp = |(x, y): (f64, f64)| (x.clamp(xlo, xhi), y.clamp(ylo, yhi));
        let inside = |&(x, y): &(f64, f64)| (xlo..=xhi).contains(&x) && (ylo..=yhi).contains(&y);
        match &s.mark {
            Mark::Line { width } => {
                ch.draw_series(LineSeries::new(pts.into_iter().map(clamp), line_style(s.color, *width))).map_err(de)?;
            }
            Mark::Dashed { width } => {
                let p: Vec<_> = pts.into_iter().map(clamp).collect();
                ch.draw_series(std::iter::once(DashedPathElement::new(p, 6, 4, line_style(s.color, *width)))).map_err(de)?;
            }
            Mark::Points { shape, size } => {
                for p in pts.into_iter().filter(inside) {
                    marker!(ch.plotting_area(), p, *shape, *size, s.color)?;
                }
            }
            Mark::LinePoints { width, shape, size } => {
                ch.draw_series(LineSeries::new(pts.iter().copied().map(clamp), line_style(s.color, *width))).map_err(de)?;
                for p in pts.into_iter().filter(inside) {
                    marker!(ch.plotting_area(), p, *shape, *size, s.color)?;
                }
            }
            Mark::Band { lower, upper } => {
                let mut up = Vec::new();
                let mut down = Vec::new();
                for (i, &(x, _)) in s.points.iter().enumerate() {
                    let (Some(x), Some(&lo), Some(&hi)) = (tx(x), lower.get(i), upper.get(i)) else { continue };
                    if !(lo.is_finite() && hi.is_finite()) {
                        continue;
                    }
                    let lo = ty(lo).unwrap_or(ylo).clamp(ylo, yhi);
                    let hi = ty(hi).unwrap_or(ylo).clamp(ylo, yhi);
                    up.push((x.clamp(xlo, xhi), hi));
                    down.push((x.clamp(xlo, xhi), lo));
                }
                if up.len() >= 2 {
                    down.reverse();
                    up.extend(down);
                    ch.draw_series(std::iter::once(Polygon::new(up, rgb(s.color).mix(0.22).filled()))).map_err(de)?;
                }
            }
            Mark::ErrorBars { lower, upper, shape, size } => {
                let st = line_style(s.color, 1);
                for (i, &(x, y)) in s.points.iter().enumerate() {
                    let (Some(x), Some(&lo), Some(&hi)) = (tx(x), lower.get(i), upper.get(i)) else { continue };
                    if let (Some(lo), Some(hi)) = (ty(lo), ty(hi)) {
                        let (lo, hi) = (lo.clamp(ylo, yhi), hi.clamp(ylo, yhi));
                        let area = ch.plotting_area();
                        area.draw(&PathElement::new(vec![(x, lo), (x, hi)], st)).map_err(de)?;
                        area.draw(&(EmptyElement::at((x, lo)) + PathElement::new(vec![(-4, 0), (4, 0)], st))).map_err(de)?;
                        area.draw(&(EmptyElement::at((x, hi)) + PathElement::new(vec![(-4, 0), (4, 0)], st))).map_err(de)?;
                    }
                    if let Some(y) = ty(y) {
                        if inside(&(x, y)) {
                            marker!(ch.plotting_area(), (x, y), *shape, *size, s.color)?;
                        }
                    }
                }
            }
            Mark::Boxes { lower, upper, low, high, half_width } => {
                let st = line_style(s.color, 1);
                let fill = rgb(s.color).mix(0.18).filled();
                for (i, &(x, y)) in s.points.iter().enumerate() {
                    let at = |v: Option<&f64>| v.copied().and_then(ty).map(|v| v.clamp(ylo, yhi));
                    let (Some(l), Some(u), Some(lw), Some(hw), Some(m)) =
                        (at(lower.get(i)), at(upper.get(i)), at(low.get(i)), at(high.get(i)), at(Some(&y)))
                    else {
                        continue;
                    };
                    let (Some(x0), Some(x1), Some(xc)) = (tx(x - half_width), tx(x + half_width), tx(x)) else { continue };
                    let (x0, x1, xc) = (x0.clamp(xlo, xhi), x1.clamp(xlo, xhi), xc.clamp(xlo, xhi));
                    let area = ch.plotting_area();
                    area.draw(&Rectangle::new([(x0, l), (x1, u)], fill)).map_err(de)?;
                    area.draw(&PathElement::new(vec![(x0, l), (x1, l), (x1, u), (x0, u), (x0, l)], st)).map_err(de)?;
                    area.draw(&PathElement::new(vec![(x0, m), (x1, m)], line_style(s.color, 3))).map_err(de)?;
                    for (from, to) in [(l, lw), (u, hw)] {
                        area.draw(&PathElement::new(vec![(xc, from), (xc, to)], st)).map_err(de)?;
                        area.draw(&(EmptyElement::at((xc, to)) + PathElement::new(vec![(-6, 0), (6, 0)], st))).map_err(de)?;
                    }
                }
            }
            Mark::Stems { width } => {
                let base = if !c.y.log && ylo <= 0.0 && yhi >= 0.0 { 0.0 } else { ylo };
                let st = line_style(s.color, *width);
                for (x, y) in pts.into_iter().map(clamp) {
                    ch.draw_series(std::iter::once(PathElement::new(vec![(x, base), (x, y)], st))).map_err(de)?;
                }
            }
        }
    }
    if let Some(leg) = leg {
        legend(&leg, &entries)?;
    }
    Ok(())
}

/// Cell edges from centres: midpoints between neighbours, the ends extended by half a gap.
fn edges(c: &[f64]) -> Vec<f64> {
    match c.len() {
        0 => vec![0.0, 1.0],
        1 => vec![c[0] - 0.5, c[0] + 0.5],
        n => {
            let mut e = Vec::with_capacity(n + 1);
            e.push(c[0] - (c[1] - c[0]) / 2.0);
            for i in 0..n - 1 {
                e.push((c[i] + c[i + 1]) / 2.0);
            }
            e.push(c[n - 1] + (c[n - 1] - c[n - 2]) / 2.0);
            e
        }
    }
}

fn heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &Heatmap) -> Result<()> {
    let (nx, ny) = (h.x_centres.len(), h.y_centres.len());
    if h.values.len() != nx * ny {
        bail!("heatmap `{}`: {} values for a {nx} × {ny} grid", h.title, h.values.len());
    }
    let cx: Vec<f64> = h.x_centres.iter().map(|&v| transform(&h.x, v).unwrap_or(f64::NAN)).collect();
    let cy: Vec<f64> = h.y_centres.iter().map(|&v| transform(&h.y, v).unwrap_or(f64::NAN)).collect();
    if cx.iter().chain(&cy).any(|v| !v.is_finite()) {
        bail!("heatmap `{}`: a cell centre cannot be drawn on its axis (not finite, or not positive on a log axis)", h.title);
    }
    let (ex, ey) = (edges(&cx), edges(&cy));
    let finite: Vec<f64> = h.values.iter().copied().filter(|v| v.is_finite()).collect();
    let (mut vmin, mut vmax) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !vmin.is_finite() {
        (vmin, vmax) = (0.0, 1.0);
    }
    if vmax - vmin < 1e-12 {
        vmin -= 0.5;
        vmax += 0.5;
    }
    let ticks = |c: &[f64], lo: f64, hi: f64| -> (Vec<f64>, f64) {
        if c.len() <= 12 {
            let gap = c.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
            (c.to_vec(), if gap.is_finite() { gap } else { 1.0 })
        } else {
            let t = nice_ticks(lo, hi, 6);
            let step = if t.len() >= 2 { t[1] - t[0] } else { hi - lo };
            (t, step)
        }
    };
    let (xlo, xhi) = (ex[0], ex[nx.max(1)]);
    let (ylo, yhi) = (ey[0], ey[ny.max(1)]);
    let (xt, xstep) = ticks(&cx, xlo, xhi);
    let (yt, ystep) = ticks(&cy, ylo, yhi);

    let (w, _) = area.dim_in_pixel();
    let (plot, bar) = area.split_horizontally(w as i32 - COLORBAR_W as i32);
    let mut ch: Ctx<DB> = ChartBuilder::on(&plot)
        .caption(&h.title, (FONT, 15))
        .margin(10)
        .margin_right(12)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .build_cartesian_2d(TickAxis::new(xlo, xhi, xt, xstep, h.x.log), TickAxis::new(ylo, yhi, yt, ystep, h.y.log))
        .map_err(de)?;
    ch.configure_mesh()
        .disable_mesh()
        .x_desc(h.x.label.as_str())
        .y_desc(h.y.label.as_str())
        .axis_desc_style((FONT, 13))
        .label_style((FONT, 11))
        .draw()
        .map_err(de)?;
    let color_of = |v: f64| if v.is_finite() { rgb(viridis((v - vmin) / (vmax - vmin))) } else { RGBColor(200, 200, 200) };
    ch.draw_series((0..ny).flat_map(|iy| (0..nx).map(move |ix| (ix, iy))).map(|(ix, iy)| {
        let v = h.values[iy * nx + ix];
        Rectangle::new([(ex[ix], ey[iy]), (ex[ix + 1], ey[iy + 1])], color_of(v).filled())
    }))
    .map_err(de)?;
    if h.annotate {
        for (iy, &y) in cy.iter().enumerate() {
            for (ix, &x) in cx.iter().enumerate() {
                let v = h.values[iy * nx + ix];
                let t = if v.is_finite() { (v - vmin) / (vmax - vmin) } else { 1.0 };
                let color = if t > 0.6 { BLACK } else { WHITE };
                let text = if v.is_finite() { fmt_sig(v, 3) } else { "–".to_string() };
                let style = (FONT, 11).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center));
                ch.plotting_area().draw(&Text::new(text, (x, y), style)).map_err(de)?;
            }
        }
    }

    // Colour bar: the heatmap's legend.
    let bt = nice_ticks(vmin, vmax, 6);
    let bstep = if bt.len() >= 2 { bt[1] - bt[0] } else { vmax - vmin };
    let mut cb: Ctx<DB> = ChartBuilder::on(&bar)
        .margin_top(36)
        .margin_bottom(56)
        .margin_right(4)
        .margin_left(6)
        .right_y_label_area_size(COLORBAR_W as i32 - 30)
        .build_cartesian_2d(TickAxis::new(0.0, 1.0, vec![], 1.0, false), TickAxis::new(vmin, vmax, bt, bstep, false))
        .map_err(de)?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(h.colorbar_label.as_str())
        .axis_desc_style((FONT, 12))
        .label_style((FONT, 10))
        .draw()
        .map_err(de)?;
    let n = 64;
    cb.draw_series((0..n).map(|i| {
        let a = vmin + (vmax - vmin) * i as f64 / n as f64;
        let b = vmin + (vmax - vmin) * (i + 1) as f64 / n as f64;
        Rectangle::new([(0.0, a), (1.0, b)], rgb(viridis((i as f64 + 0.5) / n as f64)).filled())
    }))
    .map_err(de)?;
    Ok(())
}
