//! Compiles the generated kernel source with the real NVRTC when the library can be loaded (no
//! GPU or driver needed), and checks the PTX: every kernel entry point is there, and no fused
//! multiply-add was emitted (`--fmad=false`). Without NVRTC the test says it was skipped.

use deelbo_cuda::compile::{compile_kernels, nvrtc_available};
use deelbo_cuda::source::names;

#[test]
fn generated_source_compiles_with_nvrtc_without_fma() {
    if !nvrtc_available() {
        deelbo_cuda::report_skip(
            "skipped: NVRTC not found (run deelbo-cuda/scripts/fetch-nvrtc.sh and set \
             LD_LIBRARY_PATH to compile the kernels here)",
        );
        return;
    }
    let ptx = match compile_kernels(None) {
        Ok(p) => p.to_src(),
        Err(e) => panic!("{e}"),
    };
    for name in names::ALL {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "entry point {name} missing from the PTX"
        );
    }
    // An f32 fused multiply-add would break bit-identity with the CPU transform and the
    // element-wise formulas. (The f64 `log` of the diagonal-scale reduction is CUDA's library
    // routine, which uses f64 FMAs internally; that sum is compared to a tolerance, not bits.)
    for op in ["fma.rn.f32", "mad.f32", "mad.rn.f32", "fma.rz.f32"] {
        assert!(!ptx.contains(op), "the PTX contains {op}");
    }
    // IEEE division, reciprocal and square root in f32 (not the approximate forms).
    assert!(ptx.contains("div.rn.f32"));
    assert!(ptx.contains("sqrt.rn.f32"));
    for op in [
        "div.approx.f32",
        "div.full.f32",
        "sqrt.approx.f32",
        "rcp.approx.f32",
        "ex2",
        "lg2",
    ] {
        assert!(!ptx.contains(op), "the PTX contains {op}");
    }
    println!(
        "compiled {} kernels with NVRTC: {} bytes of PTX",
        names::ALL.len(),
        ptx.len()
    );
    for arch in ["compute_80", "compute_90"] {
        if let Err(e) = compile_kernels(Some(arch)) {
            panic!("{arch}: {e}");
        }
    }
}
