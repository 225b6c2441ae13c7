//! Print the generated CUDA source (`--source`) or the PTX NVRTC compiles it to (default).
//!
//! Run: `cargo run -p deelbo-cuda --example 00_dump_ptx [-- --source]`

fn main() {
    if std::env::args().any(|a| a == "--source") {
        print!("{}", deelbo_cuda::source::kernel_source());
        return;
    }
    match deelbo_cuda::compile_kernels(None) {
        Ok(ptx) => print!("{}", ptx.to_src()),
        Err(deelbo_cuda::CudaError::NoNvrtc) => println!("skipped: NVRTC not found"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
