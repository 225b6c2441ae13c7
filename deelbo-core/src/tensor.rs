//! The narrow tensor trait the math needs from a parameter block, with implementations for
//! `f32`/`f64` slices and 1-D ndarray arrays.
//!
//! A block is a flat run of `D_b` weights (or variational means, or prior means). The objective
//! needs only its length, a few reductions (all returned in `f64`), the reparameterized sample
//! `w = m + sigma eps` and axpy-style updates, on host memory.
//!
//! These traits are the host-side reference, not the seam to a device or a framework: neither
//! deelbo-cuda nor deelbo-candle implements them for device memory or tensors. The seam is
//! **device reductions -> [`crate::KlTerms`] -> [`crate::Objective`]**: a device computes a
//! block's `M_b = ||m - mu||^2` (and, for a diagonal `q`, `sum sigma_j^2` and `sum ln sigma_j^2`)
//! itself, hands those few `f64` to [`crate::KlTerms::isotropic`] (or builds them with
//! [`crate::fused::ForwardStats::kl_terms`]), and gets `v*`, `KL*` and the gradient constants back
//! from [`crate::Objective::evaluate`] and [`crate::fused::KlGradScales::from_evaluation`]
//! (`docs/DESIGN.md §1, §3`).
//!
//! # The reduction order (one for the whole crate)
//!
//! Reductions are deterministic: the same input gives the same bits on every run, at every
//! thread count and on every instruction set. Each term is computed in `f64`; the terms are cut
//! into chunks of [`crate::REDUCTION_CHUNK`] = 4096; inside a chunk, term `p` is added plainly to lane
//! `p % `[`crate::REDUCTION_LANES`] (8 lanes, each summed in order), the lanes are combined pairwise as
//! `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`, and the chunk partials are combined in
//! chunk order with Neumaier's compensated summation ([`crate::CompensatedSum`]). [`deterministic_sum`]
//! applies this order to any iterator, and the fused step ([`crate::fused`]) applies it with
//! threads taking whole chunks and SIMD registers holding the 8 lanes, so a fused reduction and
//! the same sum through [`ParamBlock`] give identical bits.

use ndarray::{ArrayBase, Data, DataMut, Ix1};

use crate::check;
use crate::error::{CoreError, Result};
use crate::noise::{InstructionSet, NoiseKey, fill_normals};
use crate::reduce::{Term, deterministic_sum, lanes_sum, pair_sum, sum_squares_f64};

/// The floating-point element types a block may hold (`f32`, `f64`).
pub trait Real: num_traits::Float + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Widen (or keep) to `f64`.
    fn as_f64(self) -> f64;
    /// Round an `f64` to this type (nearest).
    fn from_f64_rounded(x: f64) -> Self;
    /// Convert a noise value (always generated as `f32`) to this type; exact for both types.
    fn from_noise(z: f32) -> Self;

    /// `sum_i x_i^2` in `f64`, in the crate's reduction order (`f32`: SIMD lanes where the CPU
    /// has them; the same bits on every path).
    ///
    /// # Formula
    /// `deterministic_sum(x_i^2)`
    fn slice_sum_squares(x: &[Self]) -> f64 {
        pair_sum(x, x, |a, _| {
            let v = a.as_f64();
            v * v
        })
    }

    /// `sum_i (a_i - b_i)^2` in `f64`, in the crate's reduction order (over the shorter
    /// length; [`ParamBlock`] checks the lengths first).
    ///
    /// # Formula
    /// `deterministic_sum((a_i - b_i)^2)`
    fn slice_squared_distance(a: &[Self], b: &[Self]) -> f64 {
        pair_sum(a, b, |x, y| {
            let d = x.as_f64() - y.as_f64();
            d * d
        })
    }

    /// `sum_i a_i b_i` in `f64`, in the crate's reduction order (over the shorter length).
    ///
    /// # Formula
    /// `deterministic_sum(a_i b_i)`
    fn slice_dot(a: &[Self], b: &[Self]) -> f64 {
        pair_sum(a, b, |x, y| x.as_f64() * y.as_f64())
    }
}

impl Real for f32 {
    #[inline(always)]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64_rounded(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn from_noise(z: f32) -> Self {
        z
    }
    fn slice_sum_squares(x: &[Self]) -> f64 {
        sum_squares_f64(x)
    }
    fn slice_squared_distance(a: &[Self], b: &[Self]) -> f64 {
        let n = a.len().min(b.len());
        lanes_sum(InstructionSet::detected(), &a[..n], &b[..n], Term::SqDiff)
    }
    fn slice_dot(a: &[Self], b: &[Self]) -> f64 {
        let n = a.len().min(b.len());
        lanes_sum(InstructionSet::detected(), &a[..n], &b[..n], Term::Product)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64_rounded(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn from_noise(z: f32) -> Self {
        f64::from(z)
    }
}

/// Read-only operations on a parameter block. All reductions return `f64`.
pub trait ParamBlock {
    /// The element type.
    type Elem: Real;

    /// Number of weights `D_b`.
    fn len(&self) -> usize;

    /// `true` when the block has no weights.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `sum_i x_i`.
    fn sum(&self) -> f64;

    /// `sum_i x_i^2` (the squared distance to a zero prior mean).
    fn sum_squares(&self) -> f64;

    /// `sum_i x_i y_i`. Errors when the lengths differ.
    fn dot(&self, other: &Self) -> Result<f64>;

    /// `M = ||x - y||^2 = sum_i (x_i - y_i)^2`. Errors when the lengths differ.
    fn squared_distance(&self, other: &Self) -> Result<f64>;

    /// The first NaN or infinity, as `(index, value)`, or `None` when all are finite.
    fn first_non_finite(&self) -> Option<(usize, f64)>;

    /// Every element is finite; the error names the block and the first offending index and
    /// value.
    fn ensure_finite(&self, name: &str) -> Result<()> {
        match self.first_non_finite() {
            Some((index, value)) => Err(CoreError::NonFinite {
                name: name.to_string(),
                index,
                value,
            }),
            None => Ok(()),
        }
    }
}

/// In-place updates of a parameter block.
pub trait ParamBlockMut: ParamBlock {
    /// `x_i <- x_i + alpha y_i`. Errors when the lengths differ.
    fn axpy(&mut self, alpha: f64, y: &Self) -> Result<()>;

    /// `x_i <- x_i + alpha (a_i - b_i)`; e.g. the KL gradient `(m - mu)/(kappa N v*)`.
    fn add_scaled_difference(&mut self, alpha: f64, a: &Self, b: &Self) -> Result<()>;

    /// `x_i <- alpha x_i`.
    fn scale(&mut self, alpha: f64);

    /// `x_i <- value`.
    fn fill(&mut self, value: f64);

    /// The reparameterized sample `x_i <- m_i + sigma eps_i`, with
    /// `eps_i = `[`crate::noise::normal_at`]`(noise, first_index + i)`. The product and sum are
    /// rounded in the element type, in that order (no fused multiply-add).
    fn reparameterize(
        &mut self,
        mean: &Self,
        sigma: f64,
        noise: NoiseKey,
        first_index: u64,
    ) -> Result<()>;
}

/// Noise values generated per refill by [`ParamBlockMut::reparameterize`].
const NOISE_CHUNK: usize = 1024;

/// The element-wise updates, identical for slices and arrays.
macro_rules! block_updates {
    () => {
        fn axpy(&mut self, alpha: f64, y: &Self) -> Result<()> {
            check::same_len("axpy operand", self.len(), y.len())?;
            let a = Self::Elem::from_f64_rounded(alpha);
            for (x, &y) in self.iter_mut().zip(y.iter()) {
                *x = *x + a * y;
            }
            Ok(())
        }

        fn add_scaled_difference(&mut self, alpha: f64, a: &Self, b: &Self) -> Result<()> {
            check::same_len("difference operand", self.len(), a.len())?;
            check::same_len("difference operand", self.len(), b.len())?;
            let s = Self::Elem::from_f64_rounded(alpha);
            for ((x, &a), &b) in self.iter_mut().zip(a.iter()).zip(b.iter()) {
                *x = *x + s * (a - b);
            }
            Ok(())
        }

        fn scale(&mut self, alpha: f64) {
            let a = Self::Elem::from_f64_rounded(alpha);
            for x in self.iter_mut() {
                *x = *x * a;
            }
        }

        fn fill(&mut self, value: f64) {
            let v = Self::Elem::from_f64_rounded(value);
            for x in self.iter_mut() {
                *x = v;
            }
        }
    };
}

impl<T: Real> ParamBlock for [T] {
    type Elem = T;

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn sum(&self) -> f64 {
        pair_sum(self, self, |x, _| x.as_f64())
    }

    fn sum_squares(&self) -> f64 {
        T::slice_sum_squares(self)
    }

    fn dot(&self, other: &Self) -> Result<f64> {
        check::same_len("dot operand", self.len(), other.len())?;
        Ok(T::slice_dot(self, other))
    }

    fn squared_distance(&self, other: &Self) -> Result<f64> {
        check::same_len("prior mean", self.len(), other.len())?;
        Ok(T::slice_squared_distance(self, other))
    }

    fn first_non_finite(&self) -> Option<(usize, f64)> {
        self.iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite())
            .map(|(i, x)| (i, x.as_f64()))
    }
}

impl<T: Real> ParamBlockMut for [T] {
    block_updates!();

    fn reparameterize(
        &mut self,
        mean: &Self,
        sigma: f64,
        noise: NoiseKey,
        first_index: u64,
    ) -> Result<()> {
        check::same_len("variational mean", self.len(), mean.len())?;
        let s = T::from_f64_rounded(sigma);
        let mut eps = [0.0f32; NOISE_CHUNK];
        let mut index = first_index;
        for (out, m) in self.chunks_mut(NOISE_CHUNK).zip(mean.chunks(NOISE_CHUNK)) {
            let eps = &mut eps[..out.len()];
            fill_normals(noise, index, eps);
            for ((w, &m), &z) in out.iter_mut().zip(m).zip(eps.iter()) {
                *w = m + s * T::from_noise(z);
            }
            index += out.len() as u64;
        }
        Ok(())
    }
}

impl<T: Real, S: Data<Elem = T>> ParamBlock for ArrayBase<S, Ix1> {
    type Elem = T;

    fn len(&self) -> usize {
        ArrayBase::len(self)
    }

    // The slice versions when the array is contiguous, the same order over its iterator
    // otherwise (identical bits either way).
    fn sum(&self) -> f64 {
        match self.as_slice() {
            Some(x) => x.sum(),
            None => deterministic_sum(self.iter().map(|x| x.as_f64())),
        }
    }

    fn sum_squares(&self) -> f64 {
        match self.as_slice() {
            Some(x) => x.sum_squares(),
            None => deterministic_sum(self.iter().map(|x| {
                let v = x.as_f64();
                v * v
            })),
        }
    }

    fn dot(&self, other: &Self) -> Result<f64> {
        check::same_len("dot operand", self.len(), other.len())?;
        if let (Some(a), Some(b)) = (self.as_slice(), other.as_slice()) {
            return a.dot(b);
        }
        Ok(deterministic_sum(
            self.iter()
                .zip(other.iter())
                .map(|(a, b)| a.as_f64() * b.as_f64()),
        ))
    }

    fn squared_distance(&self, other: &Self) -> Result<f64> {
        check::same_len("prior mean", self.len(), other.len())?;
        if let (Some(a), Some(b)) = (self.as_slice(), other.as_slice()) {
            return a.squared_distance(b);
        }
        Ok(deterministic_sum(self.iter().zip(other.iter()).map(
            |(a, b)| {
                let d = a.as_f64() - b.as_f64();
                d * d
            },
        )))
    }

    fn first_non_finite(&self) -> Option<(usize, f64)> {
        self.iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite())
            .map(|(i, x)| (i, x.as_f64()))
    }
}

impl<T: Real, S: DataMut<Elem = T>> ParamBlockMut for ArrayBase<S, Ix1> {
    block_updates!();

    fn reparameterize(
        &mut self,
        mean: &Self,
        sigma: f64,
        noise: NoiseKey,
        first_index: u64,
    ) -> Result<()> {
        check::same_len("variational mean", self.len(), mean.len())?;
        if let (Some(out), Some(m)) = (self.as_slice_mut(), mean.as_slice()) {
            return out.reparameterize(m, sigma, noise, first_index);
        }
        let s = T::from_f64_rounded(sigma);
        for (i, (w, &m)) in self.iter_mut().zip(mean.iter()).enumerate() {
            let z = crate::noise::normal_at(noise, first_index + i as u64);
            *w = m + s * T::from_noise(z);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::normal_at;
    use crate::reduce::{CompensatedSum, REDUCTION_CHUNK};
    use ndarray::{Array1, s};

    #[test]
    fn slice_and_array_agree() {
        let a: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.11).cos()).collect();
        let aa = Array1::from(a.clone());
        let bb = Array1::from(b.clone());
        assert_eq!(a[..].sum(), aa.sum());
        assert_eq!(a[..].sum_squares(), aa.sum_squares());
        assert_eq!(a[..].dot(&b[..]).unwrap(), aa.dot(&bb).unwrap());
        assert_eq!(
            a[..].squared_distance(&b[..]).unwrap(),
            aa.squared_distance(&bb).unwrap()
        );
        let direct: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((a[..].squared_distance(&b[..]).unwrap() - direct).abs() < 1e-10);
    }

    #[test]
    fn lengths_are_checked() {
        let a = [1.0f32, 2.0];
        let b = [1.0f32];
        assert!(a[..].dot(&b[..]).is_err());
        assert!(a[..].squared_distance(&b[..]).is_err());
        let mut c = [0.0f32; 2];
        assert!(c[..].axpy(1.0, &b[..]).is_err());
        assert!(
            c[..]
                .reparameterize(&b[..], 1.0, NoiseKey::default(), 0)
                .is_err()
        );
    }

    #[test]
    fn reparameterize_uses_the_indexed_noise_for_strided_views_too() {
        let key = NoiseKey::new(5, 9);
        let mean = Array1::from_shape_fn(3001, |i| i as f64 * 1e-3);
        let mut w = Array1::zeros(3001);
        w.reparameterize(&mean, 0.25, key, 17).unwrap();
        for i in 0..3001 {
            let expect = mean[i] + 0.25 * f64::from(normal_at(key, 17 + i as u64));
            assert_eq!(w[i], expect);
        }
        // Strided (non-contiguous) views take the element-wise path and give the same values.
        let mut big_mean = Array1::from_shape_fn(20, |i| i as f32);
        let mut big_w = Array1::<f32>::zeros(20);
        let mean_view = big_mean.slice_mut(s![..;2]);
        let mut w_view = big_w.slice_mut(s![..;2]);
        w_view.reparameterize(&mean_view, 0.5, key, 3).unwrap();
        let mut expect = Array1::<f32>::zeros(10);
        expect
            .reparameterize(&mean_view.to_owned(), 0.5, key, 3)
            .unwrap();
        assert_eq!(big_w.slice(s![..;2]).to_owned(), expect);
    }

    #[test]
    fn compensated_sum_recovers_cancellation() {
        let mut c = CompensatedSum::default();
        for t in [1e16, 1.0, -1e16, 1.0] {
            c.add(t);
        }
        assert_eq!(c.value(), 2.0);
        // Across chunks the partials are compensated: a huge first chunk does not swallow the
        // small ones that follow (each later chunk's partial, 4096, is exact).
        let terms = std::iter::once(1e16)
            .chain(std::iter::repeat_n(0.0, REDUCTION_CHUNK - 1))
            .chain(std::iter::repeat_n(1.0, 10 * REDUCTION_CHUNK))
            .chain(std::iter::once(-1e16));
        assert_eq!(deterministic_sum(terms), 40_960.0);
        // A plain f64 sum loses them all.
        let plain: f64 = std::iter::once(1e16)
            .chain(std::iter::repeat_n(1.0, 10 * REDUCTION_CHUNK))
            .chain(std::iter::once(-1e16))
            .sum();
        assert_eq!(plain, 0.0);
    }

    #[test]
    fn deterministic_sum_follows_the_documented_order() {
        // Independent transcription of the order: lanes r = p mod 8 within chunks of 4096,
        // pairwise lane total, compensated chunk partials (checked against an exact rational
        // sum through i128 on integer-valued terms, and bit for bit against a literal loop).
        let n = 3 * REDUCTION_CHUNK + 1234;
        let terms: Vec<f64> = (0..n)
            .map(|k| ((k as f64) * 0.618_033_988_749).sin() * 10f64.powi((k % 7) as i32 - 3))
            .collect();
        let mut partials = Vec::new();
        for chunk in terms.chunks(REDUCTION_CHUNK) {
            let mut l = [0.0f64; 8];
            for (p, t) in chunk.iter().enumerate() {
                l[p % 8] += t;
            }
            partials.push(((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])));
        }
        let mut c = CompensatedSum::default();
        for p in partials {
            c.add(p);
        }
        assert_eq!(
            deterministic_sum(terms.iter().copied()).to_bits(),
            c.value().to_bits()
        );
        let ints: Vec<f64> = (0..n as i64)
            .map(|k| ((k * 7919) % 2001 - 1000) as f64)
            .collect();
        let exact: i128 = ints.iter().map(|&x| x as i128).sum();
        assert_eq!(deterministic_sum(ints.iter().copied()), exact as f64);
        assert_eq!(deterministic_sum(std::iter::empty()), 0.0);
    }

    #[test]
    fn non_finite_is_located() {
        let a = [0.0f32, 1.0, f32::NAN, f32::INFINITY];
        let (i, v) = a[..].first_non_finite().unwrap();
        assert_eq!(i, 2);
        assert!(v.is_nan());
        assert!([1.0f64, 2.0][..].first_non_finite().is_none());
    }
}
