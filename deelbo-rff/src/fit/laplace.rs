//! The diagonal empirical-Fisher Laplace evidence (LA-LML) baseline, the one the paper shows
//! overfitting (docs/DESIGN.md §4):
//!
//! `LA(l, tau, s_n) = ln N(y | Phi w, s_n^2 I) + ln N(w | 0, tau I) + (R/2) ln 2 pi
//!  - 1/2 sum_j ln(H_jj + 1/tau)`
//! `             = ln N(y | Phi w, s_n^2 I) - ||w||^2/(2 tau) - 1/2 sum_j ln(1 + tau H_jj)`,
//!
//! at the MAP weights `w` (the ridge solution for `tau`, `s_n^2`), with the empirical-Fisher
//! diagonal `H_jj = sum_n r_n^2 phi_nj^2 / s_n^4`, `r = y - Phi w`. Because `H` shrinks with the
//! residuals, the Occam penalty vanishes as the fit interpolates and LA grows without bound as
//! `s_n -> 0`: the search ends at the noise floor. Predictions use `N(w, diag(1/(H_jj + 1/tau)))`.

use ndarray::{Array1, Array2};

use crate::error::Result;
use crate::evidence::LN_2PI;
use crate::features::Lengthscale;
use crate::fit::builder::{ModelParts, build_model};
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::fit::report::FitReport;
use crate::model::WeightCovariance;
use crate::search::{GridSearch, maximize};
use crate::spectrum::Spectrum;

/// `ln tau` range of the inner search: `[ln 1e-4, ln 1e3]`.
const LN_TAU_RANGE: (f64, f64) = (-9.210_340_371_976_182, 6.907_755_278_982_137);
/// Coarse grid points per axis of the inner search.
const INNER_GRID: usize = 9;
/// Alternating refinement rounds after the coarse grid.
const INNER_ROUNDS: usize = 3;

struct LaplaceAt<'a> {
    phi: &'a Array2<f64>,
    phi_sq: Array2<f64>,
    spectrum: Spectrum,
    y: &'a Array1<f64>,
}

/// The Laplace objective's pieces at one `(tau, s_n^2)`.
struct LaplaceValue {
    value: f64,
    coeffs: Vec<f64>,
    hessian_diag: Array1<f64>,
}

impl LaplaceAt<'_> {
    fn evaluate(&self, ln_tau: f64, ln_s2: f64) -> Result<LaplaceValue> {
        let (tau, s2) = (ln_tau.exp(), ln_s2.exp());
        let sp = &self.spectrum;
        let coeffs = sp.shrunk_coefficients(tau, s2);
        let fitted = sp.fitted(self.phi.view(), &coeffs)?;
        let r2: Array1<f64> = (self.y - &fitted).mapv(|r| r * r);
        let n = self.y.len() as f64;
        let log_lik = -0.5 * n * (LN_2PI + s2.ln()) - r2.sum() / (2.0 * s2);
        let w_sq: f64 = coeffs.iter().map(|c| c * c).sum();
        let hessian_diag = self.phi_sq.t().dot(&r2) / (s2 * s2);
        let penalty: f64 = hessian_diag.iter().map(|h| (tau * h).ln_1p()).sum();
        Ok(LaplaceValue {
            value: log_lik - w_sq / (2.0 * tau) - 0.5 * penalty,
            coeffs,
            hessian_diag,
        })
    }

    /// Maximize over `(ln tau, ln s_n^2)`: coarse grid, then alternating 1-D refinements.
    fn maximize(&self, config: &RffConfig) -> Result<(f64, f64, f64)> {
        let b = &config.noise;
        let s2_range = (2.0 * b.min_std.ln(), 2.0 * b.max_std.ln());
        let axis = |(lo, hi): (f64, f64)| GridSearch {
            lower: lo,
            upper: hi,
            grid_points: INNER_GRID,
            tolerance: 0.0,
        };
        let (ta, sa) = (axis(LN_TAU_RANGE), axis(s2_range));
        let (tg, sg) = (ta.grid(), sa.grid());
        let mut best = (f64::NEG_INFINITY, tg[0], sg[0]);
        for &t in &tg {
            for &s in &sg {
                let v = self.evaluate(t, s)?.value;
                if v > best.0 {
                    best = (v, t, s);
                }
            }
        }
        let (dt, ds) = (tg[1] - tg[0], sg[1] - sg[0]);
        // Refine one coordinate (0: ln tau, 1: ln s_n^2) within a grid step of the best point.
        let refine = |best: (f64, f64, f64), axis: usize| -> Result<(f64, f64, f64)> {
            let (centre, step, range) = if axis == 0 {
                (best.1, dt, LN_TAU_RANGE)
            } else {
                (best.2, ds, s2_range)
            };
            let r = maximize(
                &GridSearch {
                    lower: (centre - step).max(range.0),
                    upper: (centre + step).min(range.1),
                    grid_points: 3,
                    tolerance: 1e-4,
                },
                "LA-LML hyperparameters",
                |v| {
                    let (t, s) = if axis == 0 { (v, best.2) } else { (best.1, v) };
                    Ok((self.evaluate(t, s)?.value, ()))
                },
            )?;
            Ok(match (r.value > best.0, axis) {
                (true, 0) => (r.value, r.argmax, best.2),
                (true, _) => (r.value, best.1, r.argmax),
                (false, _) => best,
            })
        };
        for _ in 0..INNER_ROUNDS {
            best = refine(best, 0)?;
            best = refine(best, 1)?;
        }
        Ok(best)
    }
}

fn laplace_at<'a>(y: &'a Array1<f64>, phi: &'a Array2<f64>) -> Result<LaplaceAt<'a>> {
    let spectrum = Spectrum::of_features(phi.view(), y.view())?;
    Ok(LaplaceAt {
        phi,
        phi_sq: phi.mapv(|p| p * p),
        spectrum,
        y,
    })
}

/// The LA-LML objective of features `phi` (`N x R`) and targets `y` at prior variance `tau`
/// and noise variance `s2`: the value the LA-LML fit maximizes (one evaluation of its search).
///
/// # Formula
/// `LA = -N/2 ln(2 pi s2) - ||y - Phi w||^2/(2 s2) - ||w||^2/(2 tau) - 1/2 sum_j ln(1 + tau H_jj)`
/// at the MAP weights `w = (Phi^T Phi + (s2/tau) I)^-1 Phi^T y`, with
/// `H_jj = sum_n r_n^2 phi_nj^2/s2^2`, `r = y - Phi w`.
pub fn laplace_log_marginal(phi: &Array2<f64>, y: &Array1<f64>, tau: f64, s2: f64) -> Result<f64> {
    if phi.nrows() != y.len() {
        return Err(crate::error::RffError::Shape {
            name: "targets (one per feature row)".to_string(),
            expected: phi.nrows(),
            found: y.len(),
        });
    }
    deelbo_core::check::positive("tau", tau)?;
    deelbo_core::check::positive("noise variance", s2)?;
    Ok(laplace_at(y, phi)?.evaluate(tau.ln(), s2.ln())?.value)
}

/// Fit by maximizing LA over `(l, tau, s_n)`.
pub(crate) fn fit(prep: &Prepared, config: &RffConfig) -> Result<FitReport> {
    let sqrt_d = prep.sqrt_d();
    let search = maximize(&config.search.lengthscale, "lengthscale", |t| {
        let phi = prep
            .features
            .matrix(prep.x.view(), &Lengthscale::Isotropic(t.exp() * sqrt_d))?;
        let (v, _, _) = laplace_at(&prep.y, &phi)?.maximize(config)?;
        Ok((v, ()))
    })?;
    let ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let phi = prep.features.matrix(prep.x.view(), &ls)?;
    let at = laplace_at(&prep.y, &phi)?;
    let (value, ln_tau, ln_s2) = at.maximize(config)?;
    let best = at.evaluate(ln_tau, ln_s2)?;
    let tau = ln_tau.exp();
    let weights = at.spectrum.weights(phi.view(), &best.coeffs)?;
    let variances = best.hessian_diag.mapv(|h| 1.0 / (h + 1.0 / tau)).to_vec();
    let parts = ModelParts {
        lengthscale: ls,
        weights: weights.to_vec(),
        noise_variance: ln_s2.exp(),
        prior_variance: tau,
        covariance: WeightCovariance::Diagonal { variances },
        objective: value,
        log_density_count: prep.n() as f64,
    };
    let scale = sqrt_d * prep.standardizer.x_std[0];
    Ok(FitReport {
        model: build_model(prep, config, Method::LaplaceDiag, None, parts),
        profile: search
            .grid_values
            .iter()
            .map(|&(t, v)| (t.exp() * scale, v))
            .collect(),
        evaluations: search.evaluations,
        kappa: None,
        train_rmse: None,
        warnings: Vec::new(),
    })
}
