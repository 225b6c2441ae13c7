//! # deelbo-candle
//!
//! The data-emphasized ELBO inside a [candle](https://github.com/huggingface/candle) training
//! loop. A [`VariationalModel`] holds the posterior `q(w) = N(m, sigma^2 I)` over a network's
//! weights: per-block variational means as candle [`candle_core::Var`]s and one shared raw scale
//! `rho` (`sigma = softplus(rho)`). Each training step
//!
//! 1. draws the reparameterized weights `w~ = m + sigma eps` with the core's counter-based noise
//!    ([`VariationalModel::sample`]; same seed, same weights);
//! 2. runs the network on `w~` and takes the mean NLL of the batch;
//! 3. adds the KL term with closed-form prior variances `v*_b = M_b/D_b + sigma^2`
//!    ([`VariationalModel::kl`], `KL*_b = (D_b/2) ln(1 + M_b/(D_b sigma^2))`) scaled by
//!    `1/(kappa N)` with kappa from the core's [`deelbo_core::KappaRule`];
//! 4. back-propagates with candle's autodiff and steps [`NesterovSgd`].
//!
//! For transfer learning, the backbone block has the pretrained weights as prior mean (L2-SP,
//! variance `lambda`) and the new head a zero-mean prior (variance `tau`).
//!
//! | module | concept |
//! |---|---|
//! | [`block`] | parameter blocks: means as `Var`s, prior means, flat noise layout |
//! | [`model`] | the variational posterior: sampling, KL term, core cross-check |
//! | [`kl`] | `v*`, `KL*`, `KL(v)` as candle expressions |
//! | [`fused`] | one-pass sample (noise regenerated in backward) and squared distance on the CPU |
//! | [`scalar_ops`] | exact `softplus` and `log1p` custom ops with backward passes |
//! | [`snapshot`] | host copies implementing the core's `ParamBlock` (the adapter layer) |
//! | [`optim`] | SGD + Nesterov momentum, cosine schedule, per-group gradient clipping |
//! | [`mlp`] | a ReLU MLP reading its weights from a [`Weights`] set |
//! | [`predict`] | posterior-mean and S-sample predictive evaluation, accuracy / NLL |
//!
//! CPU only by default; the `cuda` feature forwards to candle's CUDA backend (needs nvcc).
//!
//! ## Same seed, same bits, at any thread count (CPU)
//!
//! deelbo's own reductions here (squared distances, `sum g eps`, the clipping norm) use the
//! core's fixed 4096-term chunks, never a split by thread count. The candle 0.11 CPU kernels a
//! training step runs are thread-count invariant as well, read from their sources and checked
//! by `deelbo-transfer/tests/thread_count.rs` (children at `RAYON_NUM_THREADS` = 1, 2, 3 give
//! the same bits for matmuls over gemm's regimes, conv2d forward and backward, four steps of the
//! transfer `Trainer` for the MLP and the conv net, MAP and DE-ELBO, and a shortened
//! pretraining + `train_run`):
//!
//! - matmul: candle's `MatMul` calls `gemm::gemm` with `Parallelism::Rayon(get_num_threads())`
//!   (or `None` at one thread). gemm-common 0.19 blocks the depth `k` by a `kc` derived from
//!   the cache sizes and the shape only, and the threads split the output into tiles, each tile
//!   summed over `k` by one thread in the same order; what depends on the thread count (the
//!   threading threshold, the lhs packing threshold, the column block `nc`) changes copies and
//!   tiling, not the arithmetic of any output element.
//! - conv2d (tiled im2col): parallel over batch items, tiles and output channels; every output
//!   element is one gemm dot product written by one thread. Its backward is conv2d /
//!   conv_transpose2d again.
//! - element-wise ops: candle's barrier pool splits them into fixed 16K-element units.
//! - reductions (`sum_keepdim`, `max_keepdim`, batch-norm statistics, log-softmax): sequential.
//!
//! Not checked: bits across CPUs (gemm dispatches its microkernel on the instruction set, e.g.
//! AVX2 or AVX-512). A candle upgrade that breaks the invariance fails the test.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use deelbo_candle::{BlockSpec, VariationalModel, elbo_loss};
//! use deelbo_core::{IsotropicPosterior, KappaRule, Objective};
//!
//! let dev = Device::Cpu;
//! let pretrained = Tensor::ones((4, 3), DType::F64, &dev)?;
//! let head = Tensor::zeros((3, 2), DType::F64, &dev)?;
//! let model = VariationalModel::new(
//!     vec![
//!         BlockSpec::l2sp("backbone", vec![("w".into(), pretrained)]),
//!         BlockSpec::zero_mean("head", vec![("h".into(), head)]),
//!     ],
//!     IsotropicPosterior::default(),
//! )?;
//! let objective = Objective::new(KappaRule::DataEmphasized, model.num_params(), 3)?;
//! let w = model.sample(7, 0)?; // w = m + sigma eps, eps from the core's Philox stream
//! let nll = w.get("w")?.sum_all()?; // stand-in for a network's mean NLL
//! let loss = elbo_loss(&nll, &model.kl(&objective)?)?;
//! let grads = loss.backward()?;
//! assert!(grads.get(model.rho().as_tensor()).is_some());
//! # Ok::<(), deelbo_candle::AdapterError>(())
//! ```

pub mod block;
pub mod error;
pub mod fused;
pub mod init;
pub mod kl;
pub mod leaves;
pub mod mlp;
pub mod model;
pub mod optim;
pub mod plan;
pub mod predict;
pub mod scalar_ops;
pub mod snapshot;
pub mod swag;
pub mod varbuilder;
pub mod weights;

pub use block::{BlockSpec, ParamTensor, PriorCovariance, PriorMean, VariationalBlock};
pub use error::{AdapterError, Result};
pub use init::seeded_var_builder;
pub use leaves::LeafSample;
pub use mlp::Mlp;
pub use model::{BlockKl, KlTerm, PREDICTIVE_BLOCK_BIT, VariationalModel, elbo_loss};
pub use optim::{CosineSchedule, NesterovSgd, ParamGroup, StepReport};
pub use plan::{BATCH_NORM_BUFFERS, BlockPlan, BlockRule, PriorCentre};
pub use predict::{
    ClassificationMetrics, metrics_from_log_probs, posterior_mean_log_probs, predictive_log_probs,
    predictive_log_probs_of,
};
pub use snapshot::HostBlock;
pub use swag::{SwagCollector, SwagSettings, SwagStatistics};
pub use weights::Weights;
