//! The MAP + grid-search baseline: split the training set 80/20 (seeded), fit the MAP weights
//! (the ridge solution `w = (Phi^T Phi + (s_n^2/tau) I)^-1 Phi^T y`) on the 80 % for every grid
//! point `(l, tau, s_n)`, score the predictive `N(phi^T w, s_n^2)` by mean NLL on the 20 %, and
//! refit the winner on all the data.
//!
//! The grid has three axes, lengthscale x prior variance x noise level: the MAP weights depend
//! on `s_n^2/tau`, and the validation NLL needs the noise level itself as the predictive
//! spread (a point estimate has no other).

use deelbo_core::{NoiseKey, uniform_at};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::{Result, RffError};
use crate::evidence::LN_2PI;
use crate::features::Lengthscale;
use crate::fit::builder::{ModelParts, build_model};
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::fit::report::FitReport;
use crate::model::WeightCovariance;
use crate::search::GridSearch;
use crate::spectrum::Spectrum;

/// Noise stream of the train/validation split.
pub const SPLIT_STREAM: u64 = 0x5350_4c54;

/// The seeded split: indices sorted by a uniform key per example; the first
/// `N - round(f N)` are training, the rest validation. Both parts keep at least 1 example (2
/// for training).
pub fn split(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if n < 5 {
        return Err(RffError::TooFewExamples {
            required: 5,
            found: n,
        });
    }
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(RffError::InvalidConfig {
            name: "validation fraction".to_string(),
            reason: format!("must be in (0, 1), got {fraction}"),
        });
    }
    let key = NoiseKey::new(seed, SPLIT_STREAM);
    let mut order: Vec<(f64, usize)> = (0..n).map(|i| (uniform_at(key, i as u64), i)).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_val = ((fraction * n as f64).round() as usize).clamp(1, n - 2);
    let idx: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
    let (train, val) = idx.split_at(n - n_val);
    Ok((train.to_vec(), val.to_vec()))
}

/// The validation NLL of the MAP weights fitted on one split, for any `(tau, s_n^2)` at one
/// lengthscale (the training spectrum and the validation projections are formed once).
struct ValidationScorer<'a> {
    spectrum: Spectrum,
    /// Validation features times the training right singular vectors (`N_val x k_active`).
    projected: Array2<f64>,
    active: Vec<usize>,
    y_val: ArrayView1<'a, f64>,
}

impl<'a> ValidationScorer<'a> {
    fn new(
        phi_train: ArrayView2<'_, f64>,
        y_train: ArrayView1<'_, f64>,
        phi_val: ArrayView2<'_, f64>,
        y_val: ArrayView1<'a, f64>,
    ) -> Result<Self> {
        let spectrum = Spectrum::of_features(phi_train, y_train)?;
        let (v, active) = spectrum.right_singular_vectors(phi_train)?;
        Ok(Self {
            projected: phi_val.dot(&v),
            spectrum,
            active,
            y_val,
        })
    }

    fn nll(&self, tau: f64, s2: f64) -> f64 {
        let coeffs = self.spectrum.shrunk_coefficients(tau, s2);
        let active = Array1::from_iter(self.active.iter().map(|&i| coeffs[i]));
        let pred = self.projected.dot(&active);
        deelbo_core::deterministic_sum(
            self.y_val
                .iter()
                .zip(pred.iter())
                .map(|(y, f)| 0.5 * (LN_2PI + s2.ln()) + (y - f) * (y - f) / (2.0 * s2)),
        ) / self.y_val.len().max(1) as f64
    }
}

/// The mean validation NLL that the map-grid search minimizes at one grid point: the MAP
/// (ridge) weights fitted on `(phi_train, y_train)` at prior variance `tau` and noise variance
/// `s2`, scored on `(phi_val, y_val)` with the predictive `N(phi^T w, s2)`.
///
/// # Formula
/// `w = (Phi_t^T Phi_t + (s2/tau) I)^-1 Phi_t^T y_t`,
/// `NLL = 1/N_v sum_v [1/2 ln(2 pi s2) + (y_v - phi_v^T w)^2/(2 s2)]`.
pub fn map_validation_nll(
    phi_train: ArrayView2<'_, f64>,
    y_train: ArrayView1<'_, f64>,
    phi_val: ArrayView2<'_, f64>,
    y_val: ArrayView1<'_, f64>,
    tau: f64,
    s2: f64,
) -> Result<f64> {
    deelbo_core::check::positive("tau", tau)?;
    deelbo_core::check::positive("noise variance", s2)?;
    if phi_val.ncols() != phi_train.ncols() || phi_val.nrows() != y_val.len() {
        return Err(RffError::Shape {
            name: "validation features (N_val x R, one target per row)".to_string(),
            expected: phi_train.ncols(),
            found: phi_val.ncols(),
        });
    }
    Ok(ValidationScorer::new(phi_train, y_train, phi_val, y_val)?.nll(tau, s2))
}

pub(crate) fn fit(prep: &Prepared, config: &RffConfig) -> Result<FitReport> {
    let g = &config.map_grid;
    g.validate()?;
    let (train, val) = split(prep.n(), g.validation_fraction, config.seed)?;
    let x_tr = prep.x.select(Axis(0), &train);
    let y_tr = prep.y.select(Axis(0), &train);
    let x_va = prep.x.select(Axis(0), &val);
    let y_va = prep.y.select(Axis(0), &val);
    let sqrt_d = prep.sqrt_d();
    let ls_grid = if g.lengthscale_points == 1 {
        vec![0.5 * (config.search.lengthscale.lower + config.search.lengthscale.upper)]
    } else {
        GridSearch {
            grid_points: g.lengthscale_points,
            ..config.search.lengthscale
        }
        .grid()
    };
    // (validation NLL, lengthscale, tau, s_n^2)
    let mut best = (f64::INFINITY, f64::NAN, f64::NAN, f64::NAN);
    let mut profile = Vec::with_capacity(ls_grid.len());
    for &t in &ls_grid {
        let ls = Lengthscale::Isotropic(t.exp() * sqrt_d);
        let phi_tr = prep.features.matrix(x_tr.view(), &ls)?;
        let phi_va = prep.features.matrix(x_va.view(), &ls)?;
        let scorer = ValidationScorer::new(phi_tr.view(), y_tr.view(), phi_va.view(), y_va.view())?;
        let mut best_here = f64::INFINITY;
        for &tau in &g.prior_variances {
            for &sn in &g.noise_stds {
                let s2 = sn * sn;
                let nll = scorer.nll(tau, s2);
                if nll < best_here {
                    best_here = nll;
                }
                if nll < best.0 {
                    best = (nll, t, tau, s2);
                }
            }
        }
        profile.push((t.exp() * sqrt_d * prep.standardizer.x_std[0], -best_here));
    }
    let (nll, t, tau, s2) = best;
    if !nll.is_finite() {
        return Err(RffError::Optimizer {
            name: "MAP grid search".to_string(),
            reason: "no grid point gave a finite validation NLL".to_string(),
        });
    }
    let ls = Lengthscale::Isotropic(t.exp() * sqrt_d);
    let phi = prep.features.matrix(prep.x.view(), &ls)?;
    let sp = Spectrum::of_features(phi.view(), prep.y.view())?;
    let weights = sp.weights(phi.view(), &sp.shrunk_coefficients(tau, s2))?;
    let parts = ModelParts {
        lengthscale: ls,
        weights: weights.to_vec(),
        noise_variance: s2,
        prior_variance: tau,
        covariance: WeightCovariance::Point,
        objective: -nll,
        log_density_count: 1.0,
    };
    Ok(FitReport {
        model: build_model(prep, config, Method::MapGrid, None, parts),
        profile,
        evaluations: ls_grid.len() * g.prior_variances.len() * g.noise_stds.len(),
        kappa: None,
        train_rmse: None,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_seeded_partition() {
        let (tr, va) = split(20, 0.2, 3).unwrap();
        assert_eq!((tr.len(), va.len()), (16, 4));
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(split(20, 0.2, 3).unwrap(), (tr.clone(), va.clone()));
        assert_ne!(split(20, 0.2, 4).unwrap().1, va);
        assert!(split(4, 0.2, 0).is_err());
    }
}
