//! Runtime compilation of [`crate::source::kernel_source`] with NVRTC (no CUDA toolkit at build
//! time, no GPU needed to compile).

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use crate::error::{CudaError, Result, catch_panic};
use crate::source::kernel_source;

/// `true` when the NVRTC library can be loaded (checked without panicking).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names; loads no symbol.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// `true` when the CUDA driver library can be loaded (checked without touching the driver API).
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names; loads no symbol.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The NVRTC options: no fused multiply-add (the noise transform and every element-wise formula
/// must round each product and sum separately), IEEE division and square root, no flush to zero.
/// `arch` is the virtual architecture (e.g. `compute_90`), or NVRTC's default when `None`.
pub fn compile_options(arch: Option<&'static str>) -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        use_fast_math: Some(false),
        arch,
        name: Some("deelbo_kernels.cu".to_string()),
        ..Default::default()
    }
}

/// Compile the deelbo kernels to PTX. Errors: [`CudaError::NoNvrtc`] when the library is
/// missing, [`CudaError::Compile`] with NVRTC's log when the source is rejected.
pub fn compile_kernels(arch: Option<&'static str>) -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let src = kernel_source();
    catch_panic("compiling the kernels with NVRTC", || {
        compile_ptx_with_opts(&src, compile_options(arch)).map_err(compile_error)
    })
}

fn compile_error(e: CompileError) -> CudaError {
    match e {
        CompileError::CompileError { nvrtc, log, .. } => CudaError::Compile {
            status: format!("{nvrtc:?}"),
            log: log.to_string_lossy().into_owned(),
        },
        other => CudaError::Compile {
            status: format!("{other:?}"),
            log: String::new(),
        },
    }
}

/// The virtual architecture matching a device's compute capability, for the ones NVRTC 12
/// knows; `None` (NVRTC's default, JIT-compiled by the driver) otherwise.
pub fn arch_for(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        _ => return None,
    })
}
