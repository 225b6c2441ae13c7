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
//! ([`crate::KlTerms`]).
//!
//! # Determinism
//!
//! The reductions follow the crate's one reduction order ([`crate::deterministic_sum`]): chunks of
//! [`REDUCTION_CHUNK`] elements, 8 interleaved `f64` lanes inside a chunk combined pairwise, chunk
//! partials combined in chunk order with Neumaier compensation. Threads claim runs of
//! [`CLAIM_CHUNKS`] whole chunks from a shared queue and store each chunk's partials at its
//! index, so the result has the same bits for every thread count and every schedule, and the
//! same bits as the naive multi-pass reductions ([`naive`], through
//! [`crate::reduce::deterministic_sum`]).
//! Element-wise outputs (`w`, gradients, updates) are identical to the naive versions and, with
//! `--fmad=false`, to the CUDA kernels.
//!
//! # Instruction sets
//!
//! Each chunk is processed in tiles of 512 elements: the tile's noise is generated into an
//! L1-resident buffer ([`crate::noise::fill_normals_on`]), then one straight loop per output
//! runs over the tile. The loops are compiled once per [`InstructionSet`] (portable, AVX2,
//! AVX-512) and picked at run time; the `*_on` functions take the path explicitly, and every
//! path gives the same bits.
//!
//! Memory traffic per `f32` weight (what a bandwidth-bound implementation must move): forward
//! 12 bytes (read `m`, `mu`; write `w`); backward 16 bytes (read `g`, `m`, `mu`; write the mean
//! gradient); backward with the SGD update 24 bytes (read `g`, `m`, `mu`, `u`; write `m`, `u`).

use crate::check;
use crate::error::{CoreError, Result};
use crate::noise::{InstructionSet, Kernel, NoiseKey, fill_normals_on};
use crate::objective::{BlockEvaluation, Objective};
use crate::posterior::ScaleStats;
use crate::prior::KlTerms;
use crate::reduce::{CompensatedSum, Lanes, REDUCTION_CHUNK, Term, accumulate, accumulate_on};
pub use crate::reduce::{dot_f64, dot_f64_on};

#[cfg(target_arch = "x86_64")]
pub(crate) mod element;
#[cfg(target_arch = "x86_64")]
use element::{mean_grad_element, sample_element, sgd_element, sigma_grad_element};

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

/// Chunks per unit of work a thread claims: 16 x 4096 elements (about 85 us of forward work
/// on one core), small enough that a thread the OS deschedules on a busy machine holds the
/// others up by at most one claim, large enough that claiming costs nothing measurable.
pub const CLAIM_CHUNKS: usize = 16;

/// Run `per_chunk(state, start, end, local)` over the chunks `[start, end)` of `0..len` on
/// `threads` threads, collecting `R` partial sums per chunk, and combine them in chunk order
/// with Neumaier compensation. Threads take runs of [`CLAIM_CHUNKS`] chunks from a shared queue
/// (dynamic scheduling); each chunk's partials are stored at the chunk's index, so the totals do
/// not depend on `threads` or on which thread ran which chunk.
///
/// `split` cuts the mutable per-element state into per-claim pieces: called with a claim's
/// element count, it returns (that claim's state, the rest); `local` is `start` relative to the
/// claim's first element.
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
    let claims = chunks.div_ceil(CLAIM_CHUNKS);
    let threads = threads.min(claims.max(1));
    let run = |state: &mut S, partials: &mut [[f64; R]], chunk0: usize| {
        let first_elem = chunk0 * REDUCTION_CHUNK;
        for (k, p) in partials.iter_mut().enumerate() {
            let start = (chunk0 + k) * REDUCTION_CHUNK;
            let end = (start + REDUCTION_CHUNK).min(len);
            *p = per_chunk(state, start, end, start - first_elem);
        }
    };
    if threads <= 1 {
        run(&mut state, &mut partials, 0);
    } else {
        let mut work = Vec::with_capacity(claims);
        let mut rest_partials: &mut [[f64; R]] = &mut partials;
        let mut rest_state = state;
        for c in 0..claims {
            let chunk0 = c * CLAIM_CHUNKS;
            let n_chunks = CLAIM_CHUNKS.min(chunks - chunk0);
            let (mine, tail) = rest_partials.split_at_mut(n_chunks);
            rest_partials = tail;
            let n_elem =
                ((chunk0 + n_chunks) * REDUCTION_CHUNK).min(len) - chunk0 * REDUCTION_CHUNK;
            let (claim_state, tail_state) = split(rest_state, n_elem);
            rest_state = tail_state;
            work.push((chunk0, claim_state, mine));
        }
        let queue = std::sync::Mutex::new(work.into_iter());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        // A poisoned queue (a panicking thread) still hands out its items; the
                        // scope re-raises the panic.
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .next();
                        let Some((chunk0, mut claim_state, mine)) = next else {
                            break;
                        };
                        run(&mut claim_state, mine, chunk0);
                    }
                });
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
// Tile loops: each is one straight pass over L1-resident slices of one tile, written so that it
// vectorizes (groups of LANES elements, element p of the group feeding lane p), and inlined into
// the instruction-set-specific function that `InstructionSet::run` calls.

/// Elements per tile: a tile's noise is generated into an L1-resident buffer, then the tile's
/// loops run. A multiple of `LANES` that divides `REDUCTION_CHUNK`, so tile element `i` is
/// chunk element `t0 + i` with `t0 % LANES = 0` and feeds lane `i % LANES`. (128 to 2048
/// measured within 5% of each other, one core, in cache; 512 taken.)
const TILE: usize = 512;

/// Asks the cache to fetch `x[from .. from + TILE]` (the part inside `x`); no effect on values.
/// Measured on the forward at D = 2.5e7, 2 threads, 2 x 12 alternating rounds on the loaded
/// development machine: median fraction of the ceiling 0.38 and 0.41 with this (L1) prefetch,
/// 0.35 and 0.42 with an L2 prefetch, 0.34 and 0.33 without.
#[inline(always)]
fn prefetch(x: &[f32], from: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (from + TILE).min(x.len());
        // One request per 64-byte line.
        for i in (from..end).step_by(16) {
            // SAFETY: `i < x.len()`, so the address is inside `x`; a prefetch never faults and
            // changes no memory.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(i).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, from);
}

/// The prior mean of a block without one: `m - 0 = m` exactly (also for `-0`), so the formulas
/// need no second variant.
static ZEROS: [f32; TILE] = [0.0; TILE];

/// `lanes[i % LANES] += (m_i - mu_i)^2` in `f64`.
#[inline(always)]
fn add_sq_dist(isa: InstructionSet, lanes: &mut Lanes, m: &[f32], mu: &[f32]) {
    accumulate_on(isa, lanes, m, mu, Term::SqDiff);
}

/// `lanes[i % LANES] += g_i eps_i` in `f64`.
#[inline(always)]
fn add_dot(isa: InstructionSet, lanes: &mut Lanes, g: &[f32], eps: &[f32]) {
    accumulate_on(isa, lanes, g, eps, Term::Product);
}

/// `w_i = m_i + sigma_i eps_i`.
#[inline(always)]
fn sample_tile(w: &mut [f32], m: &[f32], scale: Scale<'_>, eps: &[f32]) {
    let n = w.len();
    let (m, eps) = (&m[..n], &eps[..n]);
    match scale {
        Scale::Isotropic(s) => {
            for i in 0..n {
                w[i] = sample_element(m[i], s, eps[i]);
            }
        }
        Scale::Diagonal(sig) => {
            let sig = &sig[..n];
            for i in 0..n {
                w[i] = sample_element(m[i], sig[i], eps[i]);
            }
        }
    }
}

/// `eps_i <- m_i + sigma_i eps_i` in place in the L1-resident noise buffer (the same operations
/// as [`sample_tile`]), for a tile then written out by [`stream_tile`].
#[inline(always)]
fn sample_in_place(buf: &mut [f32], m: &[f32], scale: Scale<'_>) {
    let n = buf.len();
    let m = &m[..n];
    match scale {
        Scale::Isotropic(s) => {
            for i in 0..n {
                buf[i] = sample_element(m[i], s, buf[i]);
            }
        }
        Scale::Diagonal(sig) => {
            let sig = &sig[..n];
            for i in 0..n {
                buf[i] = sample_element(m[i], sig[i], buf[i]);
            }
        }
    }
}

/// With [`SampleStores::Auto`], samples of at least this many weights are written with
/// non-temporal (streaming) stores: such a sample (16 MiB and up) no longer stays in the caches
/// for the model that reads it next, and ordinary stores would first read every line of `w`
/// from memory (4 more bytes per weight) only to overwrite it. Below it, ordinary stores keep
/// `w` in cache.
pub const STREAMING_STORE_MIN_LEN: usize = 1 << 22;

/// How the fused forward writes the sample `w` (the values are the same bits either way).
///
/// The default is [`SampleStores::Regular`]: the forward is bound by the noise arithmetic, which
/// hides the extra read of ordinary stores, while streaming stores stall it. Measured with
/// `deelbo-bench/scripts/cpu-results.sh` (2 threads, fused forward, regular / streaming ms):
/// AVX2 on a Zen 3 VM 51.4 / 55.1 at 2.5e7 weights and 194.3 / 190.8 at 1e8; AVX-512 on a Xeon VM
/// 23.0 / 24.5 and 87.8 / 96.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleStores {
    /// Streaming stores from [`STREAMING_STORE_MIN_LEN`] weights on, ordinary ones below.
    Auto,
    /// Ordinary stores (the line is read for ownership, then written back).
    #[default]
    Regular,
    /// Non-temporal streaming stores (`movntps` on x86-64; ordinary stores elsewhere).
    Streaming,
}

impl SampleStores {
    /// Whether a sample of `len` weights is written with streaming stores.
    pub fn streams(self, len: usize) -> bool {
        match self {
            Self::Auto => len >= STREAMING_STORE_MIN_LEN,
            Self::Regular => false,
            Self::Streaming => true,
        }
    }
}

/// Copies `src` to `dst` (same length) with non-temporal stores where `dst` is 16-byte aligned
/// (scalar head and tail); values are copied bit for bit. The caller issues a store fence before
/// the data is handed to another thread ([`store_fence`]).
#[inline(always)]
fn stream_tile(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        let head = dst.as_ptr().align_offset(16).min(n);
        dst[..head].copy_from_slice(&src[..head]);
        let body = head + (n - head) / 4 * 4;
        let mut i = head;
        while i < body {
            // SAFETY: `i + 4 <= body <= n` for both slices; `dst[i..]` is 16-byte aligned (`i -
            // head` is a multiple of 4 floats past the aligned `dst[head]`); the load is
            // unaligned. SSE is part of the x86-64 baseline.
            unsafe { _mm_stream_ps(dst.as_mut_ptr().add(i), _mm_loadu_ps(src.as_ptr().add(i))) };
            i += 4;
        }
        dst[body..].copy_from_slice(&src[body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders this thread's streaming stores before its later stores (streaming stores are weakly
/// ordered), so the thread that joins it sees every value.
#[inline(always)]
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// The forward pass over chunk `range = [start, end)`: `w` is the chunk's slice of the sample.
struct ForwardChunk<'a> {
    isa: InstructionSet,
    /// Whether `w` is written with streaming stores.
    streaming: bool,
    mean: &'a [f32],
    prior_mean: Option<&'a [f32]>,
    scale: Scale<'a>,
    key: NoiseKey,
    first_index: u64,
    range: (usize, usize),
    /// The claim's part of the sample; the chunk starts at `local`.
    w: &'a mut [f32],
    local: usize,
}

impl Kernel for ForwardChunk<'_> {
    /// The chunk partials of `M`, `sum sigma_j^2`, `sum ln sigma_j^2`.
    type Output = [f64; 3];

    #[inline(always)]
    fn run(self) -> [f64; 3] {
        forward_chunk(self)
    }
}

#[inline(always)]
fn forward_chunk(x: ForwardChunk<'_>) -> [f64; 3] {
    let ForwardChunk {
        isa,
        streaming,
        mean,
        prior_mean,
        scale,
        key,
        first_index,
        range: (start, end),
        w,
        local,
    } = x;
    let mut eps = [0.0f32; TILE];
    let (mut sq, mut s2, mut ln) = (Lanes::ZERO, Lanes::ZERO, Lanes::ZERO);
    for t0 in (start..end).step_by(TILE) {
        let t1 = (t0 + TILE).min(end);
        let n = t1 - t0;
        // The next tile's inputs and output travel from memory while this tile's noise is
        // computed.
        prefetch(mean, t1);
        if let Some(mu) = prior_mean {
            prefetch(mu, t1);
        }
        let lw = local + t0 - start;
        if !streaming {
            prefetch(w, lw + n);
        }
        let eps = &mut eps[..n];
        fill_normals_on(isa, key, first_index + t0 as u64, eps);
        let m = &mean[t0..t1];
        let tile_scale = match scale {
            Scale::Isotropic(s) => Scale::Isotropic(s),
            Scale::Diagonal(sig) => Scale::Diagonal(&sig[t0..t1]),
        };
        if streaming {
            sample_in_place(eps, m, tile_scale);
            stream_tile(&mut w[lw..lw + n], eps);
        } else {
            sample_tile(&mut w[lw..lw + n], m, tile_scale, eps);
        }
        let mu = prior_mean.map_or(&ZEROS[..n], |p| &p[t0..t1]);
        add_sq_dist(isa, &mut sq, m, mu);
        if let Scale::Diagonal(sig) = tile_scale {
            accumulate(&mut s2, sig, sig, |s, _| {
                let s = f64::from(s);
                s * s
            });
            accumulate(&mut ln, sig, sig, |s, _| 2.0 * f64::from(s).ln());
        }
    }
    if streaming {
        store_fence();
    }
    [sq.total(), s2.total(), ln.total()]
}

// ---------------------------------------------------------------------------------------------
// Forward.

/// The fused forward pass over one block: writes `w_i = m_i + sigma_i eps_i` into `sample` and
/// returns `M = ||m - mu||^2` (and the diagonal scale sums), in one pass on `threads` threads,
/// on the fastest instruction set of this CPU ([`forward_on`] with
/// [`InstructionSet::detected`]).
///
/// # Formula
///
/// `eps_i = normal_at(key, first_index + i)`, `w_i = m_i + sigma_i eps_i` (`f32`, product then
/// sum), `M = sum_i (m_i - mu_i)^2` (`f64`, the crate's reduction order), and for a diagonal
/// scale `sum_j sigma_j^2`, `sum_j ln sigma_j^2`.
///
/// Shapes: `mean`, `sample`, `prior_mean` (if any) and a diagonal `sigma` all have length `D`.
/// Errors: a length mismatch, `threads = 0`, a `sigma` that is not positive and finite.
pub fn forward(
    mean: &[f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    sample: &mut [f32],
    threads: usize,
) -> Result<ForwardStats> {
    forward_on(
        InstructionSet::detected(),
        mean,
        prior_mean,
        scale,
        key,
        first_index,
        sample,
        threads,
    )
}

/// [`forward`] on a chosen instruction-set path: the same bits on every path and at every
/// thread count.
#[allow(clippy::too_many_arguments)]
pub fn forward_on(
    isa: InstructionSet,
    mean: &[f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    sample: &mut [f32],
    threads: usize,
) -> Result<ForwardStats> {
    forward_with_stores(
        isa,
        SampleStores::default(),
        mean,
        prior_mean,
        scale,
        key,
        first_index,
        sample,
        threads,
    )
}

/// [`forward_on`] with a chosen way of writing the sample (for benchmarks comparing the two;
/// the results are the same bits either way).
#[allow(clippy::too_many_arguments)]
pub fn forward_with_stores(
    isa: InstructionSet,
    stores: SampleStores,
    mean: &[f32],
    prior_mean: Option<&[f32]>,
    scale: Scale<'_>,
    key: NoiseKey,
    first_index: u64,
    sample: &mut [f32],
    threads: usize,
) -> Result<ForwardStats> {
    let len = mean.len();
    let streaming = stores.streams(len);
    check::same_len("sample", len, sample.len())?;
    check_prior(len, prior_mean)?;
    check_scale(len, scale)?;
    check_threads(threads)?;

    let per_chunk = |out: &mut &mut [f32], start: usize, end: usize, local: usize| {
        isa.run(ForwardChunk {
            isa,
            streaming,
            mean,
            prior_mean,
            scale,
            key,
            first_index,
            range: (start, end),
            w: out,
            local,
        })
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

/// Per-element outputs of the backward pass, split per claim.
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

impl BackwardOut<'_> {
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

/// The inputs of the backward pass shared by every chunk.
#[derive(Clone, Copy)]
struct BackwardInputs<'a> {
    isa: InstructionSet,
    /// `Some` in gradient mode; in SGD mode the means live in `BackwardOut::sgd`.
    mean: Option<&'a [f32]>,
    prior_mean: Option<&'a [f32]>,
    scale: Scale<'a>,
    key: NoiseKey,
    first_index: u64,
    grad_sample: &'a [f32],
    /// `(c, k, 1/v)`, see [`KlGradScales::f32_constants`].
    constants: (f32, f32, f32),
    sgd: Option<SgdMomentum>,
}

/// The backward pass over chunk `range = [start, end)`; `out` holds the claim's output slices,
/// of which the chunk's start at `local`.
struct BackwardChunk<'x, 'a, 'o, 'b> {
    x: &'x BackwardInputs<'a>,
    range: (usize, usize),
    out: &'o mut BackwardOut<'b>,
    local: usize,
}

impl Kernel for BackwardChunk<'_, '_, '_, '_> {
    /// The chunk partial of `sum g eps`.
    type Output = [f64; 1];

    #[inline(always)]
    fn run(self) -> [f64; 1] {
        backward_chunk(self.x, self.range, self.out, self.local)
    }
}

#[inline(always)]
fn backward_chunk(
    x: &BackwardInputs<'_>,
    (start, end): (usize, usize),
    o: &mut BackwardOut<'_>,
    local: usize,
) -> [f64; 1] {
    let (c, k, inv_v) = x.constants;
    let mut eps = [0.0f32; TILE];
    let mut dot = Lanes::ZERO;
    for t0 in (start..end).step_by(TILE) {
        let t1 = (t0 + TILE).min(end);
        let n = t1 - t0;
        let (l0, l1) = (local + t0 - start, local + t1 - start);
        // The next tile's inputs and outputs travel from memory while this tile's noise is
        // computed.
        prefetch(x.grad_sample, t1);
        if let Some(p) = x.prior_mean {
            prefetch(p, t1);
        }
        if let Some(m) = x.mean {
            prefetch(m, t1);
        }
        if let Some(gm) = o.grad_mean.as_deref() {
            prefetch(gm, l1);
        }
        if let Some((m, u)) = &o.sgd {
            prefetch(m, l1);
            prefetch(u, l1);
        }
        let eps = &mut eps[..n];
        fill_normals_on(x.isa, x.key, x.first_index + t0 as u64, eps);
        let g = &x.grad_sample[t0..t1];
        add_dot(x.isa, &mut dot, g, eps);
        let mu = x.prior_mean.map_or(&ZEROS[..n], |p| &p[t0..t1]);
        // Every slice re-cut to `n`, so the loops carry no bounds checks and vectorize.
        let (g, mu, eps) = (&g[..n], &mu[..n], &eps[..n]);
        match (&mut o.grad_mean, &mut o.sgd, x.mean, x.sgd) {
            (Some(gm), _, Some(m), _) => {
                let (gm, m) = (&mut gm[l0..l1][..n], &m[t0..t1][..n]);
                for i in 0..n {
                    gm[i] = mean_grad_element(g[i], m[i], mu[i], c);
                }
            }
            (_, Some((m, u)), _, Some(sgd)) => {
                let (m, u) = (&mut m[l0..l1][..n], &mut u[l0..l1][..n]);
                for i in 0..n {
                    let grad = mean_grad_element(g[i], m[i], mu[i], c);
                    (m[i], u[i]) = sgd_element(m[i], u[i], grad, sgd);
                }
            }
            _ => {}
        }
        if let (Scale::Diagonal(sig), Some(gs)) = (x.scale, o.grad_sigma.as_deref_mut()) {
            let (gs, sig) = (&mut gs[l0..l1][..n], &sig[t0..t1][..n]);
            for i in 0..n {
                gs[i] = sigma_grad_element(g[i], eps[i], sig[i], k, inv_v);
            }
        }
    }
    [dot.total()]
}

/// Shared driver of [`backward_on`] and [`backward_sgd_on`].
fn backward_impl(
    len: usize,
    x: BackwardInputs<'_>,
    kl: KlGradScales,
    out: BackwardOut<'_>,
    threads: usize,
) -> BackwardStats {
    let per_chunk = |o: &mut BackwardOut<'_>, start: usize, end: usize, local: usize| {
        x.isa.run(BackwardChunk {
            x: &x,
            range: (start, end),
            out: o,
            local,
        })
    };
    let [noise_dot] = chunked(len, threads, out, BackwardOut::split, per_chunk);
    BackwardStats {
        noise_dot,
        grad_sigma: match x.scale {
            Scale::Isotropic(s) => Some(noise_dot + kl.isotropic_sigma_term(len, f64::from(s))),
            Scale::Diagonal(_) => None,
        },
    }
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
/// writes `grad_mean_i`, accumulates `sum_i g_i eps_i`, and for a diagonal scale writes
/// `grad_sigma_j`; on the fastest instruction set of this CPU ([`backward_on`] with
/// [`InstructionSet::detected`]).
///
/// # Formula
///
/// `grad_mean_i = g_i + c (m_i - mu_i)` with `c = 1/(kappa N v)`; `noise_dot = sum_i g_i eps_i`
/// (`f64`); isotropic `d loss/d sigma = noise_dot + k D (sigma/v - 1/sigma)`, diagonal
/// `grad_sigma_j = g_j eps_j + k (sigma_j (1/v) - 1/sigma_j)`, `k = 1/(kappa N)` (module docs).
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
    backward_on(
        InstructionSet::detected(),
        mean,
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        kl,
        grad_mean,
        grad_sigma,
        threads,
    )
}

/// [`backward`] on a chosen instruction-set path: the same bits on every path and at every
/// thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward_on(
    isa: InstructionSet,
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
    let inputs = BackwardInputs {
        isa,
        mean: Some(mean),
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        constants: kl.f32_constants(),
        sgd: None,
    };
    Ok(backward_impl(len, inputs, kl, out, threads))
}

/// The fused backward pass with the momentum-SGD update of the means in place, on the fastest
/// instruction set of this CPU ([`backward_sgd_on`] with [`InstructionSet::detected`]). The
/// sigma update is left to the caller (it is one scalar, or goes through `rho_j` for a diagonal
/// scale).
///
/// # Formula
///
/// `u_i <- beta u_i + (g_i + c (m_i - mu_i))`, `m_i <- m_i - lr u_i` (`f32`), plus
/// `sum_i g_i eps_i` and, for a diagonal scale, `grad_sigma_j`, as in [`backward`].
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
    backward_sgd_on(
        InstructionSet::detected(),
        mean,
        velocity,
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        kl,
        sgd,
        grad_sigma,
        threads,
    )
}

/// [`backward_sgd`] on a chosen instruction-set path: the same bits on every path and at every
/// thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward_sgd_on(
    isa: InstructionSet,
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
    let inputs = BackwardInputs {
        isa,
        mean: None,
        prior_mean,
        scale,
        key,
        first_index,
        grad_sample,
        constants: kl.f32_constants(),
        sgd: Some(sgd),
    };
    Ok(backward_impl(len, inputs, kl, out, threads))
}

// ---------------------------------------------------------------------------------------------
// Naive multi-pass reference.

/// The plain multi-pass versions of the step, as an eager framework runs them: materialize the
/// noise, then each element-wise operation and reduction as its own pass over memory, on one
/// thread. Element-wise results and reductions are bit-identical to the fused path (the
/// reductions go through [`crate::reduce::deterministic_sum`], the same order).
pub mod naive {
    use super::*;
    use crate::noise::fill_normals;
    use crate::reduce::deterministic_sum;

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
