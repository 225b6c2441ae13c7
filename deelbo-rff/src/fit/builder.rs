//! The one place an [`RffModel`] is assembled from a method's result, so every method labels,
//! scales and stores its model the same way.

use crate::features::Lengthscale;
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::model::{RffModel, WeightCovariance};

/// A method's result in standardized units, before it becomes a model.
pub(crate) struct ModelParts {
    /// Lengthscale(s) on standardized inputs.
    pub lengthscale: Lengthscale,
    /// Weight mean `m` (`R`).
    pub weights: Vec<f64>,
    /// `s_n^2`.
    pub noise_variance: f64,
    /// `tau`.
    pub prior_variance: f64,
    /// The weight covariance used for predictions.
    pub covariance: WeightCovariance,
    /// The maximized objective in standardized-target nats.
    pub objective: f64,
    /// How many per-example log-densities the objective holds (`kappa N` for the ELBO methods,
    /// `N` for the evidence, `1` for a per-point validation NLL): the multiple of `ln y_std`
    /// that converts it to the original target units.
    pub log_density_count: f64,
}

/// Assemble the model of `method` fitted with `config` on `prep`.
pub(crate) fn build_model(
    prep: &Prepared,
    config: &RffConfig,
    method: Method,
    kappa: Option<f64>,
    parts: ModelParts,
) -> RffModel {
    RffModel {
        method: method.name().to_string(),
        kappa,
        seed: config.seed,
        features: config.features,
        lengthscale: parts.lengthscale,
        standardizer: prep.standardizer.clone(),
        weights: parts.weights,
        noise_variance: parts.noise_variance,
        prior_variance: parts.prior_variance,
        covariance: parts.covariance,
        objective: parts.objective - parts.log_density_count * prep.ln_y_scale(),
        kappa_report: None,
        warnings: Vec::new(),
    }
}
