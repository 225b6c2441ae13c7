//! The exact-evidence method (type-II maximum likelihood on the features) and the exact
//! posterior it predicts with.

use ndarray::Array1;

use crate::error::Result;
use crate::evidence::maximize_evidence;
use crate::features::Lengthscale;
use crate::fit::builder::{ModelParts, build_model};
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::fit::report::FitReport;
use crate::model::WeightCovariance;
use crate::search::maximize;
use crate::spectrum::Spectrum;

pub(crate) fn fit(prep: &Prepared, config: &RffConfig) -> Result<FitReport> {
    let sqrt_d = prep.sqrt_d();
    let search = maximize(&config.search.lengthscale, "lengthscale", |t| {
        let phi = prep
            .features
            .matrix(prep.x.view(), &Lengthscale::Isotropic(t.exp() * sqrt_d))?;
        let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
        let opt = maximize_evidence(&spectrum, &config.noise)?;
        Ok((opt.log_evidence, ()))
    })?;
    let ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let phi = prep.features.matrix(prep.x.view(), &ls)?;
    let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
    let opt = maximize_evidence(&spectrum, &config.noise)?;
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
        evaluations: search.evaluations,
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
