//! # deelbo-rff
//!
//! Random-Fourier-feature (RFF) regression whose lengthscale, noise and prior variance are
//! learned on all the training data, without a validation split, by maximizing the
//! data-emphasized ELBO in closed form (docs/DESIGN.md §4). Beside it, the baselines the paper compares
//! against on the same features: exact evidence (type-II ML), MAP + grid search, the diagonal
//! Laplace evidence, and the exact RBF Gaussian process the features approximate.
//!
//! | module | concept |
//! |---|---|
//! | [`data`] | validated data sets, standardization |
//! | [`features`] | seeded RBF random Fourier features, the exact RBF kernel |
//! | [`spectrum`] | the Gram eigendecomposition that makes every evaluation `O(min(N, R))` |
//! | [`tridiagonal`] | the `N x N` evidence from one tridiagonal reduction (the lengthscale search when `N <= R`) |
//! | [`trig`] | branch-free vectorizable `cos`/`sin` for the feature phases |
//! | [`evidence`] | exact log evidence (Cholesky, `N x N` or `R x R`), posterior, type-II ML |
//! | [`elbo`] | the closed-form (DE-)ELBO, its coordinate updates, the envelope gradient |
//! | [`search`] | bounded 1-D search: global grid + golden section |
//! | [`mod@fit`] | the methods (ELBO, evidence, MAP + grid, LA-LML), settings, the lengthscale search, ARD |
//! | [`gp`] | the exact GP the features approximate |
//! | [`model`] | a fitted, serializable model; predictions with mean and std |
//! | [`metrics`] | RMSE, Gaussian NLL |
//! | [`demo`] | the paper's experiment as a protocol |
//!
//! ```
//! use deelbo_core::KappaRule;
//! use deelbo_rff::{RffConfig, Method, demo::{DemoConfig, demo_data}, fit};
//!
//! let (train, test) = demo_data(&DemoConfig::default())?;
//! let config = RffConfig::new(Method::Elbo(KappaRule::HalfDataEmphasized)).with_features(256);
//! let report = fit(&train, &config)?;
//! let pred = report.model.predict(test.x())?;
//! assert_eq!(pred.mean.len(), test.len());
//! assert!(report.model.noise_std() < 0.5);
//! # Ok::<(), deelbo_rff::RffError>(())
//! ```

pub mod data;
pub mod demo;
pub mod elbo;
pub mod error;
pub mod evidence;
pub mod features;
pub mod fit;
pub mod gp;
pub mod hyper;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod optimize;
pub mod parallel;
pub mod search;
pub mod spectrum;
pub mod tridiagonal;
pub mod trig;

pub use data::{Dataset, Standardizer};
pub use error::{Result, RffError};
pub use features::{Lengthscale, RffFeatures};
pub use fit::{FitReport, Method, RffConfig, fit};
pub use model::{FitSummary, Prediction, RffModel, WeightCovariance};
