//! # deelbo-bench
//!
//! Benchmarks of the fused DE-ELBO step (`deelbo_core::fused` on the CPU, `deelbo_cuda` on the
//! GPU) against naive multi-pass versions and against in-process memory ceilings that move the
//! same bytes on the same threads ([`stream`]; on the GPU, a device-to-device copy).
//!
//! - `cargo run --release -p deelbo-bench --bin deelbo-bench-report`: a plain harness. On the
//!   CPU, at one thread count for every row, it times the memory ceilings, the fused forward
//!   (on every instruction-set path), backward and backward + SGD, the eager multi-pass
//!   version on the same threads ([`eager`]) and the noise generator alone, interleaved
//!   repetition by repetition, and prints medians as GB/s and as fractions of the ceiling; then
//!   the GPU rows when there is a CUDA driver. `--json FILE` writes every row for
//!   `scripts/torch_cpu.py` (PyTorch CPU in place, same sizes and threads) and
//!   `scripts/torch_eager.py` (PyTorch eager on the GPU).
//! - `scripts/cpu-results.sh`: everything in `results/cpu/` with one command.
//! - `cargo bench -p deelbo-bench --bench fused_cpu`: criterion, the same CPU rows for `D` in
//!   {1e5, 1e6, 1e7, 2.5e7}, all at the machine's thread count, in bytes/s of each pass's
//!   traffic.
//! - `cargo bench -p deelbo-bench --bench fused_gpu`: criterion with `iter_custom`, synchronizing
//!   inside the timed region: fused kernels, the naive one-kernel-per-operation version, and the
//!   copy. Prints "skipped: no CUDA driver" without a GPU.
//!
//! Under `cargo test --all-targets` criterion runs each benchmark once in test mode; the benches
//! then use only the smallest size ([`sizes`]), so the test suite stays fast.

pub mod eager;
pub mod stream;

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

/// The 1-minute load average from `/proc/loadavg` (`None` where there is none): recorded with
/// every CPU measurement, since other processes on the machine slow memory-bound rows.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The median of a non-empty list of seconds (the upper median for an even count).
pub fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Threads for the CPU step: the machine's available parallelism (at least 1).
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Deterministic benchmark data: `scale * eps` from the core's noise with its own stream
/// (the workspace's shared test-data helper, [`deelbo_core::test_util::normal_data`]).
pub fn data(len: usize, stream: u64, scale: f32) -> Vec<f32> {
    deelbo_core::test_util::normal_data(len, NoiseKey::new(0xbe7c, stream), scale)
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
    /// `forward`, `backward`, `backward_sgd`, `copy`, `noise`.
    pub pass: String,
    /// CPU: `ceiling_regular`, `ceiling_streaming`, `fused` (the detected instruction set),
    /// `fused_<isa>`, `eager`, `noise_<isa>`; GPU: `fused`, `naive`, `copy_same_bytes`, ...
    pub variant: String,
    /// CPU threads every CPU row ran on (`None` for GPU rows).
    pub threads: Option<usize>,
    /// `ceiling time / this row's time` for the pass's in-process ceiling (CPU rows).
    pub of_ceiling: Option<f64>,
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
