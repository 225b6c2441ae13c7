//! The (DE-)ELBO of Bayesian linear regression on fixed features, in closed form, and its
//! exact coordinate-ascent maximization (docs/DESIGN.md §4).
//!
//! With `q(w) = N(m, sigma^2 I)`, prior `N(0, tau I)` and noise variance `s_n^2`,
//!
//! `J = kappa sum_n E_q[ln N(y_n | phi_n^T w, s_n^2)] - KL(q || p)`
//! `  = kappa [ -N/2 ln(2 pi s_n^2) - (||y - Phi m||^2 + sigma^2 T)/(2 s_n^2) ]`
//! `    - 1/2 [ R sigma^2/tau + ||m||^2/tau - R + R ln tau - R ln sigma^2 ]`,
//!
//! `T = sum_n ||phi_n||^2`. No Monte Carlo: `J` is deterministic. For fixed features each block
//! has a closed-form maximizer, so coordinate ascent raises `J` monotonically:
//!
//! - `m = (kappa Phi^T Phi/s_n^2 + I/tau)^-1 kappa Phi^T y/s_n^2`, i.e. in the spectral basis
//!   `m~_i = kappa tau c~_i / (kappa tau lambda_i + s_n^2)`, `c~_i = s_i y~_i`;
//! - `1/sigma^2 = 1/tau + kappa T/(R s_n^2)`;
//! - `tau = ||m||^2/R + sigma^2` (the core's `v*`);
//! - `s_n^2 = (||y - Phi m||^2 + sigma^2 T)/N`, clamped to the noise bounds.
//!
//! `J` is a lower bound on the log evidence at `kappa = 1` (Jensen); for `kappa > 1` and a
//! Gaussian likelihood it is not a bound in general (`ln p(y_n | w)` can be positive).

use deelbo_core::{KlTerms, ScaleStats};
use ndarray::{Array1, ArrayView1, ArrayView2};

use crate::error::{Result, RffError};
use crate::evidence::{LN_2PI, NoiseBounds};
use crate::spectrum::Spectrum;

/// The variational and hyperparameter state at one lengthscale: spectral coefficients `m~`
/// (`m = V m~`), `sigma^2`, `tau`, `s_n^2`.
#[derive(Debug, Clone, PartialEq)]
pub struct ElboState {
    /// `m~`, the posterior mean in the basis of right singular vectors (`k`).
    pub coeffs: Vec<f64>,
    /// `sigma^2`, the isotropic posterior variance.
    pub sigma2: f64,
    /// `tau`, the prior variance.
    pub tau: f64,
    /// `s_n^2`, the noise variance.
    pub noise_variance: f64,
}

/// A maximized state and its objective.
#[derive(Debug, Clone, PartialEq)]
pub struct ElboOptimum {
    /// The state at convergence.
    pub state: ElboState,
    /// `J` at the state (nats).
    pub objective: f64,
    /// Number of full sweeps (mean+sigma, tau, noise) used.
    pub sweeps: usize,
}

/// Convergence settings of the coordinate ascent.
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `tolerance` | `1e-12` | `>= 0` | stop when a sweep gains less than `tolerance (1 + |J|)` |
/// | `max_sweeps` | 5000 | `>= 1` | upper limit on sweeps |
/// | `initial_tau` | 1 | `> 0` | starting prior variance (standardized units) |
/// | `initial_noise_variance` | 0.1 | `> 0` | starting noise variance |
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AscentSettings {
    /// Stop when a sweep raises `J` by less than `tolerance (1 + |J|)`.
    pub tolerance: f64,
    /// Upper limit on sweeps.
    pub max_sweeps: usize,
    /// Initial `tau` (standardized units: the prior function variance, `||phi||^2 ~ 1`).
    pub initial_tau: f64,
    /// Initial noise variance.
    pub initial_noise_variance: f64,
}

impl Default for AscentSettings {
    /// `tolerance = 1e-12`, `max_sweeps = 5000`, `tau = 1`, `s_n^2 = 0.1`.
    fn default() -> Self {
        Self {
            tolerance: 1e-12,
            max_sweeps: 5_000,
            initial_tau: 1.0,
            initial_noise_variance: 0.1,
        }
    }
}

impl AscentSettings {
    /// Check the ranges in the table above.
    pub fn validate(&self) -> Result<()> {
        deelbo_core::check::in_range("ascent tolerance", self.tolerance, 0.0..)?;
        if self.max_sweeps == 0 {
            return Err(RffError::InvalidConfig {
                name: "max_sweeps".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        deelbo_core::check::positive("initial_tau", self.initial_tau)?;
        deelbo_core::check::positive("initial_noise_variance", self.initial_noise_variance)?;
        Ok(())
    }
}

/// The closed-form objective `J_kappa` on one spectrum.
#[derive(Debug, Clone, Copy)]
pub struct ClosedFormElbo<'a> {
    spectrum: &'a Spectrum,
    kappa: f64,
    bounds: NoiseBounds,
}

impl<'a> ClosedFormElbo<'a> {
    /// The objective with likelihood weight `kappa >= 1` (validated by the caller through a
    /// [`deelbo_core::Kappa`]) on `spectrum`, keeping the noise inside `bounds`.
    pub fn new(
        spectrum: &'a Spectrum,
        kappa: deelbo_core::Kappa,
        bounds: NoiseBounds,
    ) -> Result<Self> {
        bounds.validate()?;
        if spectrum.is_empty() {
            return Err(RffError::InvalidConfig {
                name: "spectrum".to_string(),
                reason: "has no components".to_string(),
            });
        }
        Ok(Self {
            spectrum,
            kappa: kappa.value(),
            bounds,
        })
    }

    /// `kappa`.
    pub fn kappa(&self) -> f64 {
        self.kappa
    }

    fn r(&self) -> f64 {
        self.spectrum.features as f64
    }

    /// `||m||^2 = ||m~||^2`.
    pub fn mean_sq(&self, state: &ElboState) -> f64 {
        deelbo_core::deterministic_sum(state.coeffs.iter().map(|c| c * c))
    }

    /// The expected log-likelihood `sum_n E_q[ln N(y_n | phi_n^T w, s_n^2)]` (unweighted).
    pub fn expected_log_likelihood(&self, state: &ElboState) -> f64 {
        let n = self.spectrum.examples as f64;
        let s2 = state.noise_variance;
        let res = self.spectrum.residual_sq(&state.coeffs);
        -0.5 * n * (LN_2PI + s2.ln()) - (res + state.sigma2 * self.spectrum.trace) / (2.0 * s2)
    }

    /// `KL(N(m, sigma^2 I) || N(0, tau I))` over the `R` weights, by `deelbo-core`'s
    /// [`KlTerms::kl`].
    pub fn kl(&self, state: &ElboState) -> Result<f64> {
        let terms = KlTerms::isotropic(
            self.spectrum.features,
            self.mean_sq(state),
            ScaleStats::Isotropic {
                sigma: state.sigma2.sqrt(),
            },
        )?;
        Ok(terms.kl(state.tau)?)
    }

    /// `J = kappa E_q[ln p(y | w)] - KL` (nats).
    pub fn evaluate(&self, state: &ElboState) -> Result<f64> {
        Ok(self.kappa * self.expected_log_likelihood(state) - self.kl(state)?)
    }

    /// The exact maximizer over `m` (and, independently, `sigma^2`) at the state's `tau` and
    /// `s_n^2`: `m~_i = kappa tau c~_i/(kappa tau lambda_i + s_n^2)`,
    /// `1/sigma^2 = 1/tau + kappa T/(R s_n^2)`.
    pub fn update_mean_and_sigma(&self, state: &mut ElboState) {
        let (k, tau, s2) = (self.kappa, state.tau, state.noise_variance);
        state.coeffs = self.spectrum.shrunk_coefficients(k * tau, s2);
        state.sigma2 = 1.0 / (1.0 / tau + k * self.spectrum.trace / (self.r() * s2));
    }

    /// The exact maximizer over `tau`: `tau = ||m||^2/R + sigma^2`.
    pub fn update_prior_variance(&self, state: &mut ElboState) {
        state.tau = self.mean_sq(state) / self.r() + state.sigma2;
    }

    /// The exact maximizer over `s_n^2` within the bounds:
    /// `s_n^2 = (||y - Phi m||^2 + sigma^2 T)/N` clamped (`J` is unimodal in `s_n^2`).
    pub fn update_noise(&self, state: &mut ElboState) {
        let res = self.spectrum.residual_sq(&state.coeffs);
        let s2 = (res + state.sigma2 * self.spectrum.trace) / self.spectrum.examples as f64;
        state.noise_variance = self.bounds.clamp_variance(s2);
    }

    /// The starting state: `tau` and `s_n^2` from the settings, then the mean/sigma update.
    pub fn initial_state(&self, settings: &AscentSettings) -> ElboState {
        let mut state = ElboState {
            coeffs: vec![0.0; self.spectrum.len()],
            sigma2: 1.0,
            tau: settings.initial_tau,
            noise_variance: self.bounds.clamp_variance(settings.initial_noise_variance),
        };
        self.update_mean_and_sigma(&mut state);
        state
    }

    /// One sweep of the three exact block updates: mean and sigma, then `tau`, then `s_n^2`.
    pub fn sweep(&self, state: &mut ElboState) {
        self.update_mean_and_sigma(state);
        self.update_prior_variance(state);
        self.update_noise(state);
    }

    /// Coordinate ascent from `state` until a sweep gains less than `tolerance (1 + |J|)`.
    ///
    /// Coordinate ascent crawls along the ridge between `tau` and `s_n^2` when the posterior is
    /// weakly identified (kappa = 1). After each sweep we therefore try steps of 2, 4, 8, ... times
    /// the sweep's own move in `(ln tau, ln s_n^2)`, each followed by the exact mean/sigma update,
    /// and keep the best one only if it raises `J`: the objective still never decreases.
    pub fn maximize_from(
        &self,
        mut state: ElboState,
        settings: &AscentSettings,
    ) -> Result<ElboOptimum> {
        let mut j = self.evaluate(&state)?;
        let mut sweeps = 0;
        while sweeps < settings.max_sweeps {
            let before = (state.tau.ln(), state.noise_variance.ln());
            self.sweep(&mut state);
            sweeps += 1;
            let mut next = self.evaluate(&state)?;
            let step = (
                state.tau.ln() - before.0,
                state.noise_variance.ln() - before.1,
            );
            let mut factor = 2.0;
            while factor <= 1024.0 {
                let mut trial = state.clone();
                trial.tau = (before.0 + factor * step.0).exp();
                trial.noise_variance = self
                    .bounds
                    .clamp_variance((before.1 + factor * step.1).exp());
                if !(trial.tau.is_finite() && trial.tau > 0.0) {
                    break;
                }
                self.update_mean_and_sigma(&mut trial);
                let jt = self.evaluate(&trial)?;
                if jt > next {
                    state = trial;
                    next = jt;
                    factor *= 2.0;
                } else {
                    break;
                }
            }
            let gain = next - j;
            j = next;
            if gain.abs() <= settings.tolerance * (1.0 + j.abs()) {
                break;
            }
        }
        // Finish on the mean/sigma update so m and sigma are optimal for the final tau, s_n^2.
        self.update_mean_and_sigma(&mut state);
        let objective = self.evaluate(&state)?;
        Ok(ElboOptimum {
            state,
            objective,
            sweeps,
        })
    }

    /// Coordinate ascent from [`Self::initial_state`].
    pub fn maximize(&self, settings: &AscentSettings) -> Result<ElboOptimum> {
        self.maximize_from(self.initial_state(settings), settings)
    }
}

/// `J` computed densely from the features (`N x R`) and an explicit weight mean `m` (`R`):
/// `kappa` times `deelbo-core`'s expected Gaussian log-likelihood (per-example predictions
/// `phi_n^T m` and variances `sigma^2 ||phi_n||^2`) minus the core's KL. The reference the
/// spectral [`ClosedFormElbo::evaluate`] is tested against.
pub fn dense_objective(
    phi: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    mean: ArrayView1<'_, f64>,
    sigma2: f64,
    tau: f64,
    noise_variance: f64,
    kappa: f64,
) -> Result<f64> {
    let predictions: Vec<f64> = phi.dot(&mean).to_vec();
    let variances: Vec<f64> = phi.rows().into_iter().map(|r| sigma2 * r.dot(&r)).collect();
    let y: Vec<f64> = y.to_vec();
    let ell = deelbo_core::expected_gaussian_log_likelihood(
        &y,
        &predictions,
        &variances,
        noise_variance,
    )?;
    let terms = KlTerms::isotropic(
        mean.len(),
        mean.dot(&mean),
        ScaleStats::Isotropic {
            sigma: sigma2.sqrt(),
        },
    )?;
    Ok(kappa * ell - terms.kl(tau)?)
}

/// The envelope-theorem gradient of the maximized objective with respect to the log
/// lengthscales, `dJ*/d ln l_k = dJ/d ln l_k` at the inner optimum:
///
/// `kappa/s_n^2 sum_n [ r_n (dphi_n/d ln l_k)^T m - sigma^2 phi_n^T dphi_n/d ln l_k ]`,
/// `dphi_nr/d ln l_k = sqrt(2/R) sin(z_nr) W_rk x_nk / l_k`, `r = y - Phi m`.
///
/// Inputs: standardized `x` (`N x d`), frequencies `W` (`R x d`), `phi` and `sines`
/// (`sqrt(2/R) sin Z`, both `N x R`), the weight mean `m` (`R`), lengthscales (`d`).
#[allow(clippy::too_many_arguments)]
pub fn log_lengthscale_gradient(
    x: ArrayView2<'_, f64>,
    frequencies: ArrayView2<'_, f64>,
    phi: ArrayView2<'_, f64>,
    sines: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    mean: ArrayView1<'_, f64>,
    sigma2: f64,
    noise_variance: f64,
    kappa: f64,
    lengthscales: &[f64],
) -> Array1<f64> {
    let residual = &y - &phi.dot(&mean);
    // A_nr = sines_nr (r_n m_r - sigma^2 phi_nr)
    let mut a = sines.to_owned();
    for (n, mut row) in a.rows_mut().into_iter().enumerate() {
        let rn = residual[n];
        for ((v, &m), &p) in row.iter_mut().zip(mean.iter()).zip(phi.row(n).iter()) {
            *v *= rn * m - sigma2 * p;
        }
    }
    let aw = a.dot(&frequencies); // N x d
    Array1::from_shape_fn(lengthscales.len(), |k| {
        let s: f64 = x
            .column(k)
            .iter()
            .zip(aw.column(k))
            .map(|(xv, av)| xv * av)
            .sum();
        kappa * s / (noise_variance * lengthscales[k])
    })
}
