//! A fitted RFF regression model: everything needed to predict, serializable, with the
//! hyperparameters reported in the original units of the data.
//!
//! Internally the model works on standardized inputs and targets ([`Standardizer`]); the
//! frequencies and phases are regenerated from `(seed, R, d)` (counter-based noise), so the file
//! stores no random numbers. Predictions: `mu(x) = y_mean + y_std phi(x)^T m`,
//! `std(x) = y_std sqrt(phi(x)^T S phi(x) + s_n^2)`.

use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::data::Standardizer;
use crate::error::{Result, RffError};
use crate::features::{Lengthscale, RffFeatures};

/// The posterior covariance `S` of the weights a model predicts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightCovariance {
    /// A point estimate (MAP): `S = 0`, the predictive spread is the noise alone.
    Point,
    /// The variational `S = sigma^2 I`.
    Isotropic {
        /// `sigma^2` (standardized target units).
        sigma2: f64,
    },
    /// A diagonal `S` (the diagonal Laplace approximation).
    Diagonal {
        /// `S_jj` (standardized target units), `R` values.
        variances: Vec<f64>,
    },
    /// The exact posterior `S = tau I - B B^T`, `B` an `R x rank` matrix stored row-major.
    LowRank {
        /// `tau` (standardized target units).
        tau: f64,
        /// Number of columns of `B`.
        rank: usize,
        /// `B`, row-major, `R * rank` values.
        factor: Vec<f64>,
    },
}

/// A fitted model. Fields in standardized units unless the accessor says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RffModel {
    /// The method that fitted it (`elbo`, `de-elbo`, `evidence`, `map-grid`, `la-lml`, ...).
    pub method: String,
    /// The likelihood weight for (DE-)ELBO fits.
    pub kappa: Option<f64>,
    /// Seed of the random features.
    pub seed: u64,
    /// `R`, the number of features.
    pub features: usize,
    /// Lengthscale(s) on standardized inputs.
    pub lengthscale: Lengthscale,
    /// The input/target standardization.
    pub standardizer: Standardizer,
    /// The weight mean `m` (`R`, standardized target units).
    pub weights: Vec<f64>,
    /// The noise variance `s_n^2` (standardized).
    pub noise_variance: f64,
    /// The prior variance `tau` (standardized).
    pub prior_variance: f64,
    /// The weight covariance used for predictions.
    pub covariance: WeightCovariance,
    /// The maximized objective in nats, for targets in their original units (see
    /// [`crate::fit::Method`] for what each method maximizes).
    pub objective: f64,
    /// The kappa rule asked for, the kappa used and whether it was clamped (ELBO methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kappa_report: Option<KappaReport>,
    /// Results that are not learned values (a value at a search bound, a clamped kappa).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Predictive means and standard deviations (original target units), one per input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// `mu(x)`.
    pub mean: Array1<f64>,
    /// `sqrt(epistemic variance + noise variance)`.
    pub std: Array1<f64>,
}

/// The hyperparameters and fit statistics of a model in original units, with the JSON field
/// names the CLI and `results.json` use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// The method.
    pub method: String,
    /// Kappa of (DE-)ELBO fits, `null` otherwise.
    pub kappa: Option<f64>,
    /// Lengthscale(s) in input units (a number, or an array for ARD).
    pub lengthscale: Lengthscale,
    /// Noise standard deviation (target units).
    pub noise_std: f64,
    /// Prior variance `tau` (target units squared; the function variance since `||phi|| ~ 1`).
    pub prior_variance: f64,
    /// Posterior standard deviation `sigma` of the weights (variational fits), `null` otherwise.
    pub sigma: Option<f64>,
    /// The maximized objective (nats).
    pub objective: f64,
    /// Training RMSE of the predictive mean (target units).
    pub train_rmse: f64,
}

impl RffModel {
    /// `d`, the number of input columns.
    pub fn dim(&self) -> usize {
        self.standardizer.dim()
    }

    /// Validate internal consistency (lengths, positivity); used after deserializing.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim();
        if self.weights.len() != self.features || self.features == 0 {
            return Err(RffError::Shape {
                name: "model weights (one per feature)".to_string(),
                expected: self.features,
                found: self.weights.len(),
            });
        }
        if self.standardizer.x_std.len() != d || d == 0 {
            return Err(RffError::Shape {
                name: "model input standardization".to_string(),
                expected: d,
                found: self.standardizer.x_std.len(),
            });
        }
        self.lengthscale.per_dimension(d)?;
        use deelbo_core::check;
        check::all_finite("model weights", &self.weights)?;
        check::all_finite("model input means", &self.standardizer.x_mean)?;
        check::same_len("model input means", d, self.standardizer.x_mean.len())?;
        for &s in &self.standardizer.x_std {
            check::positive("model input scale", s)?;
        }
        check::finite("model target mean", self.standardizer.y_mean)?;
        check::finite("model objective", self.objective)?;
        if let Some(k) = self.kappa {
            deelbo_core::Kappa::new(k)?;
        }
        if self.features > 1 << 20 {
            return Err(RffError::InvalidConfig {
                name: "model features".to_string(),
                reason: format!(
                    "{} random features is beyond what this build reads (2^20)",
                    self.features
                ),
            });
        }
        match &self.covariance {
            WeightCovariance::Point => {}
            WeightCovariance::Isotropic { sigma2 } => {
                check::positive("model posterior variance", *sigma2)?;
            }
            WeightCovariance::Diagonal { variances } => {
                for &v in variances {
                    check::positive("model weight variance", v)?;
                }
            }
            WeightCovariance::LowRank { tau, rank, factor } => {
                check::positive("model covariance tau", *tau)?;
                check::all_finite("model covariance factor", factor)?;
                if *rank > self.features {
                    return Err(RffError::Shape {
                        name: "model covariance rank (at most R)".to_string(),
                        expected: self.features,
                        found: *rank,
                    });
                }
            }
        }
        let positive = [
            ("noise variance", self.noise_variance),
            ("prior variance", self.prior_variance),
            ("target scale", self.standardizer.y_std),
        ];
        for (what, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(RffError::InvalidConfig {
                    name: format!("model {what}"),
                    reason: format!("must be positive and finite, got {v}"),
                });
            }
        }
        match &self.covariance {
            WeightCovariance::LowRank { rank, factor, .. }
                if factor.len() != rank * self.features =>
            {
                return Err(RffError::Shape {
                    name: "model covariance factor (R x rank)".to_string(),
                    expected: rank * self.features,
                    found: factor.len(),
                });
            }
            WeightCovariance::Diagonal { variances } if variances.len() != self.features => {
                return Err(RffError::Shape {
                    name: "model weight variances (one per feature)".to_string(),
                    expected: self.features,
                    found: variances.len(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The features this model uses (regenerated from its seed).
    pub fn feature_map(&self) -> Result<RffFeatures> {
        RffFeatures::new(self.seed, self.features, self.dim())
    }

    /// Predict at raw inputs `x` (`M x d`, original units).
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction> {
        crate::error::ensure_finite_matrix("inputs", x)?;
        let features = self.feature_map()?;
        let xs = self.standardizer.transform_x(x)?;
        let phi = features.matrix(xs.view(), &self.lengthscale)?;
        let w = Array1::from(self.weights.clone());
        let mean_s = phi.dot(&w);
        let epistemic = self.epistemic_variance(phi.view());
        let (ym, ys) = (self.standardizer.y_mean, self.standardizer.y_std);
        Ok(Prediction {
            mean: mean_s.mapv(|m| ym + ys * m),
            std: epistemic.mapv(|v| ys * (v + self.noise_variance).sqrt()),
        })
    }

    /// `phi_*^T S phi_*` per row of `phi` (standardized units, clamped at 0).
    pub fn epistemic_variance(&self, phi: ArrayView2<'_, f64>) -> Array1<f64> {
        match &self.covariance {
            WeightCovariance::Point => Array1::zeros(phi.nrows()),
            WeightCovariance::Isotropic { sigma2 } => {
                Array1::from_iter(phi.rows().into_iter().map(|r| sigma2 * r.dot(&r)))
            }
            WeightCovariance::Diagonal { variances } => Array1::from_iter(
                phi.rows()
                    .into_iter()
                    .map(|r| r.iter().zip(variances).map(|(p, v)| p * p * v).sum::<f64>()),
            ),
            WeightCovariance::LowRank { tau, rank, factor } => {
                let b = ndarray::ArrayView2::from_shape((self.features, *rank), factor);
                match b {
                    Ok(b) => {
                        // BLAS dgemm (N x R times R x rank); ndarray's own product as the fallback.
                        let pb = crate::linalg::matmul(phi, false, b, false)
                            .unwrap_or_else(|_| phi.dot(&b));
                        Array1::from_iter(
                            phi.rows()
                                .into_iter()
                                .zip(pb.rows())
                                .map(|(r, q)| (tau * r.dot(&r) - q.dot(&q)).max(0.0)),
                        )
                    }
                    // validate() rejects a factor of the wrong size; fall back to the prior.
                    Err(_) => Array1::from_iter(phi.rows().into_iter().map(|r| tau * r.dot(&r))),
                }
            }
        }
    }

    /// The lengthscale(s) in original input units: `l_k x_std_k`.
    pub fn lengthscale_original(&self) -> Lengthscale {
        self.lengthscale.scaled(&self.standardizer.x_std)
    }

    /// Noise standard deviation in target units: `y_std sqrt(s_n^2)`.
    pub fn noise_std(&self) -> f64 {
        self.standardizer.y_std * self.noise_variance.sqrt()
    }

    /// Prior variance in target units squared: `y_std^2 tau`.
    pub fn prior_variance_original(&self) -> f64 {
        self.standardizer.y_std.powi(2) * self.prior_variance
    }

    /// The variational posterior standard deviation in target units, if the model has one.
    pub fn sigma_original(&self) -> Option<f64> {
        match self.covariance {
            WeightCovariance::Isotropic { sigma2 } => Some(self.standardizer.y_std * sigma2.sqrt()),
            _ => None,
        }
    }

    /// The summary in original units; `train_rmse` is supplied by the caller (it needs data).
    pub fn summary(&self, train_rmse: f64) -> FitSummary {
        FitSummary {
            method: self.method.clone(),
            kappa: self.kappa,
            lengthscale: self.lengthscale_original(),
            noise_std: self.noise_std(),
            prior_variance: self.prior_variance_original(),
            sigma: self.sigma_original(),
            objective: self.objective,
            train_rmse,
        }
    }
}

/// What became of the kappa rule a (DE-)ELBO fit asked for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KappaReport {
    /// The rule asked for (`elbo`, `de-elbo`, `de-elbo-half`, `fixed`).
    pub rule: String,
    /// The kappa used.
    pub value: f64,
    /// Whether the rule's value fell below 1 and was raised to 1.
    pub clamped: bool,
    /// Why, when clamped (e.g. "N >= D/2: kappa = 1, the plain ELBO").
    pub reason: Option<String>,
}
