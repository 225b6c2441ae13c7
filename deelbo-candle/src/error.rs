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
    /// A parameter block (or the whole model) that cannot be used as given.
    #[error("parameter block `{name}`: {reason}")]
    InvalidBlock {
        /// The block's name (`model` for the model as a whole).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A named tensor of a model that no block rule and no buffer rule claims.
    #[error("tensor `{name}` belongs to no block: {reason}")]
    UnassignedTensor {
        /// The tensor's name.
        name: String,
        /// The rules that were tried.
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
    /// A [`crate::LeafSample`] used with a model it was not made for, or before its first draw.
    #[error("leaf sample: {reason}")]
    LeafSample {
        /// What does not fit (no sample drawn yet, another model's tensors).
        reason: String,
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
    /// Training produced a non-finite value (the loss or a gradient diverged).
    #[error("{name} is {value}: training diverged")]
    Diverged {
        /// What became non-finite (`gradient norm`, `final training loss`).
        name: String,
        /// The value.
        value: f64,
    },
    /// A labels slice that does not fit the predictions.
    #[error("{name}: {reason}")]
    InvalidLabels {
        /// Which input (`labels`).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for `Result<T, AdapterError>`.
pub type Result<T> = std::result::Result<T, AdapterError>;
