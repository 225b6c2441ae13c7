//! # deelbo-core
//!
//! The math of the data-emphasized ELBO (DE-ELBO) over a small tensor trait, with no GPU or
//! framework dependency.
//!
//! Weights are split into blocks `b` of `D_b` weights, each with a Gaussian prior
//! `N(mu_b, v_b Sigma_p)` and a Gaussian posterior `q_b = N(m_b, sigma^2 I)` (or diagonal). The
//! objective is
//!
//! `J_kappa = kappa sum_n E_q[log p(y_n | x_n, w)] - sum_b KL(q_b || p_b)`,
//!
//! with `kappa = D/N` ([`KappaRule::DataEmphasized`]) when the model has many more weights than
//! training examples. Each prior variance has the closed-form optimum `v*_b = M_b/D_b + sigma^2`
//! (`M_b = ||m_b - mu_b||^2`), so only means and `sigma` are optimized numerically.
//!
//! | module | concept |
//! |---|---|
//! | [`tensor`] | the parameter-block traits ([`ParamBlock`], [`ParamBlockMut`]) for slices and ndarray |
//! | [`noise`] | counter-based Philox4x32-10 Gaussian noise keyed by element index |
//! | [`kappa`] | the likelihood weight rules |
//! | [`posterior`] | softplus-parameterized isotropic / diagonal scales |
//! | [`prior`] | KL, closed-form `v*`, `KL*`, log-density; [`prior::low_rank`] for `A + U U^T` |
//! | [`objective`] | the per-example loss and its KL gradients |
//! | [`likelihood`] | Gaussian, categorical, expected Gaussian for linear models |
//! | [`fused`] | the one-pass sample + reduce step and its backward (CPU reference of the CUDA kernels) |
//!
//! ```
//! use deelbo_core::{KappaRule, IsotropicPosterior, Objective, PriorVariance, isotropic_block};
//!
//! let pretrained = vec![0.5f32; 1000];
//! let mean = pretrained.clone(); // variational mean starts at the pretrained weights
//! let q = IsotropicPosterior::default(); // sigma = 1e-4
//! let objective = Objective::new(KappaRule::DataEmphasized, 1000, 50)?; // kappa = 20
//! let block = isotropic_block(&mean[..], Some(&pretrained[..]), &q, PriorVariance::Learned)?;
//! let eval = objective.evaluate(0.7, &[block])?;
//! assert!((eval.blocks[0].variance - 1e-8).abs() < 1e-12); // v* = M/D + sigma^2 = sigma^2
//! # Ok::<(), deelbo_core::CoreError>(())
//! ```

pub mod check;
pub mod error;
pub mod fused;
pub mod kappa;
pub mod likelihood;
pub mod noise;
pub mod objective;
pub mod posterior;
pub mod prior;
pub mod tensor;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_util;

pub use error::{CoreError, Result};
pub use kappa::{Kappa, KappaRule};
pub use likelihood::LN_2PI;
pub use noise::{NoiseKey, fill_normals, normal_at};
pub use objective::{BlockEvaluation, Evaluation, Objective, isotropic_block};
pub use posterior::{DiagonalPosterior, IsotropicPosterior, ScaleStats, sigmoid, softplus};
pub use prior::{
    KlTerms, PriorShape, PriorVariance, isotropic_log_density, low_rank::LowRankPrior,
};
pub use tensor::{ParamBlock, ParamBlockMut, Real};
