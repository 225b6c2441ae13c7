//! # deelbo-bench
//!
//! Benchmarks of the fused DE-ELBO step (`deelbo_core::fused` on the CPU, `deelbo_cuda` on the
//! GPU) against naive multi-pass versions and, on the GPU, against a device-to-device copy of the
//! same number of bytes (the bandwidth ceiling).
//!
//! - `cargo bench -p deelbo-bench --bench fused_cpu`: criterion, fused vs naive CPU step for
//!   `D` in {1e5, 1e6, 1e7, 2.5e7}, reported in bytes/s of the traffic a bandwidth-bound pass
//!   must move ([`deelbo_core::fused::FORWARD_BYTES_PER_WEIGHT`] = 12 bytes per weight forward).
//! - `cargo bench -p deelbo-bench --bench fused_gpu`: criterion with `iter_custom`, synchronizing
//!   inside the timed region: fused kernels, the naive one-kernel-per-operation version, and the
//!   copy. Prints "skipped: no CUDA driver" without a GPU.
//! - `cargo run --release -p deelbo-bench --bin deelbo-bench-report`: a plain harness that prints
//!   GB/s, the fraction of the copy bandwidth and the fused/naive ratios (and writes JSON for
//!   `scripts/torch_eager.py`, which times PyTorch eager on the same GPU).
//!
//! Under `cargo test --all-targets` criterion runs each benchmark once in test mode; the benches
//! then use only the smallest size ([`sizes`]), so the test suite stays fast.

use deelbo_core::NoiseKey;

/// The block sizes `D` of a full benchmark run.
pub const FULL_SIZES: [usize; 4] = [100_000, 1_000_000, 10_000_000, 25_000_000];

/// `true` when the process was started by `cargo bench` (criterion's `--bench` flag): full sizes.
/// Under `cargo test` (no flag) criterion only smoke-tests each benchmark once.
pub fn is_full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The sizes to benchmark: [`FULL_SIZES`] in a real run, the smallest only in test mode.
pub fn sizes() -> Vec<usize> {
    if is_full_run() {
        FULL_SIZES.to_vec()
    } else {
        FULL_SIZES[..1].to_vec()
    }
}

/// Threads for the CPU step: the machine's available parallelism (at least 1).
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Deterministic benchmark data: `scale * eps` from the core's noise with its own stream.
pub fn data(len: usize, stream: u64, scale: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    deelbo_core::fill_normals(NoiseKey::new(0xbe7c, stream), 0, &mut v);
    for x in &mut v {
        *x *= scale;
    }
    v
}

/// A human-readable `D`: `1e5`, `2.5e7`, ...
pub fn size_label(d: usize) -> String {
    let e = (d as f64).log10().floor() as i32;
    let mant = d as f64 / 10f64.powi(e);
    if (mant - 1.0).abs() < 1e-9 {
        format!("1e{e}")
    } else {
        format!("{mant}e{e}")
    }
}

/// One measured configuration of the report harness.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    /// `cpu` or `gpu`.
    pub device: String,
    /// `forward`, `backward`, `backward_sgd`, `copy`.
    pub pass: String,
    /// `fused`, `naive`, `copy`.
    pub variant: String,
    /// Number of weights `D`.
    pub len: usize,
    /// Median seconds per call (synchronized).
    pub seconds: f64,
    /// Bytes a bandwidth-bound implementation must move for this pass (the same for fused and
    /// naive, so GB/s compare directly).
    pub bytes: usize,
}

impl Measurement {
    /// `bytes / seconds / 1e9`.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }
}

/// The median of `reps` timings of `f` (each call must synchronize before returning), after
/// `warmup` untimed calls.
pub fn median_seconds(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_medians() {
        assert_eq!(size_label(100_000), "1e5");
        assert_eq!(size_label(25_000_000), "2.5e7");
        let mut calls = 0;
        let m = median_seconds(2, 5, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 7);
        assert!(m >= 0.0);
        // Under `cargo test` there is no --bench flag: only the smallest size.
        assert_eq!(sizes(), vec![100_000]);
    }
}
