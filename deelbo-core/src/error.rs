//! The typed error every fallible function of this crate returns.

use thiserror::Error;

/// Everything that can go wrong in `deelbo-core`. Each variant carries the diagnostic a user
/// needs to find the bad input: which parameter, which index, which value.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A likelihood weight `kappa` below 1 (it would stop being a lower bound for discrete
    /// likelihoods) or not finite.
    #[error("kappa must be a finite number >= 1, got {value}")]
    InvalidKappa {
        /// The rejected value.
        value: f64,
    },
    /// The training set is empty (N = 0).
    #[error("the number of training examples N must be at least 1")]
    NoExamples,
    /// A parameter block, or the whole model, has no parameters (D = 0).
    #[error("{name} has no parameters (D = 0)")]
    NoParameters {
        /// Which block or model.
        name: String,
    },
    /// A variance, standard deviation or scale that must be strictly positive and finite is not.
    #[error("{name} must be positive and finite, got {value}")]
    NonPositive {
        /// The parameter's name.
        name: String,
        /// The rejected value.
        value: f64,
    },
    /// A finite setting outside the range it must lie in.
    #[error("{name} = {value} is out of range: {reason}")]
    OutOfRange {
        /// The setting's name.
        name: String,
        /// The rejected value.
        value: f64,
        /// The range it must lie in.
        reason: String,
    },
    /// An input holds NaN or an infinity.
    #[error("{name} holds a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// The input's name.
        name: String,
        /// First offending index.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// Two inputs that must have the same length (or shape) do not.
    #[error("length mismatch for {name}: expected {expected}, got {found}")]
    LengthMismatch {
        /// The input's name.
        name: String,
        /// The length that was required.
        expected: usize,
        /// The length that was given.
        found: usize,
    },
    /// A class label outside `0..classes`.
    #[error("label {label} at row {row} is outside 0..{classes}")]
    LabelOutOfRange {
        /// Row of the label.
        row: usize,
        /// The label.
        label: usize,
        /// The number of classes (columns of the logits).
        classes: usize,
    },
    /// An operation that applies to one prior covariance shape used on a block of another (e.g.
    /// the isotropic mean gradient on a low-rank block).
    #[error("{name}: {reason}")]
    PriorShapeMismatch {
        /// The operation.
        name: String,
        /// What shape the block has and what to use instead.
        reason: String,
    },
    /// A matrix that must be symmetric positive definite is not: Cholesky met a pivot <= 0.
    #[error("{name} is not positive definite (Cholesky pivot {pivot} at index {index})")]
    NotPositiveDefinite {
        /// Which matrix.
        name: String,
        /// Row/column where the factorization broke down.
        index: usize,
        /// The non-positive pivot.
        pivot: f64,
    },
}

/// Shorthand for `Result<T, CoreError>`.
pub type Result<T> = std::result::Result<T, CoreError>;
