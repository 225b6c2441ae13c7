//! The typed error every fallible function of this crate returns.

use deelbo_core::CoreError;
use thiserror::Error;

/// Everything that can go wrong in `deelbo-rff`. Each variant carries the diagnostic a caller
/// needs: which input, which row/column, which matrix.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum RffError {
    /// An error from `deelbo-core` (kappa rules, KL terms, likelihoods).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A matrix that must be symmetric positive definite failed its Cholesky factorization.
    #[error("{what} is not positive definite (Cholesky failed at leading minor {minor})")]
    NotPositiveDefinite {
        /// Which matrix.
        what: String,
        /// The 1-based order of the first leading minor that is not positive (LAPACK `info`),
        /// 0 when LAPACK did not say.
        minor: usize,
    },
    /// A dense linear-algebra routine (eigendecomposition, solve) failed.
    #[error("linear algebra failed for {what}: {message}")]
    Linalg {
        /// Which computation.
        what: String,
        /// LAPACK's message.
        message: String,
    },
    /// Two inputs whose shapes must agree do not.
    #[error("shape mismatch for {what}: expected {expected}, got {found}")]
    Shape {
        /// Which input.
        what: String,
        /// The size that was required.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what} holds a non-finite value ({value}) at row {row}, column {column}")]
    NonFinite {
        /// Which input (`inputs`, `targets`, ...).
        what: String,
        /// 0-based row.
        row: usize,
        /// 0-based column (0 for a vector).
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// Too few training examples to fit (at least 2 are needed; the MAP baseline's 80/20 split
    /// needs at least 5).
    #[error("need at least {required} training examples, got {found}")]
    TooFewExamples {
        /// The minimum.
        required: usize,
        /// What was given.
        found: usize,
    },
    /// Every target has the same value: there is nothing to learn and no scale to standardize by.
    #[error("the targets are constant (every value is {value})")]
    ConstantTarget {
        /// The common value.
        value: f64,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid setting {what}: {message}")]
    InvalidConfig {
        /// Which setting.
        what: String,
        /// Why it is rejected.
        message: String,
    },
    /// A numeric optimizer failed (argmin reported an error).
    #[error("optimizer failed for {what}: {message}")]
    Optimizer {
        /// Which search.
        what: String,
        /// The optimizer's message.
        message: String,
    },
}

/// Shorthand for `Result<T, RffError>`.
pub type Result<T> = std::result::Result<T, RffError>;

/// Map an ndarray-linalg Cholesky failure to [`RffError::NotPositiveDefinite`] (LAPACK's
/// positive `info`) or [`RffError::Linalg`] (anything else).
pub(crate) fn cholesky_error(what: &str, err: ndarray_linalg::error::LinalgError) -> RffError {
    use ndarray_linalg::error::LinalgError;
    match err {
        LinalgError::Lapack(lax::error::Error::LapackComputationalFailure { return_code })
            if return_code > 0 =>
        {
            RffError::NotPositiveDefinite {
                what: what.to_string(),
                minor: return_code as usize,
            }
        }
        other => RffError::Linalg {
            what: what.to_string(),
            message: other.to_string(),
        },
    }
}

/// Map any other ndarray-linalg failure to [`RffError::Linalg`].
pub(crate) fn linalg_error(what: &str, err: ndarray_linalg::error::LinalgError) -> RffError {
    RffError::Linalg {
        what: what.to_string(),
        message: err.to_string(),
    }
}

/// Check that every value of a matrix is finite.
pub(crate) fn ensure_finite_matrix(what: &str, x: ndarray::ArrayView2<'_, f64>) -> Result<()> {
    for ((row, column), &value) in x.indexed_iter() {
        if !value.is_finite() {
            return Err(RffError::NonFinite {
                what: what.to_string(),
                row,
                column,
                value,
            });
        }
    }
    Ok(())
}

/// Check that every value of a vector is finite.
pub(crate) fn ensure_finite_vector(what: &str, y: ndarray::ArrayView1<'_, f64>) -> Result<()> {
    for (row, &value) in y.iter().enumerate() {
        if !value.is_finite() {
            return Err(RffError::NonFinite {
                what: what.to_string(),
                row,
                column: 0,
                value,
            });
        }
    }
    Ok(())
}
