//! Scale-out checked on one machine (docs/DISTRIBUTED.md).
//!
//! Ranks are simulated in one process. A rank that owns the elements `r = start..end` of a block
//! runs the fused step on the slices `m[r]`, `mu[r]`, `sigma[r]`, `g[r]` with
//! `first_index = base + start` (the shard's global element offset in the block's noise stream)
//! and its own thread count, as a rank on different hardware would. An "all-reduce" is a plain
//! `f64` sum of the ranks' partial totals (in some order: NCCL does not promise one); an
//! "all-gather" is the concatenation of the ranks' per-chunk partials in global chunk order.
//!
//! What is checked, and how exactly:
//! - noise, samples and element-wise gradients of the shards are the whole block's, bit for bit,
//!   at any offsets (not multiples of 4, across the Philox counter's low-word wrap);
//! - shards cut at multiples of [`REDUCTION_CHUNK`] reproduce the whole block's `M`,
//!   `sum sigma_j^2`, `sum ln sigma_j^2` and `sum g eps` bit for bit when the per-chunk partials
//!   are all-gathered and combined in chunk order (the order the fused step documents);
//! - shards cut anywhere, their totals all-reduced by a plain sum, match the whole block within a
//!   rounding bound derived below ([`sum_bound`]); `v*`, `KL*` and `d loss/d sigma` follow within
//!   the bound propagated through their formulas;
//! - data-parallel ranks draw the same noise at any thread count, and averaging their gradients
//!   gives the single-device gradient of the averaged likelihood gradient to `f32` rounding.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::ops::Range;

use deelbo_core::REDUCTION_CHUNK;
use deelbo_core::fused::{BackwardStats, ForwardStats, KlGradScales, Scale, backward, forward};
use deelbo_core::test_util::normal_data;
use deelbo_core::{CompensatedSum, REDUCTION_LANES as LANES};
use deelbo_core::{KlTerms, NoiseKey, ScaleStats, fill_normals, normal_at};

/// The unit roundoff of `f64`, `2^-53`.
const U64: f64 = f64::EPSILON / 2.0;
/// The unit roundoff of `f32`, `2^-24`.
const U32: f64 = (f32::EPSILON / 2.0) as f64;

/// One block's data: means, prior means, per-weight scales and a likelihood gradient `g`.
struct Block {
    m: Vec<f32>,
    mu: Vec<f32>,
    sigma: Vec<f32>,
    g: Vec<f32>,
}

impl Block {
    /// `len` weights; `|m - mu|` grows along the block so that shards differ from each other
    /// (a shard's own `v*` is then visibly not the block's).
    fn new(len: usize, seed: u64) -> Self {
        let mu = normal_data(len, NoiseKey::new(seed, 1), 0.3);
        let z = normal_data(len, NoiseKey::new(seed, 2), 0.1);
        let m = mu
            .iter()
            .zip(&z)
            .enumerate()
            .map(|(i, (&mu, &z))| mu + z * (1.0 + 4.0 * i as f32 / len as f32))
            .collect();
        let sigma = normal_data(len, NoiseKey::new(seed, 3), 0.005)
            .iter()
            .map(|s| 0.01 + s.abs())
            .collect();
        let g = normal_data(len, NoiseKey::new(seed, 4), 1e-2);
        Self { m, mu, sigma, g }
    }

    fn scale(&self, diagonal: bool, r: Range<usize>) -> Scale<'_> {
        if diagonal {
            Scale::Diagonal(&self.sigma[r])
        } else {
            Scale::Isotropic(0.02)
        }
    }
}

/// The ranges between consecutive cut points.
fn ranges(cuts: &[usize]) -> Vec<Range<usize>> {
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The outputs of one fused forward + backward over the elements `r` of a block.
struct StepOut {
    sample: Vec<f32>,
    grad_mean: Vec<f32>,
    grad_sigma: Vec<f32>,
    fwd: ForwardStats,
    bwd: BackwardStats,
}

/// Forward and backward over `b[r]` with noise indices `base + r.start ..`.
fn step(
    b: &Block,
    r: Range<usize>,
    diagonal: bool,
    key: NoiseKey,
    base: u64,
    kl: KlGradScales,
    threads: usize,
) -> StepOut {
    let n = r.len();
    let first = base + r.start as u64;
    let scale = b.scale(diagonal, r.clone());
    let mut sample = vec![0.0f32; n];
    let fwd = forward(
        &b.m[r.clone()],
        Some(&b.mu[r.clone()]),
        scale,
        key,
        first,
        &mut sample,
        threads,
    )
    .unwrap();
    let mut grad_mean = vec![0.0f32; n];
    let mut grad_sigma = vec![0.0f32; n];
    let bwd = backward(
        &b.m[r.clone()],
        Some(&b.mu[r.clone()]),
        scale,
        key,
        first,
        &b.g[r],
        kl,
        &mut grad_mean,
        diagonal.then_some(&mut grad_sigma[..]),
        threads,
    )
    .unwrap();
    StepOut {
        sample,
        grad_mean,
        grad_sigma,
        fwd,
        bwd,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The three forward reductions `[M, sum sigma_j^2, sum ln sigma_j^2]` (the last two zero for an
/// isotropic scale).
fn forward_sums(s: &ForwardStats) -> [f64; 3] {
    match s.scale {
        ScaleStats::Isotropic { .. } => [s.sq_dist, 0.0, 0.0],
        ScaleStats::Diagonal {
            sum_sigma2,
            sum_ln_sigma2,
        } => [s.sq_dist, sum_sigma2, sum_ln_sigma2],
    }
}

#[test]
fn shards_at_any_global_offset_draw_the_whole_blocks_noise_bit_for_bit() {
    let len = 3 * REDUCTION_CHUNK + 4321;
    let key = NoiseKey::for_block_step(5, 3, 11);
    let kl = KlGradScales {
        inv_kappa_n: 1e-3,
        variance: 0.05,
    };
    // Cut points that are not multiples of 4 (a Philox block is split between two ranks) nor of
    // the reduction chunk, including one-element shards.
    let cuts = [0, 1, 6, 4097, 9999, 10_000, 12_289, len - 3, len];
    // Block bases: the stream's start, an odd offset, and a block straddling noise index 2^34,
    // where the Philox block counter j = i/4 passes 2^32 (its low word wraps, the high word
    // becomes 1).
    for base in [0u64, 7, (1u64 << 34) - 4097] {
        let mut whole = vec![0.0f32; len];
        fill_normals(key, base, &mut whole);
        let mut pieces = vec![0.0f32; len];
        for r in ranges(&cuts) {
            fill_normals(key, base + r.start as u64, &mut pieces[r]);
        }
        assert_eq!(bits(&pieces), bits(&whole), "base {base}");
        // The element-wise generator agrees (it shares no code with the chunked filler beyond
        // Philox itself).
        for i in (0..len).step_by(97).chain([len - 1]) {
            assert_eq!(
                normal_at(key, base + i as u64).to_bits(),
                whole[i].to_bits()
            );
        }

        let b = Block::new(len, base ^ 0x5eed);
        for diagonal in [false, true] {
            let all = step(&b, 0..len, diagonal, key, base, kl, 2);
            let mut sample = Vec::with_capacity(len);
            let mut grad_mean = Vec::with_capacity(len);
            let mut grad_sigma = Vec::with_capacity(len);
            for (rank, r) in ranges(&cuts).into_iter().enumerate() {
                let out = step(&b, r, diagonal, key, base, kl, 1 + rank % 3);
                sample.extend(out.sample);
                grad_mean.extend(out.grad_mean);
                grad_sigma.extend(out.grad_sigma);
            }
            assert_eq!(bits(&sample), bits(&all.sample), "sample, base {base}");
            assert_eq!(
                bits(&grad_mean),
                bits(&all.grad_mean),
                "grad m, base {base}"
            );
            assert_eq!(
                bits(&grad_sigma),
                bits(&all.grad_sigma),
                "grad sigma, base {base}"
            );
        }

        // The pitfall the offsets avoid: a rank that counts its noise from 0 draws other values.
        let r = 4097..9999;
        let mut local = vec![0.0f32; r.len()];
        fill_normals(key, 0, &mut local);
        let same = local
            .iter()
            .zip(&whole[r])
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        assert!(same < 10, "{same} equal values from the wrong offset");
    }
}

/// Per-chunk partials `[M, sum sigma^2, sum ln sigma^2, sum g eps]` of the elements `r` of a
/// block, as a rank computes them for an all-gather: one fused call per reduction chunk (a call
/// over one chunk returns that chunk's partial unchanged).
fn chunk_partials(
    b: &Block,
    r: Range<usize>,
    diagonal: bool,
    key: NoiseKey,
    base: u64,
    kl: KlGradScales,
    threads: usize,
) -> Vec<[f64; 4]> {
    (r.start..r.end)
        .step_by(REDUCTION_CHUNK)
        .map(|start| {
            let chunk = start..(start + REDUCTION_CHUNK).min(r.end);
            let out = step(b, chunk, diagonal, key, base, kl, threads);
            let [a, s2, ln] = forward_sums(&out.fwd);
            [a, s2, ln, out.bwd.noise_dot]
        })
        .collect()
}

#[test]
fn chunk_aligned_shards_all_gathered_reproduce_the_whole_block_reductions_bit_for_bit() {
    let len = 7 * REDUCTION_CHUNK + 1001;
    let key = NoiseKey::for_block_step(9, 1, 2);
    let base = 7u64;
    let kl = KlGradScales {
        inv_kappa_n: 2e-4,
        variance: 0.1,
    };
    let b = Block::new(len, 77);
    // Shard boundaries at multiples of the reduction chunk (uneven shard sizes, the last shard
    // ends with a partial chunk).
    let c = REDUCTION_CHUNK;
    let cuts = [0, c, 3 * c, 4 * c, 7 * c, len];
    for diagonal in [false, true] {
        // All-gather: every rank contributes its chunks' partials; concatenated in rank order
        // they are in global chunk order.
        let gathered: Vec<[f64; 4]> = ranges(&cuts)
            .into_iter()
            .enumerate()
            .flat_map(|(rank, r)| chunk_partials(&b, r, diagonal, key, base, kl, 1 + rank % 2))
            .collect();
        assert_eq!(gathered.len(), len.div_ceil(c));
        // Every rank combines them the way the fused step does: Neumaier, in chunk order.
        let mut totals = [CompensatedSum::default(); 4];
        for p in &gathered {
            for (t, v) in totals.iter_mut().zip(p) {
                t.add(*v);
            }
        }
        let totals = totals.map(|t| t.value());
        for threads in [1, 3] {
            let all = step(&b, 0..len, diagonal, key, base, kl, threads);
            let [m, s2, ln] = forward_sums(&all.fwd);
            let expect = [m, s2, ln, all.bwd.noise_dot];
            for (k, (got, want)) in totals.iter().zip(&expect).enumerate() {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "sum {k} (diagonal {diagonal}, {threads} threads): {got} vs {want}"
                );
            }
        }
    }
}

/// A bound on `|a - b|` for two evaluations of `sum_i x_i`: `a` by the fused step over the whole
/// block, `b` as the plain `f64` sum (in any order) of `shards` partial totals, each by the
/// fused step over its shard. `sum_abs = sum_i |x_i|`.
///
/// The fused step sums a chunk of `REDUCTION_CHUNK` terms in `LANES` interleaved accumulators
/// (`REDUCTION_CHUNK / LANES` terms each, recursively), adds the lanes pairwise
/// (`log2 LANES` levels) and combines the chunk partials with Neumaier compensation (error
/// `2u |sum| + O(chunks u^2) sum|x|`). Each term therefore passes through at most
/// `c = REDUCTION_CHUNK/LANES - 1 + log2(LANES) + 2` roundings, and the standard bound for
/// recursive summation gives `|computed - exact| <= gamma_c sum|x|` with `gamma_c ~ c u`
/// (Higham, Accuracy and Stability of Numerical Algorithms, §4.2). The all-reduce of `S`
/// partials adds `(S - 1) u sum|x|`. Together `|a - b| <= (2c + S - 1) u sum|x|`, times 1.01 for
/// the second-order terms. With 4096-element chunks and 8 lanes, `c = 516`: a relative bound of
/// about `1.2e-13` of `sum|x|`, far below what a lost or doubled element or a wrong noise offset
/// would change.
fn sum_bound(sum_abs: f64, shards: usize) -> f64 {
    let per_lane = (REDUCTION_CHUNK / LANES) as f64;
    let levels = f64::from(LANES.trailing_zeros());
    let c = per_lane - 1.0 + levels + 2.0;
    1.01 * (2.0 * c + shards as f64 - 1.0) * U64 * sum_abs
}

#[test]
fn shards_cut_anywhere_all_reduce_to_the_whole_block_within_the_rounding_bound() {
    let len = 200_003;
    let key = NoiseKey::for_block_step(3, 0, 41);
    let base = 1_000_001u64;
    let cuts = [0, 3, 17_000, 50_001, 50_002, 123_457, 170_000, len];
    let shards = cuts.len() - 1;
    let b = Block::new(len, 5);
    let d = len as f64;
    let sigma_iso = f64::from(0.02f32);
    // sum |x_i| of each reduced quantity, from the data directly.
    let sq: f64 =
        b.m.iter()
            .zip(&b.mu)
            .map(|(&m, &mu)| (f64::from(m) - f64::from(mu)).powi(2))
            .sum();
    let s2_abs: f64 = b.sigma.iter().map(|&s| f64::from(s).powi(2)).sum();
    let ln_abs: f64 = b
        .sigma
        .iter()
        .map(|&s| (2.0 * f64::from(s).ln()).abs())
        .sum();
    for diagonal in [false, true] {
        // The KL scales a rank would use are those of the whole block (checked below to follow
        // from the all-reduced sums); any fixed value serves the reductions.
        let kl0 = KlGradScales {
            inv_kappa_n: 1e-3,
            variance: 0.05,
        };
        let all = step(&b, 0..len, diagonal, key, base, kl0, 2);
        let parts: Vec<StepOut> = ranges(&cuts)
            .into_iter()
            .enumerate()
            .map(|(rank, r)| step(&b, r, diagonal, key, base, kl0, 1 + rank % 3))
            .collect();
        let eps: Vec<f32> = {
            let mut e = vec![0.0f32; len];
            fill_normals(key, base, &mut e);
            e
        };
        let dot_abs: f64 =
            b.g.iter()
                .zip(&eps)
                .map(|(&g, &e)| (f64::from(g) * f64::from(e)).abs())
                .sum();
        let whole = {
            let [m, s2, ln] = forward_sums(&all.fwd);
            [m, s2, ln, all.bwd.noise_dot]
        };
        let abs = [sq, s2_abs, ln_abs, dot_abs];
        // All-reduce in rank order and in reverse rank order (NCCL fixes neither).
        for reverse in [false, true] {
            let mut reduced = [0.0f64; 4];
            let mut order: Vec<&StepOut> = parts.iter().collect();
            if reverse {
                order.reverse();
            }
            for p in order {
                let [m, s2, ln] = forward_sums(&p.fwd);
                for (acc, v) in reduced.iter_mut().zip([m, s2, ln, p.bwd.noise_dot]) {
                    *acc += v;
                }
            }
            for k in 0..4 {
                if !diagonal && (k == 1 || k == 2) {
                    continue;
                }
                let bound = sum_bound(abs[k], shards);
                let diff = (reduced[k] - whole[k]).abs();
                assert!(
                    diff <= bound,
                    "sum {k} (diagonal {diagonal}): sharded {} whole {} differ by {diff:e} > {bound:e}",
                    reduced[k],
                    whole[k]
                );
            }

            // Every rank turns the all-reduced sums into the same v* and KL* (the same function
            // of the same bits); they match the whole block's within the propagated bound:
            // v* = (M + sum sigma^2)/D moves by (dM + ds2)/D plus a few roundings, and
            // KL* = D/2 ln v* - 1/2 sum ln sigma^2 (+ const) by (dM + ds2)/(2 v*) + dln/2
            // plus a few roundings of its terms.
            let stats = if diagonal {
                ScaleStats::Diagonal {
                    sum_sigma2: reduced[1],
                    sum_ln_sigma2: reduced[2],
                }
            } else {
                ScaleStats::Isotropic { sigma: sigma_iso }
            };
            let rank_terms = KlTerms::isotropic(len, reduced[0], stats).unwrap();
            let whole_terms = all.fwd.kl_terms().unwrap();
            let (v_r, v_w) = (
                rank_terms.optimal_variance(),
                whole_terms.optimal_variance(),
            );
            let dm = sum_bound(abs[0], shards);
            let ds2 = if diagonal {
                sum_bound(abs[1], shards)
            } else {
                0.0
            };
            let dln = if diagonal {
                sum_bound(abs[2], shards)
            } else {
                0.0
            };
            assert!(
                (v_r - v_w).abs() <= (dm + ds2) / d + 8.0 * U64 * v_w,
                "v* {v_r} vs {v_w}"
            );
            let (k_r, k_w) = (
                rank_terms.kl_at_optimum().unwrap(),
                whole_terms.kl_at_optimum().unwrap(),
            );
            let ln_sum = whole_terms.sum_ln_sigma2.abs();
            let kl_bound = (dm + ds2) / (2.0 * v_w)
                + dln / 2.0
                + 16.0 * U64 * (d * v_w.ln().abs() + ln_sum + k_w.abs());
            assert!(
                (k_r - k_w).abs() <= kl_bound,
                "KL* {k_r} vs {k_w} (bound {kl_bound:e})"
            );

            // Isotropic d loss/d sigma: each rank's value holds its partial sum g.eps plus the KL
            // term k D_s (sigma/v - 1/sigma), linear in D_s, so the all-reduced (summed, not
            // averaged) values are the whole block's.
            if !diagonal {
                let summed: f64 = parts.iter().map(|p| p.bwd.grad_sigma.unwrap()).sum();
                let kl_part = kl0.inv_kappa_n * d * (sigma_iso / kl0.variance + 1.0 / sigma_iso);
                let bound = sum_bound(dot_abs, shards) + 8.0 * (shards as f64) * U64 * kl_part;
                let got = all.bwd.grad_sigma.unwrap();
                assert!(
                    (summed - got).abs() <= bound,
                    "d loss/d sigma {summed} vs {got}"
                );
            }
        }

        // Why the all-reduce is needed: a shard's own v* (from its partial sums alone) is not the
        // block's, so its KL gradient c = 1/(kappa N v) would be wrong.
        if diagonal {
            let first = parts[1].fwd.kl_terms().unwrap().optimal_variance();
            let last = parts[shards - 1].fwd.kl_terms().unwrap().optimal_variance();
            let global = all.fwd.kl_terms().unwrap().optimal_variance();
            assert!(
                first < 0.7 * global && last > 1.3 * global,
                "{first} {last} {global}"
            );
        }
    }
}

#[test]
fn data_parallel_ranks_share_the_noise_and_averaged_gradients_are_the_single_device_ones() {
    // Every rank holds the whole block and its own batch; the batch only changes the likelihood
    // gradient g_r = d(mean NLL over the rank's batch)/dw at the shared sample w.
    let len = 2 * REDUCTION_CHUNK + 555;
    let ranks = 3;
    let key = NoiseKey::for_block_step(21, 0, 9);
    let b = Block::new(len, 13);
    let kl = KlGradScales {
        inv_kappa_n: 1.0 / 5.0e4,
        variance: 0.03,
    };
    let (c, _, _) = kl.f32_constants();
    // A quadratic per-example loss with rank-specific curvature: g_r(w) = a_r + h_r w.
    let curvature: Vec<Vec<f32>> = (0..ranks)
        .map(|r| {
            normal_data(len, NoiseKey::new(100 + r as u64, 0), 1.0)
                .iter()
                .map(|x| x.abs())
                .collect()
        })
        .collect();
    let offset: Vec<Vec<f32>> = (0..ranks)
        .map(|r| normal_data(len, NoiseKey::new(200 + r as u64, 0), 1e-2))
        .collect();
    for diagonal in [false, true] {
        let scale = b.scale(diagonal, 0..len);
        // The fused backward over the whole block at likelihood gradient g.
        let back = |g: &[f32], threads: usize| {
            let mut gm = vec![0.0f32; len];
            let mut gs = vec![0.0f32; len];
            let bs = backward(
                &b.m,
                Some(&b.mu),
                scale,
                key,
                0,
                g,
                kl,
                &mut gm,
                diagonal.then_some(&mut gs[..]),
                threads,
            )
            .unwrap();
            (gm, gs, bs)
        };
        let mut samples = Vec::new();
        let mut grads = Vec::new();
        let mut sigma_grads = Vec::new();
        let mut dots = Vec::new();
        for r in 0..ranks {
            let mut w = vec![0.0f32; len];
            forward(&b.m, Some(&b.mu), scale, key, 0, &mut w, 1 + r).unwrap();
            let g: Vec<f32> = (0..len)
                .map(|i| offset[r][i] + curvature[r][i] * w[i])
                .collect();
            let (gm, gs, bs) = back(&g, 1 + r);
            samples.push(w);
            grads.push((g, gm));
            sigma_grads.push(gs);
            dots.push(bs.noise_dot);
        }
        // No communication for the noise: every rank drew the same sample, at any thread count.
        for w in &samples[1..] {
            assert_eq!(bits(w), bits(&samples[0]));
        }
        // The single-device step on the averaged likelihood gradient.
        let g_mean: Vec<f32> = (0..len)
            .map(|i| {
                (grads.iter().map(|(g, _)| f64::from(g[i])).sum::<f64>() / ranks as f64) as f32
            })
            .collect();
        let (gm1, gs1, single) = back(&g_mean, 2);
        // The gradient all-reduce averages g_r + c (m - mu): the KL part is the same on every
        // rank and survives averaging once. Rounding: each rank's f32 value is
        // (g_r + t)(1 + d_r) with t = fl(c (m - mu)) and |d_r| <= u; the single-device value is
        // (fl(mean g) + t)(1 + d) with fl(mean g) = mean g (1 + d'). So the two differ by at most
        // u (mean_r |g_r + t| + |mean g| + |fl(mean g) + t|), plus f64 rounding of the average.
        for i in 0..len {
            let t = f64::from(c * (b.m[i] - b.mu[i]));
            let avg = grads.iter().map(|(_, gm)| f64::from(gm[i])).sum::<f64>() / ranks as f64;
            let mean_g = grads.iter().map(|(g, _)| f64::from(g[i])).sum::<f64>() / ranks as f64;
            let spread = grads
                .iter()
                .map(|(g, _)| (f64::from(g[i]) + t).abs())
                .sum::<f64>()
                / ranks as f64;
            let bound =
                1.001 * U32 * (spread + mean_g.abs() + (f64::from(g_mean[i]) + t).abs()) + 1e-300;
            let diff = (avg - f64::from(gm1[i])).abs();
            assert!(diff <= bound, "grad m[{i}]: {avg} vs {} ({diff:e})", gm1[i]);
        }
        // d loss/d sigma: the likelihood part sum_i g_i eps_i is linear in g, so its average over
        // ranks is the single-device value at the averaged g, to the rounding of g_mean to f32
        // (u |mean g_i eps_i| per term) and the f64 sums.
        let eps: Vec<f32> = {
            let mut e = vec![0.0f32; len];
            fill_normals(key, 0, &mut e);
            e
        };
        let dot_abs: f64 = (0..len)
            .map(|i| (f64::from(g_mean[i]) * f64::from(eps[i])).abs())
            .sum();
        let avg_dot = dots.iter().sum::<f64>() / ranks as f64;
        let bound = 1.001 * U32 * dot_abs + sum_bound(dot_abs, 2 * ranks);
        assert!(
            (avg_dot - single.noise_dot).abs() <= bound,
            "sum g eps: {avg_dot} vs {}",
            single.noise_dot
        );
        if diagonal {
            // Per weight: g_j eps_j + k (sigma_j/v - 1/sigma_j), averaged in f64 over ranks.
            let (_, k, inv_v) = kl.f32_constants();
            for j in (0..len).step_by(11) {
                let avg = sigma_grads.iter().map(|gs| f64::from(gs[j])).sum::<f64>() / ranks as f64;
                let kl_part = f64::from(k * (b.sigma[j] * inv_v - 1.0 / b.sigma[j]));
                let terms = grads
                    .iter()
                    .map(|(g, _)| (f64::from(g[j]) * f64::from(eps[j])).abs())
                    .sum::<f64>()
                    / ranks as f64
                    + kl_part.abs();
                let bound = 4.0 * U32 * (terms + f64::from(gs1[j]).abs());
                assert!(
                    (avg - f64::from(gs1[j])).abs() <= bound,
                    "grad sigma[{j}]: {avg} vs {}",
                    gs1[j]
                );
            }
        }
    }
}
