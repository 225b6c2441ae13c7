//! The crate's one reduction order and its fast paths: chunks of [`REDUCTION_CHUNK`] terms,
//! [`REDUCTION_LANES`] interleaved `f64` lanes inside a chunk combined pairwise, chunk partials
//! combined with Neumaier compensation ([`deterministic_sum`] over any iterator), and the
//! slice reductions that give the same bits with SIMD lanes where the CPU has them
//! ([`dot_f64`], [`squared_distance_f64`], [`sum_squares_f64`], and for `f64` slices
//! [`pair_sum`]). See [`crate::ParamBlock`] for the order's definition.

use crate::error::{CoreError, Result};
use crate::noise::{InstructionSet, Path};

#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) use simd::Term;

/// The terms of the hot reductions (the intrinsics' enum off x86-64).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
pub(crate) enum Term {
    SqDiff,
    Product,
}

const LANES: usize = REDUCTION_LANES;

/// Terms per reduction chunk: the unit whose `f64` partial joins the compensated total, and the
/// unit of work the fused step's threads take.
pub const REDUCTION_CHUNK: usize = 4096;

/// Interleaved `f64` accumulators inside a chunk: term `p` of a chunk goes to lane
/// `p % REDUCTION_LANES`.
pub const REDUCTION_LANES: usize = 8;

/// The [`REDUCTION_LANES`] accumulators of one chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lanes(pub(crate) [f64; REDUCTION_LANES]);

impl Lanes {
    pub(crate) const ZERO: Self = Self([0.0; REDUCTION_LANES]);

    /// The chunk partial: the lanes added pairwise in a fixed order.
    #[inline(always)]
    pub(crate) fn total(&self) -> f64 {
        let l = &self.0;
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }
}

/// Neumaier-compensated sum of `f64` terms (order-preserving, deterministic).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// Add one term.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The compensated total.
    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Sum the terms of an iterator in the crate's reduction order (module docs): lanes of 8 inside
/// chunks of 4096, chunk partials compensated.
///
/// # Formula
///
/// `sum_c P_c` (Neumaier, in chunk order) with
/// `P_c = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`,
/// `l_r = sum_{p = r mod 8} t_{4096 c + p}` (plain, in order).
pub fn deterministic_sum<I: Iterator<Item = f64>>(terms: I) -> f64 {
    let mut total = CompensatedSum::default();
    let mut lanes = Lanes::ZERO;
    let mut count = 0usize;
    for t in terms {
        lanes.0[count % REDUCTION_LANES] += t;
        count += 1;
        if count == REDUCTION_CHUNK {
            total.add(lanes.total());
            lanes = Lanes::ZERO;
            count = 0;
        }
    }
    if count > 0 {
        total.add(lanes.total());
    }
    total.value()
}

/// `lanes[i % LANES] += term(a_i, b_i)` for `i` in `0..a.len()`, in order within each lane.
#[inline(always)]
pub(crate) fn accumulate<T: Copy>(lanes: &mut Lanes, a: &[T], b: &[T], term: impl Fn(T, T) -> f64) {
    let b = &b[..a.len()];
    let (a_groups, a_tail) = a.as_chunks::<LANES>();
    let (b_groups, b_tail) = b.as_chunks::<LANES>();
    for (x, y) in a_groups.iter().zip(b_groups) {
        for l in 0..LANES {
            lanes.0[l] += term(x[l], y[l]);
        }
    }
    accumulate_tail(lanes, a_tail, b_tail, term);
}

/// The last `< LANES` terms of a tile: lane `l` gets term `l`.
#[inline(always)]
pub(crate) fn accumulate_tail<T: Copy>(
    lanes: &mut Lanes,
    a: &[T],
    b: &[T],
    term: impl Fn(T, T) -> f64,
) {
    for (l, (x, y)) in a.iter().zip(b).enumerate() {
        lanes.0[l] += term(*x, *y);
    }
}

/// [`accumulate`] for the two hot reductions, in intrinsics on the AVX2 and AVX-512 paths
/// ([`simd`]), the portable loop otherwise.
#[inline(always)]
pub(crate) fn accumulate_on(
    isa: InstructionSet,
    lanes: &mut Lanes,
    a: &[f32],
    b: &[f32],
    term: Term,
) {
    let f = move |x: f32, y: f32| match term {
        Term::SqDiff => {
            let d = f64::from(x) - f64::from(y);
            d * d
        }
        Term::Product => f64::from(x) * f64::from(y),
    };
    let done = match isa.path() {
        // SAFETY (both arms): the instruction set was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { simd::accumulate_avx512(&mut lanes.0, a, b, term) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { simd::accumulate_avx2(&mut lanes.0, a, b, term) },
        Path::Portable => {
            accumulate(lanes, a, b, f);
            return;
        }
    };
    accumulate_tail(lanes, &a[done..], &b[done..], f);
}

/// `sum_i a_i b_i` of `f32` inputs, each product formed exactly in `f64`, in the crate's
/// reduction order (lanes of 8 inside chunks of [`crate::REDUCTION_CHUNK`], chunk partials
/// compensated): bit for bit
/// `deterministic_sum(a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)))`, with the
/// fused step's AVX-512/AVX2 lanes when the CPU has them (the portable loop otherwise; the
/// compiler does not vectorize the `f32 -> f64` lanes on a baseline x86-64 target). For
/// `dL/dsigma = sum_i g_i eps_i` of a reparameterized block.
///
/// # Formula
/// `sum_c P_c` (Neumaier, in chunk order), `P_c = ((l_0 + l_1) + (l_2 + l_3)) + ((l_4 + l_5)
/// + (l_6 + l_7))`, `l_r = sum_{i in c, i = r mod 8} a_i b_i` (in order).
///
/// # Errors
/// [`CoreError::LengthMismatch`] when `a` and `b` differ in length.
pub fn dot_f64(a: &[f32], b: &[f32]) -> Result<f64> {
    dot_f64_on(InstructionSet::detected(), a, b)
}

/// [`dot_f64`] on a chosen instruction set (one of [`InstructionSet::available`]): the same
/// bits on every path.
///
/// # Formula
/// As [`dot_f64`].
///
/// # Errors
/// [`CoreError::LengthMismatch`] when `a` and `b` differ in length.
pub fn dot_f64_on(isa: InstructionSet, a: &[f32], b: &[f32]) -> Result<f64> {
    same_len("second factor of a dot product", a, b)?;
    Ok(lanes_sum(isa, a, b, Term::Product))
}

fn same_len(name: &str, a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(CoreError::LengthMismatch {
            name: name.to_string(),
            expected: a.len(),
            found: b.len(),
        })
    }
}

/// `sum_i term(a_i, b_i)` in the crate's order, the lanes through [`accumulate_on`]
/// (`a`, `b` of equal length).
pub(crate) fn lanes_sum(isa: InstructionSet, a: &[f32], b: &[f32], term: Term) -> f64 {
    let mut total = CompensatedSum::default();
    for (x, y) in a.chunks(REDUCTION_CHUNK).zip(b.chunks(REDUCTION_CHUNK)) {
        let mut lanes = Lanes::ZERO;
        accumulate_on(isa, &mut lanes, x, y, term);
        total.add(lanes.total());
    }
    total.value()
}

/// `M = sum_i (a_i - b_i)^2` of `f32` inputs, each difference and square formed exactly in
/// `f64`, in the crate's reduction order: bit for bit
/// `deterministic_sum(a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)))`,
/// with AVX-512/AVX2 lanes when the CPU has them.
///
/// # Formula
/// `sum_c P_c` (Neumaier, in chunk order), `P_c = ((l_0 + l_1) + (l_2 + l_3)) + ((l_4 + l_5)
/// + (l_6 + l_7))`, `l_r = sum_{i in c, i = r mod 8} (a_i - b_i)^2` (in order).
///
/// # Errors
/// [`CoreError::LengthMismatch`] when `a` and `b` differ in length.
pub fn squared_distance_f64(a: &[f32], b: &[f32]) -> Result<f64> {
    squared_distance_f64_on(InstructionSet::detected(), a, b)
}

/// [`squared_distance_f64`] on a chosen instruction set: the same bits on every path.
///
/// # Formula
/// As [`squared_distance_f64`].
///
/// # Errors
/// [`CoreError::LengthMismatch`] when `a` and `b` differ in length.
pub fn squared_distance_f64_on(isa: InstructionSet, a: &[f32], b: &[f32]) -> Result<f64> {
    same_len("prior mean", a, b)?;
    Ok(lanes_sum(isa, a, b, Term::SqDiff))
}

/// `sum_i a_i^2` of `f32` inputs in `f64`, in the crate's reduction order (the SIMD lanes of
/// [`dot_f64`] with `b = a`): bit for bit `deterministic_sum(a.iter().map(|x| f64::from(*x).powi(2)))`.
///
/// # Formula
/// `sum_c P_c` as in [`dot_f64`], with terms `a_i^2`.
pub fn sum_squares_f64(a: &[f32]) -> f64 {
    sum_squares_f64_on(InstructionSet::detected(), a)
}

/// [`sum_squares_f64`] on a chosen instruction set: the same bits on every path.
///
/// # Formula
/// As [`sum_squares_f64`].
pub fn sum_squares_f64_on(isa: InstructionSet, a: &[f32]) -> f64 {
    lanes_sum(isa, a, a, Term::Product)
}

/// `sum_i term(a_i, b_i)` over two slices in the crate's reduction order, in straight loops
/// over groups of [`REDUCTION_LANES`] that the compiler vectorizes: bit for bit
/// `deterministic_sum(a.iter().zip(b).map(|(x, y)| term(*x, *y)))`. Stops at the shorter
/// slice.
///
/// # Formula
/// `sum_c P_c` (Neumaier, in chunk order), `l_r = sum_{i in c, i = r mod 8} term(a_i, b_i)`.
pub fn pair_sum<T: Copy>(a: &[T], b: &[T], term: impl Fn(T, T) -> f64) -> f64 {
    let n = a.len().min(b.len());
    let mut total = CompensatedSum::default();
    for (x, y) in a[..n]
        .chunks(REDUCTION_CHUNK)
        .zip(b[..n].chunks(REDUCTION_CHUNK))
    {
        let mut lanes = Lanes::ZERO;
        accumulate(&mut lanes, x, y, &term);
        total.add(lanes.total());
    }
    total.value()
}
