//! The low-rank-plus-diagonal prior `N(mu, v Sigma_p)` with `Sigma_p = A + U U^T`, `A` diagonal
//! (`D` entries `a_j > 0`) and `U` a `D x K` factor (`K` small, e.g. 5), as used for priors
//! learned from a source task.
//!
//! Every quantity costs `O(D K^2)` through a `K x K` core `C = I_K + U^T A^-1 U = L L^T`:
//!
//! - Woodbury: `Sigma_p^-1 = A^-1 - B C^-1 B^T` with `B = A^-1 U`;
//! - determinant lemma: `ln det Sigma_p = sum_j ln a_j + ln det C = sum_j ln a_j + 2 sum_k ln L_kk`;
//! - `(Sigma_p^-1)_jj = 1/a_j - ||L^-1 b_j||^2` (`b_j` the j-th row of `B`), so
//!   `tr(Sigma_p^-1) = sum_j (Sigma_p^-1)_jj`;
//! - `x^T Sigma_p^-1 x = sum_j x_j^2/a_j - ||L^-1 B^T x||^2`.
//!
//! Then `v* = (x^T Sigma_p^-1 x + tr(Sigma_p^-1 S))/D` with `x = m - mu`, and
//! `KL* = 1/2 [ D ln v* + ln det Sigma_p - sum_j ln sigma_j^2 ]` ([`KlTerms`]).
//!
//! # Cancellation
//! Both Woodbury forms subtract: `(Sigma_p^-1)_jj = 1/a_j - ||L^-1 b_j||^2` and
//! `Q = x^T A^-1 x - ||L^-1 B^T x||^2` lose digits when the low-rank part dominates (small `a_j`
//! under large `U` rows), and in the worst case come out `<= 0` although the exact values are
//! positive. Both are therefore kept inside bounds that hold exactly for any positive definite
//! `Sigma_p`:
//!
//! - `1/Sigma_jj <= (Sigma_p^-1)_jj <= 1/a_j`, `Sigma_jj = a_j + ||u_j||^2` (Cauchy–Schwarz
//!   and `Sigma_p >= A`); entries clamped to these bounds are counted
//!   ([`LowRankDiagnostics::clamped_precision`]);
//! - `(x^T x)^2 / (x^T Sigma_p x) <= Q <= x^T A^-1 x`; when the subtraction loses more than
//!   4 digits, `Q` is recomputed as `x^T z` with `z = Sigma_p^-1 x` improved by
//!   one step of iterative refinement (`r = x - Sigma_p z`, `z += Sigma_p^-1 r`, where
//!   `Sigma_p z = A z + U (U^T z)` has no cancellation), then clamped.
//!
//! [`LowRankPrior::diagnostics`] reports the worst digit loss of the precision diagonal.

use ndarray::{Array1, Array2, ArrayView2};

use super::KlTerms;
use crate::check;
use crate::error::{CoreError, Result};
use crate::reduce::{CompensatedSum, deterministic_sum, pair_sum};
use crate::tensor::{ParamBlock, Real};

/// The posterior scale as the low-rank prior needs it.
#[derive(Debug, Clone, Copy)]
pub enum LowRankScale<'a> {
    /// `S = sigma^2 I`.
    Isotropic {
        /// The shared standard deviation.
        sigma: f64,
    },
    /// `S = diag(sigma_j^2)`, given as the `D` variances `sigma_j^2`.
    Diagonal {
        /// The per-weight variances `sigma_j^2`.
        variances: &'a [f64],
    },
}

/// Decimal digits the Woodbury subtraction of the Mahalanobis term may lose before `Q` is
/// recomputed by iterative refinement (`x^T A^-1 x / Q > 10^REFINE_DIGITS`).
pub(crate) const REFINE_DIGITS: f64 = 4.0;

/// How much the Woodbury forms of a [`LowRankPrior`] cancel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowRankDiagnostics {
    /// Entries of the precision diagonal `(Sigma_p^-1)_jj` that fell outside
    /// `[1/Sigma_jj, 1/a_j]` by rounding and were clamped to the nearer bound.
    pub clamped_precision: usize,
    /// `max_j log10((1/a_j) / (Sigma_p^-1)_jj)`: the decimal digits the subtraction
    /// `1/a_j - ||L^-1 b_j||^2` lost at worst (about 16 means no correct digit).
    pub precision_digits_lost: f64,
}

/// The parts of a Mahalanobis distance `Q = x^T Sigma_p^-1 x` ([`LowRankPrior::mahalanobis_parts`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MahalanobisParts {
    /// `Q` (refined if needed, clamped to its bounds).
    pub value: f64,
    /// `x^T A^-1 x`, the diagonal term (an upper bound of `Q`).
    pub diagonal_term: f64,
    /// `(x^T x)^2 / (x^T Sigma_p x)`, a lower bound of `Q` (computed only when `Q` was refined).
    pub lower_bound: Option<f64>,
    /// Whether the Woodbury subtraction lost more than 4 (`REFINE_DIGITS`) digits, so `Q` was
    /// recomputed by iterative refinement.
    pub refined: bool,
    /// Whether the value was clamped to `[lower_bound, diagonal_term]`.
    pub clamped: bool,
}

/// A `D x K` matrix stored by columns: both products with it (`M^T x`, `M c`) are straight
/// passes over contiguous memory.
#[derive(Debug, Clone)]
struct Factor {
    /// `D`.
    len: usize,
    /// Column `p`.
    columns: Vec<Vec<f64>>,
}

impl Factor {
    fn new(m: ArrayView2<'_, f64>) -> Self {
        Self {
            len: m.nrows(),
            columns: m.columns().into_iter().map(|c| c.to_vec()).collect(),
        }
    }

    /// `M^T x` (length `K`), each entry in the crate's reduction order.
    fn transpose_times(&self, x: &[f64]) -> Vec<f64> {
        self.columns
            .iter()
            .map(|c| pair_sum(x, c, |x, m| x * m))
            .collect()
    }

    /// `M c` for a `K`-vector `c`: entry `j` is `sum_p M_jp c_p` summed from `-0.0` in
    /// `p` order, i.e. bit for bit `row_j.iter().zip(c).map(|(m, c)| m * c).sum::<f64>()`,
    /// computed a column at a time (straight loops over contiguous memory).
    fn times(&self, c: &[f64]) -> Vec<f64> {
        let mut acc = vec![-0.0f64; self.len];
        for (column, &cp) in self.columns.iter().zip(c) {
            for (a, &m) in acc.iter_mut().zip(column) {
                *a += m * cp;
            }
        }
        acc
    }
}

/// `Sigma_p = A + U U^T`, factored once at construction.
#[derive(Debug, Clone)]
pub struct LowRankPrior {
    diag: Array1<f64>,
    /// `U`, `D x K`.
    u: Factor,
    /// `B = A^-1 U`, `D x K`.
    b: Factor,
    /// Lower Cholesky factor of the `K x K` core `C = I + U^T A^-1 U`.
    core_chol: Array2<f64>,
    log_det: f64,
    /// `(Sigma_p^-1)_jj` for every `j`.
    precision_diag: Array1<f64>,
    trace_inverse: f64,
    diagnostics: LowRankDiagnostics,
}

impl LowRankPrior {
    /// Factor `Sigma_p = diag(diag) + factor factor^T`. Errors: empty or mismatched shapes,
    /// non-positive or non-finite `a_j`, non-finite `U`.
    pub fn new(diag: Array1<f64>, factor: ArrayView2<'_, f64>) -> Result<Self> {
        let d = diag.len();
        check::has_parameters("the low-rank prior", d)?;
        check::same_len("rows of the low-rank factor U", d, factor.nrows())?;
        for (j, &a) in diag.iter().enumerate() {
            check::positive(&format!("prior diagonal a[{j}]"), a)?;
        }
        if let Some((i, &v)) = factor.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::NonFinite {
                name: "low-rank factor U".to_string(),
                index: i,
                value: v,
            });
        }
        let k = factor.ncols();
        let mut b = factor.to_owned();
        for (mut row, &a) in b.rows_mut().into_iter().zip(diag.iter()) {
            row.mapv_inplace(|u| u / a);
        }
        // C = I + U^T A^-1 U = I + U^T B, accumulated per entry.
        let mut core = Array2::<f64>::eye(k);
        for p in 0..k {
            for q in 0..=p {
                let s = deterministic_sum((0..d).map(|j| factor[[j, p]] * b[[j, q]]));
                core[[p, q]] += s;
                if p != q {
                    core[[q, p]] += s;
                }
            }
        }
        let core_chol = cholesky(&core, "the low-rank core I + U^T A^-1 U")?;
        let log_det = deterministic_sum(diag.iter().map(|a| a.ln()))
            + 2.0 * core_chol.diag().iter().map(|l| l.ln()).sum::<f64>();
        let mut precision_diag = Array1::zeros(d);
        let mut work = vec![0.0; k];
        let mut clamped_precision = 0;
        let mut precision_digits_lost = 0.0f64;
        for j in 0..d {
            work.iter_mut().zip(b.row(j)).for_each(|(w, &bj)| *w = bj);
            forward_substitute(&core_chol, &mut work);
            let upper = 1.0 / diag[j];
            let sigma_jj = diag[j] + factor.row(j).iter().map(|u| u * u).sum::<f64>();
            let lower = 1.0 / sigma_jj;
            let raw = upper - work.iter().map(|w| w * w).sum::<f64>();
            let p = if raw < lower || raw > upper || !raw.is_finite() {
                clamped_precision += 1;
                raw.clamp(lower, upper)
            } else {
                raw
            };
            precision_digits_lost = precision_digits_lost.max((upper / p).log10());
            precision_diag[j] = p;
        }
        let trace_inverse = deterministic_sum(precision_diag.iter().copied());
        Ok(Self {
            diag,
            u: Factor::new(factor),
            b: Factor::new(b.view()),
            core_chol,
            log_det,
            precision_diag,
            trace_inverse,
            diagnostics: LowRankDiagnostics {
                clamped_precision,
                precision_digits_lost,
            },
        })
    }

    /// How much the precision diagonal cancelled at construction (clamped entries, digits
    /// lost).
    pub fn diagnostics(&self) -> LowRankDiagnostics {
        self.diagnostics
    }

    /// `Sigma_p x = A x + U (U^T x)` (no cancellation).
    ///
    /// # Formula
    /// ```text
    /// Sigma_p x = A x + U (U^T x)
    /// ```
    pub fn covariance_times(&self, x: &[f64]) -> Result<Vec<f64>> {
        check::same_len("vector", self.len(), x.len())?;
        let ut_x = self.u.transpose_times(x);
        let u_c = self.u.times(&ut_x);
        Ok(x.iter()
            .zip(&self.diag)
            .zip(&u_c)
            .map(|((x, a), uc)| a * x + uc)
            .collect())
    }

    /// `D`.
    pub fn len(&self) -> usize {
        self.diag.len()
    }

    /// `true` if `D = 0` (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.diag.is_empty()
    }

    /// `K`, the rank of `U`.
    pub fn rank(&self) -> usize {
        self.core_chol.nrows()
    }

    /// `ln det Sigma_p` (matrix-determinant lemma).
    pub fn log_det(&self) -> f64 {
        self.log_det
    }

    /// `tr(Sigma_p^-1)`.
    pub fn trace_inverse(&self) -> f64 {
        self.trace_inverse
    }

    /// `(Sigma_p^-1)_jj`.
    pub fn precision_diagonal(&self) -> &Array1<f64> {
        &self.precision_diag
    }

    /// `x^T A^-1 x = sum_j x_j^2/a_j` in the crate's reduction order.
    fn diagonal_quadratic(&self, x: &[f64]) -> f64 {
        match self.diag.as_slice() {
            Some(a) => pair_sum(x, a, |x, a| x * x / a),
            None => deterministic_sum(x.iter().zip(&self.diag).map(|(x, a)| x * x / a)),
        }
    }

    /// `B^T x` (length `K`), then `L^-1 B^T x`.
    fn whitened_projection(&self, x: &[f64]) -> Vec<f64> {
        let mut proj = self.b.transpose_times(x);
        forward_substitute(&self.core_chol, &mut proj);
        proj
    }

    /// `x^T Sigma_p^-1 x`, refined and clamped as described in the module docs (see
    /// [`LowRankPrior::mahalanobis_parts`] for the diagnostic).
    ///
    /// # Formula
    /// ```text
    /// Q = sum_j x_j^2/a_j - ||L^-1 B^T x||^2,  clamped to [(x^T x)^2/(x^T Sigma_p x), x^T A^-1 x]
    /// ```
    pub fn mahalanobis(&self, x: &[f64]) -> Result<f64> {
        Ok(self.mahalanobis_parts(x)?.value)
    }

    /// `Q = x^T Sigma_p^-1 x` with its bounds and whether it was refined or clamped.
    ///
    /// # Formula
    /// ```text
    /// Q0 = x^T A^-1 x - ||L^-1 B^T x||^2;  if x^T A^-1 x / Q0 > 10^REFINE_DIGITS:
    /// z = Sigma_p^-1 x, z += Sigma_p^-1 (x - Sigma_p z), Q = x^T z
    /// ```
    pub fn mahalanobis_parts(&self, x: &[f64]) -> Result<MahalanobisParts> {
        Ok(self.mahalanobis_inner(x, false)?.0)
    }

    /// [`LowRankPrior::mahalanobis_parts`] and `Sigma_p^-1 x` (as [`LowRankPrior::precision_times`]
    /// gives it, bit for bit) from the same projection `B^T x`: what a training step needs for
    /// `Q` and its gradient `dQ/dx = 2 Sigma_p^-1 x`, one pass over the factor fewer than the two
    /// calls.
    ///
    /// # Formula
    /// As [`LowRankPrior::mahalanobis_parts`] and [`LowRankPrior::precision_times`].
    pub fn mahalanobis_and_precision_times(
        &self,
        x: &[f64],
    ) -> Result<(MahalanobisParts, Vec<f64>)> {
        let (parts, w, z) = self.mahalanobis_inner(x, true)?;
        let z = match z {
            Some(z) => z,
            None => self.precision_from_whitened(x, w),
        };
        Ok((parts, z))
    }

    /// `Q`'s parts, the whitened projection `w = L^-1 B^T x`, and (when `keep_precision`) the
    /// `Sigma_p^-1 x` that the refinement computes anyway.
    fn mahalanobis_inner(
        &self,
        x: &[f64],
        keep_precision: bool,
    ) -> Result<(MahalanobisParts, Vec<f64>, Option<Vec<f64>>)> {
        check::same_len("vector", self.len(), x.len())?;
        let first = self.diagonal_quadratic(x);
        let w = self.whitened_projection(x);
        let raw = first - w.iter().map(|v| v * v).sum::<f64>();
        let refined = !(raw > 0.0 && first / raw <= 10f64.powf(REFINE_DIGITS));
        if !refined {
            // At most REFINE_DIGITS digits lost, and raw <= first since ||L^-1 B^T x||^2 >= 0.
            let parts = MahalanobisParts {
                value: raw,
                diagonal_term: first,
                lower_bound: None,
                refined,
                clamped: false,
            };
            return Ok((parts, w, None));
        }
        let mut z = self.precision_from_whitened(x, w.clone());
        let z0 = keep_precision.then(|| z.clone());
        let sz = self.covariance_times(&z)?;
        let r: Vec<f64> = x.iter().zip(&sz).map(|(x, s)| x - s).collect();
        let dz = self.precision_times(&r)?;
        z.iter_mut().zip(&dz).for_each(|(z, d)| *z += d);
        let value = pair_sum(x, &z, |x, z| x * z);
        let xx = pair_sum(x, x, |x, _| x * x);
        let sx = self.covariance_times(x)?;
        let xsx = pair_sum(x, &sx, |x, s| x * s);
        let lower = if xsx > 0.0 { xx * xx / xsx } else { 0.0 };
        let clamped = !(value >= lower && value <= first);
        let parts = MahalanobisParts {
            value: if clamped {
                value.clamp(lower, first.max(lower))
            } else {
                value
            },
            diagonal_term: first,
            lower_bound: Some(lower),
            refined,
            clamped,
        };
        Ok((parts, w, z0))
    }

    /// `Sigma_p^-1 x = A^-1 x - B C^-1 B^T x`.
    ///
    /// # Formula
    /// ```text
    /// Sigma_p^-1 x = A^-1 x - B C^-1 B^T x,  B = A^-1 U,  C = I + U^T A^-1 U
    /// ```
    pub fn precision_times(&self, x: &[f64]) -> Result<Vec<f64>> {
        check::same_len("vector", self.len(), x.len())?;
        Ok(self.precision_from_whitened(x, self.whitened_projection(x)))
    }

    /// `Sigma_p^-1 x` from `w = L^-1 B^T x`: `y = L^-T w = C^-1 B^T x`, then `A^-1 x - B y`.
    fn precision_from_whitened(&self, x: &[f64], mut y: Vec<f64>) -> Vec<f64> {
        backward_substitute(&self.core_chol, &mut y); // y = C^-1 B^T x
        let b_y = self.b.times(&y);
        x.iter()
            .zip(&self.diag)
            .zip(&b_y)
            .map(|((x, a), by)| x / a - by)
            .collect()
    }

    /// `m - mu` in `f64`, after checking both for NaN/Inf and for length.
    fn difference<T: Real>(&self, mean: &[T], prior_mean: &[T]) -> Result<Vec<f64>> {
        check::same_len("variational mean", self.len(), mean.len())?;
        check::same_len("prior mean", self.len(), prior_mean.len())?;
        mean.ensure_finite("variational mean")?;
        prior_mean.ensure_finite("prior mean")?;
        Ok(mean
            .iter()
            .zip(prior_mean)
            .map(|(m, mu)| m.as_f64() - mu.as_f64())
            .collect())
    }

    /// The [`KlTerms`] of `q = N(m, S)` against `N(mu, v Sigma_p)`: `Q = (m - mu)^T Sigma_p^-1
    /// (m - mu)`, `T = tr(Sigma_p^-1 S)` (`sigma^2 tr(Sigma_p^-1)` or `sum_j (Sigma_p^-1)_jj
    /// sigma_j^2`), `ln det Sigma_p`, `sum_j ln sigma_j^2`.
    pub fn kl_terms<T: Real>(
        &self,
        mean: &[T],
        prior_mean: &[T],
        scale: LowRankScale<'_>,
    ) -> Result<KlTerms> {
        let diff = self.difference(mean, prior_mean)?;
        let quadratic = self.mahalanobis(&diff)?;
        let d = self.len() as f64;
        let (trace, sum_ln_sigma2, isotropic_sigma2) = match scale {
            LowRankScale::Isotropic { sigma } => {
                let s = check::positive("sigma", sigma)?;
                (s * s * self.trace_inverse, d * (s * s).ln(), Some(s * s))
            }
            LowRankScale::Diagonal { variances } => {
                check::same_len("posterior variances", self.len(), variances.len())?;
                let mut tr = CompensatedSum::default();
                let mut ln = CompensatedSum::default();
                for (j, (&s2, &p)) in variances.iter().zip(&self.precision_diag).enumerate() {
                    check::positive(&format!("sigma_{j}^2"), s2)?;
                    tr.add(p * s2);
                    ln.add(s2.ln());
                }
                (tr.value(), ln.value(), None)
            }
        };
        Ok(KlTerms {
            len: self.len(),
            quadratic,
            trace,
            log_det_prior: self.log_det,
            sum_ln_sigma2,
            isotropic_sigma2,
            shape: super::PriorShape::LowRank,
        })
    }

    /// `dKL/dm = Sigma_p^-1 (m - mu)/v` (at `v = v*` also `dKL*/dm`, by the envelope theorem).
    pub fn kl_grad_mean<T: Real>(&self, mean: &[T], prior_mean: &[T], v: f64) -> Result<Vec<f64>> {
        let v = check::positive("prior variance", v)?;
        let diff = self.difference(mean, prior_mean)?;
        Ok(self
            .precision_times(&diff)?
            .into_iter()
            .map(|g| g / v)
            .collect())
    }

    /// `ln N(w; mu, v Sigma_p) = -1/2 [ D ln(2 pi v) + ln det Sigma_p + (w - mu)^T Sigma_p^-1
    /// (w - mu)/v ]` in nats.
    pub fn log_density<T: Real>(&self, w: &[T], mu: &[T], v: f64) -> Result<f64> {
        let v = check::positive("prior variance", v)?;
        let diff = self.difference(w, mu)?;
        let q = self.mahalanobis(&diff)?;
        let d = self.len() as f64;
        Ok(-0.5 * (d * (2.0 * std::f64::consts::PI * v).ln() + self.log_det + q / v))
    }
}

/// Lower Cholesky factor of a small symmetric positive definite matrix.
fn cholesky(a: &Array2<f64>, name: &str) -> Result<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let pivot = a[[i, i]] - s;
                if !(pivot > 0.0 && pivot.is_finite()) {
                    return Err(CoreError::NotPositiveDefinite {
                        name: name.to_string(),
                        index: i,
                        pivot,
                    });
                }
                l[[i, i]] = pivot.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    Ok(l)
}

/// Solve `L y = x` in place.
fn forward_substitute(l: &Array2<f64>, x: &mut [f64]) {
    for i in 0..x.len() {
        let s: f64 = (0..i).map(|k| l[[i, k]] * x[k]).sum();
        x[i] = (x[i] - s) / l[[i, i]];
    }
}

/// Solve `L^T y = x` in place.
fn backward_substitute(l: &Array2<f64>, x: &mut [f64]) {
    let n = x.len();
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[[k, i]] * x[k]).sum();
        x[i] = (x[i] - s) / l[[i, i]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn shapes_and_values_are_validated() {
        let u = Array2::<f64>::zeros((3, 2));
        assert!(LowRankPrior::new(array![1.0, 1.0], u.view()).is_err());
        assert!(LowRankPrior::new(array![1.0, 0.0, 1.0], u.view()).is_err());
        assert!(LowRankPrior::new(Array1::zeros(0), Array2::zeros((0, 2)).view()).is_err());
        let mut bad = u.clone();
        bad[[1, 1]] = f64::NAN;
        assert!(LowRankPrior::new(array![1.0, 1.0, 1.0], bad.view()).is_err());
        let p = LowRankPrior::new(array![1.0, 2.0, 4.0], u.view()).unwrap();
        // U = 0: Sigma_p = A.
        assert!((p.log_det() - 8.0f64.ln()).abs() < 1e-14);
        assert!((p.trace_inverse() - 1.75).abs() < 1e-14);
        assert!(p.mahalanobis(&[1.0, 1.0]).is_err());
    }
}
