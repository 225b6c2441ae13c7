//! Parameter blocks: groups of weight tensors that share one prior `N(mu_b, v_b I)`.
//!
//! A block's variational means are candle [`Var`]s (trainable), its prior means plain tensors
//! (frozen copies). The block's `D_b` weights are laid out as one flat run, tensor after tensor
//! in the order given, each tensor row-major: tensor `k` occupies flat indices
//! `offset_k .. offset_k + numel_k`. That flat index is the element index of the block's noise
//! stream ([`deelbo_core::NoiseKey::for_block_step`]), so the sample of every weight is fixed by
//! `(seed, block, step, flat index)` alone.

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use deelbo_core::{LowRankPrior, PriorVariance};

use crate::error::{AdapterError, Result};

/// The prior mean `mu_b` of a block.
#[derive(Debug, Clone)]
pub enum PriorMean {
    /// `mu = 0` (e.g. a new classification head; the prior is plain L2 / weight decay).
    Zero,
    /// `mu` = the given tensors, one per block tensor in the same order and shapes (e.g. the
    /// pretrained weights: the L2-SP prior).
    Tensors(Vec<Tensor>),
}

/// The prior covariance shape `Sigma_p` of a block (`p_b = N(mu_b, v_b Sigma_p)`).
#[derive(Debug, Clone, Default)]
pub enum PriorCovariance {
    /// `Sigma_p = I`: the KL depends on the means only through `M_b = ||m_b - mu_b||^2`.
    #[default]
    Isotropic,
    /// `Sigma_p = A + U U^T` over the block's flat layout (e.g. learned from a source task by
    /// SWAG, the PTYL prior): the KL uses the Mahalanobis distance
    /// `Q_b = (m_b - mu_b)^T Sigma_p^-1 (m_b - mu_b)`, `tr(Sigma_p^-1)` and `ln det Sigma_p`.
    /// CPU only.
    LowRank(Arc<LowRankPrior>),
}

/// What a block is built from: its name, the initial variational means, the prior mean and how
/// the prior variance is set.
///
/// An initial tensor that is already a candle [`Var`] (e.g. from a `candle_nn::VarMap`) is used
/// as the block's mean itself, so training updates it in place and the caller's `VarMap` holds
/// the posterior means afterwards; any other tensor is copied into a fresh `Var`.
#[derive(Debug, Clone)]
pub struct BlockSpec {
    /// The block's name (e.g. `backbone`, `head`).
    pub name: String,
    /// The initial means `m`, one `(name, tensor)` per weight tensor.
    pub init: Vec<(String, Tensor)>,
    /// The prior mean `mu_b`.
    pub prior_mean: PriorMean,
    /// Learned (`v* = Q/D + sigma^2 tr(Sigma_p^-1)/D`) or fixed prior variance.
    pub variance: PriorVariance,
    /// The prior covariance shape.
    pub covariance: PriorCovariance,
}

impl BlockSpec {
    /// An L2-SP block: the means start at the pretrained weights and the prior is centred on
    /// them, `N(w_pretrained, lambda I)` with `lambda` learned.
    pub fn l2sp(name: impl Into<String>, pretrained: Vec<(String, Tensor)>) -> Self {
        let prior = pretrained.iter().map(|(_, t)| t.clone()).collect();
        Self {
            name: name.into(),
            init: pretrained,
            prior_mean: PriorMean::Tensors(prior),
            variance: PriorVariance::Learned,
            covariance: PriorCovariance::Isotropic,
        }
    }

    /// A zero-mean block `N(0, tau I)` (tau learned) starting from the given means.
    pub fn zero_mean(name: impl Into<String>, init: Vec<(String, Tensor)>) -> Self {
        Self {
            name: name.into(),
            init,
            prior_mean: PriorMean::Zero,
            variance: PriorVariance::Learned,
            covariance: PriorCovariance::Isotropic,
        }
    }

    /// A low-rank-plus-diagonal block `N(mu, v Sigma_p)`, `Sigma_p = A + U U^T` (the PTYL prior):
    /// the means start at `init`, the prior mean is `prior_mean` (one tensor per block tensor,
    /// same shapes) and `prior` is laid out over the block's flat index (tensor after tensor,
    /// row-major). `v` is learned.
    pub fn low_rank(
        name: impl Into<String>,
        init: Vec<(String, Tensor)>,
        prior_mean: Vec<Tensor>,
        prior: Arc<LowRankPrior>,
    ) -> Self {
        Self {
            name: name.into(),
            init,
            prior_mean: PriorMean::Tensors(prior_mean),
            variance: PriorVariance::Learned,
            covariance: PriorCovariance::LowRank(prior),
        }
    }

    /// The same block with a different prior-variance setting.
    pub fn with_variance(mut self, variance: PriorVariance) -> Self {
        self.variance = variance;
        self
    }
}

/// One weight tensor of a block: its mean (trainable), prior mean and flat offset.
#[derive(Debug, Clone)]
pub struct ParamTensor {
    /// The tensor's name (what the forward pass looks up).
    pub name: String,
    /// The variational mean `m`, trainable.
    pub mean: Var,
    /// The prior mean `mu` (`None` = zero), detached from the graph.
    pub prior_mean: Option<Tensor>,
    /// Flat index of the tensor's first element within its block.
    pub offset: u64,
    /// The tensor's noise buffer, reused by every fused sample of it (shared by clones).
    pub(crate) noise: Arc<crate::fused::NoiseBuffer>,
}

/// A block of a [`crate::VariationalModel`]: tensors sharing one prior.
#[derive(Debug, Clone)]
pub struct VariationalBlock {
    name: String,
    index: u32,
    tensors: Vec<ParamTensor>,
    len: usize,
    variance: PriorVariance,
    covariance: PriorCovariance,
}

pub(crate) fn check_float(name: &str, t: &Tensor) -> Result<DType> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(t.dtype()),
        dtype => Err(AdapterError::UnsupportedDType {
            name: name.to_string(),
            dtype,
        }),
    }
}

impl VariationalBlock {
    /// Build block number `index` from its spec, copying the initial means into fresh [`Var`]s
    /// and the prior means into frozen tensors. All tensors must have dtype `dtype` and the
    /// prior tensors the shapes of the means.
    pub(crate) fn from_spec(spec: BlockSpec, index: u32, dtype: DType) -> Result<Self> {
        let invalid = |reason: String| AdapterError::InvalidBlock {
            name: spec.name.clone(),
            reason,
        };
        if spec.init.is_empty() {
            return Err(invalid("it has no tensors".to_string()));
        }
        if let PriorMean::Tensors(mu) = &spec.prior_mean
            && mu.len() != spec.init.len()
        {
            return Err(invalid(format!(
                "{} prior-mean tensors for {} weight tensors",
                mu.len(),
                spec.init.len()
            )));
        }
        let mut tensors = Vec::with_capacity(spec.init.len());
        let mut offset = 0u64;
        for (k, (name, init)) in spec.init.iter().enumerate() {
            let found = check_float(name, init)?;
            if found != dtype {
                return Err(AdapterError::DTypeMismatch {
                    name: name.clone(),
                    expected: dtype,
                    found,
                });
            }
            let prior_mean = match &spec.prior_mean {
                PriorMean::Zero => None,
                PriorMean::Tensors(mu) => {
                    let mu = &mu[k];
                    if mu.dims() != init.dims() {
                        return Err(AdapterError::ShapeMismatch {
                            name: format!("prior mean of {name}"),
                            expected: init.dims().to_vec(),
                            found: mu.dims().to_vec(),
                        });
                    }
                    if mu.dtype() != dtype {
                        return Err(AdapterError::DTypeMismatch {
                            name: format!("prior mean of {name}"),
                            expected: dtype,
                            found: mu.dtype(),
                        });
                    }
                    Some(mu.detach().copy()?)
                }
            };
            // A Var is shared (trained in place); any other tensor is copied.
            let mean = if init.is_variable() {
                Var::from_tensor(init)?
            } else {
                Var::from_tensor(&init.detach())?
            };
            tensors.push(ParamTensor {
                name: name.clone(),
                mean,
                prior_mean,
                offset,
                noise: Arc::default(),
            });
            offset += init.elem_count() as u64;
        }
        if offset == 0 {
            return Err(invalid("it has no weights (D = 0)".to_string()));
        }
        if let PriorCovariance::LowRank(prior) = &spec.covariance {
            if prior.len() as u64 != offset {
                return Err(invalid(format!(
                    "its low-rank prior covers {} weights, the block has {offset}",
                    prior.len()
                )));
            }
            if !tensors[0].mean.device().is_cpu() {
                return Err(invalid(
                    "a low-rank prior is only supported on the CPU".to_string(),
                ));
            }
        }
        Ok(Self {
            name: spec.name,
            index,
            tensors,
            len: offset as usize,
            variance: spec.variance,
            covariance: spec.covariance,
        })
    }

    /// The block's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The block's index in its model: the `block` of its noise keys.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The block's tensors in flat-layout order.
    pub fn tensors(&self) -> &[ParamTensor] {
        &self.tensors
    }

    /// `D_b`, the number of weights.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the block has no weights (never, for a constructed block).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The prior-variance setting.
    pub fn variance(&self) -> PriorVariance {
        self.variance
    }

    /// The prior covariance shape.
    pub fn covariance(&self) -> &PriorCovariance {
        &self.covariance
    }

    /// `true` when the prior mean is zero.
    pub fn zero_prior_mean(&self) -> bool {
        self.tensors.iter().all(|t| t.prior_mean.is_none())
    }

    /// `M_b = ||m_b - mu_b||^2 = sum_k sum_i (m_ki - mu_ki)^2` as a scalar `f64` tensor connected
    /// to the means' autodiff graph (`dM/dm = 2 (m - mu)`). `fused` selects the core's
    /// deterministic reduction ([`crate::fused::squared_distance`], CPU only); otherwise
    /// composite candle ops (`to_dtype(f64)`, `sub`, `sqr`, `sum_all`: differences, squares
    /// and their sum in `f64`, as the core computes them).
    ///
    /// # Formula
    /// ```text
    /// M_b = sum_k sum_i (m_ki - mu_ki)^2      (summed in f64)
    /// ```
    pub fn squared_distance(&self, fused: bool) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for t in &self.tensors {
            let s = if fused {
                crate::fused::squared_distance(t.mean.as_tensor(), t.prior_mean.as_ref())?
            } else {
                let m = t.mean.as_tensor().to_dtype(DType::F64)?;
                let diff = match &t.prior_mean {
                    Some(mu) => m.sub(&mu.to_dtype(DType::F64)?)?,
                    None => m,
                };
                diff.sqr()?.sum_all()?
            };
            total = Some(match total {
                Some(acc) => acc.add(&s)?,
                None => s,
            });
        }
        total.ok_or_else(|| AdapterError::InvalidBlock {
            name: self.name.clone(),
            reason: "it has no tensors".to_string(),
        })
    }
}
