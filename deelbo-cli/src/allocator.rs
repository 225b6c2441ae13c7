//! The allocator policy of the dense fits (`rff`, `demo`).
//!
//! Every hyperparameter evaluation of an RFF fit allocates and frees a few `N x R` and `N x N`
//! temporaries (features, sines, `C^-1 Phi`, the Gram matrix): megabytes each. With glibc's
//! defaults a block above the (dynamic) mmap threshold is mapped fresh and unmapped on free, so
//! every evaluation page-faults its temporaries in again. Keeping such blocks in the heap for reuse
//! (mmap threshold at glibc's maximum of 32 MiB, no trimming below 1 GiB of free heap): the
//! 332-row ARD fit of diabetes took 0.37 against 0.39 s (medians of 6 interleaved runs) with 40
//! against 36 MB resident; before the search's eigendecompositions were replaced by a
//! tridiagonal reduction it was 0.42-0.44 against 0.49-0.53 s. Larger blocks are still mapped
//! and returned as before. Elsewhere (not glibc) this is a no-op.

/// Keep freed blocks up to 32 MiB in the heap (glibc `mallopt`; a no-op elsewhere). A hint: if
/// glibc refuses a value, its default stays.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_blocks() {
    use std::ffi::c_int;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    // SAFETY: mallopt only changes glibc's allocator parameters; called before the fit allocates
    // its working set, on the main thread.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Keep freed blocks up to 32 MiB in the heap (glibc `mallopt`; a no-op elsewhere).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_blocks() {}
