//! The tile reductions of [`super`] in AVX-512F and AVX2 intrinsics (the compiler does not
//! vectorize the 8-lane `f64` accumulation of `f32` inputs well on its own). Same operations in
//! the same order as the portable loops: term `i` of a tile is formed exactly in `f64` from the
//! `f32` inputs and added to lane `i % 8`, one add per lane per group of 8.

use std::arch::x86_64::*;

use super::REDUCTION_LANES as LANES;

/// Which term the reduction forms from `(a_i, b_i)`.
#[derive(Clone, Copy)]
pub(crate) enum Term {
    /// `(a - b)^2`.
    SqDiff,
    /// `a b`.
    Product,
}

/// `acc[i % 8] += term(a_i, b_i)` over whole groups of 8; returns the number of elements done
/// (the caller adds the tail).
#[target_feature(enable = "avx512f")]
pub(super) fn accumulate_avx512(acc: &mut [f64; LANES], a: &[f32], b: &[f32], term: Term) -> usize {
    let b = &b[..a.len()];
    let (a_groups, _) = a.as_chunks::<LANES>();
    let (b_groups, _) = b.as_chunks::<LANES>();
    // SAFETY: `acc` holds 8 f64, the width of one register; unaligned load.
    let mut v = unsafe { _mm512_loadu_pd(acc.as_ptr()) };
    for (x, y) in a_groups.iter().zip(b_groups) {
        // SAFETY: `x` and `y` hold 8 f32 each; unaligned loads.
        let (x, y) = unsafe { (_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr())) };
        let (x, y) = (_mm512_cvtps_pd(x), _mm512_cvtps_pd(y));
        let t = match term {
            Term::SqDiff => {
                let d = _mm512_sub_pd(x, y);
                _mm512_mul_pd(d, d)
            }
            Term::Product => _mm512_mul_pd(x, y),
        };
        v = _mm512_add_pd(v, t);
    }
    // SAFETY: as for the load.
    unsafe { _mm512_storeu_pd(acc.as_mut_ptr(), v) };
    a_groups.len() * LANES
}

/// [`accumulate_avx512`] with two 4-lane registers (lanes 0-3 and 4-7).
#[target_feature(enable = "avx2")]
pub(super) fn accumulate_avx2(acc: &mut [f64; LANES], a: &[f32], b: &[f32], term: Term) -> usize {
    let b = &b[..a.len()];
    let (a_groups, _) = a.as_chunks::<LANES>();
    let (b_groups, _) = b.as_chunks::<LANES>();
    // SAFETY: `acc` holds 8 f64: two registers of 4; unaligned loads.
    let (mut lo, mut hi) = unsafe {
        (
            _mm256_loadu_pd(acc.as_ptr()),
            _mm256_loadu_pd(acc.as_ptr().add(4)),
        )
    };
    let form = |x: __m256d, y: __m256d| match term {
        Term::SqDiff => {
            let d = _mm256_sub_pd(x, y);
            _mm256_mul_pd(d, d)
        }
        Term::Product => _mm256_mul_pd(x, y),
    };
    for (x, y) in a_groups.iter().zip(b_groups) {
        // SAFETY: `x` and `y` hold 8 f32 each: two registers of 4; unaligned loads.
        let (x0, x1, y0, y1) = unsafe {
            (
                _mm_loadu_ps(x.as_ptr()),
                _mm_loadu_ps(x.as_ptr().add(4)),
                _mm_loadu_ps(y.as_ptr()),
                _mm_loadu_ps(y.as_ptr().add(4)),
            )
        };
        lo = _mm256_add_pd(lo, form(_mm256_cvtps_pd(x0), _mm256_cvtps_pd(y0)));
        hi = _mm256_add_pd(hi, form(_mm256_cvtps_pd(x1), _mm256_cvtps_pd(y1)));
    }
    // SAFETY: as for the loads.
    unsafe {
        _mm256_storeu_pd(acc.as_mut_ptr(), lo);
        _mm256_storeu_pd(acc.as_mut_ptr().add(4), hi);
    }
    a_groups.len() * LANES
}
