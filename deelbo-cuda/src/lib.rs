//! # deelbo-cuda
//!
//! The fused DE-ELBO training step on an NVIDIA GPU: one kernel per block samples
//! `w = m + sigma eps` with counter-based Philox noise generated in registers and reduces
//! `M = ||m - mu||^2` (the closed-form prior variance is `v* = M/D + sigma^2`); one backward kernel
//! regenerates the same noise instead of storing it and applies the KL gradients and, optionally,
//! a momentum-SGD update. Design: `docs/DESIGN.md` §3.4 (data flow) and §6 (the noise); the CPU
//! reference is `deelbo_core::fused`.
//!
//! - Kernels are compiled at run time by NVRTC from self-contained source generated in Rust
//!   ([`source`]), with `--fmad=false`, so the noise is bit-identical to
//!   `deelbo_core::normal_at` and the element-wise outputs to the CPU step.
//! - cudarc loads `libcuda` and `libnvrtc` dynamically: this crate builds everywhere, and on a
//!   machine without CUDA [`CudaDevice::new`] returns [`CudaError::NoDriver`] (checked before the
//!   driver is touched; never a panic).
//! - Reductions accumulate in `f64` with a two-stage reduction whose order depends only on the
//!   block's length, so repeated runs give the same bits.
//!
//! | module | concept |
//! |---|---|
//! | [`source`] | the generated CUDA source and kernel names |
//! | [`compile`] | NVRTC compilation and library detection |
//! | [`device`] | [`CudaDevice`] (context, stream, kernels) and [`DeviceBuffer`] |
//! | [`block`] | [`DeviceParamBlock`]: device-resident `m`, `mu`, momentum; fused forward/backward |
//! | [`naive`] | [`NaiveStep`]: the one-kernel-per-operation baseline |
//! | [`error`] | [`CudaError`] |
//!
//! ```no_run
//! use deelbo_core::{NoiseKey, fused::KlGradScales};
//! use deelbo_cuda::{CudaDevice, CudaError, DeviceParamBlock, DeviceScale};
//!
//! let dev = match CudaDevice::new(0) {
//!     Ok(dev) => dev,
//!     Err(CudaError::NoDriver) => { println!("skipped: no CUDA driver"); return Ok(()); }
//!     Err(e) => return Err(e.into()),
//! };
//! let pretrained = vec![0.1f32; 1 << 20];
//! let mut block = DeviceParamBlock::new(&dev, &pretrained, Some(&pretrained), 0)?;
//! let stats = block.forward(DeviceScale::Isotropic(1e-4), NoiseKey::for_block_step(7, 0, 0))?;
//! let v_star = stats.kl_terms()?.optimal_variance(); // M/D + sigma^2
//! # let _ = v_star;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod block;
pub mod compile;
pub mod device;
pub mod error;
pub mod naive;
pub mod source;

pub use block::{DeviceParamBlock, DeviceScale, ForwardKernel};
pub use compile::{compile_kernels, driver_available, nvrtc_available};
pub use device::{CudaDevice, DeviceBuffer};
pub use error::{CudaError, Result};
pub use naive::NaiveStep;

/// Print a "skipped: ..." line straight to the process's stderr. `cargo test` captures
/// `println!`/`eprintln!` of passing tests, so a skip reported that way would be invisible and
/// the test would look as if it had checked something; a direct write is always shown.
pub fn report_skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Open device 0, or report why not: `Ok(None)` with a printed `"skipped: no CUDA driver"` line
/// when the machine has no CUDA driver (for examples, tests and benches that must skip cleanly);
/// every other failure is an error.
pub fn device_or_skip(what: &str) -> Result<Option<CudaDevice>> {
    match CudaDevice::new(0) {
        Ok(dev) => Ok(Some(dev)),
        Err(CudaError::NoDriver) => {
            report_skip(&format!("{what}: skipped: no CUDA driver"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
