//! [`LeafSample`]: the training sample `w~ = m + sigma eps` held in persistent leaf [`Var`]s,
//! redrawn in place every step, so a model is built once and trained on fresh samples.
//!
//! [`crate::VariationalModel::var_builder`] hands a model new graph nodes `w~(m, rho)` every
//! step: the model is rebuilt per step, each sample is a fresh allocation, and candle's backward
//! pass carries each gradient from `w~` to `m` through one more node (a zero-filled accumulator
//! and an add per tensor). Here the weights the model holds are plain leaves instead:
//!
//! ```text
//! let mut sample = LeafSample::new(&model)?;
//! let net = MyNet::new(sample.var_builder())?;              // once
//! for step in 0..steps {
//!     sample.resample(&model, seed, step)?;                 // w~ = m + sigma eps, in place
//!     let loss = elbo_loss(&cross_entropy(&net.forward(&x)?, &y)?, &model.kl(&objective)?)?;
//!     let mut grads = loss.backward()?;
//!     sample.gradients_to_posterior(&model, &mut grads)?;  // dL/dw~ -> dL/dm, dL/drho
//!     opt.step(&grads, lr)?;
//! }
//! ```
//!
//! The chain rule of the reparameterization is applied after the backward pass, per tensor:
//!
//! ```text
//! dL/dm   = dL/dm|_KL + dL/dw~                    (w~ = m + sigma eps: dw~/dm = 1)
//! dL/drho = dL/drho|_KL + sigmoid(rho) sum_i (dL/dw~_i) eps_i
//! ```
//!
//! The samples are the bits of [`crate::VariationalModel::sample`] and the mean gradients the
//! bits of the graph path (one sum `a + b` in the tensor's dtype either way); `dL/drho` adds the
//! same `f64` noise dots in another order (tested against the graph path). Because the leaves
//! are overwritten in place, take a step's gradients before the next [`LeafSample::resample`],
//! as with any in-place parameter update.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use deelbo_core::{CompensatedSum, NoiseKey};

use crate::error::{AdapterError, Result};
use crate::model::VariationalModel;

/// One sampled tensor: the leaf and where its mean lives in the model.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) name: String,
    block: usize,
    tensor: usize,
    pub(crate) var: Var,
}

/// The training sample of a [`VariationalModel`] as leaf [`Var`]s, one per weight tensor
/// (module docs). Buffers (batch-norm statistics) are the model's own `Var`s.
#[derive(Debug)]
pub struct LeafSample {
    leaves: Vec<Leaf>,
    by_name: HashMap<String, usize>,
    buffers: HashMap<String, Var>,
    dtype: DType,
    device: Device,
    /// `(seed, step)` of the sample the leaves hold; `None` before the first draw.
    drawn: Option<(u64, u32)>,
}

fn leaf_error(reason: String) -> AdapterError {
    AdapterError::LeafSample { reason }
}

impl LeafSample {
    /// Leaves shaped like `model`'s weight tensors, holding copies of the means until the first
    /// [`LeafSample::resample`].
    pub fn new(model: &VariationalModel) -> Result<Self> {
        let mut leaves = Vec::new();
        let mut by_name = HashMap::new();
        for (b, block) in model.blocks().iter().enumerate() {
            for (k, t) in block.tensors().iter().enumerate() {
                by_name.insert(t.name.clone(), leaves.len());
                leaves.push(Leaf {
                    name: t.name.clone(),
                    block: b,
                    tensor: k,
                    var: Var::from_tensor(&t.mean.as_detached_tensor().copy()?)?,
                });
            }
        }
        Ok(Self {
            leaves,
            by_name,
            buffers: model.buffers().into_iter().collect(),
            dtype: model.dtype(),
            device: model.device().clone(),
            drawn: None,
        })
    }

    /// The element type of the leaves.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the leaves.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The leaf `Var` of the weight tensor `name`.
    pub fn leaf(&self, name: &str) -> Option<&Var> {
        self.by_name.get(name).map(|&i| &self.leaves[i].var)
    }

    /// The buffer named `name`.
    pub(crate) fn buffer(&self, name: &str) -> Option<&Var> {
        self.buffers.get(name)
    }

    /// `(seed, step)` of the sample the leaves hold (`None` before the first draw).
    pub fn drawn(&self) -> Option<(u64, u32)> {
        self.drawn
    }

    fn check_model(&self, model: &VariationalModel) -> Result<()> {
        let count: usize = model.blocks().iter().map(|b| b.tensors().len()).sum();
        if count != self.leaves.len() {
            return Err(leaf_error(format!(
                "made for {} tensors, the model has {count}",
                self.leaves.len()
            )));
        }
        for leaf in &self.leaves {
            let same = model
                .blocks()
                .get(leaf.block)
                .and_then(|b| b.tensors().get(leaf.tensor))
                .is_some_and(|t| t.name == leaf.name && t.mean.dims() == leaf.var.dims());
            if !same {
                return Err(leaf_error(format!(
                    "the model has no tensor `{}` of shape {:?} at its place",
                    leaf.name,
                    leaf.var.dims()
                )));
            }
        }
        Ok(())
    }

    /// Draw the sample of training step `step` into the leaves, in place: the tensor of block
    /// `b` at flat offset `o` becomes `m + sigma eps` with
    /// `eps_j = normal_at(NoiseKey::for_block_step(seed, b, step), o + j)`, bit for bit
    /// [`VariationalModel::sample`]`(seed, step)`.
    ///
    /// # Formula
    /// ```text
    /// w~_i = m_i + softplus(rho) eps_i
    /// ```
    pub fn resample(&mut self, model: &VariationalModel, seed: u64, step: u32) -> Result<()> {
        self.check_model(model)?;
        self.drawn = None;
        let sigma = model.sigma()?;
        let composite_sigma = if model.fused() {
            None
        } else {
            Some(Tensor::new(sigma, model.device())?)
        };
        for leaf in &self.leaves {
            let block = &model.blocks()[leaf.block];
            let t = &block.tensors()[leaf.tensor];
            let key = NoiseKey::for_block_step(seed, block.index(), step);
            match &composite_sigma {
                None => crate::fused::reparameterize_into(
                    leaf.var.as_tensor(),
                    t.mean.as_tensor(),
                    sigma,
                    key,
                    t.offset,
                    &t.noise,
                )?,
                Some(s) => leaf.var.set(&model.draw(t, s, key, false)?)?,
            }
        }
        self.drawn = Some((seed, step));
        Ok(())
    }

    /// Turn the gradients of a loss computed on the current sample into the posterior's: each
    /// leaf's `dL/dw~` is removed from `grads` and added to its mean's gradient, and
    /// `sigmoid(rho) sum_i (dL/dw~_i) eps_i` to `rho`'s. A leaf without a gradient (a tensor
    /// the loss does not use) contributes nothing. Returns the sample's `dL/dsigma` part,
    /// `sum_i (dL/dw~_i) eps_i` (summed in `f64`).
    ///
    /// # Formula
    /// ```text
    /// dL/dm   += dL/dw~
    /// dL/drho += sigmoid(rho) sum_i (dL/dw~_i) eps_i
    /// ```
    pub fn gradients_to_posterior(
        &self,
        model: &VariationalModel,
        grads: &mut GradStore,
    ) -> Result<f64> {
        let (seed, step) = self
            .drawn
            .ok_or_else(|| leaf_error("no sample drawn yet: call resample first".to_string()))?;
        self.check_model(model)?;
        let mut dot = CompensatedSum::default();
        for leaf in &self.leaves {
            let Some(g) = grads.remove(leaf.var.as_tensor()) else {
                continue;
            };
            let block = &model.blocks()[leaf.block];
            let t = &block.tensors()[leaf.tensor];
            let key = NoiseKey::for_block_step(seed, block.index(), step);
            let mean = t.mean.as_tensor();
            let g_mean = if model.fused() {
                // Every gradient candle's backward stores is the fresh result of an add, so
                // the leaf's, now out of the store, is ours to accumulate into.
                let g = g.contiguous()?;
                dot.add(crate::fused::noise_dot_of(&g, key, t.offset, &t.noise)?);
                if let Some(kl) = grads.get(mean) {
                    crate::fused::add_assign(&g, kl)?;
                }
                g
            } else {
                let eps = model.noise(key, t.offset, &g)?;
                let d = g.to_dtype(DType::F64)?.mul(&eps.to_dtype(DType::F64)?)?;
                dot.add(d.sum_all()?.to_scalar::<f64>()?);
                match grads.get(mean) {
                    Some(kl) => kl.add(&g)?,
                    None => g,
                }
            };
            grads.insert(mean, g_mean);
        }
        let dot = dot.value();
        let rho = model.rho().as_tensor();
        let extra = model.posterior()?.dsigma_drho() * dot;
        let g_rho = match grads.get(rho) {
            Some(g) => g.affine(1.0, extra)?,
            None => Tensor::new(extra, model.device())?.reshape(rho.shape())?,
        };
        grads.insert(rho, g_rho);
        Ok(dot)
    }
}
