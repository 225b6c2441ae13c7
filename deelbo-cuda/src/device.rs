//! One GPU: its context, the stream every deelbo operation runs on, the compiled kernels, and
//! device buffers of `f32`.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr};

use crate::compile::{arch_for, compile_kernels, driver_available};
use crate::error::{CudaError, Result, alloc, catch_panic, driver};
use crate::source::{MAX_REDUCTION_BLOCKS, MIN_BLOCKS_PER_SM, PREFETCH_MIN_BLOCKS_PER_SM, names};
use deelbo_core::check;

/// The loaded kernel functions.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub(crate) fused_forward: CudaFunction,
    pub(crate) fused_forward_prefetch: CudaFunction,
    pub(crate) fused_backward: CudaFunction,
    pub(crate) naive_normal: CudaFunction,
    pub(crate) naive_scale: CudaFunction,
    pub(crate) naive_mul: CudaFunction,
    pub(crate) naive_add: CudaFunction,
    pub(crate) naive_sub: CudaFunction,
    pub(crate) naive_square: CudaFunction,
    pub(crate) naive_sum: CudaFunction,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) kernels: Kernels,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: u32,
}

/// A GPU with the deelbo kernels compiled and loaded. Cheap to clone (shared handle); every
/// operation runs in order on one stream.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    pub(crate) inner: Arc<Inner>,
}

/// A buffer of `f32` in device memory (a whole allocation, so its start is 256-byte aligned).
#[derive(Debug)]
pub struct DeviceBuffer {
    pub(crate) data: CudaSlice<f32>,
}

impl DeviceBuffer {
    /// Number of `f32` elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// `true` when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// The underlying cudarc slice, to hand to other cudarc kernels (e.g. a model that reads the
    /// sample `w` and writes `d loss/d w`).
    pub fn as_cuda_slice(&self) -> &CudaSlice<f32> {
        &self.data
    }

    /// The underlying cudarc slice, mutably.
    pub fn as_cuda_slice_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.data
    }
}

impl CudaDevice {
    /// Open device `ordinal`, compile the kernels with NVRTC and load them.
    ///
    /// Checks that the driver library can be loaded before touching the driver API, so a
    /// machine without CUDA gets [`CudaError::NoDriver`] (never a panic); then
    /// [`CudaError::NoDevice`], [`CudaError::NoNvrtc`] or [`CudaError::Compile`].
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_available() {
            return Err(CudaError::NoDriver);
        }
        catch_panic("opening the CUDA device", || Self::open(ordinal))
    }

    fn open(ordinal: usize) -> Result<Self> {
        let ctx =
            CudaContext::new(ordinal).map_err(|source| CudaError::NoDevice { ordinal, source })?;
        // SAFETY: every deelbo buffer and kernel uses the single stream below, so the
        // cross-stream event tracking that this turns off is never needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let multiprocessors = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("reading the multiprocessor count"))?
            .max(1) as u32;
        let ptx = compile_kernels(arch_for(compute_capability.0, compute_capability.1))?;
        let module = ctx
            .load_module(ptx)
            .map_err(driver("loading the compiled kernels"))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(driver("loading a kernel function"))
        };
        let kernels = Kernels {
            fused_forward: load(names::FUSED_FORWARD)?,
            fused_forward_prefetch: load(names::FUSED_FORWARD_PREFETCH)?,
            fused_backward: load(names::FUSED_BACKWARD)?,
            naive_normal: load(names::NAIVE_NORMAL)?,
            naive_scale: load(names::NAIVE_SCALE)?,
            naive_mul: load(names::NAIVE_MUL)?,
            naive_add: load(names::NAIVE_ADD)?,
            naive_sub: load(names::NAIVE_SUB)?,
            naive_square: load(names::NAIVE_SQUARE)?,
            naive_sum: load(names::NAIVE_SUM)?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                stream,
                kernels,
                name,
                compute_capability,
                multiprocessors,
            }),
        })
    }

    /// The device's name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// The number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> u32 {
        self.inner.multiprocessors
    }

    /// The grid of the reduction kernels: one wave of `MIN_BLOCKS_PER_SM` blocks per
    /// multiprocessor, at most `MAX_REDUCTION_BLOCKS`.
    pub(crate) fn reduction_grid(&self) -> u32 {
        (self.inner.multiprocessors * MIN_BLOCKS_PER_SM).clamp(1, MAX_REDUCTION_BLOCKS)
    }

    /// The grid of the prefetching forward kernel: one wave of `PREFETCH_MIN_BLOCKS_PER_SM`
    /// blocks per multiprocessor.
    pub(crate) fn prefetch_grid(&self) -> u32 {
        (self.inner.multiprocessors * PREFETCH_MIN_BLOCKS_PER_SM).clamp(1, MAX_REDUCTION_BLOCKS)
    }

    /// The cudarc context (for interop with other cudarc code).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The cudarc stream every deelbo operation runs on (for interop with other cudarc code).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Wait until every queued operation has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .stream
            .synchronize()
            .map_err(driver("synchronizing the stream"))
    }

    /// A zero-filled device buffer of `len` elements of `T`.
    pub(crate) fn alloc_zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
        what: &str,
    ) -> Result<CudaSlice<T>> {
        // The driver rejects zero-byte allocations; say so in our own terms.
        check::has_parameters(
            &format!("{what} (device buffers need at least one element)"),
            len,
        )?;
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        self.inner
            .stream
            .alloc_zeros::<T>(len)
            .map_err(alloc(what, bytes))
    }

    /// A zero-filled buffer of `len >= 1` `f32`.
    pub fn zeros(&self, len: usize) -> Result<DeviceBuffer> {
        Ok(DeviceBuffer {
            data: self.alloc_zeros::<f32>(len, "a zero-filled f32 buffer")?,
        })
    }

    /// Copy host data (at least one element) into a new device buffer.
    pub fn upload(&self, host: &[f32]) -> Result<DeviceBuffer> {
        let mut data = self.alloc_zeros::<f32>(host.len(), "an uploaded f32 buffer")?;
        self.inner
            .stream
            .memcpy_htod(host, &mut data)
            .map_err(driver("copying host data to the device"))?;
        Ok(DeviceBuffer { data })
    }

    /// Overwrite a device buffer with host data of the same length.
    pub fn upload_into(&self, host: &[f32], dst: &mut DeviceBuffer) -> Result<()> {
        check::same_len("uploaded data", dst.len(), host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        self.inner
            .stream
            .memcpy_htod(host, &mut dst.data)
            .map_err(driver("copying host data to the device"))
    }

    /// Copy a device buffer back to the host (waits for queued work).
    pub fn download(&self, buf: &DeviceBuffer) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .stream
            .clone_dtoh(&buf.data)
            .map_err(driver("copying device data to the host"))
    }

    /// Device-to-device copy of `src` into `dst` (same length): the bandwidth ceiling the
    /// benchmarks compare the kernels against (reads and writes `4 len` bytes each).
    pub fn copy(&self, src: &DeviceBuffer, dst: &mut DeviceBuffer) -> Result<()> {
        check::same_len("copy destination", src.len(), dst.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.inner
            .stream
            .memcpy_dtod(&src.data, &mut dst.data)
            .map_err(driver("copying device to device"))
    }

    /// Read `N` doubles from device memory (waits for queued work).
    pub(crate) fn read_f64<const N: usize>(&self, src: &CudaSlice<f64>) -> Result<[f64; N]> {
        let mut out = [0.0f64; N];
        check::same_len("reduction result", N, src.len())?;
        self.inner
            .stream
            .memcpy_dtoh(src, &mut out[..])
            .map_err(driver("reading a reduction result"))?;
        self.synchronize()?;
        Ok(out)
    }
}
