//! The paper's GP/RFF experiment (its Fig. 2 and kappa sweep) as a library protocol, so the CLI
//! only prints and plots and the tests can check the same numbers.
//!
//! Data: `N = 20`, `x ~ N(0, 1)`, `y = sin(3x) + 0.1 eps`, `eps ~ N(0, 1)`, from the core's
//! counter-based noise with a fixed seed; 1000 test points from the same distribution. `R = 1024`
//! features. Methods: MAP + grid search, plain ELBO (kappa = 1), DE-ELBO at `D/N = 51.2` and at
//! `D/(2N) = 25.6`, exact evidence (type-II ML), diagonal Laplace (LA-LML), and the exact RBF GP;
//! then the kappa sweep `{1, 6, 25.6, 51.2, 181, 1024}`.

use std::time::Instant;

use deelbo_core::KappaRule;
use deelbo_core::{NoiseKey, normal_at};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::Result;
use crate::fit::{DEFAULT_LENGTHSCALE_SEARCH, Method, RffConfig, fit};
use crate::gp::fit_gp;
use crate::metrics::{gaussian_nll, rmse};
use crate::model::{FitSummary, Prediction};
use crate::search::GridSearch;

/// Noise streams of the demo data: training inputs, training noise, test inputs, test noise.
pub const DATA_STREAMS: [u64; 4] = [0x4441_5400, 0x4441_5401, 0x4441_5402, 0x4441_5403];

/// Settings of the demo, checked by [`DemoConfig::validate`] in [`demo_data`] and
/// [`run_demo`].
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `seed` | 0 | any | seed of the training and test data |
/// | `feature_seed` | 0 | any | seed of the random features |
/// | `n_train` | 20 | `>= 5` | training examples (the MAP baseline's 80/20 split needs 5) |
/// | `n_test` | 1000 | `>= 2` | test examples |
/// | `noise_std` | 0.1 | `> 0`, finite | noise standard deviation of the data |
/// | `features` | 1024 | `>= 1` | `R` |
/// | `kappa_sweep` | `{1, 6, 25.6, 51.2, 181, 1024}` | each `>= 1`, finite | the kappas of the sweep |
/// | `lengthscale_search` | 121-point grid + Brent | see [`GridSearch`] | lengthscale search of every method |
/// | `curve_points` | 301 | `>= 2` | points of the plotted curves |
/// | `curve_range` | `(-3.3, 3.3)` | finite, `lo < hi` | plot window |
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DemoConfig {
    /// Seed of the data.
    pub seed: u64,
    /// Seed of the random features.
    pub feature_seed: u64,
    /// Training examples `N` (20).
    pub n_train: usize,
    /// Test examples (1000).
    pub n_test: usize,
    /// Noise standard deviation of the data (0.1).
    pub noise_std: f64,
    /// `R` (1024).
    pub features: usize,
    /// The kappa sweep (`{1, 6, 25.6, 51.2, 181, 1024}`).
    pub kappa_sweep: Vec<f64>,
    /// Lengthscale search of every method.
    pub lengthscale_search: GridSearch,
    /// Points of the plotted curves on `[-3.3, 3.3]`.
    pub curve_points: usize,
    /// Plot window.
    pub curve_range: (f64, f64),
}

impl Default for DemoConfig {
    /// The paper's configuration (seed 0, feature seed 0) with a 121-point lengthscale grid.
    fn default() -> Self {
        Self {
            seed: 0,
            feature_seed: 0,
            n_train: 20,
            n_test: 1000,
            noise_std: 0.1,
            features: 1024,
            kappa_sweep: vec![1.0, 6.0, 25.6, 51.2, 181.0, 1024.0],
            lengthscale_search: GridSearch {
                grid_points: 121,
                ..DEFAULT_LENGTHSCALE_SEARCH
            },
            curve_points: 301,
            curve_range: (-3.3, 3.3),
        }
    }
}

impl DemoConfig {
    /// Check every setting against its range in the `# Parameters` table.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name: &str, reason: String| {
            Err(crate::error::RffError::InvalidConfig {
                name: name.to_string(),
                reason,
            })
        };
        for (name, v, min) in [
            ("n_train", self.n_train, 5),
            ("n_test", self.n_test, 2),
            ("features", self.features, 1),
            ("curve_points", self.curve_points, 2),
        ] {
            if v < min {
                return invalid(name, format!("must be at least {min}, got {v}"));
            }
        }
        deelbo_core::check::positive("noise_std", self.noise_std)?;
        for &k in &self.kappa_sweep {
            deelbo_core::Kappa::new(k)?;
        }
        self.lengthscale_search.validate("lengthscale search")?;
        let (lo, hi) = self.curve_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return invalid(
                "curve_range",
                format!("must be finite with lower < upper, got ({lo}, {hi})"),
            );
        }
        Ok(())
    }
}

/// `n` examples `x ~ N(0, 1)`, `y = sin(3x) + noise_std eps` from the streams `(seed, sx)` and
/// `(seed, se)`.
pub fn sine_data(seed: u64, n: usize, noise_std: f64, streams: (u64, u64)) -> Result<Dataset> {
    let x = Array2::from_shape_fn((n, 1), |(i, _)| {
        f64::from(normal_at(NoiseKey::new(seed, streams.0), i as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (3.0 * x[[i, 0]]).sin()
            + noise_std * f64::from(normal_at(NoiseKey::new(seed, streams.1), i as u64))
    });
    Dataset::new(x, y)
}

/// The demo's training and test sets.
pub fn demo_data(config: &DemoConfig) -> Result<(Dataset, Dataset)> {
    config.validate()?;
    let s = DATA_STREAMS;
    Ok((
        sine_data(config.seed, config.n_train, config.noise_std, (s[0], s[1]))?,
        sine_data(config.seed, config.n_test, config.noise_std, (s[2], s[3]))?,
    ))
}

/// A predictive curve on the plot window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curve {
    /// Inputs.
    pub x: Vec<f64>,
    /// Predictive mean.
    pub mean: Vec<f64>,
    /// Predictive standard deviation (epistemic + noise).
    pub std: Vec<f64>,
}

/// One method's outcome: the fit summary plus test metrics and time (these are the
/// `results.json` fields), and the curve for the figures (not serialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodOutcome {
    /// Hyperparameters, objective, training RMSE.
    #[serde(flatten)]
    pub summary: FitSummary,
    /// Test RMSE of the predictive mean.
    pub test_rmse: f64,
    /// Mean test NLL per point (nats).
    pub test_nll: f64,
    /// Wall-clock seconds of the fit (hyperparameter search included).
    pub seconds: f64,
    /// A human label for tables and panels.
    #[serde(skip)]
    pub label: String,
    /// The predictive curve on the plot window.
    #[serde(skip)]
    pub curve: Curve,
}

/// Where the data came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// Training examples.
    pub n: usize,
    /// Data seed.
    pub seed: u64,
}

/// Everything the demo produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// The data.
    pub data: DataInfo,
    /// The method panels.
    pub methods: Vec<MethodOutcome>,
    /// The kappa sweep.
    pub kappa_sweep: Vec<MethodOutcome>,
    /// Training inputs (for the figures).
    #[serde(skip)]
    pub train_x: Vec<f64>,
    /// Training targets.
    #[serde(skip)]
    pub train_y: Vec<f64>,
}

impl DemoReport {
    /// The method outcome named `method` (first match), if any.
    pub fn method(&self, method: &str) -> Option<&MethodOutcome> {
        self.methods.iter().find(|m| m.summary.method == method)
    }

    /// The sweep entry with kappa closest to `kappa`.
    pub fn sweep(&self, kappa: f64) -> Option<&MethodOutcome> {
        self.kappa_sweep.iter().min_by(|a, b| {
            let da = (a.summary.kappa.unwrap_or(f64::NAN) - kappa).abs();
            let db = (b.summary.kappa.unwrap_or(f64::NAN) - kappa).abs();
            da.total_cmp(&db)
        })
    }
}

/// What the demo fits, in order: the methods then the sweep.
#[derive(Debug, Clone, PartialEq)]
pub enum DemoStep {
    /// An RFF method (label, method).
    Rff(String, Method),
    /// The exact GP.
    Gp,
}

impl DemoConfig {
    /// The method panels.
    pub fn method_steps(&self) -> Vec<DemoStep> {
        vec![
            DemoStep::Rff("MAP + grid search".to_string(), Method::MapGrid),
            DemoStep::Rff(
                "ELBO (kappa = 1)".to_string(),
                Method::Elbo(KappaRule::Standard),
            ),
            DemoStep::Rff(
                "DE-ELBO (kappa = D/N)".to_string(),
                Method::Elbo(KappaRule::DataEmphasized),
            ),
            DemoStep::Rff(
                "DE-ELBO (kappa = D/2N)".to_string(),
                Method::Elbo(KappaRule::HalfDataEmphasized),
            ),
            DemoStep::Rff("exact evidence (type-II ML)".to_string(), Method::Evidence),
            DemoStep::Rff("Laplace evidence (LA-LML)".to_string(), Method::LaplaceDiag),
            DemoStep::Gp,
        ]
    }

    /// The sweep's steps.
    pub fn sweep_steps(&self) -> Vec<DemoStep> {
        self.kappa_sweep
            .iter()
            .map(|&k| {
                let rule = if k == 1.0 {
                    KappaRule::Standard
                } else {
                    KappaRule::Fixed(k)
                };
                DemoStep::Rff(format!("kappa = {k}"), Method::Elbo(rule))
            })
            .collect()
    }

    /// Total number of fits (for a progress bar).
    pub fn total_steps(&self) -> usize {
        self.method_steps().len() + self.kappa_sweep.len()
    }
}

fn curve_inputs(config: &DemoConfig) -> Array2<f64> {
    let (a, b) = config.curve_range;
    let n = config.curve_points.max(2);
    Array2::from_shape_fn((n, 1), |(i, _)| a + (b - a) * i as f64 / (n - 1) as f64)
}

fn outcome(
    label: String,
    summary_of: impl FnOnce(f64) -> FitSummary,
    predict: impl Fn(&Array2<f64>) -> Result<Prediction>,
    train: &Dataset,
    test: &Dataset,
    grid: &Array2<f64>,
    seconds: f64,
) -> Result<MethodOutcome> {
    let tr = predict(&train.x().to_owned())?;
    let te = predict(&test.x().to_owned())?;
    let cv = predict(grid)?;
    let y_tr = train.y().to_vec();
    let y_te = test.y().to_vec();
    Ok(MethodOutcome {
        summary: summary_of(rmse(&y_tr, &tr.mean.to_vec())?),
        test_rmse: rmse(&y_te, &te.mean.to_vec())?,
        test_nll: gaussian_nll(&y_te, &te.mean.to_vec(), &te.std.to_vec())?,
        seconds,
        label,
        curve: Curve {
            x: grid.column(0).to_vec(),
            mean: cv.mean.to_vec(),
            std: cv.std.to_vec(),
        },
    })
}

/// Run one step.
pub fn run_step(
    config: &DemoConfig,
    step: &DemoStep,
    train: &Dataset,
    test: &Dataset,
) -> Result<MethodOutcome> {
    let grid = curve_inputs(config);
    let start = Instant::now();
    match step {
        DemoStep::Rff(label, method) => {
            let fc = RffConfig::new(*method)
                .with_features(config.features)
                .with_seed(config.feature_seed)
                .with_lengthscale_search(config.lengthscale_search);
            let report = fit(train, &fc)?;
            let seconds = start.elapsed().as_secs_f64();
            let model = report.model;
            outcome(
                label.clone(),
                |r| model.summary(r),
                |x| model.predict(x.view()),
                train,
                test,
                &grid,
                seconds,
            )
        }
        DemoStep::Gp => {
            let gp = fit_gp(train, &config.lengthscale_search, &Default::default())?;
            let seconds = start.elapsed().as_secs_f64();
            outcome(
                "exact GP (RBF, type-II ML)".to_string(),
                |r| gp.summary(r),
                |x| gp.predict(x.view()),
                train,
                test,
                &grid,
                seconds,
            )
        }
    }
}

/// Run the whole demo; `progress(label)` is called before each fit.
pub fn run_demo(config: &DemoConfig, mut progress: impl FnMut(&str)) -> Result<DemoReport> {
    let (train, test) = demo_data(config)?;
    let mut methods = Vec::new();
    for step in config.method_steps() {
        progress(step_label(&step));
        methods.push(run_step(config, &step, &train, &test)?);
    }
    let mut kappa_sweep = Vec::new();
    for step in config.sweep_steps() {
        progress(step_label(&step));
        kappa_sweep.push(run_step(config, &step, &train, &test)?);
    }
    Ok(DemoReport {
        data: DataInfo {
            n: config.n_train,
            seed: config.seed,
        },
        methods,
        kappa_sweep,
        train_x: train.x().column(0).to_vec(),
        train_y: train.y().to_vec(),
    })
}

fn step_label(step: &DemoStep) -> &str {
    match step {
        DemoStep::Rff(label, _) => label,
        DemoStep::Gp => "exact GP",
    }
}
