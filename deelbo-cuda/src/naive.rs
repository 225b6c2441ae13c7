//! The naive multi-kernel version of the step, as an eager framework runs it: one kernel per
//! operation (`randn_like`, `mul`, `add`, `sub`, `pow`, `sum`), with the noise and the difference
//! `m - mu` materialized in device memory and kept for the backward pass. The baseline of the
//! benchmarks and a second implementation for the tests. Isotropic scale only.
//!
//! Memory traffic per weight: forward 48 bytes (noise write 4, scale 8, add 12, sub 12,
//! square 8, sum 4) against the fused kernel's 12; backward 36 bytes (mul 12, sum 4, scale 8,
//! add 12) against 16; with the momentum update another 48 (scale 8, add 12, scale 8, sub 12,
//! plus the gradient it re-reads) against 24 for the fused update.

use cudarc::driver::{CudaFunction, DevicePtr, LaunchConfig, PushKernelArg};
use deelbo_core::NoiseKey;
use deelbo_core::ScaleStats;
use deelbo_core::check;
use deelbo_core::fused::{BackwardStats, ForwardStats, KlGradScales, SgdMomentum};

use crate::block::{DeviceParamBlock, Reduction, key_words, philox_launch};
use crate::device::{CudaDevice, DeviceBuffer};
use crate::error::{Result, driver};
use crate::source::BLOCK_THREADS;

/// Buffers of the naive step for blocks of `D` weights: the tape (`eps`, `diff`) and two
/// temporaries.
#[derive(Debug)]
pub struct NaiveStep {
    dev: CudaDevice,
    eps: DeviceBuffer,
    diff: DeviceBuffer,
    tmp: DeviceBuffer,
    tmp2: DeviceBuffer,
    reduction: Reduction,
}

fn grid_for(n: u64, cap: u64) -> LaunchConfig {
    let grid = n.div_ceil(u64::from(BLOCK_THREADS)).clamp(1, cap) as u32;
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl NaiveStep {
    /// Allocate the buffers for blocks of `len >= 1` weights.
    pub fn new(dev: &CudaDevice, len: usize) -> Result<Self> {
        Ok(Self {
            dev: dev.clone(),
            eps: dev.zeros(len)?,
            diff: dev.zeros(len)?,
            tmp: dev.zeros(len)?,
            tmp2: dev.zeros(len)?,
            reduction: Reduction::new(dev)?,
        })
    }

    /// `D`.
    pub fn len(&self) -> usize {
        self.eps.len()
    }

    /// Always `false`: the buffers hold at least one element.
    pub fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    /// The noise of the last forward pass (the tape).
    pub fn eps(&self) -> &DeviceBuffer {
        &self.eps
    }

    /// The raw device address of a buffer. Event tracking is off on deelbo's single stream, so
    /// the synchronization guard cudarc returns has nothing to do and is dropped at once.
    fn ptr(&self, b: &DeviceBuffer) -> u64 {
        let (p, _guard) = b.data.device_ptr(&self.dev.inner.stream);
        p
    }

    fn launch(&self, f: &CudaFunction, cfg: LaunchConfig, args: &Args<'_>) -> Result<()> {
        let mut b = self.dev.inner.stream.launch_builder(f);
        for p in args.ptrs {
            b.arg(p);
        }
        if let Some(a) = args.alpha {
            b.arg(a);
        }
        b.arg(args.n);
        // SAFETY: each call site passes the pointer/scalar list of its kernel in `source.rs`
        // (pointers first, then alpha for the scale kernel, then n); every pointer is a live
        // device buffer of length >= n (the callers check lengths against `self.len()`).
        unsafe { b.launch(cfg) }.map_err(driver("launching a naive kernel"))?;
        Ok(())
    }

    fn elementwise(&self, f: &CudaFunction, ptrs: &[u64], alpha: Option<&f32>) -> Result<()> {
        let n = self.len() as u64;
        self.launch(f, grid_for(n, 1 << 20), &Args { ptrs, alpha, n: &n })
    }

    /// Queue `sum_i x_i` in `f64` (deterministic two-stage reduction) into the result buffer.
    fn sum(&mut self, x: u64) -> Result<()> {
        let n = self.len() as u64;
        let inner = &self.dev.inner;
        let mut b = inner.stream.launch_builder(&inner.kernels.naive_sum);
        b.arg(&x)
            .arg(&n)
            .arg(&mut self.reduction.partials)
            .arg(&mut self.reduction.counter)
            .arg(&mut self.reduction.result);
        // SAFETY: matches `deelbo_naive_sum(x, n, partials, counter, result)`; x has length n
        // and the partials hold MAX_REDUCTION_BLOCKS >= reduction_grid() >= grid blocks.
        unsafe { b.launch(grid_for(n, u64::from(self.dev.reduction_grid()))) }
            .map_err(driver("launching the naive sum kernel"))?;
        Ok(())
    }

    /// Read the last queued sum back (waits for the queued work).
    fn read_sum(&self) -> Result<f64> {
        Ok(self.dev.read_f64::<3>(&self.reduction.result)?[0])
    }

    fn check_block(&self, block: &DeviceParamBlock, sigma: f32) -> Result<()> {
        check::same_len("naive step buffers", block.len(), self.len())?;
        check::positive("sigma", f64::from(sigma))?;
        Ok(())
    }

    /// Forward in six kernels: `eps = randn`, `t = sigma eps`, `w = m + t` (into the block's
    /// sample), `diff = m - mu`, `t2 = diff^2`, `M = sum t2` (in `f64` from the `f32` squares).
    /// `w` is bit-identical to the fused kernel's; `M` agrees to `f32` rounding of the squares.
    pub fn forward(
        &mut self,
        block: &mut DeviceParamBlock,
        sigma: f32,
        key: NoiseKey,
    ) -> Result<ForwardStats> {
        self.check_block(block, sigma)?;
        let n = self.len() as u64;
        let first = block.first_index();
        let dev = self.dev.clone();
        let k = &dev.inner.kernels;
        let (eps, tmp, tmp2, diff) = (
            self.ptr(&self.eps),
            self.ptr(&self.tmp),
            self.ptr(&self.tmp2),
            self.ptr(&self.diff),
        );
        let (m, w) = (self.ptr(block.mean()), self.ptr(block.sample()));
        // 1. eps = randn_like(m)
        {
            let [k0, k1, s_lo, s_hi] = key_words(key);
            let vec4 = i32::from(first.is_multiple_of(4));
            let mut b = self.dev.inner.stream.launch_builder(&k.naive_normal);
            b.arg(&eps)
                .arg(&n)
                .arg(&first)
                .arg(&k0)
                .arg(&k1)
                .arg(&s_lo)
                .arg(&s_hi)
                .arg(&vec4);
            // SAFETY: matches `deelbo_naive_normal(eps, n, first, k0, k1, s_lo, s_hi, vec4)`;
            // eps has length n and is a whole allocation (aligned for float4).
            unsafe { b.launch(philox_launch(n, first, self.dev.reduction_grid())) }
                .map_err(driver("launching the naive noise kernel"))?;
        }
        // 2-3. w = m + sigma * eps
        self.elementwise(&k.naive_scale, &[tmp, eps], Some(&sigma))?;
        self.elementwise(&k.naive_add, &[w, m, tmp], None)?;
        // 4-6. M = sum((m - mu)^2)
        match block.prior_mean() {
            Some(mu) => {
                let mu = self.ptr(mu);
                self.elementwise(&k.naive_sub, &[diff, m, mu], None)?;
            }
            None => self.elementwise(&k.naive_scale, &[diff, m], Some(&1.0f32))?,
        }
        self.elementwise(&k.naive_square, &[tmp2, diff], None)?;
        self.sum(tmp2)?;
        let sq_dist = self.read_sum()?;
        Ok(ForwardStats {
            len: self.len(),
            sq_dist,
            scale: ScaleStats::Isotropic {
                sigma: f64::from(sigma),
            },
        })
    }

    /// Backward from the tape in four kernels: `t = g eps`, `sum t`, `t2 = c diff`,
    /// `grad_mean = g + t2`. `grad_mean` is bit-identical to the fused kernel's.
    pub fn backward(
        &mut self,
        sigma: f32,
        grad_sample: &DeviceBuffer,
        kl: KlGradScales,
        grad_mean: &mut DeviceBuffer,
    ) -> Result<BackwardStats> {
        check::same_len("gradient of the sample", self.len(), grad_sample.len())?;
        check::same_len("mean gradient", self.len(), grad_mean.len())?;
        let dev = self.dev.clone();
        let k = &dev.inner.kernels;
        let (eps, tmp, tmp2, diff) = (
            self.ptr(&self.eps),
            self.ptr(&self.tmp),
            self.ptr(&self.tmp2),
            self.ptr(&self.diff),
        );
        let (g, out) = (self.ptr(grad_sample), self.ptr(grad_mean));
        let (c, _, _) = kl.f32_constants();
        self.elementwise(&k.naive_mul, &[tmp, g, eps], None)?;
        self.sum(tmp)?;
        self.elementwise(&k.naive_scale, &[tmp2, diff], Some(&c))?;
        self.elementwise(&k.naive_add, &[out, g, tmp2], None)?;
        let noise_dot = self.read_sum()?;
        Ok(BackwardStats {
            noise_dot,
            grad_sigma: Some(noise_dot + kl.isotropic_sigma_term(self.len(), f64::from(sigma))),
        })
    }

    /// Momentum SGD as separate kernels, as an eager optimizer runs it: `u = beta u`,
    /// `u = u + grad`, `t = lr u`, `m = m - t`. Bit-identical to the fused update.
    pub fn sgd_step(
        &mut self,
        block: &mut DeviceParamBlock,
        grad_mean: &DeviceBuffer,
        sgd: SgdMomentum,
    ) -> Result<()> {
        check::same_len("naive step buffers", block.len(), self.len())?;
        check::same_len("mean gradient", self.len(), grad_mean.len())?;
        let dev = self.dev.clone();
        let k = &dev.inner.kernels;
        let (u, m, g, tmp) = (
            self.ptr(block.velocity()),
            self.ptr(block.mean()),
            self.ptr(grad_mean),
            self.ptr(&self.tmp),
        );
        self.elementwise(&k.naive_scale, &[u, u], Some(&sgd.momentum))?;
        self.elementwise(&k.naive_add, &[u, u, g], None)?;
        self.elementwise(&k.naive_scale, &[tmp, u], Some(&sgd.lr))?;
        self.elementwise(&k.naive_sub, &[m, m, tmp], None)?;
        Ok(())
    }
}

/// The arguments of a naive element-wise kernel: pointers, then an optional scalar, then `n`.
struct Args<'a> {
    ptrs: &'a [u64],
    alpha: Option<&'a f32>,
    n: &'a u64,
}
