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
//!
//! For a low-rank-plus-diagonal prior `N(mu, v Sigma_p)` the Mahalanobis distance
//! `Q = (m - mu)^T Sigma_p^-1 (m - mu)` replaces `M` ([`low_rank_quadratic`], a custom op whose
//! backward is `dQ/dm = 2 Sigma_p^-1 (m - mu)`), `tr(Sigma_p^-1) sigma^2` replaces `D sigma^2`
//! and `ln det Sigma_p` is added ([`low_rank_kl_at_optimum`], [`low_rank_kl_fixed`]).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use deelbo_core::{LowRankPrior, check};

use crate::block::VariationalBlock;
use crate::error::Result;
use crate::scalar_ops::log1p;

fn check_len(len: usize) -> Result<f64> {
    Ok(check::has_parameters("a KL block", len)? as f64)
}

/// `v* = M/D + sigma^2`, the prior variance that maximizes `J_kappa` for any kappa.
///
/// # Formula
/// ```text
/// v* = M/D + sigma^2
/// ```
pub fn optimal_variance(len: usize, sq_dist: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
    let d = check_len(len)?;
    Ok(sq_dist.affine(1.0 / d, 0.0)?.add(sigma2)?)
}

/// `KL* = (D/2) ln(1 + M/(D sigma^2))` in nats: the KL at the closed-form prior variance, with
/// `ln(1 + x)` evaluated by an exact `log1p` (no loss of precision when `M << D sigma^2`).
///
/// # Formula
/// ```text
/// KL* = (D/2) ln(1 + M/(D sigma^2))
/// ```
pub fn kl_at_optimum(len: usize, sq_dist: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
    let d = check_len(len)?;
    let ratio = sq_dist.div(&sigma2.affine(d, 0.0)?)?;
    Ok(log1p(&ratio)?.affine(0.5 * d, 0.0)?)
}

/// `KL(v) = (D/2)(r - 1 - ln r) + M/(2v)`, `r = sigma^2/v`, in nats, at a fixed prior variance
/// `v > 0` (errors otherwise).
///
/// # Formula
/// ```text
/// KL(v) = (D/2)(r - 1 - ln r) + M/(2v),   r = sigma^2/v
/// ```
pub fn kl_fixed(len: usize, sq_dist: &Tensor, sigma2: &Tensor, v: f64) -> Result<Tensor> {
    let d = check_len(len)?;
    let v = check::positive("prior variance", v)?;
    let r = sigma2.affine(1.0 / v, 0.0)?;
    let shape_term = r.sub(&r.log()?)?.affine(0.5 * d, -0.5 * d)?;
    Ok(shape_term.add(&sq_dist.affine(0.5 / v, 0.0)?)?)
}

/// `Q = x^T Sigma_p^-1 x` of a flat `x = m - mu` (arg), `f64` scalar; backward
/// `dQ/dx = 2 Sigma_p^-1 x`.
struct LowRankQuadratic {
    prior: Arc<LowRankPrior>,
    /// `Sigma_p^-1 x` from the forward (the same bits the backward would compute).
    precision_x: std::sync::OnceLock<Vec<f64>>,
}

fn host_f64(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<f64>> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("the low-rank quadratic needs a contiguous input".to_string())
    })?;
    match s {
        CpuStorage::F32(v) => Ok(v[a..b].iter().map(|&x| f64::from(x)).collect()),
        CpuStorage::F64(v) => Ok(v[a..b].to_vec()),
        _ => Err(candle_core::Error::Msg(
            "the low-rank quadratic needs f32 or f64".to_string(),
        )),
    }
}

impl CustomOp1 for LowRankQuadratic {
    fn name(&self) -> &'static str {
        "deelbo-low-rank-quadratic"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = host_f64(s, l)?;
        let (q, px) = self
            .prior
            .mahalanobis_and_precision_times(&x)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // A second forward of the same op value would store the same vector; ignore it.
        let _ = self.precision_x.set(px);
        Ok((CpuStorage::F64(vec![q.value]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let computed;
        let px = match self.precision_x.get() {
            Some(px) => px,
            None => {
                let x: Vec<f64> = arg.to_dtype(DType::F64)?.to_vec1()?;
                computed = self
                    .prior
                    .precision_times(&x)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                &computed
            }
        };
        let out: Vec<f64> = px.iter().map(|p| 2.0 * g * p).collect();
        Ok(Some(
            Tensor::from_vec(out, px.len(), arg.device())?.to_dtype(arg.dtype())?,
        ))
    }
}

/// `Q_b = (m_b - mu_b)^T Sigma_p^-1 (m_b - mu_b)` over the block's flat layout as a scalar `f64`
/// tensor connected to the means (`dQ/dm = 2 Sigma_p^-1 (m - mu)`), by the core's Woodbury form
/// ([`LowRankPrior::mahalanobis`], clamped to its exact bounds). CPU only.
///
/// # Formula
/// ```text
/// Q = x^T Sigma_p^-1 x,  x = m - mu,  Sigma_p^-1 = A^-1 - A^-1 U (I + U^T A^-1 U)^-1 U^T A^-1
/// ```
pub fn low_rank_quadratic(block: &VariationalBlock, prior: &Arc<LowRankPrior>) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(block.tensors().len());
    for t in block.tensors() {
        let m = t.mean.as_tensor().flatten_all()?;
        parts.push(match &t.prior_mean {
            Some(mu) => m.sub(&mu.flatten_all()?)?,
            None => m,
        });
    }
    let x = Tensor::cat(&parts, 0)?;
    Ok(x.apply_op1(LowRankQuadratic {
        prior: prior.clone(),
        precision_x: std::sync::OnceLock::new(),
    })?)
}

/// `v* = (Q + sigma^2 tr(Sigma_p^-1))/D` for a low-rank prior.
///
/// # Formula
/// ```text
/// v* = (Q + sigma^2 tr(Sigma_p^-1)) / D
/// ```
pub fn low_rank_optimal_variance(
    prior: &LowRankPrior,
    quadratic: &Tensor,
    sigma2: &Tensor,
) -> Result<Tensor> {
    let d = check_len(prior.len())?;
    Ok(quadratic
        .add(&sigma2.affine(prior.trace_inverse(), 0.0)?)?
        .affine(1.0 / d, 0.0)?)
}

/// `KL* = (D/2) ln(v*/sigma^2) + (1/2) ln det Sigma_p` for a low-rank prior and isotropic `q`.
///
/// # Formula
/// ```text
/// KL* = 1/2 [D ln v* + ln det Sigma_p - D ln sigma^2]
///     = (D/2) ln(tr(Sigma_p^-1)/D + Q/(D sigma^2)) + (1/2) ln det Sigma_p
/// ```
pub fn low_rank_kl_at_optimum(
    prior: &LowRankPrior,
    quadratic: &Tensor,
    sigma2: &Tensor,
) -> Result<Tensor> {
    let d = check_len(prior.len())?;
    let ratio = quadratic
        .div(&sigma2.affine(d, 0.0)?)?
        .affine(1.0, prior.trace_inverse() / d)?;
    Ok(ratio.log()?.affine(0.5 * d, 0.5 * prior.log_det())?)
}

/// `KL(v)` for a low-rank prior at a fixed `v > 0` and isotropic `q`.
///
/// # Formula
/// ```text
/// KL(v) = 1/2 [(sigma^2 tr(Sigma_p^-1) + Q)/v - D + D ln v + ln det Sigma_p - D ln sigma^2]
/// ```
pub fn low_rank_kl_fixed(
    prior: &LowRankPrior,
    quadratic: &Tensor,
    sigma2: &Tensor,
    v: f64,
) -> Result<Tensor> {
    let d = check_len(prior.len())?;
    let v = check::positive("prior variance", v)?;
    let trace_term = sigma2.affine(prior.trace_inverse() / v, 0.0)?;
    let constant = -d + d * v.ln() + prior.log_det();
    Ok(trace_term
        .add(&quadratic.affine(1.0 / v, 0.0)?)?
        .sub(&sigma2.log()?.affine(d, 0.0)?)?
        .affine(0.5, 0.5 * constant)?)
}
