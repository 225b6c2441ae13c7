//! Fitting an RFF regression model. Arrows point down only:
//!
//! ```text
//! mod.rs        fit(): validate, prepare, dispatch
//!  ├ elbo.rs, evidence.rs, map_grid.rs, laplace.rs    one method each
//!  │   └ ard.rs                                       per-dimension lengthscales (ELBO)
//!  ├ builder.rs  the one place a model is assembled
//!  ├ prepared.rs standardized data + seeded features
//!  ├ report.rs   FitReport
//!  └ config.rs   Method, RffConfig and its settings
//! ```
//!
//! Every method shares the lengthscale search: a global grid over `t = ln(l/sqrt(d))` plus
//! golden-section refinement; for ARD, L-BFGS from the best isotropic lengthscale with the
//! envelope-theorem gradient.

mod ard;
mod builder;
pub mod config;
mod elbo;
mod evidence;
mod laplace;
pub mod map_grid;
mod prepared;
mod report;

pub use config::{DEFAULT_LENGTHSCALE_SEARCH, Method, RffConfig, SearchSettings};
pub use evidence::exact_posterior_from_spectrum;
pub use map_grid::MapGridSettings;
pub use report::FitReport;

use crate::data::Dataset;
use crate::error::Result;
use prepared::Prepared;

/// Fit a model to `data` with `config` (validated first).
pub fn fit(data: &Dataset, config: &RffConfig) -> Result<FitReport> {
    config.validate()?;
    let prep = Prepared::new(data, config)?;
    match config.method {
        Method::Elbo(rule) => elbo::fit(&prep, config, rule),
        Method::Evidence => evidence::fit(&prep, config),
        Method::MapGrid => map_grid::fit(&prep, config),
        Method::LaplaceDiag => laplace::fit(&prep, config),
    }
}
