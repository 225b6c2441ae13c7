//! What a fit returns: the model and the search diagnostics.

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
}
