//! ARD: per-dimension lengthscales, by projected L-BFGS over
//! `theta = (ln l_1..l_d, ln tau, ln s_n^2)` on the objective with `q` profiled out
//! ([`crate::hyper`]: one Cholesky per evaluation, exact envelope gradient), started from the
//! isotropic optimum.

use crate::error::Result;
use crate::features::Lengthscale;
use crate::fit::config::RffConfig;
use crate::fit::prepared::Prepared;
use crate::hyper::{HyperObjective, HyperProblem, HyperValue};
use crate::optimize::{LbfgsResult, LbfgsSettings, lbfgs_maximize};

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
    let (r, value) = climb(&problem, &theta0, &lower, &upper, &ard_lbfgs(config))?;
    Ok(ArdResult {
        lengthscale: problem.lengthscale(&r.argmax),
        tau: r.argmax[d].exp(),
        noise_variance: r.argmax[d + 1].exp(),
        value,
        evaluations: r.evaluations,
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
    let (r, value) = climb(&problem, &theta0, &lower, &upper, &ard_lbfgs(config))?;
    Ok(ArdResult {
        lengthscale: problem.lengthscale(&r.argmax),
        tau: r.argmax[1].exp(),
        noise_variance: r.argmax[2].exp(),
        value,
        evaluations: r.evaluations,
    })
}

/// L-BFGS on `problem` from `theta0`, with the profiled posterior at the optimum: the
/// evaluation whose point is the returned `argmax` (the search only ever moves to a better
/// point, so that is the best one seen), evaluated once more only if it was not kept.
fn climb(
    problem: &HyperProblem<'_>,
    theta0: &[f64],
    lower: &[f64],
    upper: &[f64],
    settings: &LbfgsSettings,
) -> Result<(LbfgsResult, HyperValue)> {
    let mut best: Option<(Vec<f64>, HyperValue)> = None;
    let r = lbfgs_maximize(
        |t| {
            let v = problem.evaluate(t, true)?;
            let out = (v.value, v.gradient.clone());
            if best.as_ref().is_none_or(|(_, b)| v.value > b.value) {
                best = Some((t.to_vec(), v));
            }
            Ok(out)
        },
        theta0,
        lower,
        upper,
        settings,
    )?;
    match best {
        Some((theta, value)) if theta == r.argmax => Ok((r, value)),
        _ => {
            let value = problem.evaluate(&r.argmax, false)?;
            let r = LbfgsResult {
                evaluations: r.evaluations + 1,
                ..r
            };
            Ok((r, value))
        }
    }
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
