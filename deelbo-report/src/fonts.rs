//! The one place a font is registered.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

use crate::error::{ReportError, Result};

/// The font family name every text style of every deelbo figure uses.
pub const FONT: &str = "sans-serif";

/// Register DejaVu Sans (regular and bold, bundled by the `dejavu` crate) as [`FONT`];
/// idempotent and thread-safe. Every figure type calls it before drawing.
pub fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "regular style rejected".to_string())?;
            register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
                .map_err(|_| "bold style rejected".to_string())
        })
        .clone()
        .map_err(|reason| ReportError::Font { reason })
}
