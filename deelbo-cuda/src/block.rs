//! Device-resident parameter blocks and the fused forward/backward kernels over them.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use deelbo_core::NoiseKey;
use deelbo_core::ScaleStats;
use deelbo_core::check;
use deelbo_core::fused::{BackwardStats, ForwardStats, KlGradScales, SgdMomentum};

use crate::device::{CudaDevice, DeviceBuffer};
use crate::error::{Result, driver};
use crate::source::{BLOCK_THREADS, MAX_REDUCTION_BLOCKS};

/// The posterior scale of a device block.
#[derive(Debug, Clone, Copy)]
pub enum DeviceScale<'a> {
    /// One `sigma > 0` for every weight.
    Isotropic(f32),
    /// Per-weight `sigma_j > 0` in a device buffer of length `D` (validated by the caller; the
    /// kernels do not check positivity).
    Diagonal(&'a DeviceBuffer),
}

/// Which fused forward kernel to run. Both give the same sample bits and reductions that agree
/// to rounding; which one is faster is a measurement (`deelbo-bench-report` prints both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardKernel {
    /// One Philox block per loop iteration, loads then arithmetic (47 registers, 5 blocks/SM).
    #[default]
    Plain,
    /// Loads of the next block issued before the arithmetic of the current one (64 registers,
    /// 4 blocks/SM), to keep memory requests in flight while computing.
    Prefetch,
}

/// Scratch memory of the two-stage reduction: one partial per block and value, the ticket
/// counter of the last-block pattern (reset by the kernel itself), and the results.
#[derive(Debug)]
pub(crate) struct Reduction {
    pub(crate) partials: CudaSlice<f64>,
    pub(crate) counter: CudaSlice<u32>,
    pub(crate) result: CudaSlice<f64>,
}

impl Reduction {
    /// Room for up to [`MAX_REDUCTION_BLOCKS`] blocks of up to 3 values.
    pub(crate) fn new(dev: &CudaDevice) -> Result<Self> {
        Ok(Self {
            partials: dev
                .alloc_zeros::<f64>(3 * MAX_REDUCTION_BLOCKS as usize, "reduction partial sums")?,
            counter: dev.alloc_zeros::<u32>(1, "the reduction ticket counter")?,
            result: dev.alloc_zeros::<f64>(3, "reduction results")?,
        })
    }
}

/// The launch configuration of a kernel that handles whole Philox blocks (4 noise values each)
/// of the `n` elements starting at noise index `first`, with a grid-stride loop:
/// `min(ceil(blocks/256), max_grid)` blocks of 256 threads (`max_grid <= MAX_REDUCTION_BLOCKS`,
/// one wave on the device). Depends on `(n, first, max_grid)` only, so the reduction order (and
/// the result) is the same on every run.
pub(crate) fn philox_launch(n: u64, first: u64, max_grid: u32) -> LaunchConfig {
    let philox_blocks = ((first + n).div_ceil(4)).saturating_sub(first / 4);
    let cap = max_grid.clamp(1, MAX_REDUCTION_BLOCKS);
    let grid = philox_blocks
        .div_ceil(u64::from(BLOCK_THREADS))
        .clamp(1, u64::from(cap)) as u32;
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The four `u32` words the kernels take for a noise stream: the Philox key (SplitMix64 of the
/// seed, low then high) and the stream index (low then high), as in [`deelbo_core::noise`].
pub(crate) fn key_words(key: NoiseKey) -> [u32; 4] {
    let k = deelbo_core::mirror::philox_key(&key);
    [k[0], k[1], key.stream as u32, (key.stream >> 32) as u32]
}

/// One block of weights living on the GPU: the variational mean `m`, the prior mean `mu`
/// (`None` = zero), the momentum buffer `u`, and the sample `w` of the last forward pass, all
/// `f32` of length `D`. Its noise indices are `first_index .. first_index + D`.
#[derive(Debug)]
pub struct DeviceParamBlock {
    dev: CudaDevice,
    mean: DeviceBuffer,
    prior_mean: Option<DeviceBuffer>,
    velocity: DeviceBuffer,
    sample: DeviceBuffer,
    first_index: u64,
    reduction: Reduction,
}

/// Null device pointer for optional kernel arguments.
const NULL_PTR: u64 = 0;

impl DeviceParamBlock {
    /// Upload a block: `mean` (length `D`) and optionally the prior mean (length `D`); the
    /// momentum buffer starts at zero. Errors: a length mismatch, out of memory.
    pub fn new(
        dev: &CudaDevice,
        mean: &[f32],
        prior_mean: Option<&[f32]>,
        first_index: u64,
    ) -> Result<Self> {
        if let Some(mu) = prior_mean {
            check::same_len("prior mean", mean.len(), mu.len())?;
        }
        Ok(Self {
            dev: dev.clone(),
            mean: dev.upload(mean)?,
            prior_mean: prior_mean.map(|mu| dev.upload(mu)).transpose()?,
            velocity: dev.zeros(mean.len())?,
            sample: dev.zeros(mean.len())?,
            first_index,
            reduction: Reduction::new(dev)?,
        })
    }

    /// `D`.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// `true` for an empty block.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// The noise index of element 0.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The variational means `m`.
    pub fn mean(&self) -> &DeviceBuffer {
        &self.mean
    }

    /// The variational means, mutably (e.g. to apply an optimizer of the caller's own).
    pub fn mean_mut(&mut self) -> &mut DeviceBuffer {
        &mut self.mean
    }

    /// The prior means `mu`, if not zero.
    pub fn prior_mean(&self) -> Option<&DeviceBuffer> {
        self.prior_mean.as_ref()
    }

    /// The momentum buffer `u` of [`Self::backward_sgd`].
    pub fn velocity(&self) -> &DeviceBuffer {
        &self.velocity
    }

    /// The momentum buffer, mutably (e.g. to reset it).
    pub fn velocity_mut(&mut self) -> &mut DeviceBuffer {
        &mut self.velocity
    }

    /// The sample `w = m + sigma eps` written by the last [`Self::forward`].
    pub fn sample(&self) -> &DeviceBuffer {
        &self.sample
    }

    fn check_scale(&self, scale: DeviceScale<'_>) -> Result<()> {
        match scale {
            DeviceScale::Isotropic(s) => {
                check::positive("sigma", f64::from(s))?;
                Ok(())
            }
            DeviceScale::Diagonal(buf) => {
                Ok(check::same_len("diagonal sigma", self.len(), buf.len())?)
            }
        }
    }

    /// The fused forward pass: one kernel generates `eps_i` (bit-identical to
    /// `deelbo_core::normal_at(key, first_index + i)`), writes `w_i = m_i + sigma_i eps_i`
    /// into [`Self::sample`], and reduces `M = ||m - mu||^2` (and, for a diagonal scale,
    /// `sum sigma_j^2`, `sum ln sigma_j^2`) in `f64` with a deterministic two-stage reduction.
    /// [`Self::enqueue_forward`] then [`Self::read_forward_stats`]: returns after reading the
    /// three sums back, so it synchronizes.
    pub fn forward(&mut self, scale: DeviceScale<'_>, key: NoiseKey) -> Result<ForwardStats> {
        self.forward_with(ForwardKernel::default(), scale, key)
    }

    /// [`Self::forward`] with a chosen kernel.
    pub fn forward_with(
        &mut self,
        kernel: ForwardKernel,
        scale: DeviceScale<'_>,
        key: NoiseKey,
    ) -> Result<ForwardStats> {
        self.enqueue_forward_with(kernel, scale, key)?;
        self.read_forward_stats(scale)
    }

    /// Read back the reductions of the last queued forward pass (waits for it) as
    /// [`ForwardStats`] for `scale` (the scale that pass used).
    pub fn read_forward_stats(&self, scale: DeviceScale<'_>) -> Result<ForwardStats> {
        let [sq_dist, sum_sigma2, sum_ln_sigma2] =
            self.dev.read_f64::<3>(&self.reduction.result)?;
        Ok(ForwardStats {
            len: self.len(),
            sq_dist,
            scale: match scale {
                DeviceScale::Isotropic(s) => ScaleStats::Isotropic {
                    sigma: f64::from(s),
                },
                DeviceScale::Diagonal(_) => ScaleStats::Diagonal {
                    sum_sigma2,
                    sum_ln_sigma2,
                },
            },
        })
    }

    /// Queue the fused forward kernel on the device's stream without waiting for it (the sample
    /// and the reductions are ready after the next synchronizing call, e.g.
    /// [`Self::read_forward_stats`]). Checks the scale first.
    pub fn enqueue_forward(&mut self, scale: DeviceScale<'_>, key: NoiseKey) -> Result<()> {
        self.enqueue_forward_with(ForwardKernel::default(), scale, key)
    }

    /// [`Self::enqueue_forward`] with a chosen kernel.
    pub fn enqueue_forward_with(
        &mut self,
        kernel: ForwardKernel,
        scale: DeviceScale<'_>,
        key: NoiseKey,
    ) -> Result<()> {
        self.check_scale(scale)?;
        let n = self.len() as u64;
        let first = self.first_index;
        let [k0, k1, s_lo, s_hi] = key_words(key);
        let (sigma, sigma_diag) = match scale {
            DeviceScale::Isotropic(s) => (s, None),
            DeviceScale::Diagonal(b) => (1.0f32, Some(&b.data)),
        };
        let vec4 = i32::from(first.is_multiple_of(4));
        let inner = &self.dev.inner;
        let (function, max_grid) = match kernel {
            ForwardKernel::Plain => (&inner.kernels.fused_forward, self.dev.reduction_grid()),
            ForwardKernel::Prefetch => (
                &inner.kernels.fused_forward_prefetch,
                self.dev.prefetch_grid(),
            ),
        };
        let cfg = philox_launch(n, first, max_grid);
        let mut b = inner.stream.launch_builder(function);
        b.arg(&mut self.sample.data);
        b.arg(&self.mean.data);
        match &self.prior_mean {
            Some(mu) => b.arg(&mu.data),
            None => b.arg(&NULL_PTR),
        };
        match sigma_diag {
            Some(s) => b.arg(s),
            None => b.arg(&NULL_PTR),
        };
        b.arg(&sigma)
            .arg(&n)
            .arg(&first)
            .arg(&k0)
            .arg(&k1)
            .arg(&s_lo)
            .arg(&s_hi)
            .arg(&vec4)
            .arg(&mut self.reduction.partials)
            .arg(&mut self.reduction.counter)
            .arg(&mut self.reduction.result);
        // SAFETY: the argument list matches `deelbo_fused_forward` and
        // `deelbo_fused_forward_prefetch` in `source.rs` (same signature: types and order); every buffer has length >= n (checked: sample/mean/prior/diagonal sigma have
        // length D = n) and the reduction buffers hold MAX_REDUCTION_BLOCKS >= grid blocks.
        unsafe { b.launch(cfg) }.map_err(driver("launching the fused forward kernel"))?;
        Ok(())
    }

    /// The fused backward pass (see `deelbo_core::fused::backward`): regenerates `eps_i`, writes
    /// `grad_mean_i = g_i + c (m_i - mu_i)` with `c = 1/(kappa N v)`, for a diagonal scale
    /// `grad_sigma_j`, and returns `sum_i g_i eps_i` (+ the isotropic KL term).
    ///
    /// `grad_sample` is `g = d loss/d w` at the sample of the forward pass with the same key.
    pub fn backward(
        &mut self,
        scale: DeviceScale<'_>,
        key: NoiseKey,
        grad_sample: &DeviceBuffer,
        kl: KlGradScales,
        grad_mean: &mut DeviceBuffer,
        grad_sigma: Option<&mut DeviceBuffer>,
    ) -> Result<BackwardStats> {
        check::same_len("mean gradient", self.len(), grad_mean.len())?;
        self.backward_impl(
            scale,
            key,
            grad_sample,
            kl,
            Mode::Gradient(grad_mean),
            grad_sigma,
        )
    }

    /// The fused backward pass with the momentum-SGD update of the means in place (see
    /// `deelbo_core::fused::backward_sgd`): `u <- beta u + grad`, `m <- m - lr u`.
    pub fn backward_sgd(
        &mut self,
        scale: DeviceScale<'_>,
        key: NoiseKey,
        grad_sample: &DeviceBuffer,
        kl: KlGradScales,
        sgd: SgdMomentum,
        grad_sigma: Option<&mut DeviceBuffer>,
    ) -> Result<BackwardStats> {
        check::finite("SGD learning rate", f64::from(sgd.lr))?;
        check::finite("SGD momentum", f64::from(sgd.momentum))?;
        self.backward_impl(scale, key, grad_sample, kl, Mode::Sgd(sgd), grad_sigma)
    }

    fn backward_impl(
        &mut self,
        scale: DeviceScale<'_>,
        key: NoiseKey,
        grad_sample: &DeviceBuffer,
        kl: KlGradScales,
        mode: Mode<'_>,
        grad_sigma: Option<&mut DeviceBuffer>,
    ) -> Result<BackwardStats> {
        self.check_scale(scale)?;
        check::same_len("gradient of the sample", self.len(), grad_sample.len())?;
        for (name, v) in [
            ("1/(kappa N)", kl.inv_kappa_n),
            ("prior variance", kl.variance),
        ] {
            check::positive(name, v)?;
        }
        let grad_sigma = match (scale, grad_sigma) {
            (DeviceScale::Diagonal(_), Some(gs)) => {
                check::same_len("diagonal sigma gradient", self.len(), gs.len())?;
                Some(gs)
            }
            (DeviceScale::Diagonal(_), None) => {
                check::same_len("diagonal sigma gradient (missing buffer)", self.len(), 0)?;
                None
            }
            (DeviceScale::Isotropic(_), _) => None,
        };
        let n = self.len() as u64;
        let noise_dot = if n == 0 {
            0.0
        } else {
            let first = self.first_index;
            let [k0, k1, s_lo, s_hi] = key_words(key);
            let (c, kinv, inv_v) = kl.f32_constants();
            let (lr, beta, mode_flag) = match mode {
                Mode::Gradient(_) => (0.0f32, 0.0f32, 0i32),
                Mode::Sgd(s) => (s.lr, s.momentum, 1i32),
            };
            let vec4 = i32::from(first.is_multiple_of(4));
            let cfg = philox_launch(n, first, self.dev.reduction_grid());
            let inner = &self.dev.inner;
            let mut b = inner.stream.launch_builder(&inner.kernels.fused_backward);
            b.arg(&grad_sample.data);
            b.arg(&mut self.mean.data);
            match &self.prior_mean {
                Some(mu) => b.arg(&mu.data),
                None => b.arg(&NULL_PTR),
            };
            match scale {
                DeviceScale::Diagonal(s) => b.arg(&s.data),
                DeviceScale::Isotropic(_) => b.arg(&NULL_PTR),
            };
            match mode {
                Mode::Gradient(g) => b.arg(&mut g.data),
                Mode::Sgd(_) => b.arg(&NULL_PTR),
            };
            b.arg(&mut self.velocity.data);
            match grad_sigma {
                Some(gs) => b.arg(&mut gs.data),
                None => b.arg(&NULL_PTR),
            };
            b.arg(&c)
                .arg(&kinv)
                .arg(&inv_v)
                .arg(&lr)
                .arg(&beta)
                .arg(&mode_flag)
                .arg(&n)
                .arg(&first)
                .arg(&k0)
                .arg(&k1)
                .arg(&s_lo)
                .arg(&s_hi)
                .arg(&vec4)
                .arg(&mut self.reduction.partials)
                .arg(&mut self.reduction.counter)
                .arg(&mut self.reduction.result);
            // SAFETY: the argument list matches `deelbo_fused_backward` in `source.rs`; every
            // buffer the kernel touches has length D = n (checked above); null pointers are
            // passed only where the kernel does not dereference them (mu, sigma_diag and
            // grad_sigma are tested for null; grad_m is only written in mode 0).
            unsafe { b.launch(cfg) }.map_err(driver("launching the fused backward kernel"))?;
            self.dev.read_f64::<3>(&self.reduction.result)?[0]
        };
        Ok(BackwardStats {
            noise_dot,
            grad_sigma: match scale {
                DeviceScale::Isotropic(s) => {
                    Some(noise_dot + kl.isotropic_sigma_term(self.len(), f64::from(s)))
                }
                DeviceScale::Diagonal(_) => None,
            },
        })
    }
}

/// What the backward pass does with the mean gradient.
enum Mode<'a> {
    /// Write it to this buffer.
    Gradient(&'a mut DeviceBuffer),
    /// Apply momentum SGD in place.
    Sgd(SgdMomentum),
}
