//! ARD: per-dimension lengthscales for the (DE-)ELBO methods, by one round of coordinate-wise
//! global searches from the isotropic optimum and then L-BFGS with the envelope-theorem gradient.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use argmin::core::{CostFunction, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use deelbo_core::Kappa;

use crate::elbo::{ClosedFormElbo, log_lengthscale_gradient};
use crate::error::{Result, RffError};
use crate::features::Lengthscale;
use crate::fit::config::RffConfig;
use crate::fit::prepared::Prepared;
use crate::search::{GridSearch, maximize};
use crate::spectrum::Spectrum;

/// `(theta, -J*(theta), gradient)` of the last evaluation.
type CachedEvaluation = (Vec<f64>, f64, Vec<f64>);

/// `-J*(theta)` and its gradient for argmin, `theta = ln l` per dimension (clamped to the
/// search bounds), with a one-entry cache so cost and gradient share the inner optimization.
struct ArdProblem<'a> {
    prep: &'a Prepared,
    config: &'a RffConfig,
    kappa: Kappa,
    bounds: (f64, f64),
    cache: RefCell<Option<CachedEvaluation>>,
    evaluations: Rc<Cell<usize>>,
}

impl ArdProblem<'_> {
    fn evaluate(&self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        if let Some((t, c, g)) = self.cache.borrow().as_ref()
            && t.as_slice() == theta
        {
            return Ok((*c, g.clone()));
        }
        let clamped: Vec<f64> = theta
            .iter()
            .map(|t| t.clamp(self.bounds.0, self.bounds.1))
            .collect();
        let ls: Vec<f64> = clamped.iter().map(|t| t.exp()).collect();
        let lengthscale = Lengthscale::Ard(ls.clone());
        let fs = self
            .prep
            .features
            .matrix_with_sines(self.prep.x.view(), &lengthscale)?;
        let spectrum = Spectrum::of_features(fs.phi.view(), self.prep.y.view())?;
        let opt = ClosedFormElbo::new(&spectrum, self.kappa, self.config.noise)?
            .maximize(&self.config.ascent)?;
        let m = spectrum.weights(fs.phi.view(), &opt.state.coeffs)?;
        let grad = log_lengthscale_gradient(
            self.prep.x.view(),
            self.prep.features.frequencies(),
            fs.phi.view(),
            fs.sines.view(),
            self.prep.y.view(),
            m.view(),
            opt.state.sigma2,
            opt.state.noise_variance,
            self.kappa.value(),
            &ls,
        );
        // Minimize -J; outside the bounds the clamped coordinate is flat.
        let g: Vec<f64> = grad
            .iter()
            .zip(theta)
            .map(|(g, t)| {
                if *t < self.bounds.0 || *t > self.bounds.1 {
                    0.0
                } else {
                    -g
                }
            })
            .collect();
        self.evaluations.set(self.evaluations.get() + 1);
        *self.cache.borrow_mut() = Some((theta.to_vec(), -opt.objective, g.clone()));
        Ok((-opt.objective, g))
    }
}

fn to_argmin(e: RffError) -> argmin::core::Error {
    argmin::core::Error::msg(e.to_string())
}

impl CostFunction for ArdProblem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        self.evaluate(p).map(|(c, _)| c).map_err(to_argmin)
    }
}

impl Gradient for ArdProblem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Self::Param) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        self.evaluate(p).map(|(_, g)| g).map_err(to_argmin)
    }
}

/// ARD search from the isotropic optimum `t0 = ln(l/sqrt(d))`: one round of coordinate-wise
/// global searches (each `ln l_k` on a 30-point grid over the search range plus golden-section
/// refinement, the others fixed; the objective is jagged, so a gradient method alone stops at the
/// nearest local optimum), then L-BFGS with the envelope-theorem gradient from the best point.
pub(crate) fn ard_search(
    prep: &Prepared,
    config: &RffConfig,
    kappa: Kappa,
    t0: f64,
) -> Result<(Lengthscale, usize)> {
    let shift = prep.sqrt_d().ln();
    let bounds = (
        config.search.lengthscale.lower + shift,
        config.search.lengthscale.upper + shift,
    );
    let counter = Rc::new(Cell::new(0usize));
    let problem = ArdProblem {
        prep,
        config,
        kappa,
        bounds,
        cache: RefCell::new(None),
        evaluations: Rc::clone(&counter),
    };
    let mut theta = vec![t0 + shift; prep.x.ncols()];
    let mut best_cost = problem.evaluate(&theta)?.0;
    let coordinate = GridSearch {
        lower: bounds.0,
        upper: bounds.1,
        grid_points: 30,
        tolerance: config.search.lengthscale.tolerance,
    };
    for k in 0..theta.len() {
        let r = maximize(&coordinate, "ARD lengthscale", |t| {
            let mut trial = theta.clone();
            trial[k] = t;
            Ok((-problem.evaluate(&trial)?.0, ()))
        })?;
        if -r.value < best_cost {
            best_cost = -r.value;
            theta[k] = r.argmax;
        }
    }
    let optimizer_error = |e: argmin::core::Error| RffError::Optimizer {
        name: "ARD lengthscales (L-BFGS)".to_string(),
        reason: e.to_string(),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(1e-6)
        .map_err(optimizer_error)?
        .with_tolerance_cost(1e-10)
        .map_err(optimizer_error)?;
    let start = theta.clone();
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(start).max_iters(config.search.ard_iterations))
        .run();
    // A failed line search keeps the coordinate-search point rather than failing the fit.
    if let Ok(res) = result
        && let Some(p) = res.state.best_param.as_ref()
        && res.state.best_cost < best_cost
    {
        theta = p.clone();
    }
    let ls = theta
        .iter()
        .map(|t| t.clamp(bounds.0, bounds.1).exp())
        .collect();
    Ok((Lengthscale::Ard(ls), counter.get()))
}
