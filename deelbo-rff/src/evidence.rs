//! Exact Bayesian linear regression on fixed features: `y = Phi w + e`, `w ~ N(0, tau I)`,
//! `e ~ N(0, s_n^2 I)`.
//!
//! - Log evidence `ln N(y | 0, C)`, `C = tau Phi Phi^T + s_n^2 I`, by Cholesky in the `N x N`
//!   form, or in the `R x R` (Woodbury / matrix-determinant-lemma) form when `R < N`:
//!   `A = Phi^T Phi / s_n^2 + I/tau`, `ln det C = N ln s_n^2 + R ln tau + ln det A`,
//!   `y^T C^-1 y = y^T y / s_n^2 - c^T A^-1 c`, `c = Phi^T y / s_n^2` ([`log_evidence`]).
//! - The same in `O(k)` from a [`Spectrum`]:
//!   `ln p(y) = -N/2 ln 2 pi - 1/2 [sum_i ln(tau lambda_i + s_n^2) + (N - k) ln s_n^2]
//!   - 1/2 [sum_i y~_i^2/(tau lambda_i + s_n^2) + y_perp^2/s_n^2]` ([`spectral_log_evidence`]).
//! - Type-II maximum likelihood over `(tau, s_n^2)` by profiling: with `rho = tau/s_n^2`,
//!   `C = s_n^2 (rho G + I)` and the best noise for a given `rho` is
//!   `s_n^2(rho) = Q(rho)/N`, `Q(rho) = sum_i y~_i^2/(1 + rho lambda_i) + y_perp^2`, leaving a 1-D
//!   search over `ln rho` ([`maximize_evidence`]).
//! - The exact posterior `N(m_post, S_post)`, `S_post = A^-1`, `m_post = A^-1 Phi^T y / s_n^2`
//!   ([`ExactPosterior`]).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use ndarray_linalg::{Cholesky, Diag, SolveTriangular, UPLO};

use crate::error::{Result, RffError, cholesky_error};
use crate::search::{GridSearch, maximize};
use crate::spectrum::Spectrum;

/// `ln(2 pi)`: the core's constant, re-exported for this crate's formulas.
pub use deelbo_core::LN_2PI;

/// Bounds on the noise variance `s_n^2` every search respects (in the units of the targets the
/// model sees, i.e. standardized targets when the model standardizes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NoiseBounds {
    /// Smallest allowed noise standard deviation.
    pub min_std: f64,
    /// Largest allowed noise standard deviation.
    pub max_std: f64,
}

impl Default for NoiseBounds {
    /// `[1e-4, 10]` (standardized target units).
    fn default() -> Self {
        Self {
            min_std: 1e-4,
            max_std: 10.0,
        }
    }
}

impl NoiseBounds {
    /// `s_n^2` clamped to `[min_std^2, max_std^2]`.
    pub fn clamp_variance(&self, s2: f64) -> f64 {
        s2.clamp(self.min_std * self.min_std, self.max_std * self.max_std)
    }

    /// Validate `0 < min_std <= max_std < inf`.
    pub fn validate(&self) -> Result<()> {
        deelbo_core::check::positive("noise min_std", self.min_std)?;
        deelbo_core::check::positive("noise max_std", self.max_std)?;
        if self.min_std <= self.max_std {
            Ok(())
        } else {
            Err(RffError::InvalidConfig {
                name: "noise bounds".to_string(),
                reason: format!(
                    "need 0 < min_std <= max_std < inf, got [{}, {}]",
                    self.min_std, self.max_std
                ),
            })
        }
    }
}

fn check_hyper(tau: f64, s2: f64) -> Result<()> {
    deelbo_core::check::positive("prior variance tau", tau)?;
    deelbo_core::check::positive("noise variance", s2)?;
    Ok(())
}

/// Lower Cholesky factor of a symmetric matrix, with a typed error naming it.
pub fn cholesky_lower(what: &str, a: &Array2<f64>) -> Result<Array2<f64>> {
    a.cholesky(UPLO::Lower).map_err(|e| cholesky_error(what, e))
}

/// `L^-1 b` for a lower-triangular `L`.
pub(crate) fn solve_lower(what: &str, l: &Array2<f64>, b: &Array1<f64>) -> Result<Array1<f64>> {
    l.solve_triangular(UPLO::Lower, Diag::NonUnit, b)
        .map_err(|e| crate::error::linalg_error(what, e))
}

/// `L^-1 B` for a lower-triangular `L` and a matrix `B`.
pub(crate) fn solve_lower_matrix(
    what: &str,
    l: &Array2<f64>,
    b: &Array2<f64>,
) -> Result<Array2<f64>> {
    l.solve_triangular(UPLO::Lower, Diag::NonUnit, b)
        .map_err(|e| crate::error::linalg_error(what, e))
}

/// Lower Cholesky factor of the `N x N` evidence covariance `C = tau Phi Phi^T + s_n^2 I`.
fn covariance_cholesky(phi: ArrayView2<'_, f64>, tau: f64, s2: f64) -> Result<Array2<f64>> {
    let mut c = phi.dot(&phi.t()) * tau;
    c.diag_mut().mapv_inplace(|v| v + s2);
    cholesky_lower("the evidence covariance tau Phi Phi^T + s_n^2 I", &c)
}

/// Lower Cholesky factor of the `R x R` posterior precision `A = Phi^T Phi/s_n^2 + I/tau`.
fn precision_cholesky(phi: ArrayView2<'_, f64>, tau: f64, s2: f64) -> Result<Array2<f64>> {
    let mut a = phi.t().dot(&phi) / s2;
    a.diag_mut().mapv_inplace(|v| v + 1.0 / tau);
    cholesky_lower("the posterior precision Phi^T Phi/s_n^2 + I/tau", &a)
}

/// `ln N(y | 0, tau Phi Phi^T + s_n^2 I)` in nats, by Cholesky of the `N x N` covariance when
/// `N <= R` and of the `R x R` matrix `A = Phi^T Phi/s_n^2 + I/tau` otherwise (module docs).
/// Errors: shape mismatch, non-positive hyperparameters, Cholesky failure (typed).
pub fn log_evidence(
    phi: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    tau: f64,
    noise_variance: f64,
) -> Result<f64> {
    let (n, r) = phi.dim();
    check_shapes(phi, y)?;
    check_hyper(tau, noise_variance)?;
    let s2 = noise_variance;
    if n <= r {
        let l = covariance_cholesky(phi, tau, s2)?;
        let z = solve_lower("the evidence covariance", &l, &y.to_owned())?;
        let log_det = 2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>();
        Ok(-0.5 * (n as f64 * LN_2PI + log_det + z.dot(&z)))
    } else {
        let l = precision_cholesky(phi, tau, s2)?;
        let c = phi.t().dot(&y) / s2;
        let z = solve_lower("the posterior precision", &l, &c)?;
        let log_det_a = 2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>();
        let log_det = n as f64 * s2.ln() + r as f64 * tau.ln() + log_det_a;
        let quad = y.dot(&y) / s2 - z.dot(&z);
        Ok(-0.5 * (n as f64 * LN_2PI + log_det + quad))
    }
}

fn check_shapes(phi: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<()> {
    if phi.nrows() != y.len() {
        return Err(RffError::Shape {
            name: "targets (one per feature row)".to_string(),
            expected: phi.nrows(),
            found: y.len(),
        });
    }
    Ok(())
}

/// The log evidence from a spectrum, `O(k)` (module docs). Equals [`log_evidence`] for the
/// same features, targets and hyperparameters; for a kernel spectrum `tau` is the outputscale
/// squared.
pub fn spectral_log_evidence(spectrum: &Spectrum, tau: f64, noise_variance: f64) -> f64 {
    let s2 = noise_variance;
    let n = spectrum.examples as f64;
    let k = spectrum.len() as f64;
    let mut log_det = (n - k) * s2.ln();
    let mut quad = spectrum.orthogonal_energy / s2;
    for (l, y) in spectrum.eigenvalues.iter().zip(&spectrum.projected_targets) {
        let c = tau * l + s2;
        log_det += c.ln();
        quad += y * y / c;
    }
    -0.5 * (n * LN_2PI + log_det + quad)
}

/// The evidence optimum over `(tau, s_n^2)` at a fixed Gram matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvidenceOptimum {
    /// Prior variance `tau` (outputscale squared for a kernel).
    pub tau: f64,
    /// Noise variance `s_n^2`.
    pub noise_variance: f64,
    /// The maximized log evidence (nats).
    pub log_evidence: f64,
}

/// The default search over `ln rho = ln(tau/s_n^2)`: `[ln 1e-6, ln 1e10]`, 40 points, refined
/// to `1e-6`.
pub const RATIO_SEARCH: GridSearch = GridSearch {
    lower: -13.815_510_557_964_274,
    upper: 23.025_850_929_940_457,
    grid_points: 40,
    tolerance: 1e-6,
};

/// What the 1-D search of [`maximize_evidence`] climbs: the evidence at `rho = e^t` with the
/// noise profiled out, `s_n^2 = Q(rho)/N` clamped to the bounds and `tau = rho s_n^2`, from a
/// [`Spectrum`] or from a tridiagonal reduction ([`crate::tridiagonal::TridiagonalProfile`]).
pub trait EvidenceProfile {
    /// The profiled evidence at `ln rho = ln_ratio`.
    fn profile(&self, ln_ratio: f64, bounds: &NoiseBounds) -> EvidenceOptimum;
}

impl EvidenceProfile for Spectrum {
    fn profile(&self, ln_ratio: f64, bounds: &NoiseBounds) -> EvidenceOptimum {
        profile_evidence(self, ln_ratio, bounds)
    }
}

/// The profiled evidence at `rho = e^t`: noise `s_n^2 = Q(rho)/N` clamped to the bounds,
/// `tau = rho s_n^2`.
pub fn profile_evidence(
    spectrum: &Spectrum,
    ln_ratio: f64,
    bounds: &NoiseBounds,
) -> EvidenceOptimum {
    let rho = ln_ratio.exp();
    let mut q = spectrum.orthogonal_energy;
    for (l, y) in spectrum.eigenvalues.iter().zip(&spectrum.projected_targets) {
        q += y * y / (1.0 + rho * l);
    }
    let s2 = bounds.clamp_variance(q / spectrum.examples as f64);
    let tau = rho * s2;
    EvidenceOptimum {
        tau,
        noise_variance: s2,
        log_evidence: spectral_log_evidence(spectrum, tau, s2),
    }
}

/// Maximize the log evidence over `(tau, s_n^2)` for a fixed Gram matrix by the 1-D profile
/// search over `ln rho` ([`RATIO_SEARCH`]), on a [`Spectrum`] or any [`EvidenceProfile`].
pub fn maximize_evidence<P: EvidenceProfile + ?Sized>(
    profile: &P,
    bounds: &NoiseBounds,
) -> Result<EvidenceOptimum> {
    bounds.validate()?;
    let r = maximize(&RATIO_SEARCH, "signal-to-noise ratio", |t| {
        let o = profile.profile(t, bounds);
        Ok((o.log_evidence, o))
    })?;
    Ok(r.payload)
}

/// The exact weight posterior `N(m_post, A^-1)`, `A = Phi^T Phi/s_n^2 + I/tau`, computed by
/// Cholesky in the `N x N` form (`m_post = tau Phi^T C^-1 y`) when `N <= R` and the `R x R`
/// form otherwise. A dense reference for the spectral fast path.
#[derive(Debug, Clone)]
pub struct ExactPosterior {
    /// The posterior mean `m_post` (`R`).
    pub mean: Array1<f64>,
    form: PosteriorForm,
    tau: f64,
}

#[derive(Debug, Clone)]
enum PosteriorForm {
    /// `L` = chol(C), `C = tau Phi Phi^T + s_n^2 I`, and `Phi` (`N x R`).
    Examples { l: Array2<f64>, phi: Array2<f64> },
    /// `L` = chol(A).
    Features { l: Array2<f64> },
}

impl ExactPosterior {
    /// The posterior for features `phi` (`N x R`), targets `y`, prior variance `tau` and noise
    /// variance `s_n^2`.
    pub fn fit(
        phi: ArrayView2<'_, f64>,
        y: ArrayView1<'_, f64>,
        tau: f64,
        noise_variance: f64,
    ) -> Result<Self> {
        check_shapes(phi, y)?;
        check_hyper(tau, noise_variance)?;
        let (n, r) = phi.dim();
        let s2 = noise_variance;
        if n <= r {
            let l = covariance_cholesky(phi, tau, s2)?;
            let z = solve_lower("the evidence covariance", &l, &y.to_owned())?;
            let alpha = l
                .t()
                .solve_triangular(UPLO::Upper, Diag::NonUnit, &z)
                .map_err(|e| crate::error::linalg_error("the evidence covariance", e))?;
            let mean = phi.t().dot(&alpha) * tau;
            Ok(Self {
                mean,
                form: PosteriorForm::Examples {
                    l,
                    phi: phi.to_owned(),
                },
                tau,
            })
        } else {
            let l = precision_cholesky(phi, tau, s2)?;
            let c = phi.t().dot(&y) / s2;
            let z = solve_lower("the posterior precision", &l, &c)?;
            let mean = l
                .t()
                .solve_triangular(UPLO::Upper, Diag::NonUnit, &z)
                .map_err(|e| crate::error::linalg_error("the posterior precision", e))?;
            Ok(Self {
                mean,
                form: PosteriorForm::Features { l },
                tau,
            })
        }
    }

    /// `phi_*^T S_post phi_*` for each row of `phi_star` (`M x R`): the epistemic variance of
    /// `f(x_*)`. `N x N` form: `tau ||phi_*||^2 - tau^2 (Phi phi_*)^T C^-1 (Phi phi_*)`.
    pub fn epistemic_variance(&self, phi_star: ArrayView2<'_, f64>) -> Result<Array1<f64>> {
        match &self.form {
            PosteriorForm::Examples { l, phi } => {
                let cross = phi.dot(&phi_star.t()); // N x M
                let z = solve_lower_matrix("the evidence covariance", l, &cross)?;
                Ok(Array1::from_shape_fn(phi_star.nrows(), |j| {
                    let p = phi_star.row(j);
                    let zj = z.column(j);
                    self.tau * p.dot(&p) - self.tau * self.tau * zj.dot(&zj)
                }))
            }
            PosteriorForm::Features { l } => {
                let z = solve_lower_matrix("the posterior precision", l, &phi_star.t().to_owned())?;
                Ok(Array1::from_shape_fn(phi_star.nrows(), |j| {
                    let zj = z.column(j);
                    zj.dot(&zj)
                }))
            }
        }
    }
}
