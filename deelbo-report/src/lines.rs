//! Line-chart figures: a row of panels, each with named series, a legend and an optional log x
//! axis; and the SVG + PNG writer every figure type shares.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::fonts::{FONT, register_fonts};

/// What a drawing routine returns: plotters' error as text.
pub(crate) type Drawn = std::result::Result<(), String>;

/// Register the font, draw the figure on an SVG and on a PNG backend of `size` pixels, write
/// `<stem>.svg` and `<stem>.png`, and return both paths.
pub(crate) fn save_svg_png(
    stem: &Path,
    size: (u32, u32),
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
    draw_png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
) -> Result<Vec<PathBuf>> {
    register_fonts()?;
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let fail = |path: &Path| {
        let name = path.to_path_buf();
        move |reason: String| ReportError::Plot { name, reason }
    };
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_svg(&root).map_err(fail(&svg))?;
        root.present().map_err(|e| fail(&svg)(e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_png(&root).map_err(fail(&png))?;
        root.present().map_err(|e| fail(&png)(e.to_string()))?;
    }
    Ok(vec![svg, png])
}

/// One named line of a [`LinePanel`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Line colour as RGB.
    pub color: (u8, u8, u8),
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot on the last point (e.g. the result a protocol ends with).
    pub mark_last: bool,
}

/// One line-chart panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePanel {
    /// Caption above the panel.
    pub title: String,
    /// x axis description.
    pub x_desc: String,
    /// y axis description.
    pub y_desc: String,
    /// Logarithmic x axis (x values must then be positive; others are dropped).
    pub x_log: bool,
    /// Fixed y range; `None` fits the data with a 5% margin.
    pub y_range: Option<(f64, f64)>,
    /// The lines.
    pub series: Vec<Series>,
}

/// A row of [`LinePanel`]s under a title.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFigure {
    /// Title over the whole figure.
    pub title: String,
    /// The panels, left to right.
    pub panels: Vec<LinePanel>,
    /// Pixel size of one panel.
    pub panel_size: (u32, u32),
}

impl LineFigure {
    /// Write `<stem>.svg` and `<stem>.png`; returns both paths. Panels without any drawable
    /// point are left blank.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        let n = self.panels.len().max(1) as u32;
        let size = (self.panel_size.0 * n, self.panel_size.1 + 30);
        save_svg_png(stem, size, |root| self.draw(root), |root| self.draw(root))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, (FONT, 18)).map_err(err)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (panel, area) in self.panels.iter().zip(&areas) {
            panel.draw(area)?;
        }
        Ok(())
    }
}

/// `(lo, hi)` of finite values, `None` when there are none or they span nothing.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    (lo <= hi).then_some((lo, hi))
}

fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

fn tick(x: &f64) -> String {
    let a = x.abs();
    if a >= 10.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl LinePanel {
    fn points(&self, s: &Series) -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!self.x_log || x > 0.0))
            .collect()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let series: Vec<(&Series, Vec<(f64, f64)>)> =
            self.series.iter().map(|s| (s, self.points(s))).collect();
        let all = || series.iter().flat_map(|(_, p)| p.iter());
        let Some(xs) = span(all().map(|p| p.0)) else {
            return Ok(());
        };
        let Some(ys) = self
            .y_range
            .or_else(|| span(all().map(|p| p.1)).map(padded))
        else {
            return Ok(());
        };
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&self.title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50);
        if self.x_log {
            let mut chart = builder
                .build_cartesian_2d((xs.0 * 0.7..xs.1 * 1.5).log_scale(), ys.0..ys.1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_desc)
                .y_desc(&self.y_desc)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .x_label_formatter(&tick)
                .draw()
                .map_err(err)?;
            draw_series(&mut chart, &series).map_err(err)?;
        } else {
            let xs = padded(xs);
            let mut chart = builder
                .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_desc)
                .y_desc(&self.y_desc)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .x_label_formatter(&tick)
                .draw()
                .map_err(err)?;
            draw_series(&mut chart, &series).map_err(err)?;
        }
        Ok(())
    }
}

fn draw_series<'a, DB, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    series: &[(&Series, Vec<(f64, f64)>)],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
{
    for (s, points) in series {
        let (r, g, b) = s.color;
        let col = RGBColor(r, g, b);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), col.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        if s.mark_last
            && let Some(&last) = points.last()
        {
            chart.draw_series(std::iter::once(Circle::new(last, 5, col.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_ignore_non_finite_values_and_pad() {
        assert_eq!(span([1.0, f64::NAN, 3.0].into_iter()), Some((1.0, 3.0)));
        assert_eq!(span([f64::NAN].into_iter()), None);
        assert_eq!(padded((1.0, 3.0)), (0.9, 3.1));
        assert_eq!(padded((2.0, 2.0)), (1.5, 2.5));
        assert_eq!(tick(&25.0), "25");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.25), "0.25");
    }
}
