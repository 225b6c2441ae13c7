//! The error of every fallible function of this crate.

use std::path::PathBuf;

use thiserror::Error;

/// A figure could not be drawn or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The bundled font could not be registered with plotters.
    #[error("the bundled DejaVu Sans font could not be loaded: {reason}")]
    Font {
        /// What plotters said.
        reason: String,
    },
    /// Drawing or writing a figure file failed.
    #[error("cannot draw {name}: {reason}")]
    Plot {
        /// The file being written.
        name: PathBuf,
        /// What plotters (or the file system) said.
        reason: String,
    },
}

/// Shorthand for `Result<T, ReportError>`.
pub type Result<T> = std::result::Result<T, ReportError>;
