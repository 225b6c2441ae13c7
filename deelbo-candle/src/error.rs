//! The typed error of the candle adapter.

use thiserror::Error;

/// Everything that can go wrong in `deelbo-candle`. Variants name the block, tensor or setting
/// that was wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// An error reported by candle (shape, dtype, device or backend failure).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error reported by `deelbo-core` (invalid kappa, non-finite block, ...).
    #[error(transparent)]
    Core(#[from] deelbo_core::CoreError),
    /// A parameter block that cannot be used as given.
    #[error("parameter block `{block}`: {reason}")]
    InvalidBlock {
        /// The block's name.
        block: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor whose shape differs from the one required.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The required shape.
        expected: Vec<usize>,
        /// The shape given.
        found: Vec<usize>,
    },
    /// A tensor whose element type is not the model's.
    #[error("tensor `{name}` has dtype {found:?}, the model uses {expected:?}")]
    DTypeMismatch {
        /// The tensor's name.
        name: String,
        /// The model's dtype.
        expected: candle_core::DType,
        /// The tensor's dtype.
        found: candle_core::DType,
    },
    /// A dtype other than `f32`/`f64`.
    #[error("tensor `{name}` has dtype {dtype:?}; only f32 and f64 are supported")]
    UnsupportedDType {
        /// The tensor's name.
        name: String,
        /// The rejected dtype.
        dtype: candle_core::DType,
    },
    /// A lookup of a weight tensor by a name that does not exist.
    #[error("no weight tensor named `{name}`")]
    MissingTensor {
        /// The requested name.
        name: String,
    },
    /// A numeric setting outside its valid range.
    #[error("{name} = {value} is invalid: {reason}")]
    InvalidSetting {
        /// The setting's name.
        name: String,
        /// The rejected value.
        value: f64,
        /// The valid range.
        reason: String,
    },
    /// A labels slice that does not fit the predictions.
    #[error("labels: {reason}")]
    InvalidLabels {
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand for `Result<T, AdapterError>`.
pub type Result<T> = std::result::Result<T, AdapterError>;
