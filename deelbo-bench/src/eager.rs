//! The step as an eager framework runs it, on the same threads as the fused step: one parallel
//! pass over memory per operation, the intermediates in buffers allocated once (a caching
//! allocator's steady state). This is the "naive" row of the CPU report: it differs from the
//! fused step only in fusion, not in threading. Element-wise results are bit-identical to the
//! fused step's; `M` differs in rounding (the difference `m - mu` is stored in `f32`, as
//! autograd stores it).

use deelbo_core::deterministic_sum;
use deelbo_core::fused::{KlGradScales, SgdMomentum};
use deelbo_core::{NoiseKey, fill_normals};

use crate::stream::{claims, for_each_range, run_queue};

/// The intermediates of the eager forward pass, kept for its backward pass.
#[derive(Debug, Clone)]
pub struct Tape {
    /// `eps`.
    pub eps: Vec<f32>,
    /// `sigma eps`.
    pub scaled: Vec<f32>,
    /// `m - mu`.
    pub diff: Vec<f32>,
}

impl Tape {
    /// Buffers for a block of `len` weights.
    pub fn new(len: usize) -> Self {
        Self {
            eps: vec![0.0; len],
            scaled: vec![0.0; len],
            diff: vec![0.0; len],
        }
    }
}

/// `sum_i f(i)` over `0..len`: each claim summed in the crate's reduction order by whichever
/// thread takes it, the claim totals added in order.
fn parallel_sum(len: usize, threads: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let ranges = claims(len);
    let mut partials = vec![0.0f64; ranges.len()];
    let items: Vec<_> = ranges.into_iter().zip(partials.iter_mut()).collect();
    run_queue(items, threads, |((s, e), p)| {
        *p = deterministic_sum((s..e).map(&f));
    });
    partials.iter().sum()
}

/// Forward: `eps <- noise`; `scaled = sigma eps`; `w = m + scaled`; `diff = m - mu`;
/// `M = sum diff^2` (five passes). Returns `M`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    mean: &[f32],
    prior_mean: &[f32],
    sigma: f32,
    key: NoiseKey,
    sample: &mut [f32],
    tape: &mut Tape,
    threads: usize,
) -> f64 {
    let len = mean.len();
    for_each_range(len, threads, [&mut tape.eps[..]], |s, _, [e]| {
        fill_normals(key, s as u64, e)
    });
    let eps = &tape.eps;
    for_each_range(len, threads, [&mut tape.scaled[..]], |s, _, [t]| {
        for (k, t) in t.iter_mut().enumerate() {
            *t = sigma * eps[s + k];
        }
    });
    let scaled = &tape.scaled;
    for_each_range(len, threads, [sample], |s, _, [w]| {
        for (k, w) in w.iter_mut().enumerate() {
            *w = mean[s + k] + scaled[s + k];
        }
    });
    for_each_range(len, threads, [&mut tape.diff[..]], |s, _, [d]| {
        for (k, d) in d.iter_mut().enumerate() {
            *d = mean[s + k] - prior_mean[s + k];
        }
    });
    let diff = &tape.diff;
    parallel_sum(len, threads, |i| {
        let d = f64::from(diff[i]);
        d * d
    })
}

/// Backward from the tape: `noise_dot = sum g eps`; `t = c diff` (into `tape.scaled`, free
/// after the forward); `grad_mean = g + t` (three passes). Returns `noise_dot`.
pub fn backward(
    grad_sample: &[f32],
    tape: &mut Tape,
    kl: KlGradScales,
    grad_mean: &mut [f32],
    threads: usize,
) -> f64 {
    let len = grad_sample.len();
    let (c, _, _) = kl.f32_constants();
    let eps = &tape.eps;
    let dot = parallel_sum(len, threads, |i| {
        f64::from(grad_sample[i]) * f64::from(eps[i])
    });
    let diff = &tape.diff;
    for_each_range(len, threads, [&mut tape.scaled[..]], |s, _, [t]| {
        for (k, t) in t.iter_mut().enumerate() {
            *t = c * diff[s + k];
        }
    });
    let t = &tape.scaled;
    for_each_range(len, threads, [grad_mean], |s, _, [o]| {
        for (k, o) in o.iter_mut().enumerate() {
            *o = grad_sample[s + k] + t[s + k];
        }
    });
    dot
}

/// Momentum SGD as two passes: `u = beta u + grad`, then `m = m - lr u`.
pub fn sgd_step(
    mean: &mut [f32],
    velocity: &mut [f32],
    grad_mean: &[f32],
    sgd: SgdMomentum,
    threads: usize,
) {
    let len = mean.len();
    for_each_range(len, threads, [&mut velocity[..]], |s, _, [u]| {
        for (k, u) in u.iter_mut().enumerate() {
            *u = sgd.momentum * *u + grad_mean[s + k];
        }
    });
    let velocity = &*velocity;
    for_each_range(len, threads, [mean], |s, _, [m]| {
        for (k, m) in m.iter_mut().enumerate() {
            *m -= sgd.lr * velocity[s + k];
        }
    });
}
