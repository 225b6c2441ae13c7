//! The typed error of every fallible function of this crate.

use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use deelbo_core::CoreError;
use thiserror::Error;

/// Everything that can go wrong on the GPU path. The first two variants are the expected ones on
/// a machine without CUDA; callers fall back to the CPU (`deelbo_core::fused`) on them.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The CUDA driver library (`libcuda.so`) could not be loaded: no NVIDIA driver on this
    /// machine, or it is not on the loader path.
    #[error("no CUDA driver found (libcuda could not be loaded); the GPU path is unavailable")]
    NoDriver,
    /// The NVRTC runtime compiler (`libnvrtc.so.12` or `libnvrtc.so`) could not be loaded.
    #[error(
        "no NVRTC library found (libnvrtc.so.12 / libnvrtc.so); install the CUDA NVRTC runtime \
         (e.g. `pip install nvidia-cuda-nvrtc-cu12`) and add its lib directory to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    /// The driver loaded but the requested device could not be opened (no GPU, bad ordinal, ...).
    #[error("CUDA device {ordinal} is not available: {source}")]
    NoDevice {
        /// The device ordinal that was asked for.
        ordinal: usize,
        /// The driver's error.
        source: DriverError,
    },
    /// NVRTC rejected the kernel source; `log` is the compiler's log.
    #[error("NVRTC could not compile the deelbo kernels ({status}); compiler log:\n{log}")]
    Compile {
        /// NVRTC's status (or the stage that failed).
        status: String,
        /// The compiler log.
        log: String,
    },
    /// A device allocation failed because the GPU is out of memory.
    #[error("out of GPU memory allocating {bytes} bytes for {name}")]
    OutOfMemory {
        /// What was being allocated.
        name: String,
        /// The size of the failed allocation.
        bytes: usize,
    },
    /// Any other driver error, with the operation it happened in.
    #[error("CUDA driver error while {name}: {source}")]
    Driver {
        /// The operation that failed.
        name: String,
        /// The driver's error.
        source: DriverError,
    },
    /// The CUDA libraries panicked inside a call (e.g. a driver too old for a symbol); the
    /// message is the panic's.
    #[error("the CUDA library failed while {name}: {reason}")]
    LibraryPanic {
        /// The operation that failed.
        name: String,
        /// The panic message.
        reason: String,
    },
    /// An invalid scalar argument or a reduction the core rejects (e.g. `sigma <= 0`).
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Shorthand for `Result<T, CudaError>`.
pub type Result<T> = std::result::Result<T, CudaError>;

/// Wrap a driver error with the operation it happened in.
pub(crate) fn driver(during: &str) -> impl FnOnce(DriverError) -> CudaError + '_ {
    move |source| CudaError::Driver {
        name: during.to_string(),
        source,
    }
}

/// Wrap an allocation error: out-of-memory becomes [`CudaError::OutOfMemory`].
pub(crate) fn alloc(what: &str, bytes: usize) -> impl FnOnce(DriverError) -> CudaError + '_ {
    move |source| {
        if source.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            CudaError::OutOfMemory {
                name: what.to_string(),
                bytes,
            }
        } else {
            CudaError::Driver {
                name: format!("allocating {bytes} bytes for {what}"),
                source,
            }
        }
    }
}

/// Run `f`, turning a panic inside the CUDA libraries into [`CudaError::LibraryPanic`].
pub(crate) fn catch_panic<T>(during: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(CudaError::LibraryPanic {
                name: during.to_string(),
                reason,
            })
        }
    }
}
