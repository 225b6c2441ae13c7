//! The (data-emphasized) ELBO as a training loss.
//!
//! `J_kappa = kappa sum_n E_q[log p(y_n | x_n, w)] - sum_b KL(q_b || p_b)`, and the loss SGD
//! minimizes per example is
//!
//! `loss = mean_n NLL_n + (1/(kappa N)) sum_b KL_b = -J_kappa/(kappa N)`,
//!
//! where the caller supplies `mean_n NLL_n` (a Monte Carlo estimate at `w~ = m + sigma eps`, or an
//! exact expectation) and this module adds the KL with learned (closed-form) or fixed prior
//! variances, and the analytic gradients of the KL part:
//!
//! - means: `d loss/d m_i = (1/(kappa N)) (Sigma_p^-1 (m - mu))_i / v_b` (isotropic prior:
//!   `(m_i - mu_i)/(kappa N v_b)`, [`BlockEvaluation::mean_gradient_scale`]);
//! - shared raw scale `rho` (`sigma = softplus(rho)`):
//!   `d loss/d rho = (1/(kappa N)) sum_b dKL_b/d(sigma^2) 2 sigma sigmoid(rho)`.
//!
//! With learned variances these are the gradients of `KL*` (envelope theorem: `v*` is optimal,
//! so its own dependence on `m` and `sigma` contributes nothing).

use crate::check;
use crate::error::{CoreError, Result};
use crate::kappa::{Kappa, KappaRule};
use crate::posterior::{IsotropicPosterior, sigmoid, softplus};
use crate::prior::{KlTerms, LowRankPrior, PriorShape, PriorVariance};
use crate::tensor::{ParamBlock, ParamBlockMut, Real};

/// The objective's constants: kappa and the training-set size `N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    kappa: Kappa,
    examples: usize,
}

/// One block's share of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockEvaluation {
    /// The prior variance used: `v*` when learned, else the fixed value.
    pub variance: f64,
    /// `KL(q_b || p_b)` at that variance, in nats.
    pub kl: f64,
    /// `1/(kappa N v_b)`: the KL gradient of the loss in the means is this times `(m - mu)`
    /// (isotropic prior) or times `Sigma_p^-1 (m - mu)` (low-rank prior).
    pub mean_gradient_scale: f64,
    /// The prior covariance shape, which decides the mean-gradient form
    /// ([`Objective::add_kl_mean_gradient`] or [`Objective::add_low_rank_kl_mean_gradient`]).
    pub shape: PriorShape,
    /// `d loss/d(sigma^2)` from this block's KL when `q` is isotropic:
    /// `(1/(kappa N)) dKL_b/d(sigma^2)`; `None` for a diagonal posterior.
    pub loss_grad_sigma2: Option<f64>,
}

/// The result of [`Objective::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// `mean NLL + KL/(kappa N)`: the per-example loss to minimize.
    pub loss: f64,
    /// `J_kappa = -kappa N loss`, in nats (the objective to maximize).
    pub objective: f64,
    /// `sum_b KL_b`, in nats.
    pub kl: f64,
    /// The kappa used.
    pub kappa: f64,
    /// Per-block results, in input order.
    pub blocks: Vec<BlockEvaluation>,
}

impl Evaluation {
    /// `d loss/d sigma^2` summed over blocks, for a shared isotropic posterior scale. `None` if
    /// any block has a diagonal posterior.
    pub fn loss_grad_sigma2(&self) -> Option<f64> {
        self.blocks.iter().map(|b| b.loss_grad_sigma2).sum()
    }

    /// `d loss/d rho` from the KL part for the shared isotropic posterior `q`
    /// (`d sigma^2/d rho = 2 sigma sigmoid(rho)`). `None` for diagonal posteriors.
    pub fn loss_grad_rho(&self, q: &IsotropicPosterior) -> Option<f64> {
        self.loss_grad_sigma2()
            .map(|g| g * 2.0 * q.sigma() * q.dsigma_drho())
    }

    /// `d loss/d rho_j` from the KL part for weight `j` of block `block` under a diagonal
    /// posterior with `sigma_j = softplus(rho_j)`; `precision_jj = 1` for the isotropic prior
    /// (`(Sigma_p^-1)_jj` for the low-rank prior).
    pub fn loss_grad_rho_element(
        &self,
        block: usize,
        rho_j: f64,
        precision_jj: f64,
        kappa_n: f64,
    ) -> Option<f64> {
        let b = self.blocks.get(block)?;
        let s = softplus(rho_j);
        let g = KlTerms::kl_grad_sigma2_element(precision_jj, s * s, b.variance);
        Some(g * 2.0 * s * sigmoid(rho_j) / kappa_n)
    }
}

impl Objective {
    /// Resolve `rule` for a model of `params` weights trained on `examples` examples.
    pub fn new(rule: KappaRule, params: usize, examples: usize) -> Result<Self> {
        Ok(Self {
            kappa: rule.resolve(params, examples)?,
            examples,
        })
    }

    /// With an already resolved kappa.
    pub fn with_kappa(kappa: Kappa, examples: usize) -> Result<Self> {
        if examples == 0 {
            return Err(CoreError::NoExamples);
        }
        Ok(Self { kappa, examples })
    }

    /// Kappa.
    pub fn kappa(&self) -> f64 {
        self.kappa.value()
    }

    /// `N`.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// `kappa N`, the divisor of the KL in the per-example loss.
    pub fn kappa_n(&self) -> f64 {
        self.kappa.value() * self.examples as f64
    }

    /// Evaluate the loss `mean_nll + (1/(kappa N)) sum_b KL_b(v_b)` where `v_b` is `v*_b` for
    /// [`PriorVariance::Learned`] blocks. `mean_nll` is the caller's average over examples of
    /// `-E_q[log p(y_n | x_n, w)]` (nats per example).
    pub fn evaluate(
        &self,
        mean_nll: f64,
        blocks: &[(KlTerms, PriorVariance)],
    ) -> Result<Evaluation> {
        check::finite("mean negative log-likelihood", mean_nll)?;
        let kn = self.kappa_n();
        let mut kl_total = 0.0;
        let mut out = Vec::with_capacity(blocks.len());
        for (terms, setting) in blocks {
            let v = terms.variance(*setting)?;
            let kl = match setting {
                PriorVariance::Learned => terms.kl_at_optimum()?,
                PriorVariance::Fixed(_) => terms.kl(v)?,
            };
            kl_total += kl;
            out.push(BlockEvaluation {
                variance: v,
                kl,
                mean_gradient_scale: 1.0 / (kn * v),
                shape: terms.shape,
                loss_grad_sigma2: terms.kl_grad_sigma2(v).map(|g| g / kn),
            });
        }
        let loss = mean_nll + kl_total / kn;
        Ok(Evaluation {
            loss,
            objective: -kn * loss,
            kl: kl_total,
            kappa: self.kappa.value(),
            blocks: out,
        })
    }

    /// Add the KL part of `d loss/d m` for an isotropic-prior block to `grad`:
    /// `grad_i += (m_i - mu_i)/(kappa N v_b)` (or `m_i/(kappa N v_b)` for a zero prior mean).
    /// A low-rank block is an error ([`CoreError::PriorShapeMismatch`]): its gradient is
    /// [`Objective::add_low_rank_kl_mean_gradient`].
    ///
    /// # Formula
    /// ```text
    /// grad_i += (m_i - mu_i) / (kappa N v_b)
    /// ```
    pub fn add_kl_mean_gradient<B: ParamBlockMut + ?Sized>(
        grad: &mut B,
        mean: &B,
        prior_mean: Option<&B>,
        block: &BlockEvaluation,
    ) -> Result<()> {
        if block.shape != PriorShape::Isotropic {
            return Err(CoreError::PriorShapeMismatch {
                name: "Objective::add_kl_mean_gradient".to_string(),
                reason: "the block has a low-rank prior; use add_low_rank_kl_mean_gradient"
                    .to_string(),
            });
        }
        match prior_mean {
            Some(mu) => grad.add_scaled_difference(block.mean_gradient_scale, mean, mu),
            None => grad.axpy(block.mean_gradient_scale, mean),
        }
    }

    /// Add the KL part of `d loss/d m` for a block with the low-rank-plus-diagonal prior
    /// `N(mu, v_b Sigma_p)` to `grad` (`D` values, the block's flat layout). An isotropic block is
    /// an error ([`CoreError::PriorShapeMismatch`]).
    ///
    /// # Formula
    /// ```text
    /// grad += Sigma_p^-1 (m - mu) / (kappa N v_b)
    /// ```
    pub fn add_low_rank_kl_mean_gradient<T: Real>(
        grad: &mut [T],
        mean: &[T],
        prior_mean: &[T],
        prior: &LowRankPrior,
        block: &BlockEvaluation,
    ) -> Result<()> {
        if block.shape != PriorShape::LowRank {
            return Err(CoreError::PriorShapeMismatch {
                name: "Objective::add_low_rank_kl_mean_gradient".to_string(),
                reason: "the block has an isotropic prior; use add_kl_mean_gradient".to_string(),
            });
        }
        check::same_len("gradient", prior.len(), grad.len())?;
        let g = prior.kl_grad_mean(mean, prior_mean, 1.0)?;
        for (out, g) in grad.iter_mut().zip(g) {
            *out = T::from_f64_rounded(out.as_f64() + block.mean_gradient_scale * g);
        }
        Ok(())
    }
}

/// The isotropic-prior [`KlTerms`] of a block and its setting, for [`Objective::evaluate`]:
/// shorthand for `(KlTerms::from_block(mean, prior_mean, q.stats())?, setting)`.
pub fn isotropic_block<B: ParamBlock + ?Sized>(
    mean: &B,
    prior_mean: Option<&B>,
    q: &IsotropicPosterior,
    setting: PriorVariance,
) -> Result<(KlTerms, PriorVariance)> {
    Ok((KlTerms::from_block(mean, prior_mean, q.stats())?, setting))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_nll_plus_scaled_kl() {
        let obj = Objective::new(KappaRule::DataEmphasized, 200, 10).unwrap();
        assert_eq!(obj.kappa(), 20.0);
        let q = IsotropicPosterior::from_sigma(0.1).unwrap();
        let m = vec![0.5f64; 200];
        let (t, s) = isotropic_block(&m[..], None, &q, PriorVariance::Learned).unwrap();
        let e = obj.evaluate(1.5, &[(t, s)]).unwrap();
        let kl = t.kl_at_optimum().unwrap();
        assert!((e.loss - (1.5 + kl / 200.0)).abs() < 1e-12);
        assert!((e.objective + 200.0 * e.loss).abs() < 1e-9);
        assert!(obj.evaluate(f64::NAN, &[(t, s)]).is_err());
    }
}
