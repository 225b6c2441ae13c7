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
    #[error("{name} is not positive definite (Cholesky failed at leading minor {minor})")]
    NotPositiveDefinite {
        /// Which matrix.
        name: String,
        /// The 1-based order of the first leading minor that is not positive (LAPACK `info`),
        /// 0 when LAPACK did not say.
        minor: usize,
    },
    /// A dense linear-algebra routine (eigendecomposition, solve) failed.
    #[error("linear algebra failed for {name}: {reason}")]
    Linalg {
        /// Which computation.
        name: String,
        /// LAPACK's message.
        reason: String,
    },
    /// Two inputs whose shapes must agree do not.
    #[error("shape mismatch for {name}: expected {expected}, got {found}")]
    Shape {
        /// Which input.
        name: String,
        /// The size that was required.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{name} holds a non-finite value ({value}) at row {row}, column {column}")]
    NonFinite {
        /// Which input (`inputs`, `targets`, ...).
        name: String,
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
    #[error("invalid setting {name}: {reason}")]
    InvalidConfig {
        /// Which setting.
        name: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Values so large that sums over them overflow `f64` (e.g. a column near `1e308`).
    #[error("{name}: {reason}")]
    Overflow {
        /// Which input.
        name: String,
        /// Why.
        reason: String,
    },
    /// The fit would need more memory than allowed.
    #[error(
        "the fit needs about {needed_mib} MiB ({reason}), above the limit of {limit_mib} MiB: lower --features, or raise the limit (--max-memory)"
    )]
    TooMuchMemory {
        /// Estimated need in MiB.
        needed_mib: u64,
        /// The limit in MiB.
        limit_mib: u64,
        /// What dominates the estimate.
        reason: String,
    },
    /// A numeric optimizer failed (argmin reported an error).
    #[error("optimizer failed for {name}: {reason}")]
    Optimizer {
        /// Which search.
        name: String,
        /// The optimizer's message.
        reason: String,
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
                name: what.to_string(),
                minor: return_code as usize,
            }
        }
        other => RffError::Linalg {
            name: what.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Map any other ndarray-linalg failure to [`RffError::Linalg`].
pub(crate) fn linalg_error(what: &str, err: ndarray_linalg::error::LinalgError) -> RffError {
    RffError::Linalg {
        name: what.to_string(),
        reason: err.to_string(),
    }
}

/// Check that every value of a matrix is finite.
pub(crate) fn ensure_finite_matrix(what: &str, x: ndarray::ArrayView2<'_, f64>) -> Result<()> {
    for ((row, column), &value) in x.indexed_iter() {
        if !value.is_finite() {
            return Err(RffError::NonFinite {
                name: what.to_string(),
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
                name: what.to_string(),
                row,
                column: 0,
                value,
            });
        }
    }
    Ok(())
}
