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

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use deelbo_core::{
    Evaluation, IsotropicPosterior, KlTerms, NoiseKey, Objective, PriorVariance, check,
    fill_normals,
};

use crate::block::{BlockSpec, ParamTensor, PriorCovariance, VariationalBlock, check_float};
use crate::error::{AdapterError, Result};
use crate::kl::{
    kl_at_optimum, kl_fixed, low_rank_kl_at_optimum, low_rank_kl_fixed, low_rank_optimal_variance,
    low_rank_quadratic, optimal_variance,
};
use crate::plan::BlockPlan;
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
    /// `D_b`, the number of weights.
    pub len: usize,
    /// `M_b = ||m_b - mu_b||^2`, or for a low-rank prior the Mahalanobis distance
    /// `Q_b = (m_b - mu_b)^T Sigma_p^-1 (m_b - mu_b)`.
    pub squared_distance: Tensor,
    /// The prior variance used: `v*_b = M_b/D_b + sigma^2` (low-rank:
    /// `(Q_b + sigma^2 tr(Sigma_p^-1))/D_b`) or the fixed value.
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
    /// Tensor name -> (block, tensor within the block).
    index: HashMap<String, (usize, usize)>,
    /// Non-trainable state (batch-norm running statistics), shared by every builder.
    buffers: HashMap<String, Var>,
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
        Self::with_buffers(specs, Vec::new(), q)
    }

    /// [`VariationalModel::new`] plus named buffers: non-trainable tensors (batch-norm running
    /// statistics) that the model's VarBuilders hand out as they are, neither sampled nor
    /// regularized. A buffer that is a candle `Var` is shared (a batch-norm layer's updates of
    /// its running statistics persist across the per-step rebuilds); any other is copied into
    /// a fresh `Var`.
    pub fn with_buffers(
        specs: Vec<BlockSpec>,
        buffers: Vec<(String, Tensor)>,
        q: IsotropicPosterior,
    ) -> Result<Self> {
        let first = specs
            .iter()
            .flat_map(|s| s.init.iter())
            .next()
            .ok_or_else(|| AdapterError::InvalidBlock {
                name: "model".to_string(),
                reason: "no parameter tensors".to_string(),
            })?;
        let dtype = check_float(&first.0, &first.1)?;
        let device = first.1.device().clone();
        if specs.len() >= PREDICTIVE_BLOCK_BIT as usize {
            return Err(AdapterError::InvalidBlock {
                name: "model".to_string(),
                reason: format!("{} blocks exceed the noise-key limit 2^31", specs.len()),
            });
        }
        let mut blocks = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            for (name, t) in &spec.init {
                if !t.device().same_device(&device) {
                    return Err(AdapterError::InvalidBlock {
                        name: spec.name.clone(),
                        reason: format!("tensor `{name}` is on another device"),
                    });
                }
            }
            blocks.push(VariationalBlock::from_spec(spec, index as u32, dtype)?);
        }
        let mut index = HashMap::new();
        for (b, block) in blocks.iter().enumerate() {
            for (k, t) in block.tensors().iter().enumerate() {
                if index.insert(t.name.clone(), (b, k)).is_some() {
                    return Err(AdapterError::InvalidBlock {
                        name: block.name().to_string(),
                        reason: format!("tensor name `{}` is used twice", t.name),
                    });
                }
            }
        }
        let mut buffer_map = HashMap::new();
        for (name, t) in buffers {
            if index.contains_key(&name) || buffer_map.contains_key(&name) {
                return Err(AdapterError::InvalidBlock {
                    name: "model".to_string(),
                    reason: format!("buffer name `{name}` is used twice"),
                });
            }
            let var = if t.is_variable() {
                Var::from_tensor(&t)?
            } else {
                Var::from_tensor(&t.detach())?
            };
            buffer_map.insert(name, var);
        }
        let rho = Var::from_tensor(&Tensor::new(q.rho(), &device)?)?;
        let fused = device.is_cpu();
        Ok(Self {
            blocks,
            index,
            buffers: buffer_map,
            rho,
            dtype,
            device,
            fused,
        })
    }

    /// The posterior over the tensors of a `candle_nn::VarMap` (e.g. after building the user's
    /// model once with `VarBuilder::from_varmap` and loading pretrained weights into it),
    /// split into blocks by `plan`. The VarMap's `Var`s *are* the variational means: training
    /// updates them in place, so `varmap.save(..)` afterwards writes the posterior means, and a
    /// model built from `VarBuilder::from_varmap(&varmap, ..)` is the posterior-mean (MAP)
    /// network. Prior means of [`crate::PriorCentre::Initial`] blocks are copies of the values
    /// at this call.
    pub fn from_varmap(
        varmap: &candle_nn::VarMap,
        plan: &BlockPlan,
        q: IsotropicPosterior,
    ) -> Result<Self> {
        let tensors: Vec<(String, Tensor)> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| AdapterError::InvalidBlock {
                    name: "model".to_string(),
                    reason: "the VarMap's lock is poisoned".to_string(),
                })?;
            data.iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect()
        };
        let (specs, buffers) = plan.specs(tensors)?;
        Self::with_buffers(specs, buffers, q)
    }

    /// The posterior over the tensors of a safetensors file (pretrained weights), split into
    /// blocks by `plan`; every tensor is copied into a fresh `Var` on `device`.
    pub fn from_safetensors(
        path: &Path,
        plan: &BlockPlan,
        q: IsotropicPosterior,
        device: &Device,
    ) -> Result<Self> {
        let map = candle_core::safetensors::load(path, device).map_err(|e| AdapterError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (specs, buffers) = plan.specs(map.into_iter().collect())?;
        Self::with_buffers(specs, buffers, q)
    }

    /// The variational tensor named `name` and its block.
    pub(crate) fn lookup(&self, name: &str) -> Option<(&VariationalBlock, &ParamTensor)> {
        let &(b, k) = self.index.get(name)?;
        let block = &self.blocks[b];
        Some((block, &block.tensors()[k]))
    }

    /// The buffer named `name` (non-trainable state such as batch-norm running statistics).
    pub fn buffer(&self, name: &str) -> Option<&Var> {
        self.buffers.get(name)
    }

    /// Every buffer, sorted by name.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .buffers
            .iter()
            .map(|(n, b)| (n.clone(), b.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
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
    pub(crate) fn noise(&self, key: NoiseKey, offset: u64, like: &Tensor) -> Result<Tensor> {
        let mut eps = vec![0.0f32; like.elem_count()];
        fill_normals(key, offset, &mut eps);
        let t = Tensor::from_vec(eps, like.dims(), &self.device)?;
        Ok(if self.dtype == DType::F32 {
            t
        } else {
            t.to_dtype(self.dtype)?
        })
    }

    /// `w = m + sigma eps` for one tensor, `eps_j = normal_at(key, offset + j)`; `track`
    /// connects the result to the mean (training) or not (prediction).
    pub(crate) fn draw(
        &self,
        t: &ParamTensor,
        sigma: &Tensor,
        key: NoiseKey,
        track: bool,
    ) -> Result<Tensor> {
        let m = if track {
            t.mean.as_tensor().clone()
        } else {
            t.mean.as_detached_tensor()
        };
        if self.fused {
            return crate::fused::reparameterize_buffered(&m, sigma, key, t.offset, &t.noise);
        }
        let eps = self.noise(key, t.offset, &m)?;
        // w = m + (sigma eps): product then sum, each rounded in the model dtype.
        let s = sigma.to_dtype(self.dtype)?;
        if !track || self.dtype == DType::F64 {
            return Ok(m.add(&eps.broadcast_mul(&s)?)?);
        }
        // The same value, with dL/dsigma = sum_i g_i eps_i summed in f64: through `s` candle
        // would sum the f32 products in f32. The sample uses a detached `s`, and a term that is
        // exactly zero, `eps (sigma - sigma)` in f64 (then cast), carries the f64 sum back to
        // sigma (adding +0 changes no value; only a -0 sample would become +0).
        let w = m.add(&eps.broadcast_mul(&s.detach())?)?;
        let zero = sigma.sub(&sigma.detach())?;
        let route = eps
            .to_dtype(DType::F64)?
            .broadcast_mul(&zero.to_dtype(DType::F64)?)?
            .to_dtype(self.dtype)?;
        Ok(w.add(&route)?)
    }

    fn sample_with(
        &self,
        sigma: &Tensor,
        key_of: impl Fn(u32) -> NoiseKey,
        track: bool,
    ) -> Result<Weights> {
        let mut out = Weights::new();
        for block in &self.blocks {
            let key = key_of(block.index());
            for t in block.tensors() {
                out.push(t.name.clone(), self.draw(t, sigma, key, track)?);
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
    /// ln(1 + M_b/(D_b sigma^2))` when the variance is learned or `KL(v_b)` when fixed (for a
    /// low-rank prior the forms of [`crate::kl::low_rank_kl_at_optimum`]), their sum, and the sum
    /// divided by `kappa N`. All graph-connected to the means and `rho`.
    ///
    /// # Formula
    /// ```text
    /// loss_KL = (1/(kappa N)) sum_b KL_b,   KL*_b = (D_b/2) ln(1 + M_b/(D_b sigma^2))
    /// ```
    pub fn kl(&self, objective: &Objective) -> Result<KlTerm> {
        let sigma = self.sigma_tensor()?;
        let sigma2 = sigma.sqr()?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut total: Option<Tensor> = None;
        for block in &self.blocks {
            let d = block.len();
            let (m, variance, kl) = match (block.covariance(), block.variance()) {
                (PriorCovariance::Isotropic, setting) => {
                    let m = block.squared_distance(self.fused)?;
                    let (variance, kl) = match setting {
                        PriorVariance::Learned => (
                            optimal_variance(d, &m, &sigma2)?,
                            kl_at_optimum(d, &m, &sigma2)?,
                        ),
                        PriorVariance::Fixed(v) => {
                            (Tensor::new(v, &self.device)?, kl_fixed(d, &m, &sigma2, v)?)
                        }
                    };
                    (m, variance, kl)
                }
                (PriorCovariance::LowRank(prior), setting) => {
                    let q = low_rank_quadratic(block, prior)?;
                    let (variance, kl) = match setting {
                        PriorVariance::Learned => (
                            low_rank_optimal_variance(prior, &q, &sigma2)?,
                            low_rank_kl_at_optimum(prior, &q, &sigma2)?,
                        ),
                        PriorVariance::Fixed(v) => (
                            Tensor::new(v, &self.device)?,
                            low_rank_kl_fixed(prior, &q, &sigma2, v)?,
                        ),
                    };
                    (q, variance, kl)
                }
            };
            total = Some(match total {
                Some(acc) => acc.add(&kl)?,
                None => kl.clone(),
            });
            blocks.push(BlockKl {
                name: block.name().to_string(),
                len: d,
                squared_distance: m,
                variance,
                kl,
            });
        }
        let total = total.ok_or_else(|| AdapterError::InvalidBlock {
            name: "model".to_string(),
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
    ///
    /// # Formula
    /// ```text
    /// penalty = sum_b (c_b/2) ||m_b - mu_b||^2
    /// ```
    pub fn l2sp_penalty(&self, coefficients: &[f64]) -> Result<Tensor> {
        check::same_len(
            "L2-SP coefficients (one per block)",
            self.blocks.len(),
            coefficients.len(),
        )?;
        let mut total = Tensor::new(0.0f64, &self.device)?;
        for (block, &c) in self.blocks.iter().zip(coefficients) {
            check::in_range(
                &format!("L2-SP coefficient of block `{}`", block.name()),
                c,
                0.0..,
            )?;
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
            .map(|b| {
                let host = HostBlock::of(b)?;
                let terms = match b.covariance() {
                    PriorCovariance::Isotropic => host.kl_terms(&q)?,
                    PriorCovariance::LowRank(prior) => host.low_rank_kl_terms(prior, &q)?,
                };
                Ok((terms, b.variance()))
            })
            .collect()
    }

    /// The core's [`Objective::evaluate`] of `mean_nll + KL/(kappa N)` at the current state
    /// (values and analytic KL gradients).
    pub fn core_evaluate(&self, objective: &Objective, mean_nll: f64) -> Result<Evaluation> {
        Ok(objective.evaluate(mean_nll, &self.core_kl_terms()?)?)
    }
}
