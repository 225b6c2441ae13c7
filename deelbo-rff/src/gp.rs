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
    lengthscale: f64,
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
    let standardizer = Standardizer::fit(data);
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
        lengthscale: best.argmax.exp() * sqrt_d,
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
        let ks = rbf_kernel(
            self.x.view(),
            xs.view(),
            &Lengthscale::Isotropic(self.lengthscale),
        )? * self.signal_variance; // N x M
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

    /// Lengthscale in input units (first input column's scale).
    pub fn lengthscale_original(&self) -> f64 {
        self.lengthscale * self.standardizer.x_std[0]
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
            lengthscale: if self.x.ncols() == 1 {
                Lengthscale::Isotropic(self.lengthscale_original())
            } else {
                Lengthscale::Isotropic(self.lengthscale).scaled(&self.standardizer.x_std)
            },
            noise_std: self.noise_std(),
            prior_variance: self.signal_variance_original(),
            sigma: None,
            objective: self.log_evidence,
            train_rmse,
        }
    }
}
