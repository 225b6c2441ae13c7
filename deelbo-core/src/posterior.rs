//! Variational posteriors `q(w) = N(m, sigma^2 I)` (isotropic, one `sigma` shared by every
//! block) and `q(w) = N(m, diag(sigma_j^2))` (diagonal), with `sigma = softplus(rho)`.
//!
//! The means `m` live in the caller's parameter blocks ([`crate::tensor`]); this module owns the
//! scale parameterization and its sufficient statistics ([`ScaleStats`]).

use crate::check;
use crate::error::{CoreError, Result};
use crate::reduce::CompensatedSum;
use crate::tensor::Real;

/// The paper's initial posterior standard deviation: `sigma = 1e-4`.
pub const DEFAULT_INITIAL_SIGMA: f64 = 1e-4;

/// `softplus(x) = ln(1 + e^x)`, evaluated as `max(x, 0) + ln1p(e^-|x|)` (no overflow).
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The inverse of [`softplus`]: `rho = ln(e^y - 1) = y + ln(1 - e^-y)`, for `y > 0`.
pub fn inverse_softplus(y: f64) -> Result<f64> {
    check::positive("sigma", y)?;
    Ok(y + (-(-y).exp_m1()).ln())
}

/// `sigmoid(x) = 1/(1 + e^-x) = d softplus(x)/dx`, stable for large `|x|`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Sufficient statistics of a block's posterior scale, all the KL needs from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleStats {
    /// One standard deviation `sigma > 0` for every weight of the block.
    Isotropic {
        /// The shared posterior standard deviation.
        sigma: f64,
    },
    /// Per-weight standard deviations, summarized.
    Diagonal {
        /// `sum_j sigma_j^2`.
        sum_sigma2: f64,
        /// `sum_j ln sigma_j^2`.
        sum_ln_sigma2: f64,
    },
}

impl ScaleStats {
    /// `sum_j sigma_j^2` over a block of `len` weights (`len sigma^2` when isotropic).
    pub fn sum_sigma2(&self, len: usize) -> f64 {
        match *self {
            ScaleStats::Isotropic { sigma } => len as f64 * (sigma * sigma),
            ScaleStats::Diagonal { sum_sigma2, .. } => sum_sigma2,
        }
    }

    /// `sum_j ln sigma_j^2` over a block of `len` weights (`2 len ln sigma` when isotropic).
    pub fn sum_ln_sigma2(&self, len: usize) -> f64 {
        match *self {
            ScaleStats::Isotropic { sigma } => 2.0 * len as f64 * sigma.ln(),
            ScaleStats::Diagonal { sum_ln_sigma2, .. } => sum_ln_sigma2,
        }
    }

    /// The statistics of a diagonal posterior from its raw parameters `rho_j`
    /// (`sigma_j = softplus(rho_j)`). Errors on a non-finite `rho_j` or a `sigma_j` that
    /// underflows to 0.
    pub fn diagonal_from_rho<T: Real>(rho: &[T]) -> Result<Self> {
        let mut sum_sigma2 = CompensatedSum::default();
        let mut sum_ln = CompensatedSum::default();
        for (j, r) in rho.iter().enumerate() {
            let r = r.as_f64();
            if !r.is_finite() {
                return Err(CoreError::NonFinite {
                    name: "rho".to_string(),
                    index: j,
                    value: r,
                });
            }
            let s = softplus(r);
            if s <= 0.0 {
                return Err(CoreError::NonPositive {
                    name: format!("sigma[{j}] = softplus(rho[{j}])"),
                    value: s,
                });
            }
            sum_sigma2.add(s * s);
            sum_ln.add(2.0 * s.ln());
        }
        Ok(ScaleStats::Diagonal {
            sum_sigma2: sum_sigma2.value(),
            sum_ln_sigma2: sum_ln.value(),
        })
    }

    /// Check that the statistics describe a valid positive scale.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ScaleStats::Isotropic { sigma } => check::positive("sigma", sigma).map(|_| ()),
            ScaleStats::Diagonal {
                sum_sigma2,
                sum_ln_sigma2,
            } => {
                check::positive("sum of sigma_j^2", sum_sigma2)?;
                check::finite("sum of ln sigma_j^2", sum_ln_sigma2).map(|_| ())
            }
        }
    }
}

/// Isotropic posterior scale: `sigma = softplus(rho)`, one value shared by every block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IsotropicPosterior {
    rho: f64,
}

impl Default for IsotropicPosterior {
    /// `sigma = 1e-4` ([`DEFAULT_INITIAL_SIGMA`]), the paper's initialization.
    fn default() -> Self {
        // inverse_softplus only fails for sigma <= 0; ln(s) is its limit for tiny s.
        Self {
            rho: inverse_softplus(DEFAULT_INITIAL_SIGMA).unwrap_or(DEFAULT_INITIAL_SIGMA.ln()),
        }
    }
}

impl IsotropicPosterior {
    /// From the raw parameter `rho` (any finite value).
    pub fn from_rho(rho: f64) -> Result<Self> {
        check::finite("rho", rho)?;
        if softplus(rho) <= 0.0 {
            return Err(CoreError::NonPositive {
                name: "sigma = softplus(rho)".to_string(),
                value: softplus(rho),
            });
        }
        Ok(Self { rho })
    }

    /// From the standard deviation `sigma > 0`.
    pub fn from_sigma(sigma: f64) -> Result<Self> {
        Ok(Self {
            rho: inverse_softplus(sigma)?,
        })
    }

    /// The raw parameter `rho`.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// `sigma = softplus(rho)`.
    pub fn sigma(&self) -> f64 {
        softplus(self.rho)
    }

    /// `d sigma / d rho = sigmoid(rho)`.
    pub fn dsigma_drho(&self) -> f64 {
        sigmoid(self.rho)
    }

    /// The block statistics this posterior gives every block.
    pub fn stats(&self) -> ScaleStats {
        ScaleStats::Isotropic {
            sigma: self.sigma(),
        }
    }

    /// Replace `rho` (e.g. after an optimizer step). Errors on a non-finite value.
    pub fn set_rho(&mut self, rho: f64) -> Result<()> {
        *self = Self::from_rho(rho)?;
        Ok(())
    }
}

/// Diagonal posterior scale for one block: `sigma_j = softplus(rho_j)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagonalPosterior {
    rho: Vec<f64>,
}

impl DiagonalPosterior {
    /// `len` weights, all at standard deviation `sigma`.
    pub fn constant(len: usize, sigma: f64) -> Result<Self> {
        let rho = inverse_softplus(sigma)?;
        Ok(Self {
            rho: vec![rho; len],
        })
    }

    /// From raw parameters (each finite).
    pub fn from_rho(rho: Vec<f64>) -> Result<Self> {
        ScaleStats::diagonal_from_rho(&rho)?;
        Ok(Self { rho })
    }

    /// The raw parameters `rho_j`.
    pub fn rho(&self) -> &[f64] {
        &self.rho
    }

    /// Mutable raw parameters (for an optimizer step); call [`Self::stats`] afterwards, which
    /// re-validates them.
    pub fn rho_mut(&mut self) -> &mut [f64] {
        &mut self.rho
    }

    /// `sigma_j = softplus(rho_j)`.
    pub fn sigma(&self, j: usize) -> f64 {
        softplus(self.rho[j])
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.rho.len()
    }

    /// `true` for an empty block.
    pub fn is_empty(&self) -> bool {
        self.rho.is_empty()
    }

    /// `sum_j sigma_j^2` and `sum_j ln sigma_j^2`.
    pub fn stats(&self) -> Result<ScaleStats> {
        ScaleStats::diagonal_from_rho(&self.rho)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_round_trips_across_scales() {
        for &s in &[1e-30, 1e-8, 1e-4, 0.3, 1.0, 7.0, 50.0, 800.0] {
            let rho = inverse_softplus(s).unwrap();
            let back = softplus(rho);
            assert!((back - s).abs() <= 1e-12 * s, "{s} -> {rho} -> {back}");
        }
        assert!(inverse_softplus(0.0).is_err());
        assert!(inverse_softplus(-1.0).is_err());
        assert!(softplus(1000.0).is_finite());
        assert!(softplus(-1000.0) >= 0.0);
    }

    #[test]
    fn default_sigma_is_1e_minus_4() {
        let q = IsotropicPosterior::default();
        assert!((q.sigma() - 1e-4).abs() < 1e-16);
    }

    #[test]
    fn sigmoid_is_the_softplus_derivative() {
        for &x in &[-30.0, -2.0, 0.0, 0.5, 3.0, 40.0] {
            let h = 1e-6;
            let fd = (softplus(x + h) - softplus(x - h)) / (2.0 * h);
            assert!((fd - sigmoid(x)).abs() < 1e-8);
        }
    }

    #[test]
    fn diagonal_stats_match_isotropic_when_constant() {
        let q = DiagonalPosterior::constant(100, 0.3).unwrap();
        let d = q.stats().unwrap();
        let i = ScaleStats::Isotropic { sigma: 0.3 };
        assert!((d.sum_sigma2(100) - i.sum_sigma2(100)).abs() < 1e-12);
        assert!((d.sum_ln_sigma2(100) - i.sum_ln_sigma2(100)).abs() < 1e-10);
        assert!(DiagonalPosterior::from_rho(vec![0.0, f64::NAN]).is_err());
        assert!(IsotropicPosterior::from_rho(f64::INFINITY).is_err());
    }
}
