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
//! ## Start here
//!
//! | item | what it is |
//! |---|---|
//! | [`Objective`] | kappa, `N` and the per-example loss `mean NLL + sum_b KL_b/(kappa N)`, with its KL gradients |
//! | [`KappaRule`] / [`Kappa`] | how kappa is chosen (`1`, `D/N`, `D/(2N)`, fixed) and the validated value, clamping reported |
//! | [`isotropic_block`] / [`KlTerms`] | one block's reductions (`M_b`, `D_b`, the scale) and its KL, `v*`, `KL*` |
//! | [`PriorVariance`] | a block's prior variance: learned in closed form (`v*`) or fixed |
//! | [`LowRankPrior`] | the low-rank-plus-diagonal prior `N(mu, v (A + U U^T))` (K x K Woodbury core) |
//! | [`IsotropicPosterior`] / [`DiagonalPosterior`] | `sigma = softplus(rho)`, one scale or one per weight |
//! | [`NoiseKey`], [`fill_normals`] | counter-based Philox noise: `eps_i` is a function of `(seed, stream, i)` only |
//! | [`ParamBlock`] / [`ParamBlockMut`] | the reductions and updates over slices and ndarray arrays |
//! | [`fused`] | the one-pass sample + reduce step and its backward (+ momentum SGD), with a naive reference |
//! | [`check`] | the input checks every deelbo crate uses; [`CoreError`] names the bad input |
//!
//! The seam to other tensors (a GPU buffer, a candle tensor) is not a trait implementation: a
//! device computes its block reductions (`M_b`, and `sum sigma_j^2`, `sum ln sigma_j^2` for a
//! diagonal q) with its own kernels, hands them to [`KlTerms`], and [`Objective::evaluate`] turns
//! them into the loss and the gradient scales it sends back (see `docs/DESIGN.md`).
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
mod error;
pub mod fused;
mod kappa;
mod likelihood;
#[doc(hidden)]
pub mod mirror;
mod noise;
mod objective;
mod posterior;
mod prior;
mod reduce;
mod tensor;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_util;

pub use error::{CoreError, Result};
pub use kappa::{Kappa, KappaRule};
pub use likelihood::{
    LN_2PI, categorical_log_likelihood, categorical_mean_nll_gradient,
    expected_gaussian_log_likelihood, gaussian_log_likelihood, log_softmax_row,
};
pub use noise::{InstructionSet, NoiseKey, fill_normals, fill_normals_on, normal_at, uniform_at};
pub use objective::{BlockEvaluation, Evaluation, Objective, isotropic_block};
pub use posterior::{
    DEFAULT_INITIAL_SIGMA, DiagonalPosterior, IsotropicPosterior, ScaleStats, inverse_softplus,
    sigmoid, softplus,
};
pub use prior::{
    KlTerms, LowRankDiagnostics, LowRankPrior, LowRankScale, MahalanobisParts, PriorShape,
    PriorVariance, isotropic_log_density,
};
pub use reduce::{
    CompensatedSum, REDUCTION_CHUNK, REDUCTION_LANES, deterministic_sum, pair_sum,
    squared_distance_f64, squared_distance_f64_on, sum_squares_f64, sum_squares_f64_on,
};
pub use tensor::{ParamBlock, ParamBlockMut, Real};
