//! What a fit returns: the model and the search diagnostics.

use crate::model::RffModel;

/// What became of the kappa rule a (DE-)ELBO fit asked for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KappaReport {
    /// The rule asked for (`elbo`, `de-elbo`, `de-elbo-half`, `fixed`).
    pub rule: String,
    /// The kappa used.
    pub value: f64,
    /// Whether the rule's value fell below 1 and was raised to 1.
    pub clamped: bool,
    /// Why, when clamped (e.g. "N >= D/2: kappa = 1, the plain ELBO").
    pub reason: Option<String>,
}

/// A fitted model with its search diagnostics.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The model.
    pub model: RffModel,
    /// The profile of the objective over the lengthscale grid: `(l in input units, objective)`
    /// (isotropic search; standardized-target nats).
    pub profile: Vec<(f64, f64)>,
    /// Objective evaluations used by the search (inner optimizations).
    pub evaluations: usize,
    /// The kappa asked for and used (ELBO methods).
    pub kappa: Option<KappaReport>,
    /// The training RMSE of the model's mean in the targets' units, from the spectrum of the
    /// final sums (`sqrt(||y - Phi m||^2/N) y_std`, [`crate::spectrum::Spectrum::residual_sq`]):
    /// no further pass over the rows. `None` for the methods that do not fit through a spectrum
    /// (map-grid, LA-LML).
    pub train_rmse: Option<f64>,
    /// Results that are not learned values: a lengthscale or the noise within 5% of its search
    /// bound, a clamped kappa. Also stored in the model.
    pub warnings: Vec<String>,
}
