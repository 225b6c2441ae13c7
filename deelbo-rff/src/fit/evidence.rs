//! The exact-evidence method (type-II maximum likelihood on the features) and the exact
//! posterior it predicts with.

use ndarray::{Array1, Array2};

use crate::data::RowSource;
use crate::fit::statistics::{final_spectrum, spectrum_rmse};

use crate::error::Result;
use crate::evidence::maximize_evidence;
use crate::features::Lengthscale;
use crate::fit::ard::{IsoStart, ard_search};
use crate::fit::builder::{ModelParts, build_model};
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::fit::report::FitReport;
use crate::hyper::HyperObjective;
use crate::model::WeightCovariance;
use crate::search::maximize_parallel;
use crate::spectrum::Spectrum;
use crate::tridiagonal::TridiagonalProfile;

pub(crate) fn fit(
    prep: &Prepared,
    config: &RffConfig,
    source: Option<&mut dyn RowSource>,
    progress: &mut dyn FnMut(usize),
) -> Result<FitReport> {
    let sqrt_d = prep.sqrt_d();
    let search = maximize_parallel(&config.search.lengthscale, "lengthscale", |t| {
        let phi = prep
            .features
            .matrix(prep.x.view(), &Lengthscale::Isotropic(t.exp() * sqrt_d))?;
        // The same profiled evidence either way; the tridiagonal form skips the eigenvectors.
        let opt = if phi.nrows() <= phi.ncols() {
            let tri = TridiagonalProfile::of_features(phi.view(), prep.y.view())?;
            maximize_evidence(&tri, &config.noise)?
        } else {
            let spectrum = Spectrum::values_of_features(phi.view(), prep.y.view())?;
            maximize_evidence(&spectrum, &config.noise)?
        };
        Ok((opt.log_evidence, ()))
    })?;
    let mut evaluations = search.evaluations;
    let mut ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let mut phi = prep.features.matrix(prep.x.view(), &ls)?;
    let mut spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
    let mut opt = maximize_evidence(&spectrum, &config.noise)?;
    if config.ard {
        let start = IsoStart {
            lengthscale: search.argmax.exp() * sqrt_d,
            tau: opt.tau,
            noise_variance: opt.noise_variance,
        };
        if prep.x.ncols() > 1 {
            let r = ard_search(prep, config, HyperObjective::Evidence, &start)?;
            evaluations += r.evaluations;
            let phi_a = prep.features.matrix(prep.x.view(), &r.lengthscale)?;
            let spectrum_a = Spectrum::of_features(phi_a.view(), prep.y.view())?;
            let opt_a = maximize_evidence(&spectrum_a, &config.noise)?;
            if opt_a.log_evidence >= opt.log_evidence {
                (ls, phi, spectrum, opt) = (r.lengthscale, phi_a, spectrum_a, opt_a);
            }
        }
        if let Lengthscale::Isotropic(l) = ls {
            ls = Lengthscale::Ard(vec![l; prep.x.ncols()]);
        }
    }
    if prep.subsampled {
        // The search ran on a subsample: the final evidence optimum over (tau, s_n) and the
        // posterior from sums over every row.
        let (full, full_phi) = final_spectrum(prep, source, &ls, progress)?;
        opt = maximize_evidence(&full, &config.noise)?;
        spectrum = full;
        phi = full_phi.unwrap_or_else(|| Array2::zeros((0, 0)));
    }
    let train_rmse = spectrum_rmse(
        &spectrum,
        &spectrum.shrunk_coefficients(opt.tau, opt.noise_variance),
        prep,
    );
    let (weights, covariance) =
        exact_posterior_from_spectrum(&spectrum, phi.view(), opt.tau, opt.noise_variance)?;
    let parts = ModelParts {
        lengthscale: ls,
        weights: weights.to_vec(),
        noise_variance: opt.noise_variance,
        prior_variance: opt.tau,
        covariance,
        objective: opt.log_evidence,
        log_density_count: prep.n() as f64,
    };
    Ok(FitReport {
        model: build_model(prep, config, Method::Evidence, None, parts),
        profile: prep.profile_in_input_units(&search.grid_values),
        evaluations,
        kappa: None,
        train_rmse: Some(train_rmse),
        warnings: Vec::new(),
    })
}

/// The exact posterior from a spectrum: mean `m = V m~`,
/// `m~_i = tau c~_i/(tau lambda_i + s_n^2)`, and covariance
/// `S = (Phi^T Phi/s_n^2 + I/tau)^-1 = tau I - B B^T` ([`Spectrum::posterior_factor`]).
pub fn exact_posterior_from_spectrum(
    spectrum: &Spectrum,
    phi: ndarray::ArrayView2<'_, f64>,
    tau: f64,
    noise_variance: f64,
) -> Result<(Array1<f64>, WeightCovariance)> {
    let coeffs = spectrum.shrunk_coefficients(tau, noise_variance);
    let weights = spectrum.weights(phi, &coeffs)?;
    let b = spectrum.posterior_factor(phi, tau, noise_variance)?;
    Ok((
        weights,
        WeightCovariance::LowRank {
            tau,
            rank: b.ncols(),
            factor: b.iter().copied().collect(),
        },
    ))
}
