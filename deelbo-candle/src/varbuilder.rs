//! A `candle_nn::VarBuilder` whose tensors are the variational posterior: any candle model
//! (every `candle_nn` layer, every `candle-transformers` model) built from it runs on
//! reparameterized weights, with no change to the model's code.
//!
//! ```text
//! let net = MyNet::new(model.var_builder(seed, step)?)?;   // w~ = m + sigma eps, every tensor
//! let loss = elbo_loss(&cross_entropy(&net.forward(&x)?, &y)?, &model.kl(&objective)?)?;
//! opt.step(&loss.backward()?, lr)?;
//! ```
//!
//! Three builders come from the same [`VariationalModel`]:
//!
//! - [`VariationalModel::var_builder`]`(seed, step)`: training. The tensor named `name`
//!   (block `b`, flat offset `o` in the block) is `w = m + sigma eps`,
//!   `eps_j = normal_at(NoiseKey::for_block_step(seed, b, step), o + j)`, differentiable in the
//!   mean and in `rho`; bit for bit the tensor [`VariationalModel::sample`] gives.
//! - [`VariationalModel::mean_var_builder`]: the means themselves (the posterior-mean network;
//!   for MAP training, graph-connected).
//! - [`VariationalModel::predictive_var_builder`]`(seed, s)`: sample `s` of the predictive
//!   average, detached, with the keys of [`VariationalModel::sample_predictive`].
//!
//! A fourth, [`LeafSample::var_builder`], hands out the persistent leaves of a [`LeafSample`]:
//! the model is built once and each step's sample is drawn into those leaves in place (the
//! faster training loop; [`crate::leaves`]).
//!
//! Buffers (batch-norm running statistics) are handed out as the model's own `Var`s in every
//! builder, so a `batch_norm` layer's running-statistics updates persist across the per-step
//! rebuilds. A request for a name the model does not have, or with another shape, is an error
//! naming the tensor.
//!
//! Cost of a build: one hash lookup and one fused sample per tensor the model asks for (the
//! sample is the work the step needs anyway); the builder itself is two small allocations.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use deelbo_core::NoiseKey;

use crate::error::{AdapterError, Result};
use crate::leaves::LeafSample;
use crate::model::{PREDICTIVE_BLOCK_BIT, VariationalModel};

/// Which weights a builder hands out.
#[derive(Debug, Clone)]
enum Draw {
    /// `m + sigma eps` with training keys, graph-connected to `m` and `rho`.
    Train { sigma: Tensor, seed: u64, step: u32 },
    /// The means (graph-connected).
    Mean,
    /// `m + sigma eps` with predictive keys, detached.
    Predictive {
        sigma: Tensor,
        seed: u64,
        sample: u32,
    },
}

/// Where a builder's tensors come from.
enum Source<'a> {
    /// Drawn from the model per request.
    Model {
        model: &'a VariationalModel,
        draw: Draw,
    },
    /// The persistent leaves of a [`LeafSample`].
    Leaves(&'a LeafSample),
}

/// The [`SimpleBackend`] behind the model's VarBuilders.
struct VariationalBackend<'a> {
    source: Source<'a>,
}

fn wrap(e: AdapterError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

fn missing(name: &str) -> candle_core::Error {
    wrap(AdapterError::MissingTensor {
        name: name.to_string(),
    })
}

fn with_dtype(t: Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t)
    } else {
        t.to_dtype(dtype)
    }
}

impl VariationalBackend<'_> {
    fn tensor(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        let (model, draw) = match &self.source {
            Source::Model { model, draw } => (*model, draw),
            Source::Leaves(leaves) => {
                let t = match (leaves.buffer(name), leaves.leaf(name)) {
                    (Some(buffer), _) => buffer.as_tensor().clone(),
                    (None, Some(leaf)) => leaf.as_tensor().clone(),
                    (None, None) => return Err(missing(name)),
                };
                return with_dtype(t, dtype);
            }
        };
        if let Some(buffer) = model.buffer(name) {
            return with_dtype(buffer.as_tensor().clone(), dtype);
        }
        let (block, t) = model.lookup(name).ok_or_else(|| missing(name))?;
        let w = match draw {
            Draw::Mean => t.mean.as_tensor().clone(),
            Draw::Train { sigma, seed, step } => model
                .draw(
                    t,
                    sigma,
                    NoiseKey::for_block_step(*seed, block.index(), *step),
                    true,
                )
                .map_err(wrap)?,
            Draw::Predictive {
                sigma,
                seed,
                sample,
            } => model
                .draw(
                    t,
                    sigma,
                    NoiseKey::for_block_step(*seed, block.index() | PREDICTIVE_BLOCK_BIT, *sample),
                    false,
                )
                .map_err(wrap)?,
        };
        with_dtype(w, dtype)
    }
}

impl SimpleBackend for VariationalBackend<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.tensor(name, dtype)?;
        if t.shape() != &s {
            return Err(wrap(AdapterError::ShapeMismatch {
                name: name.to_string(),
                expected: t.dims().to_vec(),
                found: s.dims().to_vec(),
            }));
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.tensor(name, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.source {
            Source::Model { model, .. } => {
                model.buffer(name).is_some() || model.lookup(name).is_some()
            }
            Source::Leaves(leaves) => leaves.buffer(name).is_some() || leaves.leaf(name).is_some(),
        }
    }
}

impl LeafSample {
    /// A VarBuilder of the leaves themselves (and the model's buffers): build the model from it
    /// once; every [`LeafSample::resample`] changes the weights that model computes with.
    pub fn var_builder(&self) -> VarBuilder<'_> {
        VarBuilder::from_backend(
            Box::new(VariationalBackend {
                source: Source::Leaves(self),
            }),
            self.dtype(),
            self.device().clone(),
        )
    }
}

impl VariationalModel {
    fn builder(&self, draw: Draw) -> VarBuilder<'_> {
        VarBuilder::from_backend(
            Box::new(VariationalBackend {
                source: Source::Model { model: self, draw },
            }),
            self.dtype(),
            self.device().clone(),
        )
    }

    /// A VarBuilder for training step `step`: every tensor a model requests is the
    /// reparameterized sample `w = m + sigma eps` of [`VariationalModel::sample`] (same bits),
    /// connected to the means and to `rho`. Build the model from it once per step.
    pub fn var_builder(&self, seed: u64, step: u32) -> Result<VarBuilder<'_>> {
        let sigma = self.sigma_tensor()?;
        Ok(self.builder(Draw::Train { sigma, seed, step }))
    }

    /// A VarBuilder of the means themselves, graph-connected: the posterior-mean network, or
    /// the network a MAP run trains.
    pub fn mean_var_builder(&self) -> VarBuilder<'_> {
        self.builder(Draw::Mean)
    }

    /// A VarBuilder for sample `sample` of the S-sample predictive
    /// `p(y | x) ~= (1/S) sum_s p(y | x, w_s)`: the detached weights of
    /// [`VariationalModel::sample_predictive`] (keys disjoint from every training key).
    pub fn predictive_var_builder(&self, seed: u64, sample: u32) -> Result<VarBuilder<'_>> {
        let sigma = Tensor::new(self.sigma()?, self.device())?;
        Ok(self.builder(Draw::Predictive {
            sigma,
            seed,
            sample,
        }))
    }
}
