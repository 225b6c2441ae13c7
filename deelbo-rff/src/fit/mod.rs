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
mod statistics;

pub use config::MapGridSettings;
pub use config::{DEFAULT_LENGTHSCALE_SEARCH, Method, RffConfig, SearchSettings};
pub use evidence::exact_posterior_from_spectrum;
pub use laplace::laplace_log_marginal;
pub use map_grid::map_validation_nll;
pub use prepared::SUBSAMPLE_STREAM;
pub use report::{FitReport, KappaReport};

use deelbo_core::KappaRule;

use crate::data::{Dataset, RowSource};
use crate::error::Result;
use crate::features::Lengthscale;
use crate::model::RffModel;
use prepared::Prepared;

/// Fit a model to `data` with `config` (validated first). With more rows than
/// `config.search.max_rows`, the ELBO and evidence methods search the hyperparameters on a seeded
/// subsample and build the final model from sums over every row.
pub fn fit(data: &Dataset, config: &RffConfig) -> Result<FitReport> {
    config.validate()?;
    config.check_memory(data.len(), data.dim(), true)?;
    let searchable = matches!(config.method, Method::Elbo(_) | Method::Evidence);
    if searchable && data.len() > config.search.max_rows {
        let mut rows = data.clone();
        return fit_source(&mut rows, config, &mut |_, _| {});
    }
    let prep = Prepared::new(data, config)?;
    let report = match config.method {
        Method::Elbo(rule) => elbo::fit(&prep, config, rule, None, &mut |_| {}),
        Method::Evidence => evidence::fit(&prep, config, None, &mut |_| {}),
        Method::MapGrid => map_grid::fit(&prep, config),
        Method::LaplaceDiag => laplace::fit(&prep, config),
    }?;
    finish(report, &prep, config)
}

/// The stages of a streaming fit, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The first pass: standardization and the search subsample.
    Reading,
    /// The hyperparameter search on the subsample (rows = subsample size).
    Searching,
    /// The second pass: the final model's sums over every row.
    Summing,
}

/// Fit from rows read block by block (two passes: standardization + search subsample, then the
/// final sums `Phi^T Phi`, `Phi^T y`, `y^T y` accumulated tile by tile,
/// [`crate::linalg::GramAccumulator`]), in `O(R^2 + max_rows R + block R)` memory whatever `N`.
/// The report's `train_rmse` comes from those sums (no third pass). `progress(stage, rows)`
/// reports rows read so far. The ELBO and evidence methods only (the baselines need every row
/// in memory).
pub fn fit_source(
    source: &mut dyn RowSource,
    config: &RffConfig,
    progress: &mut dyn FnMut(Stage, usize),
) -> Result<FitReport> {
    config.validate()?;
    if !matches!(config.method, Method::Elbo(_) | Method::Evidence) {
        return Err(crate::error::RffError::InvalidConfig {
            name: "method".to_string(),
            reason: format!(
                "{} needs every row in memory; streaming fits support the ELBO and evidence methods",
                config.method.name()
            ),
        });
    }
    // Rows are streamed: the estimate does not depend on N beyond the search subsample.
    config.check_memory(config.search.max_rows, source.dim(), false)?;
    let prep = Prepared::from_source(source, config, config.search.max_rows, &mut |n| {
        progress(Stage::Reading, n)
    })?;
    progress(Stage::Searching, prep.y.len());
    let mut summing = |n| progress(Stage::Summing, n);
    let report = match config.method {
        Method::Elbo(rule) => elbo::fit(&prep, config, rule, Some(source), &mut summing),
        _ => evidence::fit(&prep, config, Some(source), &mut summing),
    }?;
    finish(report, &prep, config)
}

/// Attach the kappa report and the warnings.
fn finish(mut report: FitReport, prep: &Prepared, config: &RffConfig) -> Result<FitReport> {
    if let Method::Elbo(rule) = config.method {
        report.kappa = Some(kappa_report(rule, config.features, prep.n())?);
    }
    let mut warnings = Vec::new();
    if let Some(KappaReport {
        clamped: true,
        reason: Some(reason),
        ..
    }) = &report.kappa
    {
        warnings.push(format!("kappa clamped: {reason}"));
    }
    warnings.extend(bound_warnings(&report.model, config, prep));
    report.model.kappa_report = report.kappa.clone();
    report.model.warnings = warnings.clone();
    report.warnings = warnings;
    Ok(report)
}

/// The kappa a rule gives for `D = R` features and `N` examples, and why it was clamped.
pub fn kappa_report(rule: KappaRule, features: usize, examples: usize) -> Result<KappaReport> {
    let k = rule.resolve(features, examples)?;
    let reason = k.clamped().then(|| match rule {
        KappaRule::DataEmphasized => {
            format!("N = {examples} >= D = {features}: D/N < 1, so kappa = 1, the plain ELBO")
        }
        _ => format!(
            "N = {examples} >= D/2 = {}: D/(2N) < 1, so kappa = 1, the plain ELBO",
            features as f64 / 2.0
        ),
    });
    Ok(KappaReport {
        rule: rule.name().to_string(),
        value: k.value(),
        clamped: k.clamped(),
        reason,
    })
}

/// Relative closeness to a search bound that counts as "at the bound".
pub const BOUND_MARGIN: f64 = 0.05;

/// A warning for every lengthscale and for the noise that ended within [`BOUND_MARGIN`] (5%) of
/// its search bound: such a value was not learned, the search ran out of room.
fn bound_warnings(model: &RffModel, config: &RffConfig, prep: &Prepared) -> Vec<String> {
    let mut out = Vec::new();
    let d = prep.x.ncols();
    let sqrt_d = prep.sqrt_d();
    let lower = config.search.lengthscale.lower.exp() * sqrt_d;
    let iso_upper = config.search.lengthscale.upper.exp() * sqrt_d;
    let near = |v: f64, b: f64| (v / b).ln().abs() <= BOUND_MARGIN.ln_1p();
    match &model.lengthscale {
        Lengthscale::Isotropic(l) => {
            if near(*l, lower) {
                out.push(format!(
                    "the lengthscale ended at the lower end of its search ({:.4} standardized = 0.01 sqrt(d)): not learned, the data would like it shorter",
                    lower
                ));
            } else if near(*l, iso_upper) {
                out.push(format!(
                    "the lengthscale ended at the upper end of its search ({:.4} standardized = 10 sqrt(d)): not learned, the data would like it longer (a near-constant fit)",
                    iso_upper
                ));
            }
        }
        Lengthscale::Ard(ls) => {
            let upper = config.search.ard_upper.exp().max(iso_upper);
            for (k, l) in ls.iter().enumerate().take(d) {
                if near(*l, lower) {
                    out.push(format!(
                        "the lengthscale of input {k} ended at the lower end of its search ({lower:.4} standardized): not learned"
                    ));
                } else if ls.len() > 1 && near(*l, upper) {
                    out.push(format!(
                        "the lengthscale of input {k} ended at the upper end of its search ({upper:.4} standardized): the model does not use this input"
                    ));
                }
            }
        }
    }
    let s = model.noise_variance.sqrt();
    if near(s, config.noise.min_std) {
        out.push(format!(
            "the noise std ended at its lower bound ({} standardized): not learned, the fit interpolates",
            config.noise.min_std
        ));
    } else if near(s, config.noise.max_std) {
        out.push(format!(
            "the noise std ended at its upper bound ({} standardized): not learned",
            config.noise.max_std
        ));
    }
    out
}
