//! The KL term of the (DE-)ELBO as candle expressions, so it back-propagates through candle's
//! autodiff into the variational means and the shared raw scale `rho`.
//!
//! Every function takes the block size `D`, the squared distance `M = ||m - mu||^2` and the
//! posterior variance `sigma^2` as scalar `f64` tensors (connected to the graph) and returns a
//! scalar `f64` tensor in nats. The formulas are those of `deelbo_core::KlTerms` for an
//! isotropic prior and posterior:
//!
//! - `v* = M/D + sigma^2` ([`optimal_variance`]);
//! - `KL* = KL(v*) = (D/2) ln(1 + M/(D sigma^2))` ([`kl_at_optimum`]); its gradients are
//!   `dKL*/dm = (m - mu)/v*` and `dKL*/d(sigma^2) = (D/2)(1/v* - 1/sigma^2)` (envelope theorem),
//!   which autodiff reproduces because `v*` is not held fixed but its derivative term vanishes;
//! - `KL(v) = (D/2)(r - 1 - ln r) + M/(2v)` with `r = sigma^2/v` ([`kl_fixed`]).

use candle_core::Tensor;

use crate::error::{AdapterError, Result};
use crate::scalar_ops::log1p;

fn check_len(len: usize) -> Result<f64> {
    if len == 0 {
        return Err(AdapterError::InvalidBlock {
            block: "KL".to_string(),
            reason: "a block of D = 0 weights has no KL".to_string(),
        });
    }
    Ok(len as f64)
}

/// `v* = M/D + sigma^2`, the prior variance that maximizes `J_kappa` for any kappa.
pub fn optimal_variance(len: usize, sq_dist: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
    let d = check_len(len)?;
    Ok(sq_dist.affine(1.0 / d, 0.0)?.add(sigma2)?)
}

/// `KL* = (D/2) ln(1 + M/(D sigma^2))` in nats: the KL at the closed-form prior variance, with
/// `ln(1 + x)` evaluated by an exact `log1p` (no loss of precision when `M << D sigma^2`).
pub fn kl_at_optimum(len: usize, sq_dist: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
    let d = check_len(len)?;
    let ratio = sq_dist.div(&sigma2.affine(d, 0.0)?)?;
    Ok(log1p(&ratio)?.affine(0.5 * d, 0.0)?)
}

/// `KL(v) = (D/2)(r - 1 - ln r) + M/(2v)`, `r = sigma^2/v`, in nats, at a fixed prior variance
/// `v > 0` (errors otherwise).
pub fn kl_fixed(len: usize, sq_dist: &Tensor, sigma2: &Tensor, v: f64) -> Result<Tensor> {
    let d = check_len(len)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(AdapterError::InvalidSetting {
            name: "prior variance".to_string(),
            value: v,
            reason: "must be positive and finite".to_string(),
        });
    }
    let r = sigma2.affine(1.0 / v, 0.0)?;
    let shape_term = r.sub(&r.log()?)?.affine(0.5 * d, -0.5 * d)?;
    Ok(shape_term.add(&sq_dist.affine(0.5 / v, 0.0)?)?)
}
