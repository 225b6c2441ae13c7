//! f32 blocks with millions of entries reduce to the same sums as an exactly rounded f64
//! reference, within a tolerance that every f32 accumulator (plain, pairwise, Kahan) fails; and
//! the reparameterized sample is reproducible bit for bit.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use deelbo_core::fused::{Scale, forward};
use deelbo_core::{KlTerms, NoiseKey, ParamBlock, ParamBlockMut, ScaleStats, fill_normals};

/// The exactly rounded sum of `f64` terms: Shewchuk's algorithm with non-overlapping partials
/// (the one behind Python's `math.fsum`), independent of any summation order.
fn fsum(terms: impl Iterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in terms {
        let mut kept = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    // Add the partials from the largest down; round half-way cases correctly.
    let Some(mut n) = partials.len().checked_sub(1) else {
        return 0.0;
    };
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// A plain running `f32` sum.
fn naive_f32(terms: &[f32]) -> f32 {
    terms.iter().sum()
}

/// Pairwise (cascade) `f32` summation: halves recursively, blocks of 8 summed plainly (NumPy's
/// scheme).
fn pairwise_f32(terms: &[f32]) -> f32 {
    if terms.len() <= 8 {
        terms.iter().sum()
    } else {
        let (a, b) = terms.split_at(terms.len() / 2);
        pairwise_f32(a) + pairwise_f32(b)
    }
}

/// Kahan's compensated `f32` summation.
fn kahan_f32(terms: &[f32]) -> f32 {
    let (mut sum, mut c) = (0.0f32, 0.0f32);
    for &x in terms {
        let y = x - c;
        let t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    sum
}

/// The error of `value` against the exact `reference`, relative to `sum_abs = sum_i |x_i|` (the
/// scale every summation error bound is stated in; for non-negative terms, the sum itself).
fn err(value: f64, reference: f64, sum_abs: f64) -> f64 {
    (value - reference).abs() / sum_abs
}

/// The tolerance of the `f32`-vs-`f64` comparisons, relative to `sum |x_i|`.
///
/// The library widens each `f32` to `f64` and sums in `f64`: `tensor`'s chunks of 64 plain sums
/// combined by Neumaier compensation have a worst-case error of about `(63 + 2) u sum|x|`
/// (`u = 2^-53`, i.e. 7e-15); the fused step's 4096-element chunks in 8 lanes about `516 u`
/// (5.7e-14). 1e-12 sits 17x above the larger bound. An accumulator that keeps its running sum
/// in `f32` cannot meet it: its result is an `f32`, whose spacing alone is `2^-24 = 6e-8` of its
/// value; and where the terms are themselves rounded to `f32` (products, squares), their
/// independent rounding errors add up to about `2^-24 / sqrt(n) = 3e-11` of the sum for
/// `n = 5e6`, however exactly they are then summed.
const TOLERANCE: f64 = 1e-12;

#[test]
fn f32_reductions_match_exact_f64_sums_to_1e_minus_12_where_f32_accumulators_fail() {
    let d = 5_000_000;
    let mut m32 = vec![0.0f32; d];
    let mut mu32 = vec![0.0f32; d];
    fill_normals(NoiseKey::new(3, 0), 0, &mut m32);
    fill_normals(NoiseKey::new(3, 1), 0, &mut mu32);
    // A realistic L2-SP block: means close to the pretrained weights, with an offset that a
    // naive f32 accumulator would lose.
    for (m, mu) in m32.iter_mut().zip(&mu32) {
        *m = *mu + 1e-3 * *m + 0.25;
    }
    let m64: Vec<f64> = m32.iter().map(|&v| f64::from(v)).collect();
    let mu64: Vec<f64> = mu32.iter().map(|&v| f64::from(v)).collect();

    // The reductions as the library defines them on the widened values, each with its f32-native
    // terms (what an f32 implementation would sum) and sum |x_i|.
    struct Case {
        name: &'static str,
        library: f64,
        terms64: Vec<f64>,
        terms32: Vec<f32>,
    }
    let diff64 = |(a, b): (&f64, &f64)| (a - b) * (a - b);
    let cases = [
        Case {
            name: "sum",
            library: m32[..].sum(),
            terms64: m64.clone(),
            terms32: m32.clone(),
        },
        Case {
            name: "sum of squares",
            library: m32[..].sum_squares(),
            terms64: m64.iter().map(|v| v * v).collect(),
            terms32: m32.iter().map(|v| v * v).collect(),
        },
        Case {
            name: "squared distance",
            library: m32[..].squared_distance(&mu32[..]).unwrap(),
            terms64: m64.iter().zip(&mu64).map(diff64).collect(),
            terms32: m32
                .iter()
                .zip(&mu32)
                .map(|(a, b)| (a - b) * (a - b))
                .collect(),
        },
        Case {
            name: "dot",
            library: m32[..].dot(&mu32[..]).unwrap(),
            terms64: m64.iter().zip(&mu64).map(|(a, b)| a * b).collect(),
            terms32: m32.iter().zip(&mu32).map(|(a, b)| a * b).collect(),
        },
    ];
    for case in &cases {
        let exact = fsum(case.terms64.iter().copied());
        let sum_abs = fsum(case.terms64.iter().map(|x| x.abs()));
        let lib = err(case.library, exact, sum_abs);
        assert!(lib <= TOLERANCE, "{}: library error {lib:e}", case.name);
        for (method, value) in [
            ("plain f32", naive_f32(&case.terms32)),
            ("pairwise f32", pairwise_f32(&case.terms32)),
            ("Kahan f32", kahan_f32(&case.terms32)),
        ] {
            let e = err(f64::from(value), exact, sum_abs);
            assert!(
                e > TOLERANCE,
                "{}: {method} error {e:e} meets the tolerance: it no longer separates f32 from f64 accumulation",
                case.name
            );
        }
    }
    // The f64 block path on the same values.
    let dist_exact = fsum(m64.iter().zip(&mu64).map(diff64));
    let dist64 = m64[..].squared_distance(&mu64[..]).unwrap();
    assert!(err(dist64, dist_exact, dist_exact) <= TOLERANCE);

    // The fused step's reductions (4096-element chunks, f64 lanes): M and the diagonal sums.
    let sigma: Vec<f32> = mu32.iter().map(|v| 1e-3 + 1e-2 * v.abs()).collect();
    let mut w = vec![0.0f32; d];
    let st = forward(
        &m32,
        Some(&mu32),
        Scale::Diagonal(&sigma),
        NoiseKey::new(4, 0),
        0,
        &mut w,
        2,
    )
    .unwrap();
    assert!(err(st.sq_dist, dist_exact, dist_exact) <= TOLERANCE);
    let ScaleStats::Diagonal {
        sum_sigma2,
        sum_ln_sigma2,
    } = st.scale
    else {
        panic!("a diagonal scale gives diagonal stats");
    };
    let s2_terms: Vec<f64> = sigma.iter().map(|&s| f64::from(s) * f64::from(s)).collect();
    let s2_exact = fsum(s2_terms.iter().copied());
    assert!(err(sum_sigma2, s2_exact, s2_exact) <= TOLERANCE);
    let ln_terms: Vec<f64> = sigma.iter().map(|&s| 2.0 * f64::from(s).ln()).collect();
    let ln_exact = fsum(ln_terms.iter().copied());
    let ln_abs = fsum(ln_terms.iter().map(|x| x.abs()));
    assert!(err(sum_ln_sigma2, ln_exact, ln_abs) <= TOLERANCE);
    let s2_f32: Vec<f32> = sigma.iter().map(|s| s * s).collect();
    for value in [
        naive_f32(&s2_f32),
        pairwise_f32(&s2_f32),
        kahan_f32(&s2_f32),
    ] {
        assert!(err(f64::from(value), s2_exact, s2_exact) > TOLERANCE);
    }

    // Downstream: v* and KL* from the f32 block against the same formulas on the exact sums
    // (v* = M/D + sigma^2, KL* = D/2 ln(1 + M/(D sigma^2)); ln1p has condition number <= 1, so
    // their relative errors stay at the level of M's plus a few roundings).
    let sigma_iso = 1e-4;
    let t32 = KlTerms::from_block(
        &m32[..],
        Some(&mu32[..]),
        ScaleStats::Isotropic { sigma: sigma_iso },
    )
    .unwrap();
    let df = d as f64;
    let v_exact = dist_exact / df + sigma_iso * sigma_iso;
    let kl_exact = 0.5 * df * (dist_exact / (df * sigma_iso * sigma_iso)).ln_1p();
    assert!(err(t32.optimal_variance(), v_exact, v_exact) <= TOLERANCE);
    assert!(err(t32.kl_at_optimum().unwrap(), kl_exact, kl_exact) <= TOLERANCE);
}

#[test]
fn the_exact_reference_is_exact() {
    assert_eq!(fsum([1e16, 1.0, -1e16, 1.0].into_iter()), 2.0);
    assert_eq!(fsum(std::iter::repeat_n(0.1, 10)), 1.0);
    assert_eq!(fsum([0.1, 0.2, -0.3].into_iter()), 2.7755575615628914e-17);
    assert_eq!(fsum(std::iter::empty()), 0.0);
    // Half-way case: 1 + 2^-53 + 2^-106 rounds up, not to even.
    let tiny = f64::EPSILON / 2.0;
    assert_eq!(
        fsum([1.0, tiny, tiny * tiny].into_iter()),
        1.0 + f64::EPSILON
    );
}

#[test]
fn reparameterized_samples_are_reproducible_and_f32_matches_f64() {
    let d = 100_003;
    let mean32: Vec<f32> = (0..d).map(|i| (i as f32 * 1e-3).sin()).collect();
    let mean64: Vec<f64> = mean32.iter().map(|&v| f64::from(v)).collect();
    let key = NoiseKey::for_block_step(11, 2, 5);
    let mut a = vec![0.0f32; d];
    let mut b = vec![0.0f32; d];
    a.reparameterize(&mean32, 0.01, key, 0).unwrap();
    b.reparameterize(&mean32, 0.01, key, 0).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let mut c = vec![0.0f64; d];
    c.reparameterize(&mean64, 0.01, key, 0).unwrap();
    let worst = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "f32 vs f64 sample differ by {worst}");
    // A different step gives different noise.
    b.reparameterize(&mean32, 0.01, NoiseKey::for_block_step(11, 2, 6), 0)
        .unwrap();
    assert!(a.iter().zip(&b).filter(|(x, y)| x != y).count() > d / 2);
}
