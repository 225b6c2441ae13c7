//! The exact Gaussian process with the RBF kernel, the reference the random features
//! approximate: `k(x, x') = s^2 exp(-||x - x'||^2/(2 l^2)) + s_n^2 [x = x']`, hyperparameters by
//! type-II maximum likelihood (the same profiled evidence as [`crate::evidence`], with the
//! kernel matrix in place of `Phi Phi^T` and `s^2` in place of `tau`). `O(N^3)`: for small `N`.

use ndarray::{Array1, Array2, ArrayView2};

use crate::data::{Dataset, Standardizer};
use crate::error::{Result, ensure_finite_matrix};
use crate::evidence::{
    NoiseBounds, cholesky_lower, maximize_evidence, solve_lower, solve_lower_matrix,
};
use crate::features::{Lengthscale, rbf_kernel};
use crate::model::{FitSummary, Prediction};
use crate::search::{GridSearch, maximize};
use crate::spectrum::Spectrum;

/// A fitted GP (standardized units inside).
#[derive(Debug, Clone)]
pub struct GpModel {
    x: Array2<f64>,
    standardizer: Standardizer,
    lengthscale: Lengthscale,
    signal_variance: f64,
    noise_variance: f64,
    alpha: Array1<f64>,
    chol: Array2<f64>,
    log_evidence: f64,
}

/// Fit the GP: search `t = ln(l/sqrt(d))` with `search`, profile `(s^2, s_n^2)` at each `l`.
/// Inputs and targets are standardized like the RFF models.
pub fn fit_gp(data: &Dataset, search: &GridSearch, bounds: &NoiseBounds) -> Result<GpModel> {
    bounds.validate()?;
    let standardizer = Standardizer::fit(data)?;
    let x = standardizer.transform_x(data.x())?;
    let y = standardizer.transform_y(data.y());
    let sqrt_d = (x.ncols() as f64).sqrt();
    let at = |t: f64| -> Result<_> {
        let l = t.exp() * sqrt_d;
        let k = rbf_kernel(x.view(), x.view(), &Lengthscale::Isotropic(l))?;
        let sp = Spectrum::of_kernel(k.view(), y.view())?;
        Ok((k, maximize_evidence(&sp, bounds)?))
    };
    let best = maximize(search, "GP lengthscale", |t| {
        Ok((at(t)?.1.log_evidence, ()))
    })?;
    let (k, opt) = at(best.argmax)?;
    let mut c = k * opt.tau;
    c.diag_mut().mapv_inplace(|v| v + opt.noise_variance);
    let chol = cholesky_lower("the GP covariance s^2 K + s_n^2 I", &c)?;
    let z = solve_lower("the GP covariance", &chol, &y)?;
    let alpha = ndarray_linalg::SolveTriangular::solve_triangular(
        &chol.t(),
        ndarray_linalg::UPLO::Upper,
        ndarray_linalg::Diag::NonUnit,
        &z,
    )
    .map_err(|e| crate::error::linalg_error("the GP covariance", e))?;
    let n = y.len() as f64;
    Ok(GpModel {
        x,
        lengthscale: Lengthscale::Isotropic(best.argmax.exp() * sqrt_d),
        signal_variance: opt.tau,
        noise_variance: opt.noise_variance,
        alpha,
        chol,
        log_evidence: opt.log_evidence - n * standardizer.y_std.ln(),
        standardizer,
    })
}

impl GpModel {
    /// Predictive mean and std at raw inputs (`M x d`):
    /// `mu = s^2 k_*^T C^-1 y`, `var = s^2 - s^4 k_*^T C^-1 k_* + s_n^2`.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        ensure_finite_matrix("inputs", x)?;
        let xs = self.standardizer.transform_x(x)?;
        let ks = rbf_kernel(self.x.view(), xs.view(), &self.lengthscale)? * self.signal_variance; // N x M
        let mean = ks.t().dot(&self.alpha);
        let v = solve_lower_matrix("the GP covariance", &self.chol, &ks)?;
        let (ym, ys) = (self.standardizer.y_mean, self.standardizer.y_std);
        let std = Array1::from_shape_fn(xs.nrows(), |j| {
            let col = v.column(j);
            let epistemic = (self.signal_variance - col.dot(&col)).max(0.0);
            ys * (epistemic + self.noise_variance).sqrt()
        });
        Ok(Prediction {
            mean: mean.mapv(|m| ym + ys * m),
            std,
        })
    }

    /// Lengthscale(s) in input units (per column: `l_k x_std_k`).
    pub fn lengthscale_original(&self) -> Lengthscale {
        self.lengthscale.scaled(&self.standardizer.x_std)
    }

    /// Noise standard deviation in target units.
    pub fn noise_std(&self) -> f64 {
        self.standardizer.y_std * self.noise_variance.sqrt()
    }

    /// Signal variance `s^2` in target units squared.
    pub fn signal_variance_original(&self) -> f64 {
        self.standardizer.y_std.powi(2) * self.signal_variance
    }

    /// The maximized log evidence in nats (original target units).
    pub fn log_evidence(&self) -> f64 {
        self.log_evidence
    }

    /// The summary (`prior_variance` reports the signal variance `s^2`).
    pub fn summary(&self, train_rmse: f64) -> FitSummary {
        FitSummary {
            method: "gp".to_string(),
            kappa: None,
            lengthscale: self.lengthscale_original(),
            noise_std: self.noise_std(),
            prior_variance: self.signal_variance_original(),
            sigma: None,
            objective: self.log_evidence,
            train_rmse,
        }
    }
}

/// Settings of the exact ARD GP (the reference of the real-data table).
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `restarts` | 2 | `>= 0` | extra L-BFGS starts from seeded random points (besides `l = 1`, `s^2 = 1`, `s_n^2 = 0.1`) |
/// | `seed` | 0 | any | seed of the restart points |
/// | `iterations` | 200 | `>= 1` | L-BFGS iterations per start |
/// | `ln_lengthscale` | `[ln 1e-2, ln 1e3]` | finite | bounds of each `ln l_k` (standardized inputs) |
/// | `ln_signal_variance` | `[ln 1e-3, ln 1e3]` | finite | bounds of `ln s^2` (standardized targets) |
/// | `ln_noise_variance` | `[ln 1e-6, ln 10]` | finite | bounds of `ln s_n^2` |
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct GpSettings {
    /// Random restarts besides the default start.
    pub restarts: usize,
    /// Seed of the restarts.
    pub seed: u64,
    /// L-BFGS iterations per start.
    pub iterations: usize,
    /// Bounds of `ln l_k`.
    pub ln_lengthscale: (f64, f64),
    /// Bounds of `ln s^2`.
    pub ln_signal_variance: (f64, f64),
    /// Bounds of `ln s_n^2`.
    pub ln_noise_variance: (f64, f64),
}

/// `(lo, hi)` finite with `lo < hi`, else [`crate::RffError::InvalidConfig`] naming `name`.
fn check_bounds(name: &str, (lo, hi): (f64, f64)) -> Result<()> {
    if lo.is_finite() && hi.is_finite() && lo < hi {
        return Ok(());
    }
    Err(crate::error::RffError::InvalidConfig {
        name: name.to_string(),
        reason: format!("bounds must be finite with lower < upper, got ({lo}, {hi})"),
    })
}

impl GpSettings {
    /// Check every setting against its range in the `# Parameters` table; [`fit_gp_ard`] calls
    /// this before any work.
    pub fn validate(&self) -> Result<()> {
        if self.iterations < 1 {
            return Err(crate::error::RffError::InvalidConfig {
                name: "iterations".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        check_bounds("ln_lengthscale", self.ln_lengthscale)?;
        check_bounds("ln_signal_variance", self.ln_signal_variance)?;
        check_bounds("ln_noise_variance", self.ln_noise_variance)
    }
}

impl Default for GpSettings {
    fn default() -> Self {
        Self {
            restarts: 2,
            seed: 0,
            iterations: 200,
            ln_lengthscale: ((1e-2f64).ln(), (1e3f64).ln()),
            ln_signal_variance: ((1e-3f64).ln(), (1e3f64).ln()),
            ln_noise_variance: ((1e-6f64).ln(), 10f64.ln()),
        }
    }
}

/// The exact GP's log marginal likelihood on standardized `x` (`N x d`), `y` at
/// `theta = (ln l_1..l_d, ln s^2, ln s_n^2)` and its gradient.
///
/// # Formula
/// `K = s^2 exp(-1/2 sum_k (x_ik - x_jk)^2/l_k^2) + s_n^2 I`, `alpha = K^-1 y`,
/// `ln p = -1/2 [y^T alpha + ln det K + N ln 2 pi]`,
/// `d ln p/d theta = 1/2 tr((alpha alpha^T - K^-1) dK/d theta)` with
/// `dK/d ln l_k = K_f (x_ik - x_jk)^2/l_k^2`, `dK/d ln s^2 = K_f`, `dK/d ln s_n^2 = s_n^2 I`.
pub fn ard_log_evidence(
    x: ArrayView2<'_, f64>,
    y: ndarray::ArrayView1<'_, f64>,
    theta: &[f64],
) -> Result<(f64, Vec<f64>)> {
    let (n, d) = x.dim();
    if theta.len() != d + 2 || y.len() != n {
        return Err(crate::error::RffError::Shape {
            name: "GP hyperparameters (d lengthscales, signal, noise)".to_string(),
            expected: d + 2,
            found: theta.len(),
        });
    }
    let ls: Vec<f64> = theta[..d].iter().map(|t| t.exp()).collect();
    let (s2f, s2n) = (theta[d].exp(), theta[d + 1].exp());
    let kf = rbf_kernel(x, x, &Lengthscale::Ard(ls.clone()))? * s2f;
    let mut k = kf.clone();
    k.diag_mut().mapv_inplace(|v| v + s2n);
    let ch = crate::linalg::cholesky("the GP covariance K", &k)?;
    let mut alpha = y.to_owned().insert_axis(ndarray::Axis(1));
    crate::linalg::solve_lower_in_place(&ch.lower, &mut alpha, false)?;
    let quad: f64 = alpha.iter().map(|v| v * v).sum();
    crate::linalg::solve_lower_in_place(&ch.lower, &mut alpha, true)?;
    let alpha = alpha.remove_axis(ndarray::Axis(1));
    let log_det: f64 = 2.0 * ch.lower.diag().iter().map(|v| v.ln()).sum::<f64>();
    let value = -0.5 * (quad + log_det + n as f64 * crate::evidence::LN_2PI);
    let kinv = crate::linalg::inverse_from_cholesky(&ch.lower)?;
    // W = alpha alpha^T - K^-1, elementwise with K_f.
    let mut grad = vec![0.0; d + 2];
    let mut tr_w = 0.0;
    for i in 0..n {
        for j in 0..n {
            let w = alpha[i] * alpha[j] - kinv[[i, j]];
            let wk = w * kf[[i, j]];
            grad[d] += wk;
            for (kk, l) in ls.iter().enumerate() {
                let diff = (x[[i, kk]] - x[[j, kk]]) / l;
                grad[kk] += wk * diff * diff;
            }
        }
        tr_w += alpha[i] * alpha[i] - kinv[[i, i]];
    }
    for g in grad.iter_mut().take(d + 1) {
        *g *= 0.5;
    }
    grad[d + 1] = 0.5 * s2n * tr_w;
    Ok((value, grad))
}

/// Fit the exact GP with one lengthscale per input column (ARD RBF + white noise) by type-II
/// maximum likelihood: L-BFGS on [`ard_log_evidence`] from `l = 1, s^2 = 1, s_n^2 = 0.1` and
/// from `settings.restarts` seeded random points, keeping the best. Inputs and targets are
/// standardized (scikit-learn's `normalize_y`).
pub fn fit_gp_ard(data: &Dataset, settings: &GpSettings) -> Result<GpModel> {
    use crate::optimize::{LbfgsSettings, lbfgs_maximize};
    use deelbo_core::{NoiseKey, uniform_at};
    settings.validate()?;
    let standardizer = Standardizer::fit(data)?;
    let x = standardizer.transform_x(data.x())?;
    let y = standardizer.transform_y(data.y());
    let d = x.ncols();
    let mut lower = vec![settings.ln_lengthscale.0; d];
    let mut upper = vec![settings.ln_lengthscale.1; d];
    lower.extend([settings.ln_signal_variance.0, settings.ln_noise_variance.0]);
    upper.extend([settings.ln_signal_variance.1, settings.ln_noise_variance.1]);
    let mut starts = vec![{
        let mut t = vec![0.0; d];
        t.extend([0.0, 0.1f64.ln()]);
        t
    }];
    let key = NoiseKey::new(settings.seed, 0x4750_5253);
    for r in 0..settings.restarts {
        starts.push(
            (0..d + 2)
                .map(|i| {
                    let u = uniform_at(key, (r * (d + 2) + i) as u64);
                    lower[i] + u * (upper[i] - lower[i])
                })
                .collect(),
        );
    }
    let lb = LbfgsSettings {
        max_iterations: settings.iterations,
        ..LbfgsSettings::default()
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut last_error = None;
    for s in starts {
        match lbfgs_maximize(
            |t| ard_log_evidence(x.view(), y.view(), t),
            &s,
            &lower,
            &upper,
            &lb,
        ) {
            Ok(r) => {
                if best.as_ref().is_none_or(|b| r.value > b.0) {
                    best = Some((r.value, r.argmax));
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some((value, theta)) = best else {
        return Err(last_error.unwrap_or(crate::error::RffError::Optimizer {
            name: "GP hyperparameters".to_string(),
            reason: "no start converged".to_string(),
        }));
    };
    let ls = Lengthscale::Ard(theta[..d].iter().map(|t| t.exp()).collect());
    let (s2f, s2n) = (theta[d].exp(), theta[d + 1].exp());
    let mut c = rbf_kernel(x.view(), x.view(), &ls)? * s2f;
    c.diag_mut().mapv_inplace(|v| v + s2n);
    let chol = crate::linalg::cholesky("the GP covariance s^2 K + s_n^2 I", &c)?.lower;
    let mut a = y.clone().insert_axis(ndarray::Axis(1));
    crate::linalg::solve_lower_in_place(&chol, &mut a, false)?;
    crate::linalg::solve_lower_in_place(&chol, &mut a, true)?;
    let n = y.len() as f64;
    Ok(GpModel {
        x,
        lengthscale: ls,
        signal_variance: s2f,
        noise_variance: s2n,
        alpha: a.remove_axis(ndarray::Axis(1)),
        chol,
        log_evidence: value - n * standardizer.y_std.ln(),
        standardizer,
    })
}
