//! Fused candle custom ops that run the core's `ParamBlock` functions directly on candle's CPU
//! storage (the CPU counterpart of the design's fused sample + KL kernel):
//!
//! - [`reparameterize`]: `w_i = m_i + sigma eps_i` in one pass with `eps_i = normal_at(key,
//!   first + i)` from the core's `fill_normals`, rounded exactly like
//!   `deelbo_core::ParamBlockMut::reparameterize` (product, then sum, in the element type);
//!   backward `dL/dm_i = g_i`, `dL/dsigma = sum_i g_i eps_i` (summed in `f64`, deterministic
//!   order). The forward pass keeps its `eps` (4 bytes per weight) for the backward pass: on the
//!   CPU the Philox + Box–Muller transform (~18 ns per value) costs more than that memory;
//!   if the cache is absent the backward regenerates `eps` from the same counters. With a
//!   [`NoiseBuffer`] ([`reparameterize_buffered`], what [`crate::VariationalModel`] uses) the
//!   noise goes into one buffer per tensor that lives across steps instead of a fresh
//!   allocation per step (candle frees the step's graph, glibc hands the pages back, and the
//!   next step faults them in again); the buffer is tagged with the `(key, first, len)` it
//!   holds, and a backward whose forward's noise was overwritten since (another sample drawn
//!   in between) regenerates it, so the bits never depend on the reuse.
//! - [`squared_distance`]: `M = ||m - mu||^2` (or `||m||^2`) as an `f64` scalar from
//!   `deelbo_core::ParamBlock::squared_distance` / `sum_squares` (chunked `f64` sums with
//!   compensation, the same bits as the core); backward `dM/dm = 2 (m - mu)`.
//!
//! Both need contiguous CPU tensors; [`crate::VariationalModel`] falls back to composite candle
//! ops (the reference path, also used on other devices).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use deelbo_core::{CompensatedSum, REDUCTION_CHUNK, REDUCTION_LANES, deterministic_sum};
use deelbo_core::{NoiseKey, ParamBlock, fill_normals};

use crate::error::Result;

fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(candle_core::Error::Msg(format!(
            "{what} must be contiguous for the fused op"
        ))),
    }
}

fn scalar(s: &CpuStorage, l: &Layout, what: &str) -> candle_core::Result<f64> {
    if l.shape().elem_count() != 1 {
        return Err(candle_core::Error::Msg(format!("{what} must be a scalar")));
    }
    let i = l.start_offset();
    match s {
        CpuStorage::F64(v) => Ok(v[i]),
        CpuStorage::F32(v) => Ok(f64::from(v[i])),
        _ => Err(candle_core::Error::Msg(format!(
            "{what} must be f32 or f64"
        ))),
    }
}

fn core_err(e: deelbo_core::CoreError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A tensor's noise `eps`, reused by every [`reparameterize_buffered`] of that tensor: the
/// forward writes it, the backward reads it when it still holds that forward's noise.
#[derive(Debug, Default)]
pub struct NoiseBuffer {
    slot: Mutex<NoiseSlot>,
}

#[derive(Debug, Default)]
struct NoiseSlot {
    /// `(key, first, len)` of the noise in `eps`; `None` before the first fill.
    tag: Option<(NoiseKey, u64, usize)>,
    eps: Vec<f32>,
}

impl NoiseBuffer {
    fn lock(&self) -> MutexGuard<'_, NoiseSlot> {
        // A panic while filling leaves at worst a stale tag-less slot: usable.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the forward keeps `eps` for the backward.
enum NoiseCache {
    /// Owned by this op (one allocation per op).
    Own(std::sync::OnceLock<Vec<f32>>),
    /// A buffer shared across steps.
    Shared(Arc<NoiseBuffer>),
}

/// `w = m + sigma eps` (arg1 = mean, arg2 = scalar sigma).
struct Reparameterize {
    key: NoiseKey,
    first: u64,
    cache: NoiseCache,
}

fn reparameterize_storage(
    s1: &CpuStorage,
    l1: &Layout,
    sigma: f64,
    eps: &[f32],
    name: &'static str,
) -> candle_core::Result<CpuStorage> {
    Ok(match s1 {
        CpuStorage::F32(v) => {
            CpuStorage::F32(reparameterize_with(contiguous(v, l1, "mean")?, sigma, eps))
        }
        CpuStorage::F64(v) => {
            CpuStorage::F64(reparameterize_with(contiguous(v, l1, "mean")?, sigma, eps))
        }
        other => {
            use candle_core::backend::BackendStorage;
            return Err(candle_core::Error::UnsupportedDTypeForOp(
                other.dtype(),
                name,
            ));
        }
    })
}

/// `w_i = m_i + s eps_i` with `s` rounded to `T` (the core's rounding order: product, then sum).
fn reparameterize_with<T: deelbo_core::Real>(m: &[T], sigma: f64, eps: &[f32]) -> Vec<T> {
    let s = T::from_f64_rounded(sigma);
    m.iter()
        .zip(eps)
        .map(|(&m, &z)| reparameterized(m, s, z))
        .collect()
}

/// One weight of the sample: `m + s eps` (product, then sum, in `T`).
#[inline(always)]
fn reparameterized<T: deelbo_core::Real>(m: T, s: T, z: f32) -> T {
    m + s * T::from_noise(z)
}

/// Fill `slot` with the noise of `(key, first, len)` unless it holds it already.
fn fill_buffer(slot: &mut NoiseSlot, key: NoiseKey, first: u64, len: usize) {
    let tag = (key, first, len);
    if slot.tag != Some(tag) {
        slot.tag = None;
        slot.eps.resize(len, 0.0);
        fill_normals(key, first, &mut slot.eps);
        slot.tag = Some(tag);
    }
}

impl CustomOp2 for Reparameterize {
    fn name(&self) -> &'static str {
        "deelbo-reparameterize"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let sigma = scalar(s2, l2, "sigma")?;
        let len = l1.shape().elem_count();
        let out = match &self.cache {
            NoiseCache::Own(cell) => {
                let mut eps = vec![0.0f32; len];
                fill_normals(self.key, self.first, &mut eps);
                let out = reparameterize_storage(s1, l1, sigma, &eps, self.name())?;
                // A second forward of the same op value would store identical noise; ignore it.
                let _ = cell.set(eps);
                out
            }
            NoiseCache::Shared(buffer) => {
                let mut slot = buffer.lock();
                fill_buffer(&mut slot, self.key, self.first, len);
                reparameterize_storage(s1, l1, sigma, &slot.eps, self.name())?
            }
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _mean: &Tensor,
        sigma: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_c = grad.contiguous()?;
        let dot = |cached: Option<&[f32]>| {
            grad_c.apply_op1_no_bwd(&NoiseDot {
                key: self.key,
                first: self.first,
                cached,
            })
        };
        let g_sigma = match &self.cache {
            NoiseCache::Own(cell) => dot(cell.get().map(Vec::as_slice))?,
            NoiseCache::Shared(buffer) => {
                buffered_noise_dot(&grad_c, self.key, self.first, buffer)?
            }
        };
        let g_sigma = g_sigma.to_dtype(sigma.dtype())?.reshape(sigma.shape())?;
        Ok((Some(grad.clone()), Some(g_sigma)))
    }
}

/// `sum_i g_i eps_i` (scalar `f64` tensor) for a contiguous gradient `g`, `eps` from `buffer`
/// while it holds the noise of `(key, first, len)` and regenerated from the counters otherwise.
fn buffered_noise_dot(
    g: &Tensor,
    key: NoiseKey,
    first: u64,
    buffer: &NoiseBuffer,
) -> candle_core::Result<Tensor> {
    let slot = buffer.lock();
    let mine = slot.tag == Some((key, first, g.elem_count()));
    g.apply_op1_no_bwd(&NoiseDot {
        key,
        first,
        cached: mine.then_some(slot.eps.as_slice()),
    })
}

/// `sum_i g_i eps_i` as an `f64` scalar, `eps` from the forward's cache or regenerated from the
/// counters.
struct NoiseDot<'a> {
    key: NoiseKey,
    first: u64,
    cached: Option<&'a [f32]>,
}

const NOISE_CHUNK: usize = 4096;

/// The core's [`deterministic_sum`] of `g_j eps_j` over one chunk of at most
/// [`REDUCTION_CHUNK`] terms, bit for bit (lane `r` sums the terms `j = r mod 8` in order, the
/// lanes are added pairwise, the chunk's partial is the compensated sum's only term), written
/// over slices so the lanes vectorize.
fn chunk_dot<T: Copy + Into<f64>>(g: &[T], eps: &[f32]) -> f64 {
    debug_assert!(g.len() <= REDUCTION_CHUNK && g.len() == eps.len());
    let mut l = [0.0f64; REDUCTION_LANES];
    let mut gs = g.chunks_exact(REDUCTION_LANES);
    let mut es = eps.chunks_exact(REDUCTION_LANES);
    for (g8, e8) in (&mut gs).zip(&mut es) {
        for r in 0..REDUCTION_LANES {
            l[r] += g8[r].into() * f64::from(e8[r]);
        }
    }
    for (r, (&g, &e)) in gs.remainder().iter().zip(es.remainder()).enumerate() {
        l[r] += g.into() * f64::from(e);
    }
    let mut total = CompensatedSum::default();
    if !g.is_empty() {
        total.add(((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])));
    }
    total.value()
}

/// `sum_j g_j eps_j` in [`NOISE_CHUNK`]-term chunks, each chunk's partial from `chunk` (the
/// same bits as [`chunk_dot`]), the partials summed by the core's [`deterministic_sum`].
fn noise_dot_by<T: Copy>(
    g: &[T],
    key: NoiseKey,
    first: u64,
    cached: Option<&[f32]>,
    chunk: impl Fn(&[T], &[f32]) -> deelbo_core::Result<f64>,
) -> deelbo_core::Result<f64> {
    if let Some(eps) = cached.filter(|e| e.len() == g.len()) {
        let partials = g
            .chunks(NOISE_CHUNK)
            .zip(eps.chunks(NOISE_CHUNK))
            .map(|(g, e)| chunk(g, e))
            .collect::<deelbo_core::Result<Vec<f64>>>()?;
        return Ok(deterministic_sum(partials.into_iter()));
    }
    let mut eps = vec![0.0f32; NOISE_CHUNK.min(g.len())];
    let mut partials = Vec::with_capacity(g.len().div_ceil(NOISE_CHUNK));
    for (c, part) in g.chunks(NOISE_CHUNK).enumerate() {
        let e = &mut eps[..part.len()];
        fill_normals(key, first + (c * NOISE_CHUNK) as u64, e);
        partials.push(chunk(part, e)?);
    }
    Ok(deterministic_sum(partials.into_iter()))
}

/// `sum_j g_j eps_j` (module docs) for `f64` gradients, and the reference for `f32` ones.
fn noise_dot<T: Copy + Into<f64>>(
    g: &[T],
    key: NoiseKey,
    first: u64,
    cached: Option<&[f32]>,
) -> deelbo_core::Result<f64> {
    noise_dot_by(g, key, first, cached, |g, e| Ok(chunk_dot(g, e)))
}

/// [`noise_dot`] for `f32` gradients, each chunk by the core's vectorized
/// [`deelbo_core::fused::dot_f64`] (AVX-512/AVX2 lanes; the same bits: 34 against ~15 us for
/// the 82k weights of the transfer MLP, a cost only the variational step pays).
fn noise_dot_f32(
    g: &[f32],
    key: NoiseKey,
    first: u64,
    cached: Option<&[f32]>,
) -> deelbo_core::Result<f64> {
    noise_dot_by(g, key, first, cached, deelbo_core::fused::dot_f64)
}

impl CustomOp1 for NoiseDot<'_> {
    fn name(&self) -> &'static str {
        "deelbo-noise-dot"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = match s {
            CpuStorage::F32(v) => noise_dot_f32(
                contiguous(v, l, "gradient")?,
                self.key,
                self.first,
                self.cached,
            )
            .map_err(core_err)?,
            CpuStorage::F64(v) => noise_dot(
                contiguous(v, l, "gradient")?,
                self.key,
                self.first,
                self.cached,
            )
            .map_err(core_err)?,
            other => {
                use candle_core::backend::BackendStorage;
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    self.name(),
                ));
            }
        };
        Ok((CpuStorage::F64(vec![v]), Shape::from(())))
    }
}

/// `||m - mu||^2` (arg1 = mean, arg2 = prior mean) as an `f64` scalar.
struct SquaredDistance;

impl CustomOp2 for SquaredDistance {
    fn name(&self) -> &'static str {
        "deelbo-squared-distance"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => contiguous(a, l1, "mean")?
                .squared_distance(contiguous(b, l2, "prior mean")?)
                .map_err(core_err)?,
            (CpuStorage::F64(a), CpuStorage::F64(b)) => contiguous(a, l1, "mean")?
                .squared_distance(contiguous(b, l2, "prior mean")?)
                .map_err(core_err)?,
            _ => {
                return Err(candle_core::Error::Msg(
                    "squared distance needs two f32 or two f64 tensors".to_string(),
                ));
            }
        };
        Ok((CpuStorage::F64(vec![v]), Shape::from(())))
    }

    fn bwd(
        &self,
        mean: &Tensor,
        prior: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // On detached inputs: the gradient must not hold the means' graph.
        Ok((
            Some(mean.detach().sub(&prior.detach())?.affine(2.0 * g, 0.0)?),
            None,
        ))
    }
}

/// `||m||^2` as an `f64` scalar.
struct SumSquares;

impl CustomOp1 for SumSquares {
    fn name(&self) -> &'static str {
        "deelbo-sum-squares"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = match s {
            CpuStorage::F32(a) => contiguous(a, l, "mean")?.sum_squares(),
            CpuStorage::F64(a) => contiguous(a, l, "mean")?.sum_squares(),
            other => {
                use candle_core::backend::BackendStorage;
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    self.name(),
                ));
            }
        };
        Ok((CpuStorage::F64(vec![v]), Shape::from(())))
    }

    fn bwd(
        &self,
        mean: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(Some(mean.detach().affine(2.0 * g, 0.0)?))
    }
}

/// Fused `w = m + sigma eps`, `eps_i = normal_at(key, first + i)` for the row-major flat index
/// `i` of `mean` (CPU, contiguous `mean`; `sigma` a scalar tensor of any float dtype, rounded to
/// `mean`'s dtype). Differentiable in `mean` and `sigma`.
pub fn reparameterize(mean: &Tensor, sigma: &Tensor, key: NoiseKey, first: u64) -> Result<Tensor> {
    Ok(mean.apply_op2(
        sigma,
        Reparameterize {
            key,
            first,
            cache: NoiseCache::Own(std::sync::OnceLock::new()),
        },
    )?)
}

/// [`reparameterize`] with `eps` written into `buffer` (reused across calls, no allocation once
/// it has the tensor's size) instead of a fresh vector. Same bits: the backward uses the
/// buffer only while it still holds this call's noise and regenerates it otherwise.
pub fn reparameterize_buffered(
    mean: &Tensor,
    sigma: &Tensor,
    key: NoiseKey,
    first: u64,
    buffer: &Arc<NoiseBuffer>,
) -> Result<Tensor> {
    Ok(mean.apply_op2(
        sigma,
        Reparameterize {
            key,
            first,
            cache: NoiseCache::Shared(buffer.clone()),
        },
    )?)
}

/// An element-wise update of one tensor's storage from another's, `out_i = f(out_i, x_i)`-like,
/// for both float types (CPU, both contiguous, one dtype, one size).
trait InPlaceKernel {
    const NAME: &'static str;
    fn f32(&self, out: &mut [f32], x: &[f32]);
    fn f64(&self, out: &mut [f64], x: &[f64]);
}

/// The candle in-place op of an [`InPlaceKernel`]: checks the layouts, dispatches on the dtype.
struct InPlace<K>(K);

impl<K: InPlaceKernel> candle_core::InplaceOp2 for InPlace<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = l1.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: the target must be contiguous", K::NAME))
        })?;
        if b - a != l2.shape().elem_count() {
            return Err(candle_core::Error::Msg(format!(
                "{}: {} values from {}",
                K::NAME,
                b - a,
                l2.shape().elem_count()
            )));
        }
        match (s1, s2) {
            (CpuStorage::F32(out), CpuStorage::F32(x)) => {
                self.0.f32(&mut out[a..b], contiguous(x, l2, K::NAME)?)
            }
            (CpuStorage::F64(out), CpuStorage::F64(x)) => {
                self.0.f64(&mut out[a..b], contiguous(x, l2, K::NAME)?)
            }
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: needs two f32 or two f64 tensors",
                    K::NAME
                )));
            }
        }
        Ok(())
    }
}

/// `out = m + sigma eps` (x = the mean), `eps` into (or from) the shared buffer.
struct ReparameterizeInto<'a> {
    sigma: f64,
    key: NoiseKey,
    first: u64,
    buffer: &'a NoiseBuffer,
}

impl ReparameterizeInto<'_> {
    fn write<T: deelbo_core::Real>(&self, out: &mut [T], m: &[T]) {
        let mut slot = self.buffer.lock();
        fill_buffer(&mut slot, self.key, self.first, m.len());
        let s = T::from_f64_rounded(self.sigma);
        for ((w, &m), &z) in out.iter_mut().zip(m).zip(&slot.eps) {
            *w = reparameterized(m, s, z);
        }
    }
}

impl InPlaceKernel for ReparameterizeInto<'_> {
    const NAME: &'static str = "deelbo-reparameterize-into";
    fn f32(&self, out: &mut [f32], m: &[f32]) {
        self.write(out, m)
    }
    fn f64(&self, out: &mut [f64], m: &[f64]) {
        self.write(out, m)
    }
}

/// [`reparameterize_buffered`]'s forward written into `target` in place (no graph, no
/// allocation): `target_i = m_i + sigma eps_i` with `sigma` rounded to the dtype, the same bits
/// (CPU, contiguous tensors of one dtype and size).
pub fn reparameterize_into(
    target: &Tensor,
    mean: &Tensor,
    sigma: f64,
    key: NoiseKey,
    first: u64,
    buffer: &NoiseBuffer,
) -> Result<()> {
    Ok(target.inplace_op2(
        mean,
        &InPlace(ReparameterizeInto {
            sigma,
            key,
            first,
            buffer,
        }),
    )?)
}

/// `sum_i g_i eps_i` in `f64` for the gradient `g` of the sample [`reparameterize_into`] drew
/// with `(key, first)`: `eps` from `buffer` while it still holds that noise, else regenerated;
/// the bits of [`reparameterize`]'s backward `dL/dsigma`.
pub fn noise_dot_of(grad: &Tensor, key: NoiseKey, first: u64, buffer: &NoiseBuffer) -> Result<f64> {
    let g = grad.contiguous()?;
    Ok(buffered_noise_dot(&g, key, first, buffer)?.to_scalar::<f64>()?)
}

/// `acc += x`.
struct AddAssign;

impl InPlaceKernel for AddAssign {
    const NAME: &'static str = "deelbo-add-assign";
    fn f32(&self, acc: &mut [f32], x: &[f32]) {
        acc.iter_mut().zip(x).for_each(|(a, &x)| *a += x);
    }
    fn f64(&self, acc: &mut [f64], x: &[f64]) {
        acc.iter_mut().zip(x).for_each(|(a, &x)| *a += x);
    }
}

/// `acc += g` in place on `acc`'s storage (CPU; both contiguous, one dtype, one size). `acc`
/// must be a tensor nobody else reads (e.g. a gradient just taken out of a `GradStore`).
pub(crate) fn add_assign(acc: &Tensor, g: &Tensor) -> Result<()> {
    Ok(acc.inplace_op2(&g.contiguous()?, &InPlace(AddAssign))?)
}

/// `||m - mu||^2` (`prior = None`: `||m||^2`) as a scalar `f64` tensor computed by the core's
/// deterministic reduction (CPU, contiguous tensors of one dtype). Differentiable in `mean`.
pub fn squared_distance(mean: &Tensor, prior: Option<&Tensor>) -> Result<Tensor> {
    Ok(match prior {
        Some(mu) => mean.apply_op2(mu, SquaredDistance)?,
        None => mean.apply_op1(SumSquares)?,
    })
}

/// `sum_i g_i^2` of any float tensor as an `f64`, outside the autodiff graph: on the CPU the
/// core's deterministic compensated sum over the (contiguous) values, elsewhere the squares and
/// their sum in `f64` after a cast.
///
/// # Formula
/// ```text
/// ||g||^2 = sum_i g_i^2      (accumulated in f64)
/// ```
pub fn sum_squares_f64(t: &Tensor) -> Result<f64> {
    let s = if t.device().is_cpu() {
        t.contiguous()?.apply_op1_no_bwd(&SumSquares)?
    } else {
        t.to_dtype(DType::F64)?.sqr()?.sum_all()?
    };
    Ok(s.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deelbo_core::normal_at;

    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        t.to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// `(w, dL/dm, dL/dsigma)` for `L = sum(w * c)`, from a forward built by `draw`.
    fn value_and_grads(
        mean: &candle_core::Var,
        sigma: &candle_core::Var,
        w: &Tensor,
    ) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let c = Tensor::arange(0f32, w.elem_count() as f32, w.device())
            .unwrap()
            .reshape(w.shape())
            .unwrap()
            .to_dtype(w.dtype())
            .unwrap();
        let g = w.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        (
            bits(w),
            bits(g.get(mean.as_tensor()).unwrap()),
            bits(g.get(sigma.as_tensor()).unwrap()),
        )
    }

    #[test]
    fn the_reused_noise_buffer_gives_the_fresh_ops_bits_even_when_overwritten() {
        use candle_core::{Device, Var};
        let dev = Device::Cpu;
        let buffer = Arc::new(NoiseBuffer::default());
        for (len, dtype) in [
            (5000usize, DType::F32),
            (37, DType::F64),
            (5000, DType::F64),
        ] {
            let m0: Vec<f32> = (0..len)
                .map(|i| normal_at(NoiseKey::new(1, 1), i as u64))
                .collect();
            let mean = Var::from_tensor(
                &Tensor::from_vec(m0, len, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let sigma = Var::from_tensor(&Tensor::new(0.3f64, &dev).unwrap()).unwrap();
            let (ka, kb) = (NoiseKey::new(7, 1), NoiseKey::new(7, 2));
            let fresh = |k| {
                let w = reparameterize(mean.as_tensor(), sigma.as_tensor(), k, 11).unwrap();
                value_and_grads(&mean, &sigma, &w)
            };
            let buffered = |k| {
                reparameterize_buffered(mean.as_tensor(), sigma.as_tensor(), k, 11, &buffer)
                    .unwrap()
            };
            // Forward and backward in turn: the buffer holds the op's own noise.
            let wa = buffered(ka);
            assert_eq!(value_and_grads(&mean, &sigma, &wa), fresh(ka), "len {len}");
            // Step b's forward overwrites the buffer before step a's backward: a regenerates.
            let wa = buffered(ka);
            let wb = buffered(kb);
            assert_eq!(value_and_grads(&mean, &sigma, &wa), fresh(ka), "len {len}");
            assert_eq!(value_and_grads(&mean, &sigma, &wb), fresh(kb), "len {len}");
        }
    }

    #[test]
    fn the_slice_noise_dot_is_the_cores_deterministic_sum_bit_for_bit() {
        let key = NoiseKey::new(4, 2);
        for len in [0usize, 1, 7, 8, 9, 63, 4095, 4096, 4097, 8192 + 13, 20_000] {
            let g: Vec<f32> = (0..len)
                .map(|i| normal_at(NoiseKey::new(8, 1), i as u64) * 1e3)
                .collect();
            let mut eps = vec![0.0f32; len];
            fill_normals(key, 5, &mut eps);
            // The reference: chunk partials by the core's iterator sum, then their sum.
            let partials: Vec<f64> = g
                .chunks(NOISE_CHUNK)
                .zip(eps.chunks(NOISE_CHUNK))
                .map(|(g, e)| {
                    deterministic_sum(g.iter().zip(e).map(|(&g, &z)| f64::from(g) * f64::from(z)))
                })
                .collect();
            let want = deterministic_sum(partials.into_iter());
            let cached = noise_dot(&g, key, 5, Some(&eps)).unwrap();
            let regenerated = noise_dot(&g, key, 5, None).unwrap();
            assert_eq!(cached.to_bits(), want.to_bits(), "len {len}");
            assert_eq!(regenerated.to_bits(), want.to_bits(), "len {len}");
            // The vectorized f32 path (the core's dot on this CPU's widest lanes).
            let fast = noise_dot_f32(&g, key, 5, Some(&eps)).unwrap();
            let fast_regenerated = noise_dot_f32(&g, key, 5, None).unwrap();
            assert_eq!(fast.to_bits(), want.to_bits(), "len {len}");
            assert_eq!(fast_regenerated.to_bits(), want.to_bits(), "len {len}");
        }
    }
}
