//! Predictive-band figures: a grid of panels, each showing data points, a predictive mean with
//! ±1 and ±2 standard-deviation bands, and an optional reference curve.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::Result;
use crate::fonts::FONT;
use crate::lines::{Drawn, save_svg_png};

/// One panel: a predictive band plot.
#[derive(Debug, Clone, Default)]
pub struct BandPanel {
    /// Caption above the panel.
    pub title: String,
    /// A line of numbers drawn inside the panel (top left).
    pub note: String,
    /// Training points.
    pub points: Vec<(f64, f64)>,
    /// Inputs of the predictive curve (increasing).
    pub curve_x: Vec<f64>,
    /// Predictive mean.
    pub mean: Vec<f64>,
    /// Predictive standard deviation.
    pub std: Vec<f64>,
    /// A reference curve (e.g. the true function), drawn thin and gray.
    pub reference: Vec<(f64, f64)>,
}

/// A grid of panels with a title.
#[derive(Debug, Clone)]
pub struct BandFigure {
    /// Title over the whole figure.
    pub title: String,
    /// A second title line (legend).
    pub subtitle: String,
    /// The panels, row by row.
    pub panels: Vec<BandPanel>,
    /// Panels per row.
    pub columns: usize,
    /// Shared x range.
    pub x_range: (f64, f64),
    /// Shared y range; values outside are clipped to it.
    pub y_range: (f64, f64),
    /// Pixel size of one panel.
    pub panel_size: (u32, u32),
}

const BAND: RGBColor = RGBColor(31, 119, 180);
const HEADER: u32 = 70;

impl BandFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols).max(1);
        (
            self.panel_size.0 * cols as u32,
            self.panel_size.1 * rows as u32 + HEADER,
        )
    }

    /// Write `<stem>.svg` and `<stem>.png`; returns both paths.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        save_svg_png(
            stem,
            self.size(),
            |root| self.draw(root),
            |root| self.draw(root),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let (header, body) = root.split_vertically(HEADER);
        header
            .draw(&Text::new(
                self.title.clone(),
                (12, 8),
                (FONT, 24).into_font().style(FontStyle::Bold),
            ))
            .map_err(err)?;
        header
            .draw(&Text::new(
                self.subtitle.clone(),
                (12, 40),
                (FONT, 16).into_font().color(&BLACK.mix(0.75)),
            ))
            .map_err(err)?;
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols).max(1);
        let areas = body.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(&areas) {
            self.draw_panel(panel, area)?;
        }
        Ok(())
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        p: &BandPanel,
        area: &DrawingArea<DB, Shift>,
    ) -> Drawn {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let clip = |y: f64| y.clamp(y0, y1);
        let mut chart = ChartBuilder::on(area)
            .caption(
                p.title.clone(),
                (FONT, 18).into_font().style(FontStyle::Bold),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(BLACK.mix(0.05))
            .bold_line_style(BLACK.mix(0.12))
            .label_style((FONT, 13))
            .x_labels(7)
            .y_labels(5)
            .draw()
            .map_err(err)?;
        for (k, alpha) in [(2.0, 0.15), (1.0, 0.30)] {
            let upper = p
                .curve_x
                .iter()
                .zip(p.mean.iter().zip(&p.std))
                .map(|(&x, (&m, &s))| (x, clip(m + k * s)));
            let lower = p
                .curve_x
                .iter()
                .zip(p.mean.iter().zip(&p.std))
                .map(|(&x, (&m, &s))| (x, clip(m - k * s)));
            let mut polygon: Vec<(f64, f64)> = upper.collect();
            polygon.extend(lower.rev());
            chart
                .draw_series(std::iter::once(Polygon::new(
                    polygon,
                    BAND.mix(alpha).filled(),
                )))
                .map_err(err)?;
        }
        if !p.reference.is_empty() {
            let r: Vec<(f64, f64)> = p.reference.iter().map(|&(x, y)| (x, clip(y))).collect();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    r,
                    BLACK.mix(0.45).stroke_width(1),
                )))
                .map_err(err)?;
        }
        let mean: Vec<(f64, f64)> = p
            .curve_x
            .iter()
            .zip(&p.mean)
            .map(|(&x, &m)| (x, clip(m)))
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(
                mean,
                BAND.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(
                p.points
                    .iter()
                    .filter(|(x, y)| (x0..=x1).contains(x) && (y0..=y1).contains(y))
                    .map(|&(x, y)| Circle::new((x, y), 3, BLACK.filled())),
            )
            .map_err(err)?;
        if !p.note.is_empty() {
            let pos = (x0 + 0.02 * (x1 - x0), y1 - 0.03 * (y1 - y0));
            chart
                .draw_series(std::iter::once(Text::new(
                    p.note.clone(),
                    pos,
                    (FONT, 13).into_font(),
                )))
                .map_err(err)?;
        }
        Ok(())
    }
}
