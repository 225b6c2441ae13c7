//! ARD: per-dimension lengthscales, by projected L-BFGS over
//! `theta = (ln l_1..l_d, ln tau, ln s_n^2)` on the objective with `q` profiled out
//! ([`crate::hyper`]: one Cholesky per evaluation, exact envelope gradient), started from the
//! isotropic optimum.

use crate::error::Result;
use crate::features::Lengthscale;
use crate::fit::config::RffConfig;
use crate::fit::prepared::Prepared;
use crate::hyper::{HyperObjective, HyperProblem, HyperValue};
use crate::optimize::{LbfgsSettings, lbfgs_maximize};

/// The isotropic optimum an ARD search starts from (standardized units).
pub(crate) struct IsoStart {
    /// The isotropic lengthscale.
    pub lengthscale: f64,
    /// `tau` at it.
    pub tau: f64,
    /// `s_n^2` at it.
    pub noise_variance: f64,
}

/// The ARD optimum.
pub(crate) struct ArdResult {
    pub lengthscale: Lengthscale,
    pub tau: f64,
    pub noise_variance: f64,
    pub value: HyperValue,
    pub evaluations: usize,
}

/// Box bounds of `theta` for `d` inputs.
pub(crate) fn bounds(prep: &Prepared, config: &RffConfig, d: usize) -> (Vec<f64>, Vec<f64>) {
    let shift = prep.sqrt_d().ln();
    let b = &config.noise;
    let mut lower = vec![config.search.lengthscale.lower + shift; d];
    let mut upper = vec![
        config
            .search
            .ard_upper
            .max(config.search.lengthscale.upper + shift);
        d
    ];
    lower.extend([(1e-6f64).ln(), 2.0 * b.min_std.ln()]);
    upper.extend([(1e6f64).ln(), 2.0 * b.max_std.ln()]);
    (lower, upper)
}

/// Maximize `objective` over `theta` from `start`.
pub(crate) fn ard_search(
    prep: &Prepared,
    config: &RffConfig,
    objective: HyperObjective,
    start: &IsoStart,
) -> Result<ArdResult> {
    let d = prep.x.ncols();
    let problem = HyperProblem::new(
        prep.x.view(),
        prep.y.view(),
        &prep.features,
        objective,
        true,
    )?;
    let (lower, upper) = bounds(prep, config, d);
    let mut theta0 = vec![start.lengthscale.ln(); d];
    theta0.extend([start.tau.ln(), start.noise_variance.ln()]);
    let settings = ard_lbfgs(config);
    let r = lbfgs_maximize(
        |t| {
            let v = problem.evaluate(t, true)?;
            Ok((v.value, v.gradient))
        },
        &theta0,
        &lower,
        &upper,
        &settings,
    )?;
    let value = problem.evaluate(&r.argmax, false)?;
    Ok(ArdResult {
        lengthscale: problem.lengthscale(&r.argmax),
        tau: r.argmax[d].exp(),
        noise_variance: r.argmax[d + 1].exp(),
        value,
        evaluations: r.evaluations + 1,
    })
}

/// The same search with one shared lengthscale (used to polish the isotropic optimum when the
/// posterior family has no spectral closed form, i.e. a diagonal `q`).
pub(crate) fn iso_polish(
    prep: &Prepared,
    config: &RffConfig,
    objective: HyperObjective,
    start: &IsoStart,
) -> Result<ArdResult> {
    let problem = HyperProblem::new(
        prep.x.view(),
        prep.y.view(),
        &prep.features,
        objective,
        false,
    )?;
    let (lo, hi) = bounds(prep, config, 1);
    let (mut lower, mut upper) = (lo, hi);
    upper[0] = config.search.lengthscale.upper + prep.sqrt_d().ln();
    lower[0] = lower[0].min(upper[0]);
    let theta0 = [
        start.lengthscale.ln(),
        start.tau.ln(),
        start.noise_variance.ln(),
    ];
    let settings = ard_lbfgs(config);
    let r = lbfgs_maximize(
        |t| {
            let v = problem.evaluate(t, true)?;
            Ok((v.value, v.gradient))
        },
        &theta0,
        &lower,
        &upper,
        &settings,
    )?;
    let value = problem.evaluate(&r.argmax, false)?;
    Ok(ArdResult {
        lengthscale: problem.lengthscale(&r.argmax),
        tau: r.argmax[1].exp(),
        noise_variance: r.argmax[2].exp(),
        value,
        evaluations: r.evaluations + 1,
    })
}

/// The L-BFGS settings of the joint searches: stop at a projected gradient below `1e-3` nats per
/// unit of `ln l`, or when 5 iterations together gain less than `1e-5 (1 + |J|)` nats (for
/// `|J| ~ 400`, 4 millinats: far below what moves a prediction).
fn ard_lbfgs(config: &RffConfig) -> LbfgsSettings {
    LbfgsSettings {
        max_iterations: config.search.ard_iterations as usize,
        gradient_tolerance: 1e-3,
        value_tolerance: 1e-5,
        ..LbfgsSettings::default()
    }
}
