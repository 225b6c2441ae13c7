//! # deelbo-report
//!
//! Where every deelbo figure and text table is drawn: the CLI's demo and the transfer experiment
//! use the same font registration, the same table layout and the same figure code.
//!
//! | item | what it draws |
//! |---|---|
//! | [`render_table`], [`format_number`] | a plain-text table (first column left-aligned, the rest right-aligned) |
//! | [`BandFigure`], [`BandPanel`] | a grid of predictive-band panels: points, mean, ±1/±2 sd bands, a reference curve |
//! | [`LineFigure`], [`LinePanel`], [`Series`] | a row of line-chart panels with a legend, optional log x axis |
//! | [`register_fonts`] | the bundled DejaVu Sans as plotters' [`FONT`] (no system fonts), once per process |
//!
//! Figures are written as `<stem>.svg` and `<stem>.png`.

mod band;
mod error;
mod fonts;
mod lines;
mod table;

pub use band::{BandFigure, BandPanel};
pub use error::{ReportError, Result};
pub use fonts::{FONT, register_fonts};
pub use lines::{LineFigure, LinePanel, Series};
pub use table::{format_number, render_table};
