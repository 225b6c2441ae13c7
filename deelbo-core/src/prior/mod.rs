//! Gaussian priors `p_b(w) = N(mu_b, v_b Sigma_p)` on a block of `D` weights and the KL from a
//! Gaussian posterior `q_b = N(m, S)` (`S = sigma^2 I` or `diag(sigma_j^2)`).
//!
//! With `Sigma_p = I` (the isotropic prior: L2 around zero, or L2-SP around pretrained weights)
//! everything depends on the block only through `M = ||m - mu||^2` and the scale statistics; the
//! low-rank-plus-diagonal prior ([`low_rank`]) replaces `M` by a Mahalanobis distance and adds
//! `ln det Sigma_p`. [`KlTerms`] carries exactly these numbers, so a GPU or framework caller can
//! reduce them on its own device and hand over a few scalars.
//!
//! For every shape (`T = tr(Sigma_p^-1 S)`, `Q = (m - mu)^T Sigma_p^-1 (m - mu)`):
//!
//! - `KL(v) = 1/2 [ (T + Q)/v - D + D ln v + ln det Sigma_p - sum_j ln sigma_j^2 ]`
//! - `v* = argmin_v KL(v) = (Q + T)/D` (second derivative `D/(2 v*^2) > 0`), for any kappa
//!   (the likelihood term does not depend on `v`).
//! - `KL* = KL(v*) = 1/2 [ D ln v* + ln det Sigma_p - sum_j ln sigma_j^2 ]`; isotropic `q` and
//!   prior: `KL* = (D/2) ln(1 + M/(D sigma^2))`.

mod low_rank;

pub use low_rank::{LowRankDiagnostics, LowRankPrior, LowRankScale, MahalanobisParts};

use crate::check;
use crate::error::{CoreError, Result};
use crate::posterior::ScaleStats;
use crate::tensor::ParamBlock;

/// How a block's prior variance `v` is set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PriorVariance {
    /// Learned: the closed-form optimum `v*` at the current posterior.
    #[default]
    Learned,
    /// Held at a given value `v > 0` (e.g. a grid-search or MAP baseline).
    Fixed(f64),
}

/// The covariance shape `Sigma_p` of a block's prior `N(mu, v Sigma_p)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriorShape {
    /// `Sigma_p = I`: the KL gradient in the means is `(m - mu)/v`.
    #[default]
    Isotropic,
    /// `Sigma_p = A + U U^T` ([`low_rank::LowRankPrior`]): the KL gradient in the means is
    /// `Sigma_p^-1 (m - mu)/v`.
    LowRank,
}

/// The scalars the KL of one block needs. Build with [`KlTerms::isotropic`],
/// [`KlTerms::from_block`] or [`low_rank::LowRankPrior::kl_terms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlTerms {
    /// `D`, the number of weights in the block.
    pub len: usize,
    /// `Q = (m - mu)^T Sigma_p^-1 (m - mu)` (`= ||m - mu||^2` for an isotropic prior).
    pub quadratic: f64,
    /// `T = tr(Sigma_p^-1 S)` (`= sum_j sigma_j^2` for an isotropic prior).
    pub trace: f64,
    /// `ln det Sigma_p` (`0` for an isotropic prior).
    pub log_det_prior: f64,
    /// `sum_j ln sigma_j^2`.
    pub sum_ln_sigma2: f64,
    /// `Some(sigma^2)` when `q` is isotropic (enables the shared-sigma gradient).
    pub isotropic_sigma2: Option<f64>,
    /// The prior covariance shape (which mean-gradient form applies).
    pub shape: PriorShape,
}

impl KlTerms {
    /// Terms for the isotropic prior `N(mu, v I)` from `M = ||m - mu||^2` and the posterior scale.
    pub fn isotropic(len: usize, sq_dist: f64, scale: ScaleStats) -> Result<Self> {
        check::has_parameters("a parameter block", len)?;
        scale.validate()?;
        if !(sq_dist.is_finite() && sq_dist >= 0.0) {
            return Err(CoreError::NonFinite {
                name: "||m - mu||^2".to_string(),
                index: 0,
                value: sq_dist,
            });
        }
        Ok(Self {
            len,
            quadratic: sq_dist,
            trace: scale.sum_sigma2(len),
            log_det_prior: 0.0,
            sum_ln_sigma2: scale.sum_ln_sigma2(len),
            isotropic_sigma2: match scale {
                ScaleStats::Isotropic { sigma } => Some(sigma * sigma),
                ScaleStats::Diagonal { .. } => None,
            },
            shape: PriorShape::Isotropic,
        })
    }

    /// Terms for the isotropic prior from the block itself: `M = ||m - mu||^2`, or `||m||^2`
    /// when `prior_mean` is `None` (zero mean). Errors on NaN/Inf in either block or a length
    /// mismatch.
    pub fn from_block<B: ParamBlock + ?Sized>(
        mean: &B,
        prior_mean: Option<&B>,
        scale: ScaleStats,
    ) -> Result<Self> {
        mean.ensure_finite("variational mean")?;
        let sq_dist = match prior_mean {
            Some(mu) => {
                mu.ensure_finite("prior mean")?;
                mean.squared_distance(mu)?
            }
            None => mean.sum_squares(),
        };
        Self::isotropic(mean.len(), sq_dist, scale)
    }

    /// `D` as a float.
    fn d(&self) -> f64 {
        self.len as f64
    }

    /// The closed-form optimal prior variance `v* = (Q + T)/D` (isotropic: `M/D + sigma^2`;
    /// diagonal: `(M + sum_j sigma_j^2)/D`).
    pub fn optimal_variance(&self) -> f64 {
        (self.quadratic + self.trace) / self.d()
    }

    /// The variance a [`PriorVariance`] setting gives: `v*` or the fixed value (validated > 0).
    pub fn variance(&self, setting: PriorVariance) -> Result<f64> {
        match setting {
            PriorVariance::Learned => {
                check::positive("optimal prior variance v*", self.optimal_variance())
            }
            PriorVariance::Fixed(v) => check::positive("prior variance", v),
        }
    }

    /// `KL(q || N(mu, v Sigma_p)) = 1/2 [ (T + Q)/v - D + D ln v + ln det Sigma_p - sum_j ln
    /// sigma_j^2 ]` in nats. Isotropic `q` and prior: `D/2 (r - 1 - ln r) + M/(2v)` with
    /// `r = sigma^2/v`. Errors when `v` is not positive and finite.
    pub fn kl(&self, v: f64) -> Result<f64> {
        let v = check::positive("prior variance", v)?;
        let d = self.d();
        if let Some(s2) = self.isotropic_sigma2
            && self.log_det_prior == 0.0
            && self.trace == d * s2
        {
            let r = s2 / v;
            return Ok(0.5 * d * ((r - 1.0) - r.ln()) + self.quadratic / (2.0 * v));
        }
        Ok(0.5
            * ((self.trace + self.quadratic) / v - d
                + (d * v.ln() + self.log_det_prior - self.sum_ln_sigma2)))
    }

    /// `KL* = KL(v*) = 1/2 [ D ln v* + ln det Sigma_p - sum_j ln sigma_j^2 ]` in nats; for
    /// isotropic `q`, `(D/2) ln(1 + (Q + T - D sigma^2)/(D sigma^2)) + 1/2 ln det Sigma_p`
    /// (`= (D/2) ln(1 + M/(D sigma^2))` for the isotropic prior), accurate for tiny `M`.
    pub fn kl_at_optimum(&self) -> Result<f64> {
        let v = self.variance(PriorVariance::Learned)?;
        let d = self.d();
        if let Some(s2) = self.isotropic_sigma2 {
            let excess = (self.quadratic + self.trace - d * s2) / (d * s2);
            return Ok(0.5 * d * excess.ln_1p() + 0.5 * self.log_det_prior);
        }
        Ok(0.5 * (d * v.ln() + self.log_det_prior - self.sum_ln_sigma2))
    }

    /// `dKL/d(sigma^2)` for a shared isotropic `sigma` at prior variance `v`:
    /// `1/2 [ tr(Sigma_p^-1)/v - D/sigma^2 ] = (T/v - D)/(2 sigma^2)`; isotropic prior:
    /// `(D/2)(1/v - 1/sigma^2)`. At `v = v*` this is also `dKL*/d(sigma^2)` (envelope theorem).
    /// `None` for a diagonal posterior (use [`Self::kl_grad_sigma2_element`]).
    pub fn kl_grad_sigma2(&self, v: f64) -> Option<f64> {
        self.isotropic_sigma2
            .map(|s2| (self.trace / v - self.d()) / (2.0 * s2))
    }

    /// `dKL/d(sigma_j^2) = 1/2 [ (Sigma_p^-1)_jj / v - 1/sigma_j^2 ]` for one weight of a
    /// diagonal posterior; `precision_jj = 1` for the isotropic prior.
    pub fn kl_grad_sigma2_element(precision_jj: f64, sigma2_j: f64, v: f64) -> f64 {
        0.5 * (precision_jj / v - 1.0 / sigma2_j)
    }
}

/// `ln N(w; mu, v I) = -(D/2) ln(2 pi v) - ||w - mu||^2/(2v)` in nats, from `D` and the squared
/// distance. Used by MAP baselines.
pub fn isotropic_log_density(len: usize, sq_dist: f64, v: f64) -> Result<f64> {
    let v = check::positive("prior variance", v)?;
    let sq = check::finite("||w - mu||^2", sq_dist)?;
    let d = len as f64;
    Ok(-0.5 * d * (2.0 * std::f64::consts::PI * v).ln() - sq / (2.0 * v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotropic_kl_at_optimum_has_both_forms() {
        let t = KlTerms::isotropic(1000, 3.7, ScaleStats::Isotropic { sigma: 0.01 }).unwrap();
        let direct = 0.5 * 1000.0 * (1.0 + 3.7 / (1000.0 * 1e-4f64)).ln();
        assert!((t.kl_at_optimum().unwrap() - direct).abs() < 1e-9 * direct);
        assert!((t.kl(t.optimal_variance()).unwrap() - direct).abs() < 1e-9 * direct);
        // m = mu: KL* = 0 exactly.
        let z = KlTerms::isotropic(10, 0.0, ScaleStats::Isotropic { sigma: 1e-4 }).unwrap();
        assert_eq!(z.kl_at_optimum().unwrap(), 0.0);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let s = ScaleStats::Isotropic { sigma: 0.1 };
        assert!(KlTerms::isotropic(0, 1.0, s).is_err());
        assert!(KlTerms::isotropic(3, f64::NAN, s).is_err());
        assert!(KlTerms::isotropic(3, -1.0, s).is_err());
        assert!(KlTerms::isotropic(3, 1.0, ScaleStats::Isotropic { sigma: 0.0 }).is_err());
        let t = KlTerms::isotropic(3, 1.0, s).unwrap();
        assert!(t.kl(0.0).is_err());
        assert!(t.kl(-2.0).is_err());
        assert!(t.variance(PriorVariance::Fixed(f64::NAN)).is_err());
        assert!(isotropic_log_density(3, 1.0, 0.0).is_err());
        let m = [1.0f64, f64::NAN];
        assert!(matches!(
            KlTerms::from_block(&m[..], None, s),
            Err(CoreError::NonFinite { index: 1, .. })
        ));
    }
}
