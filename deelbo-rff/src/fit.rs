//! Fitting an RFF regression model: the method, its settings, and the lengthscale search shared
//! by every method (a global grid over `t = ln(l/sqrt(d))` plus golden-section refinement; for
//! ARD, L-BFGS from the best isotropic lengthscale with the envelope-theorem gradient).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use argmin::core::{CostFunction, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use deelbo_core::{Kappa, KappaRule};
use ndarray::{Array1, Array2};

use crate::data::{Dataset, Standardizer};
use crate::elbo::{AscentSettings, ClosedFormElbo, ElboState, log_lengthscale_gradient};
use crate::error::{Result, RffError};
use crate::evidence::{NoiseBounds, maximize_evidence};
use crate::features::{Lengthscale, RffFeatures};
use crate::map_grid::MapGridSettings;
use crate::model::{RffModel, WeightCovariance};
use crate::search::{GridSearch, maximize};
use crate::spectrum::Spectrum;

/// How the hyperparameters are learned. What each maximizes (the model's `objective`):
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The closed-form `J_kappa` (DESIGN.md §3) with the given kappa rule: `Standard` is the
    /// plain ELBO, `DataEmphasized` (`D/N`, `D = R`) and `HalfDataEmphasized` (`D/(2N)`) the
    /// DE-ELBO, `Fixed(k)` any `k >= 1`. Learns `l, tau, s_n, m, sigma`.
    Elbo(KappaRule),
    /// Type-II maximum likelihood: the exact log evidence `ln p(y | l, tau, s_n)`; predicts with
    /// the exact posterior.
    Evidence,
    /// MAP weights with `(l, tau, s_n)` chosen by validation NLL on an 80/20 split, refit on all
    /// data; `objective` is minus the selected validation NLL per point. Predicts with the noise
    /// alone (a point estimate).
    MapGrid,
    /// The diagonal empirical-Fisher Laplace evidence (LA-LML) at the MAP weights; predicts with
    /// the noise alone.
    LaplaceDiag,
}

impl Method {
    /// The name used in tables, JSON and model files.
    pub fn name(&self) -> String {
        match self {
            Method::Elbo(KappaRule::Standard) => "elbo".to_string(),
            Method::Elbo(KappaRule::DataEmphasized) => "de-elbo".to_string(),
            Method::Elbo(KappaRule::HalfDataEmphasized) => "de-elbo-half".to_string(),
            Method::Elbo(KappaRule::Fixed(_)) => "de-elbo-fixed".to_string(),
            Method::Evidence => "evidence".to_string(),
            Method::MapGrid => "map-grid".to_string(),
            Method::LaplaceDiag => "la-lml".to_string(),
        }
    }
}

/// Everything a fit needs besides the data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FitConfig {
    /// The method.
    pub method: Method,
    /// `R`, the number of random features.
    pub features: usize,
    /// Seed of the random features (and of the MAP split).
    pub seed: u64,
    /// Per-dimension lengthscales (ELBO methods only).
    pub ard: bool,
    /// Search over `t = ln(l/sqrt(d))` on standardized inputs.
    pub lengthscale_search: GridSearch,
    /// Bounds on the noise standard deviation (standardized targets).
    pub noise_bounds: NoiseBounds,
    /// Coordinate-ascent settings of the ELBO methods.
    pub ascent: AscentSettings,
    /// Grids of the MAP baseline.
    pub map_grid: MapGridSettings,
    /// Standardize inputs and targets (recommended; the demo does too).
    pub standardize: bool,
    /// L-BFGS iterations for ARD.
    pub ard_iterations: u64,
}

/// The default lengthscale search: `l/sqrt(d)` in `[0.01, 10]`, 90 grid points, refined to
/// `1e-4` in `ln l`.
pub const DEFAULT_LENGTHSCALE_SEARCH: GridSearch = GridSearch {
    lower: -2.0 * std::f64::consts::LN_10,
    upper: std::f64::consts::LN_10,
    grid_points: 90,
    tolerance: 1e-4,
};

impl FitConfig {
    /// Defaults for `method`: `R = 1024`, seed 0, isotropic, [`DEFAULT_LENGTHSCALE_SEARCH`],
    /// default noise bounds, ascent and MAP grids, standardized.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            features: 1024,
            seed: 0,
            ard: false,
            lengthscale_search: DEFAULT_LENGTHSCALE_SEARCH,
            noise_bounds: NoiseBounds::default(),
            ascent: AscentSettings::default(),
            map_grid: MapGridSettings::default(),
            standardize: true,
            ard_iterations: 100,
        }
    }

    /// Set `R`.
    pub fn with_features(mut self, r: usize) -> Self {
        self.features = r;
        self
    }

    /// Set the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turn ARD on or off.
    pub fn with_ard(mut self, ard: bool) -> Self {
        self.ard = ard;
        self
    }

    /// Set the lengthscale search.
    pub fn with_lengthscale_search(mut self, search: GridSearch) -> Self {
        self.lengthscale_search = search;
        self
    }

    /// Set the MAP grids.
    pub fn with_map_grid(mut self, grid: MapGridSettings) -> Self {
        self.map_grid = grid;
        self
    }
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
}

/// Standardized data and features shared by the methods.
pub(crate) struct Prepared {
    pub x: Array2<f64>,
    pub y: Array1<f64>,
    pub standardizer: Standardizer,
    pub features: RffFeatures,
}

impl Prepared {
    pub(crate) fn new(data: &Dataset, config: &FitConfig) -> Result<Self> {
        let standardizer = if config.standardize {
            Standardizer::fit(data)
        } else {
            Standardizer::identity(data.dim())
        };
        let x = standardizer.transform_x(data.x())?;
        let y = standardizer.transform_y(data.y());
        let features = RffFeatures::new(config.seed, config.features, data.dim())?;
        Ok(Self {
            x,
            y,
            standardizer,
            features,
        })
    }

    pub(crate) fn n(&self) -> usize {
        self.y.len()
    }

    pub(crate) fn sqrt_d(&self) -> f64 {
        (self.x.ncols() as f64).sqrt()
    }

    /// `ln y_std`, the per-example log-density shift from standardized to original targets.
    pub(crate) fn ln_y_scale(&self) -> f64 {
        self.standardizer.y_std.ln()
    }
}

/// Fit a model to `data`.
pub fn fit(data: &Dataset, config: &FitConfig) -> Result<FitReport> {
    config.noise_bounds.validate()?;
    config.lengthscale_search.validate("lengthscale search")?;
    if config.ard && !matches!(config.method, Method::Elbo(_)) {
        return Err(RffError::InvalidConfig {
            what: "ard".to_string(),
            message: format!(
                "per-dimension lengthscales are supported by the (DE-)ELBO methods, not {}",
                config.method.name()
            ),
        });
    }
    let prep = Prepared::new(data, config)?;
    match config.method {
        Method::Elbo(rule) => fit_elbo(&prep, config, rule),
        Method::Evidence => fit_evidence(&prep, config),
        Method::MapGrid => crate::map_grid::fit(&prep, config),
        Method::LaplaceDiag => crate::laplace::fit(&prep, config),
    }
}

/// The inner ELBO optimum at one lengthscale.
struct ElboAt {
    phi: Array2<f64>,
    spectrum: Spectrum,
    state: ElboState,
    objective: f64,
}

fn elbo_at(prep: &Prepared, config: &FitConfig, kappa: Kappa, ls: &Lengthscale) -> Result<ElboAt> {
    let phi = prep.features.matrix(prep.x.view(), ls)?;
    let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
    let opt =
        ClosedFormElbo::new(&spectrum, kappa, config.noise_bounds)?.maximize(&config.ascent)?;
    Ok(ElboAt {
        phi,
        spectrum,
        state: opt.state,
        objective: opt.objective,
    })
}

fn profile_in_input_units(prep: &Prepared, grid: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let scale = prep.sqrt_d() * prep.standardizer.x_std[0];
    grid.iter().map(|&(t, v)| (t.exp() * scale, v)).collect()
}

fn fit_elbo(prep: &Prepared, config: &FitConfig, rule: KappaRule) -> Result<FitReport> {
    let kappa = rule.resolve(config.features, prep.n())?;
    let sqrt_d = prep.sqrt_d();
    let search = maximize(&config.lengthscale_search, "lengthscale", |t| {
        let at = elbo_at(
            prep,
            config,
            kappa,
            &Lengthscale::Isotropic(t.exp() * sqrt_d),
        )?;
        Ok((at.objective, ()))
    })?;
    let mut evaluations = search.evaluations;
    let mut ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let mut at = elbo_at(prep, config, kappa, &ls)?;
    if config.ard && prep.x.ncols() > 1 {
        let (ard_ls, evals) = ard_search(prep, config, kappa, search.argmax)?;
        evaluations += evals;
        let ard_at = elbo_at(prep, config, kappa, &ard_ls)?;
        if ard_at.objective >= at.objective {
            at = ard_at;
            ls = ard_ls;
        }
    } else if config.ard {
        ls = Lengthscale::Ard(vec![search.argmax.exp() * sqrt_d]);
    }
    let weights = at.spectrum.weights(at.phi.view(), &at.state.coeffs)?;
    let k = kappa.value();
    let model = RffModel {
        method: match rule {
            KappaRule::Fixed(_) => "de-elbo".to_string(),
            _ => Method::Elbo(rule).name(),
        },
        kappa: Some(k),
        seed: config.seed,
        features: config.features,
        lengthscale: ls,
        standardizer: prep.standardizer.clone(),
        weights: weights.to_vec(),
        noise_variance: at.state.noise_variance,
        prior_variance: at.state.tau,
        covariance: WeightCovariance::Isotropic {
            sigma2: at.state.sigma2,
        },
        objective: at.objective - k * prep.n() as f64 * prep.ln_y_scale(),
    };
    Ok(FitReport {
        model,
        profile: profile_in_input_units(prep, &search.grid_values),
        evaluations,
    })
}

/// `(theta, -J*(theta), gradient)` of the last evaluation.
type CachedEvaluation = (Vec<f64>, f64, Vec<f64>);

/// `-J*(theta)` and its gradient for argmin, `theta = ln l` per dimension (clamped to the
/// search bounds), with a one-entry cache so cost and gradient share the inner optimization.
struct ArdProblem<'a> {
    prep: &'a Prepared,
    config: &'a FitConfig,
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
        let opt = ClosedFormElbo::new(&spectrum, self.kappa, self.config.noise_bounds)?
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
fn ard_search(
    prep: &Prepared,
    config: &FitConfig,
    kappa: Kappa,
    t0: f64,
) -> Result<(Lengthscale, usize)> {
    let shift = prep.sqrt_d().ln();
    let bounds = (
        config.lengthscale_search.lower + shift,
        config.lengthscale_search.upper + shift,
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
        tolerance: config.lengthscale_search.tolerance,
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
        what: "ARD lengthscales (L-BFGS)".to_string(),
        message: e.to_string(),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(1e-6)
        .map_err(optimizer_error)?
        .with_tolerance_cost(1e-10)
        .map_err(optimizer_error)?;
    let start = theta.clone();
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(start).max_iters(config.ard_iterations))
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

fn fit_evidence(prep: &Prepared, config: &FitConfig) -> Result<FitReport> {
    let sqrt_d = prep.sqrt_d();
    let search = maximize(&config.lengthscale_search, "lengthscale", |t| {
        let phi = prep
            .features
            .matrix(prep.x.view(), &Lengthscale::Isotropic(t.exp() * sqrt_d))?;
        let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
        let opt = maximize_evidence(&spectrum, &config.noise_bounds)?;
        Ok((opt.log_evidence, ()))
    })?;
    let ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let phi = prep.features.matrix(prep.x.view(), &ls)?;
    let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
    let opt = maximize_evidence(&spectrum, &config.noise_bounds)?;
    let (weights, covariance) =
        exact_posterior_from_spectrum(&spectrum, phi.view(), opt.tau, opt.noise_variance)?;
    let model = RffModel {
        method: Method::Evidence.name(),
        kappa: None,
        seed: config.seed,
        features: config.features,
        lengthscale: ls,
        standardizer: prep.standardizer.clone(),
        weights: weights.to_vec(),
        noise_variance: opt.noise_variance,
        prior_variance: opt.tau,
        covariance,
        objective: opt.log_evidence - prep.n() as f64 * prep.ln_y_scale(),
    };
    Ok(FitReport {
        model,
        profile: profile_in_input_units(prep, &search.grid_values),
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
