//! The fused training step of one isotropic-prior block, on the CPU: the reference the CUDA
//! kernels (`deelbo-cuda`) are tested against, and a fast multi-threaded path in its own right.
//!
//! # Forward: one pass
//!
//! For `i` in `0..D` (element `first_index + i` of the noise stream `key`):
//!
//! - `eps_i = `[`crate::noise::normal_at`]`(key, first_index + i)`,
//! - `w_i = m_i + sigma_i eps_i` in `f32` (product rounded, then the sum; no fused multiply-add),
//! - `M = sum_i (m_i - mu_i)^2` in `f64` (`mu = 0` when there is no prior mean),
//! - for a diagonal posterior also `sum_j sigma_j^2` and `sum_j ln sigma_j^2` in `f64`.
//!
//! [`ForwardStats::kl_terms`] turns the reductions into the core's [`KlTerms`], which give
//! `v* = (M + sum_j sigma_j^2)/D` and `KL*`.
//!
//! # Backward: one pass, regenerating the noise
//!
//! With `g_i = d loss/d w_i` from the model and the loss `mean NLL + KL/(kappa N)` at prior
//! variance `v` (usually `v*`), with `c = 1/(kappa N v)` and `k = 1/(kappa N)`:
//!
//! - `d loss/d m_i = g_i + c (m_i - mu_i)`, in `f32` as `g + c (m - mu)` (subtract, multiply,
//!   add, in that order);
//! - isotropic `sigma`: `d loss/d sigma = sum_i g_i eps_i + k D (sigma/v - 1/sigma)`, the sum in
//!   `f64` ([`BackwardStats`]);
//! - diagonal `sigma_j`: `d loss/d sigma_j = g_j eps_j + k (sigma_j/v - 1/sigma_j)`, written per
//!   weight in `f32` as `g eps + k (sigma_j (1/v) - 1/sigma_j)`;
//! - optionally fused SGD with momentum ([`backward_sgd`]):
//!   `u_i <- beta u_i + d loss/d m_i`, `m_i <- m_i - lr u_i` (PyTorch's convention, `f32`).
//!
//! The KL gradients are the envelope-theorem gradients of `KL*` when `v = v*`
//! ([`crate::prior`]).
//!
//! # Determinism
//!
//! The block is cut into chunks of [`REDUCTION_CHUNK`] elements. Each chunk's partial sums are
//! computed in `f64` with [`LANES`] interleaved accumulators combined in a fixed order, and the
//! chunk partials are combined in chunk order with Neumaier compensation. Threads take contiguous
//! runs of whole chunks, so the result has the same bits for every thread count. Element-wise
//! outputs (`w`, gradients, updates) are identical to the naive multi-pass versions ([`naive`])
//! and, with `--fmad=false`, to the CUDA kernels.
//!
//! Memory traffic per `f32` weight (what a bandwidth-bound implementation must move): forward
//! 12 bytes (read `m`, `mu`; write `w`); backward 16 bytes (read `g`, `m`, `mu`; write the mean
//! gradient); backward with the SGD update 24 bytes (read `g`, `m`, `mu`, `u`; write `m`, `u`).

use crate::check;
use crate::error::{CoreError, Result};
use crate::noise::{NoiseKey, fill_normals};
use crate::objective::{BlockEvaluation, Objective};
use crate::posterior::ScaleStats;
use crate::prior::KlTerms;
use crate::tensor::CompensatedSum;

/// Elements per reduction chunk: the unit of work whose `f64` partials are combined in order.
pub const REDUCTION_CHUNK: usize = 4096;

/// Interleaved `f64` accumulators inside a chunk (element `i` of a chunk goes to lane `i % LANES`;
/// lanes are added `((l0 + l1) + (l2 + l3)) + ...` pairwise at the end).
pub const LANES: usize = 8;

/// Noise values generated per refill inside a chunk.
const EPS_TILE: usize = 1024;

/// Bytes a bandwidth-bound forward pass must move per `f32` weight: read `m`, `mu`, write `w`.
pub const FORWARD_BYTES_PER_WEIGHT: usize = 12;

/// Bytes a bandwidth-bound backward pass must move per `f32` weight: read `g`, `m`, `mu`, write
/// `d loss/d m`.
pub const BACKWARD_BYTES_PER_WEIGHT: usize = 16;

/// Bytes the backward pass with the fused SGD-with-momentum update moves per `f32` weight: read
/// `g`, `m`, `mu`, `u`; write `m`, `u`.
pub const BACKWARD_SGD_BYTES_PER_WEIGHT: usize = 24;

/// The posterior scale of a block in the fused step.
#[derive(Debug, Clone, Copy)]
pub enum Scale<'a> {
    /// One standard deviation `sigma > 0` shared by every weight (as `f32`, the precision the
    /// sample `w = m + sigma eps` is computed in).
    Isotropic(f32),
    /// Per-weight standard deviations `sigma_j > 0` (length `D`), e.g. `softplus(rho_j)`
    /// computed by the caller.
    Diagonal(&'a [f32]),
}

/// The reductions of one fused forward pass over a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardStats {
    /// `D`, the number of weights.
    pub len: usize,
    /// `M = sum_i (m_i - mu_i)^2`, accumulated in `f64`.
    pub sq_dist: f64,
    /// The scale statistics: `Isotropic { sigma }` or the reduced `Diagonal` sums
    /// `sum_j sigma_j^2`, `sum_j ln sigma_j^2`.
    pub scale: ScaleStats,
}

impl ForwardStats {
    /// The block's isotropic-prior [`KlTerms`] (then `optimal_variance()` is
    /// `v* = (M + sum_j sigma_j^2)/D` and `kl_at_optimum()` is `KL*`). Errors when `D = 0` or the
    /// reductions are not finite.
    pub fn kl_terms(&self) -> Result<KlTerms> {
        KlTerms::isotropic(self.len, self.sq_dist, self.scale)
    }
}

/// The scalar results of a fused backward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackwardStats {
    /// `sum_i g_i eps_i`, accumulated in `f64` (the likelihood part of `d loss/d sigma` for an
    /// isotropic scale; for a diagonal scale, the sum of the per-weight likelihood parts).
    pub noise_dot: f64,
    /// `d loss/d sigma` for an isotropic scale: `noise_dot + k D (sigma/v - 1/sigma)`. `None`
    /// for a diagonal scale (the per-weight gradients are written to the caller's buffer).
    pub grad_sigma: Option<f64>,
}

/// The constants of the KL part of the backward pass: `k = 1/(kappa N)` and the prior variance
/// `v` the KL is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlGradScales {
    /// `k = 1/(kappa N)`, the weight of the KL in the per-example loss.
    pub inv_kappa_n: f64,
    /// The prior variance `v` (`v*` when learned), `> 0`.
    pub variance: f64,
}

impl KlGradScales {
    /// From an [`Objective`] and the block's [`BlockEvaluation`] (its `variance` field).
    pub fn from_evaluation(objective: &Objective, block: &BlockEvaluation) -> Self {
        Self {
            inv_kappa_n: 1.0 / objective.kappa_n(),
            variance: block.variance,
        }
    }

    /// `c = 1/(kappa N v)`, the factor of `(m - mu)` in `d loss/d m`.
    pub fn mean_scale(&self) -> f64 {
        self.inv_kappa_n / self.variance
    }

    /// The `f32` constants the element-wise formulas use: `(c, k, 1/v)`.
    pub fn f32_constants(&self) -> (f32, f32, f32) {
        (
            self.mean_scale() as f32,
            self.inv_kappa_n as f32,
            (1.0 / self.variance) as f32,
        )
    }

    /// `k D (sigma/v - 1/sigma)`: the KL part of `d loss/d sigma` for an isotropic block of
    /// `len` weights, in `f64`.
    pub fn isotropic_sigma_term(&self, len: usize, sigma: f64) -> f64 {
        self.inv_kappa_n * len as f64 * (sigma / self.variance - 1.0 / sigma)
    }

    fn validate(&self) -> Result<()> {
        check::positive("1/(kappa N)", self.inv_kappa_n)?;
        check::positive("prior variance", self.variance)?;
        Ok(())
    }
}

/// Momentum SGD hyperparameters for [`backward_sgd`]: `u <- momentum u + grad`,
/// `m <- m - lr u`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdMomentum {
    /// The learning rate `lr` (finite).
    pub lr: f32,
    /// The momentum coefficient `beta` (finite; `0` gives plain SGD).
    pub momentum: f32,
}

// ---------------------------------------------------------------------------------------------
// Element-wise formulas shared by the fused and naive paths (and mirrored by the CUDA source).

/// `w = m + sigma eps` in `f32`, product then sum.
#[inline(always)]
pub fn sample_element(m: f32, sigma: f32, eps: f32) -> f32 {
    m + sigma * eps
}

/// `d loss/d m = g + c (m - mu)` in `f32`: subtract, multiply, add.
#[inline(always)]
pub fn mean_grad_element(g: f32, m: f32, mu: f32, c: f32) -> f32 {
    g + c * (m - mu)
}

/// Diagonal `d loss/d sigma_j = g eps + k (sigma (1/v) - 1/sigma)` in `f32`, in that order.
#[inline(always)]
pub fn sigma_grad_element(g: f32, eps: f32, sigma: f32, k: f32, inv_v: f32) -> f32 {
    g * eps + k * (sigma * inv_v - 1.0 / sigma)
}

/// One momentum-SGD step on one weight: `u' = beta u + grad`, `m' = m - lr u'`, in `f32`.
#[inline(always)]
pub fn sgd_element(m: f32, u: f32, grad: f32, sgd: SgdMomentum) -> (f32, f32) {
    let u = sgd.momentum * u + grad;
    (m - sgd.lr * u, u)
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn check_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(CoreError::NonPositive {
            name: "thread count".to_string(),
            value: 0.0,
        });
    }
    Ok(())
}

fn check_prior(len: usize, prior_mean: Option<&[f32]>) -> Result<()> {
    if let Some(mu) = prior_mean {
        check::same_len("prior mean", len, mu.len())?;
    }
    Ok(())
}

fn check_scale(len: usize, scale: Scale<'_>) -> Result<()> {
    match scale {
        Scale::Isotropic(s) => check::positive("sigma", f64::from(s)).map(|_| ()),
        Scale::Diagonal(s) => {
            check::same_len("diagonal sigma", len, s.len())?;
            match s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
                Some(j) => Err(CoreError::NonPositive {
                    name: format!("sigma[{j}]"),
                    value: f64::from(s[j]),
                }),
                None => Ok(()),
            }
        }
    }
}

fn check_sgd(sgd: SgdMomentum) -> Result<()> {
    for (name, v) in [("learning rate", sgd.lr), ("momentum", sgd.momentum)] {
        if !v.is_finite() {
            return Err(CoreError::NonFinite {
                name: name.to_string(),
                index: 0,
                value: f64::from(v),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deterministic chunked reduction.

/// `LANES` interleaved `f64` accumulators.
#[derive(Clone, Copy)]
struct Lanes([f64; LANES]);

impl Lanes {
    const ZERO: Self = Self([0.0; LANES]);

    /// Pairwise sum of the lanes in a fixed order.
    fn total(&self) -> f64 {
        let l = &self.0;
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }
}

/// Run `per_chunk(chunk_index, start, end, partials_out)` over the chunks of `0..len` on
/// `threads` threads (contiguous runs of chunks per thread), collecting `R` partial sums per
/// chunk, and combine them in chunk order with Neumaier compensation.
///
/// `split` cuts the mutable per-element state into per-thread pieces: it is called with the
/// element range `[start, end)` of a thread and must return that range's state.
fn chunked<S, const R: usize, F>(
    len: usize,
    threads: usize,
    mut state: S,
    split: impl Fn(S, usize) -> (S, S),
    per_chunk: F,
) -> [f64; R]
where
    S: Send,
    F: Fn(&mut S, usize, usize, usize) -> [f64; R] + Sync,
{
    let chunks = len.div_ceil(REDUCTION_CHUNK);
    let mut partials = vec![[0.0f64; R]; chunks];
    let threads = threads.min(chunks.max(1));
    if threads <= 1 {
        for (c, p) in partials.iter_mut().enumerate() {
            let start = c * REDUCTION_CHUNK;
            let end = (start + REDUCTION_CHUNK).min(len);
            *p = per_chunk(&mut state, start, end, start);
        }
    } else {
        std::thread::scope(|scope| {
            let mut rest_partials: &mut [[f64; R]] = &mut partials;
            let mut rest_state = state;
            let mut chunk0 = 0usize;
            for t in 0..threads {
                let chunk1 = chunks * (t + 1) / threads;
                let (mine, tail) = rest_partials.split_at_mut(chunk1 - chunk0);
                rest_partials = tail;
                let end_elem = (chunk1 * REDUCTION_CHUNK).min(len);
                let start_elem = chunk0 * REDUCTION_CHUNK;
                let (mut my_state, tail_state) = split(rest_state, end_elem - start_elem);
                rest_state = tail_state;
                let per_chunk = &per_chunk;
                scope.spawn(move || {
                    for (k, p) in mine.iter_mut().enumerate() {
                        let start = (chunk0 + k) * REDUCTION_CHUNK;
                        let end = (start + REDUCTION_CHUNK).min(len);
                        // Offsets into this thread's state are relative to its first element.
                        *p = per_chunk(&mut my_state, start, end, start - start_elem);
                    }
                });
                chunk0 = chunk1;
            }
        });
    }
    let mut totals = [CompensatedSum::default(); R];
    for p in &partials {
        for (t, v) in totals.iter_mut().zip(p) {
            t.add(*v);
        }
    }
    totals.map(|t| t.value())
}

// ---------------------------------------------------------------------------------------------
// Forward.

/// The fused forward pass over one block: writes `w_i = m_i + sigma_i eps_i` into `sample` and
/// returns `M = ||m - mu||^2` (and the diagonal scale sums), in one pass on `threads` threads.
///
/// Shapes: `mean`, `sample`, `prior_mean` (if any) and a diagonal `sigma` all have length `D`.
/// `eps_i = normal_at(key, first_index + i)`. Errors: a length mismatch, `threads = 0`, a
/// `sigma` that is not positive and finite.
pub fn forward(
    mean: &[f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    sample: &mut [f32],
    threads: usize,
) -> Result<ForwardStats> {
    let len = mean.len();
    check::same_len("sample", len, sample.len())?;
    check_prior(len, prior_mean)?;
    check_scale(len, scale)?;
    check_threads(threads)?;

    let per_chunk = |out: &mut &mut [f32], start: usize, end: usize, local: usize| -> [f64; 3] {
        let out = &mut out[local..local + (end - start)];
        let m = &mean[start..end];
        let mu = prior_mean.map(|p| &p[start..end]);
        let mut eps = [0.0f32; EPS_TILE];
        let (mut sq, mut s2, mut ln) = (Lanes::ZERO, Lanes::ZERO, Lanes::ZERO);
        for t0 in (0..end - start).step_by(EPS_TILE) {
            let t1 = (t0 + EPS_TILE).min(end - start);
            let eps = &mut eps[..t1 - t0];
            fill_normals(key, first_index + (start + t0) as u64, eps);
            // EPS_TILE is a multiple of LANES: element i of the chunk goes to lane i % LANES.
            for (k, i) in (t0..t1).enumerate() {
                let lane = k % LANES;
                let mi = m[i];
                let s = match scale {
                    Scale::Isotropic(s) => s,
                    Scale::Diagonal(sig) => {
                        let s = sig[start + i];
                        let s64 = f64::from(s);
                        s2.0[lane] += s64 * s64;
                        ln.0[lane] += 2.0 * s64.ln();
                        s
                    }
                };
                out[i] = sample_element(mi, s, eps[k]);
                let d = match mu {
                    Some(mu) => f64::from(mi) - f64::from(mu[i]),
                    None => f64::from(mi),
                };
                sq.0[lane] += d * d;
            }
        }
        [sq.total(), s2.total(), ln.total()]
    };
    let [sq_dist, sum_sigma2, sum_ln_sigma2] = chunked(
        len,
        threads,
        sample,
        |s: &mut [f32], n| s.split_at_mut(n),
        per_chunk,
    );
    Ok(ForwardStats {
        len,
        sq_dist,
        scale: match scale {
            Scale::Isotropic(s) => ScaleStats::Isotropic {
                sigma: f64::from(s),
            },
            Scale::Diagonal(_) => ScaleStats::Diagonal {
                sum_sigma2,
                sum_ln_sigma2,
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Backward.

/// Per-element outputs of the backward pass, split per thread.
struct BackwardOut<'a> {
    /// `Some` in gradient mode: `d loss/d m` (length of the range).
    grad_mean: Option<&'a mut [f32]>,
    /// `Some` in SGD mode: the means (updated in place) and the momentum buffer.
    sgd: Option<(&'a mut [f32], &'a mut [f32])>,
    /// `Some` for a diagonal scale: `d loss/d sigma_j`.
    grad_sigma: Option<&'a mut [f32]>,
}

fn split_opt(x: Option<&mut [f32]>, n: usize) -> (Option<&mut [f32]>, Option<&mut [f32]>) {
    match x {
        Some(x) => {
            let (a, b) = x.split_at_mut(n);
            (Some(a), Some(b))
        }
        None => (None, None),
    }
}

impl<'a> BackwardOut<'a> {
    fn split(self, n: usize) -> (Self, Self) {
        let (g0, g1) = split_opt(self.grad_mean, n);
        let (s0, s1) = split_opt(self.grad_sigma, n);
        let (u0, u1) = match self.sgd {
            Some((m, u)) => {
                let (m0, m1) = m.split_at_mut(n);
                let (v0, v1) = u.split_at_mut(n);
                (Some((m0, v0)), Some((m1, v1)))
            }
            None => (None, None),
        };
        (
            Self {
                grad_mean: g0,
                sgd: u0,
                grad_sigma: s0,
            },
            Self {
                grad_mean: g1,
                sgd: u1,
                grad_sigma: s1,
            },
        )
    }
}

/// Shared driver of [`backward`] and [`backward_sgd`]. In gradient mode `mean` is `Some`; in SGD
/// mode the means live in `out.sgd`.
#[allow(clippy::too_many_arguments)]
fn backward_impl(
    len: usize,
    mean: Option<&[f32]>,
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    grad_sample: &[f32],
    kl: KlGradScales,
    sgd: Option<SgdMomentum>,
    out: BackwardOut<'_>,
    threads: usize,
) -> Result<BackwardStats> {
    let (c, k, inv_v) = kl.f32_constants();
    let per_chunk = |o: &mut BackwardOut<'_>, start: usize, end: usize, local: usize| -> [f64; 1] {
        let n = end - start;
        let g = &grad_sample[start..end];
        let mu = prior_mean.map(|p| &p[start..end]);
        let mut eps = [0.0f32; EPS_TILE];
        let mut dot = Lanes::ZERO;
        for t0 in (0..n).step_by(EPS_TILE) {
            let t1 = (t0 + EPS_TILE).min(n);
            let eps = &mut eps[..t1 - t0];
            fill_normals(key, first_index + (start + t0) as u64, eps);
            for (kk, i) in (t0..t1).enumerate() {
                let lane = kk % LANES;
                let z = eps[kk];
                let gi = g[i];
                dot.0[lane] += f64::from(gi) * f64::from(z);
                let mu_i = mu.map_or(0.0, |mu| mu[i]);
                if let (Scale::Diagonal(sig), Some(gs)) = (scale, o.grad_sigma.as_deref_mut()) {
                    gs[local + i] = sigma_grad_element(gi, z, sig[start + i], k, inv_v);
                }
                match (&mut o.grad_mean, &mut o.sgd, mean) {
                    (Some(gm), _, Some(m)) => {
                        gm[local + i] = mean_grad_element(gi, m[start + i], mu_i, c);
                    }
                    (_, Some((m, u)), _) => {
                        let j = local + i;
                        let grad = mean_grad_element(gi, m[j], mu_i, c);
                        if let Some(sgd) = sgd {
                            let (m_new, u_new) = sgd_element(m[j], u[j], grad, sgd);
                            m[j] = m_new;
                            u[j] = u_new;
                        }
                    }
                    _ => {}
                }
            }
        }
        [dot.total()]
    };
    let [noise_dot] = chunked(len, threads, out, BackwardOut::split, per_chunk);
    Ok(BackwardStats {
        noise_dot,
        grad_sigma: match scale {
            Scale::Isotropic(s) => Some(noise_dot + kl.isotropic_sigma_term(len, f64::from(s))),
            Scale::Diagonal(_) => None,
        },
    })
}

fn check_backward_common(
    len: usize,
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    grad_sample: &[f32],
    grad_sigma: Option<&[f32]>,
    kl: KlGradScales,
    threads: usize,
) -> Result<()> {
    check::same_len("gradient of the sample", len, grad_sample.len())?;
    check_prior(len, prior_mean)?;
    check_scale(len, scale)?;
    kl.validate()?;
    check_threads(threads)?;
    match (scale, grad_sigma) {
        (Scale::Diagonal(_), Some(gs)) => check::same_len("diagonal sigma gradient", len, gs.len()),
        (Scale::Diagonal(_), None) => Err(CoreError::LengthMismatch {
            name: "diagonal sigma gradient (missing buffer)".to_string(),
            expected: len,
            found: 0,
        }),
        (Scale::Isotropic(_), _) => Ok(()),
    }
}

/// The fused backward pass: regenerates `eps_i` from `(key, first_index + i)` and, in one pass,
/// writes `grad_mean_i = g_i + c (m_i - mu_i)` (`c = 1/(kappa N v)`), accumulates
/// `sum_i g_i eps_i`, and for a diagonal scale writes `grad_sigma_j` (see the module docs).
///
/// Shapes: every slice has length `D`; `grad_sigma` must be `Some` for a diagonal scale and is
/// ignored for an isotropic one. `grad_sample` is `g = d loss/d w` at the sample of the forward
/// pass with the same `key`, `first_index` and `scale`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    mean: &[f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    grad_sample: &[f32],
    kl: KlGradScales,
    grad_mean: &mut [f32],
    grad_sigma: Option<&mut [f32]>,
    threads: usize,
) -> Result<BackwardStats> {
    let len = mean.len();
    check::same_len("mean gradient", len, grad_mean.len())?;
    check_backward_common(
        len,
        prior_mean,
        scale,
        grad_sample,
        grad_sigma.as_deref(),
        kl,
        threads,
    )?;
    let grad_sigma = match scale {
        Scale::Diagonal(_) => grad_sigma,
        Scale::Isotropic(_) => None,
    };
    let out = BackwardOut {
        grad_mean: Some(grad_mean),
        sgd: None,
        grad_sigma,
    };
    backward_impl(
        len,
        Some(mean),
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        kl,
        None,
        out,
        threads,
    )
}

/// The fused backward pass with the momentum-SGD update of the means in place:
/// `u_i <- beta u_i + (g_i + c (m_i - mu_i))`, `m_i <- m_i - lr u_i`; also `sum_i g_i eps_i`
/// and, for a diagonal scale, `grad_sigma_j` as in [`backward`]. The sigma update is left to
/// the caller (it is one scalar, or goes through `rho_j` for a diagonal scale).
#[allow(clippy::too_many_arguments)]
pub fn backward_sgd(
    mean: &mut [f32],
    velocity: &mut [f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    grad_sample: &[f32],
    kl: KlGradScales,
    sgd: SgdMomentum,
    grad_sigma: Option<&mut [f32]>,
    threads: usize,
) -> Result<BackwardStats> {
    let len = mean.len();
    check::same_len("momentum buffer", len, velocity.len())?;
    check_backward_common(
        len,
        prior_mean,
        scale,
        grad_sample,
        grad_sigma.as_deref(),
        kl,
        threads,
    )?;
    check_sgd(sgd)?;
    let grad_sigma = match scale {
        Scale::Diagonal(_) => grad_sigma,
        Scale::Isotropic(_) => None,
    };
    let out = BackwardOut {
        grad_mean: None,
        sgd: Some((mean, velocity)),
        grad_sigma,
    };
    backward_impl(
        len,
        None,
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        kl,
        Some(sgd),
        out,
        threads,
    )
}

// ---------------------------------------------------------------------------------------------
// Naive multi-pass reference.

/// The plain multi-pass versions of the step, as an eager framework runs them: materialize the
/// noise, then each element-wise operation and reduction as its own pass over memory, on one
/// thread. Element-wise results are bit-identical to the fused path; reductions agree to
/// rounding (they are summed in a different order, with [`crate::tensor::deterministic_sum`]).
pub mod naive {
    use super::*;
    use crate::tensor::deterministic_sum;

    /// The stored intermediate buffers of a naive forward pass (the noise is kept for the
    /// backward pass, as autograd would).
    #[derive(Debug, Clone, Default)]
    pub struct Tape {
        /// `eps_i`.
        pub eps: Vec<f32>,
        /// `m_i - mu_i` in `f32`.
        pub diff: Vec<f32>,
    }

    /// Forward in separate passes: `eps` ← noise; `t = sigma eps`; `w = m + t`;
    /// `diff = m - mu` (kept for the backward pass); `M = sum (m - mu)^2` (in `f64` from the `f32`
    /// inputs, like the fused reduction); the diagonal sums. Returns the stats and the tape.
    pub fn forward(
        mean: &[f32],
        prior_mean: Option<&[f32]>,
        scale: Scale<'_>,
        key: NoiseKey,
        first_index: u64,
        sample: &mut [f32],
    ) -> Result<(ForwardStats, Tape)> {
        let len = mean.len();
        check::same_len("sample", len, sample.len())?;
        check_prior(len, prior_mean)?;
        check_scale(len, scale)?;
        let mut eps = vec![0.0f32; len];
        fill_normals(key, first_index, &mut eps);
        let scaled: Vec<f32> = match scale {
            Scale::Isotropic(s) => eps.iter().map(|&z| s * z).collect(),
            Scale::Diagonal(sig) => eps.iter().zip(sig).map(|(&z, &s)| s * z).collect(),
        };
        for ((w, &m), &t) in sample.iter_mut().zip(mean).zip(&scaled) {
            *w = m + t;
        }
        let diff: Vec<f32> = match prior_mean {
            Some(mu) => mean.iter().zip(mu).map(|(&m, &p)| m - p).collect(),
            None => mean.to_vec(),
        };
        let sq_dist = match prior_mean {
            Some(mu) => deterministic_sum(mean.iter().zip(mu).map(|(&m, &p)| {
                let d = f64::from(m) - f64::from(p);
                d * d
            })),
            None => deterministic_sum(mean.iter().map(|&m| f64::from(m) * f64::from(m))),
        };
        let scale_stats = match scale {
            Scale::Isotropic(s) => ScaleStats::Isotropic {
                sigma: f64::from(s),
            },
            Scale::Diagonal(sig) => ScaleStats::Diagonal {
                sum_sigma2: deterministic_sum(sig.iter().map(|&s| f64::from(s) * f64::from(s))),
                sum_ln_sigma2: deterministic_sum(sig.iter().map(|&s| 2.0 * f64::from(s).ln())),
            },
        };
        Ok((
            ForwardStats {
                len,
                sq_dist,
                scale: scale_stats,
            },
            Tape { eps, diff },
        ))
    }

    /// Backward in passes from the stored tape: `sum g eps`; `t = c diff`; `grad_m = g + t`;
    /// (diagonal) `grad_sigma`. Bit-identical element-wise outputs to [`super::backward`].
    pub fn backward(
        tape: &Tape,
        scale: Scale<'_>,
        grad_sample: &[f32],
        kl: KlGradScales,
        grad_mean: &mut [f32],
        grad_sigma: Option<&mut [f32]>,
    ) -> Result<BackwardStats> {
        let len = tape.eps.len();
        check::same_len("tape difference", len, tape.diff.len())?;
        check::same_len("mean gradient", len, grad_mean.len())?;
        check_backward_common(len, None, scale, grad_sample, grad_sigma.as_deref(), kl, 1)?;
        let (c, k, inv_v) = kl.f32_constants();
        let noise_dot = deterministic_sum(
            grad_sample
                .iter()
                .zip(&tape.eps)
                .map(|(&g, &z)| f64::from(g) * f64::from(z)),
        );
        let t: Vec<f32> = tape.diff.iter().map(|&d| c * d).collect();
        for ((o, &g), &t) in grad_mean.iter_mut().zip(grad_sample).zip(&t) {
            *o = g + t;
        }
        if let (Scale::Diagonal(sig), Some(gs)) = (scale, grad_sigma) {
            for (j, o) in gs.iter_mut().enumerate() {
                *o = sigma_grad_element(grad_sample[j], tape.eps[j], sig[j], k, inv_v);
            }
        }
        Ok(BackwardStats {
            noise_dot,
            grad_sigma: match scale {
                Scale::Isotropic(s) => Some(noise_dot + kl.isotropic_sigma_term(len, f64::from(s))),
                Scale::Diagonal(_) => None,
            },
        })
    }

    /// Momentum SGD as its own two passes: `u = beta u + grad`, then `m = m - lr u`.
    pub fn sgd_step(
        mean: &mut [f32],
        velocity: &mut [f32],
        grad_mean: &[f32],
        sgd: SgdMomentum,
    ) -> Result<()> {
        check::same_len("momentum buffer", mean.len(), velocity.len())?;
        check::same_len("mean gradient", mean.len(), grad_mean.len())?;
        check_sgd(sgd)?;
        for (u, &g) in velocity.iter_mut().zip(grad_mean) {
            *u = sgd.momentum * *u + g;
        }
        for (m, &u) in mean.iter_mut().zip(velocity.iter()) {
            *m -= sgd.lr * u;
        }
        Ok(())
    }
}
