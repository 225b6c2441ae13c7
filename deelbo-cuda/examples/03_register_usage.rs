//! Compile the kernels for a real architecture (default `sm_90`) with NVRTC and print ptxas's
//! resource usage (registers, spills, shared memory) per kernel: a check of the kernels'
//! occupancy that needs NVRTC but no GPU.
//!
//! Run: `cargo run -p deelbo-cuda --example 03_register_usage [-- sm_80]`

use std::ffi::{CStr, CString};

use cudarc::nvrtc::result;

fn main() {
    if !deelbo_cuda::nvrtc_available() {
        println!("skipped: NVRTC not found");
        return;
    }
    let arch = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sm_90".to_string());
    let Ok(src) = CString::new(deelbo_cuda::source::kernel_source()) else {
        eprintln!("error: the kernel source contains a NUL byte");
        std::process::exit(1);
    };
    let mut options: Vec<String> = deelbo_cuda::compile::compile_options(None).options.clone();
    options.extend([
        "--fmad=false".to_string(),
        format!("--gpu-architecture={arch}"),
        "--ptxas-options=-v".to_string(),
    ]);
    let prog = match result::create_program(&src, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:?}");
            std::process::exit(1);
        }
    };
    // SAFETY: `prog` is a live program created above; it is destroyed once, at the end.
    unsafe {
        let status = result::compile_program(prog, &options);
        if let Ok(log) = result::get_program_log(prog) {
            println!("{}", CStr::from_ptr(log.as_ptr()).to_string_lossy());
        }
        if let Err(e) = status {
            eprintln!("error: compilation for {arch} failed: {e:?}");
            std::process::exit(1);
        }
        let _ = result::destroy_program(prog);
    }
}
