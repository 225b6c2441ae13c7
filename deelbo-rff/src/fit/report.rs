//! What a fit returns: the model and the search diagnostics.

pub use crate::model::KappaReport;
use crate::model::RffModel;

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
