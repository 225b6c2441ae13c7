//! [`VariationalModel`]: the posterior `q(w) = N(m, sigma^2 I)` over a network's weights, held as
//! candle [`Var`]s: per-block means `m_b` and one shared raw scale `rho` (`sigma = softplus(rho)`).
//!
//! Per training step it gives
//!
//! - the reparameterized sample `w~ = m + sigma eps` of every weight ([`VariationalModel::sample`]),
//!   with `eps` from the core's counter-based noise: block `b`'s element `i` at step `t` uses
//!   `normal_at(NoiseKey::for_block_step(seed, b, t), i)`, so the same seed gives the same weights;
//! - the KL term with closed-form (or fixed) prior variances as a candle expression
//!   ([`VariationalModel::kl`]), scaled by `1/(kappa N)` from a core [`Objective`];
//!
//! and the per-example loss `mean_batch NLL(w~) + (1/(kappa N)) sum_b KL_b` is their sum
//! ([`elbo_loss`]). Gradients come from candle's `backward()`.

use candle_core::{DType, Device, Tensor, Var};
use deelbo_core::{
    Evaluation, IsotropicPosterior, KlTerms, NoiseKey, Objective, PriorVariance, fill_normals,
};

use crate::block::{BlockSpec, VariationalBlock, check_float};
use crate::error::{AdapterError, Result};
use crate::kl::{kl_at_optimum, kl_fixed, optimal_variance};
use crate::scalar_ops::softplus;
use crate::snapshot::HostBlock;
use crate::weights::Weights;

/// Set in the `block` word of noise keys used by predictive sampling
/// ([`VariationalModel::sample_predictive`]), so prediction noise never reuses a training stream
/// (training uses block indices below `2^31`).
pub const PREDICTIVE_BLOCK_BIT: u32 = 1 << 31;

/// The KL part of the loss for one block, as scalar `f64` tensors (graph-connected).
#[derive(Debug, Clone)]
pub struct BlockKl {
    /// The block's name.
    pub name: String,
    /// `M_b = ||m_b - mu_b||^2`.
    pub squared_distance: Tensor,
    /// The prior variance used: `v*_b = M_b/D_b + sigma^2` or the fixed value.
    pub variance: Tensor,
    /// `KL(q_b || p_b)` at that variance, nats.
    pub kl: Tensor,
}

/// The KL part of the loss, as scalar `f64` tensors.
#[derive(Debug, Clone)]
pub struct KlTerm {
    /// `sum_b KL_b`, nats.
    pub total: Tensor,
    /// `sum_b KL_b / (kappa N)`: what is added to the mean NLL per example.
    pub loss: Tensor,
    /// Per-block parts, in block order.
    pub blocks: Vec<BlockKl>,
}

impl KlTerm {
    /// The prior variances used, one per block (`v*_b` when learned).
    pub fn variances(&self) -> Result<Vec<f64>> {
        self.blocks
            .iter()
            .map(|b| Ok(b.variance.to_scalar::<f64>()?))
            .collect()
    }
}

/// `loss = mean_nll + KL/(kappa N)` as a scalar `f64` tensor; `mean_nll` is a scalar tensor of any
/// float dtype (e.g. the f32 cross-entropy of a batch at sampled weights).
pub fn elbo_loss(mean_nll: &Tensor, kl: &KlTerm) -> Result<Tensor> {
    Ok(mean_nll.to_dtype(DType::F64)?.add(&kl.loss)?)
}

/// The variational posterior over a model's weights: blocks of candle [`Var`] means and one
/// shared raw scale `rho` (a scalar `f64` [`Var`]).
#[derive(Debug, Clone)]
pub struct VariationalModel {
    blocks: Vec<VariationalBlock>,
    rho: Var,
    dtype: DType,
    device: Device,
    fused: bool,
}

impl VariationalModel {
    /// Build the model from block specs with the posterior scale `q` (use
    /// `IsotropicPosterior::default()` for the paper's `sigma = 1e-4`). The dtype (`f32`/`f64`)
    /// and device are those of the first tensor; every tensor must match them.
    pub fn new(specs: Vec<BlockSpec>, q: IsotropicPosterior) -> Result<Self> {
        let first = specs
            .iter()
            .flat_map(|s| s.init.iter())
            .next()
            .ok_or_else(|| AdapterError::InvalidBlock {
                block: "model".to_string(),
                reason: "no parameter tensors".to_string(),
            })?;
        let dtype = check_float(&first.0, &first.1)?;
        let device = first.1.device().clone();
        if specs.len() >= PREDICTIVE_BLOCK_BIT as usize {
            return Err(AdapterError::InvalidBlock {
                block: "model".to_string(),
                reason: format!("{} blocks exceed the noise-key limit 2^31", specs.len()),
            });
        }
        let mut blocks = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            for (name, t) in &spec.init {
                if !t.device().same_device(&device) {
                    return Err(AdapterError::InvalidBlock {
                        block: spec.name.clone(),
                        reason: format!("tensor `{name}` is on another device"),
                    });
                }
            }
            blocks.push(VariationalBlock::from_spec(spec, index as u32, dtype)?);
        }
        let rho = Var::from_tensor(&Tensor::new(q.rho(), &device)?)?;
        let fused = device.is_cpu();
        Ok(Self {
            blocks,
            rho,
            dtype,
            device,
            fused,
        })
    }

    /// Choose the fused CPU ops ([`crate::fused`]: one pass per tensor, noise regenerated in the
    /// backward pass; the default on the CPU) or the composite reference path built from plain
    /// candle ops (`from_vec(eps)`, `broadcast_mul`, `add`, `sub`, `sqr`, `sum_all`; the only
    /// path on other devices). Both give the same samples bit for bit.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused && self.device.is_cpu();
    }

    /// Whether the fused CPU ops are used.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The element type of the means and samples.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of every tensor.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The blocks, in index order.
    pub fn blocks(&self) -> &[VariationalBlock] {
        &self.blocks
    }

    /// The block named `name`.
    pub fn block(&self, name: &str) -> Option<&VariationalBlock> {
        self.blocks.iter().find(|b| b.name() == name)
    }

    /// `D = sum_b D_b`, the number of weights.
    pub fn num_params(&self) -> usize {
        self.blocks.iter().map(|b| b.len()).sum()
    }

    /// The raw scale `rho` (scalar `f64` [`Var`]); `sigma = softplus(rho)`.
    pub fn rho(&self) -> &Var {
        &self.rho
    }

    /// The current posterior scale as the core's type.
    pub fn posterior(&self) -> Result<IsotropicPosterior> {
        Ok(IsotropicPosterior::from_rho(self.rho.to_scalar::<f64>()?)?)
    }

    /// `sigma = softplus(rho)` now.
    pub fn sigma(&self) -> Result<f64> {
        Ok(self.posterior()?.sigma())
    }

    /// `sigma = softplus(rho)` as a scalar `f64` tensor connected to `rho`.
    pub fn sigma_tensor(&self) -> Result<Tensor> {
        softplus(self.rho.as_tensor())
    }

    /// Every variational-mean [`Var`], block by block (what an optimizer updates besides `rho`).
    pub fn mean_vars(&self) -> Vec<Var> {
        self.blocks
            .iter()
            .flat_map(|b| b.tensors().iter().map(|t| t.mean.clone()))
            .collect()
    }

    /// The means as weights, connected to the graph (a MAP forward, or posterior-mean evaluation
    /// after [`Weights::detached`]).
    pub fn mean_weights(&self) -> Weights {
        self.blocks
            .iter()
            .flat_map(|b| b.tensors().iter())
            .map(|t| (t.name.clone(), t.mean.as_tensor().clone()))
            .collect()
    }

    /// The standard normals `eps` of one tensor: `eps_j = normal_at(key, offset + j)`, as a
    /// tensor of the model's dtype and the tensor's shape.
    fn noise(&self, key: NoiseKey, offset: u64, like: &Tensor) -> Result<Tensor> {
        let mut eps = vec![0.0f32; like.elem_count()];
        fill_normals(key, offset, &mut eps);
        let t = Tensor::from_vec(eps, like.dims(), &self.device)?;
        Ok(if self.dtype == DType::F32 {
            t
        } else {
            t.to_dtype(self.dtype)?
        })
    }

    fn sample_with(
        &self,
        sigma: &Tensor,
        key_of: impl Fn(u32) -> NoiseKey,
        track: bool,
    ) -> Result<Weights> {
        let sigma_t = sigma.to_dtype(self.dtype)?;
        let mut out = Weights::new();
        for block in &self.blocks {
            let key = key_of(block.index());
            for t in block.tensors() {
                let m = if track {
                    t.mean.as_tensor().clone()
                } else {
                    t.mean.as_detached_tensor()
                };
                let w = if self.fused {
                    crate::fused::reparameterize(&m, sigma, key, t.offset)?
                } else {
                    let eps = self.noise(key, t.offset, &m)?;
                    // w = m + (sigma eps): product then sum, each rounded in the model dtype.
                    m.add(&eps.broadcast_mul(&sigma_t)?)?
                };
                out.push(t.name.clone(), w);
            }
        }
        Ok(out)
    }

    /// The reparameterized sample of every weight for training step `step`:
    /// `w_i = m_i + sigma eps_i`, `eps_i = normal_at(NoiseKey::for_block_step(seed, b, step), i)`
    /// with `i` the weight's flat index in block `b`. Connected to the means and to `rho`
    /// (`dw_i/dm_i = 1`, `dw_i/drho = eps_i sigmoid(rho)`).
    pub fn sample(&self, seed: u64, step: u32) -> Result<Weights> {
        let sigma = self.sigma_tensor()?;
        self.sample_with(&sigma, |b| NoiseKey::for_block_step(seed, b, step), true)
    }

    /// Sample number `s` of a predictive average, detached from the graph. Uses the noise keys
    /// `for_block_step(seed, b | PREDICTIVE_BLOCK_BIT, s)`, disjoint from every training key.
    pub fn sample_predictive(&self, seed: u64, s: u32) -> Result<Weights> {
        let sigma = Tensor::new(self.sigma()?, &self.device)?;
        self.sample_with(
            &sigma,
            |b| NoiseKey::for_block_step(seed, b | PREDICTIVE_BLOCK_BIT, s),
            false,
        )
    }

    /// `M_b = ||m_b - mu_b||^2` per block, scalar `f64` tensors connected to the means.
    pub fn squared_distances(&self) -> Result<Vec<Tensor>> {
        self.blocks
            .iter()
            .map(|b| b.squared_distance(self.fused))
            .collect()
    }

    /// The KL part of the loss for `objective` (kappa, `N`): per block `KL* = (D_b/2)
    /// ln(1 + M_b/(D_b sigma^2))` when the variance is learned or `KL(v_b)` when fixed, their sum,
    /// and the sum divided by `kappa N`. All graph-connected to the means and `rho`.
    pub fn kl(&self, objective: &Objective) -> Result<KlTerm> {
        let sigma = self.sigma_tensor()?;
        let sigma2 = sigma.sqr()?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut total: Option<Tensor> = None;
        for block in &self.blocks {
            let m = block.squared_distance(self.fused)?;
            let (variance, kl) = match block.variance() {
                PriorVariance::Learned => (
                    optimal_variance(block.len(), &m, &sigma2)?,
                    kl_at_optimum(block.len(), &m, &sigma2)?,
                ),
                PriorVariance::Fixed(v) => (
                    Tensor::new(v, &self.device)?,
                    kl_fixed(block.len(), &m, &sigma2, v)?,
                ),
            };
            total = Some(match total {
                Some(acc) => acc.add(&kl)?,
                None => kl.clone(),
            });
            blocks.push(BlockKl {
                name: block.name().to_string(),
                squared_distance: m,
                variance,
                kl,
            });
        }
        let total = total.ok_or_else(|| AdapterError::InvalidBlock {
            block: "model".to_string(),
            reason: "no blocks".to_string(),
        })?;
        let loss = total.affine(1.0 / objective.kappa_n(), 0.0)?;
        Ok(KlTerm {
            total,
            loss,
            blocks,
        })
    }

    /// The L2-SP penalty of MAP training: `sum_b (c_b/2) ||m_b - mu_b||^2`, one coefficient per
    /// block (e.g. `[alpha, beta]` for backbone and head), as a scalar `f64` tensor.
    pub fn l2sp_penalty(&self, coefficients: &[f64]) -> Result<Tensor> {
        if coefficients.len() != self.blocks.len() {
            return Err(AdapterError::InvalidSetting {
                name: "number of L2-SP coefficients".to_string(),
                value: coefficients.len() as f64,
                reason: format!("the model has {} blocks", self.blocks.len()),
            });
        }
        let mut total = Tensor::new(0.0f64, &self.device)?;
        for (block, &c) in self.blocks.iter().zip(coefficients) {
            if !(c.is_finite() && c >= 0.0) {
                return Err(AdapterError::InvalidSetting {
                    name: format!("L2-SP coefficient of block `{}`", block.name()),
                    value: c,
                    reason: "must be finite and >= 0".to_string(),
                });
            }
            if c > 0.0 {
                total = total.add(&block.squared_distance(self.fused)?.affine(0.5 * c, 0.0)?)?;
            }
        }
        Ok(total)
    }

    /// The core's [`KlTerms`] and variance setting of every block, computed from a host copy of
    /// the current means ([`HostBlock`]): the reference for [`VariationalModel::kl`].
    pub fn core_kl_terms(&self) -> Result<Vec<(KlTerms, PriorVariance)>> {
        let q = self.posterior()?;
        self.blocks
            .iter()
            .map(|b| Ok((HostBlock::of(b)?.kl_terms(&q)?, b.variance())))
            .collect()
    }

    /// The core's [`Objective::evaluate`] of `mean_nll + KL/(kappa N)` at the current state
    /// (values and analytic KL gradients).
    pub fn core_evaluate(&self, objective: &Objective, mean_nll: f64) -> Result<Evaluation> {
        Ok(objective.evaluate(mean_nll, &self.core_kl_terms()?)?)
    }
}
