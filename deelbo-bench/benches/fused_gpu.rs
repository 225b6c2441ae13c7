//! Fused GPU kernels vs the naive one-kernel-per-operation version vs a device-to-device copy of
//! the same number of bytes (the bandwidth ceiling). The timed region always ends with a device
//! synchronization (`iter_custom`). `fused` and `naive` read their reductions back every call
//! (a full step as a training loop runs it: one synchronization per call); `fused_queued` and
//! `copy_same_bytes` queue calls back to back and synchronize once per batch. All three report
//! `Throughput::Bytes` of the traffic a bandwidth-bound pass must move, so their GB/s compare
//! directly. Prints "skipped: no CUDA driver" and registers nothing without a GPU.
//!
//! `cargo bench -p deelbo-bench --bench fused_gpu`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deelbo_bench::{data, size_label, sizes};
use deelbo_core::NoiseKey;
use deelbo_core::fused::{BACKWARD_BYTES_PER_WEIGHT, FORWARD_BYTES_PER_WEIGHT, KlGradScales};
use deelbo_cuda::{
    CudaDevice, DeviceParamBlock, DeviceScale, ForwardKernel, NaiveStep, device_or_skip,
};

/// Time `iters` calls of `f` (each of which leaves work queued), synchronizing at the end.
fn timed(dev: &CudaDevice, iters: u64, mut f: impl FnMut()) -> Duration {
    if let Err(e) = dev.synchronize() {
        panic!("synchronize failed: {e}");
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    if let Err(e) = dev.synchronize() {
        panic!("synchronize failed: {e}");
    }
    start.elapsed()
}

fn gpu(c: &mut Criterion) {
    let dev = match device_or_skip("fused_gpu bench") {
        Ok(Some(dev)) => dev,
        Ok(None) => return,
        Err(e) => panic!("a CUDA driver is present but the device failed: {e}"),
    };
    println!("device: {}", dev.name());
    let kl = KlGradScales {
        inv_kappa_n: 1e-5,
        variance: 0.01,
    };
    for d in sizes() {
        let m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let g = data(d, 3, 1e-3);
        let setup = || -> deelbo_cuda::Result<_> {
            let block = DeviceParamBlock::new(&dev, &m, Some(&mu), 0)?;
            let naive = NaiveStep::new(&dev, d)?;
            let g_dev = dev.upload(&g)?;
            let gm = dev.zeros(d)?;
            // Copy buffers moving the same bytes as the forward pass: 12 bytes per weight =
            // read + write of 6 bytes per weight = 1.5 f32 per weight.
            let copy_len = FORWARD_BYTES_PER_WEIGHT * d / 8;
            let src = dev.zeros(copy_len)?;
            let dst = dev.zeros(copy_len)?;
            Ok((block, naive, g_dev, gm, src, dst))
        };
        let (mut block, mut naive, g_dev, mut gm, src, mut dst) = match setup() {
            Ok(s) => s,
            Err(e) => panic!("GPU setup for D = {d} failed: {e}"),
        };
        let key = NoiseKey::new(1, 0);
        let label = size_label(d);

        let mut group = c.benchmark_group("gpu_forward");
        group.throughput(Throughput::Bytes((FORWARD_BYTES_PER_WEIGHT * d) as u64));
        group.bench_function(BenchmarkId::new("fused", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) = block.forward(DeviceScale::Isotropic(0.01), key) {
                        panic!("{e}");
                    }
                })
            })
        });
        // Launches queued back to back, one synchronization per batch: the kernel's own
        // throughput, comparable with the queued copies below.
        group.bench_function(BenchmarkId::new("fused_queued", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) = block.enqueue_forward(DeviceScale::Isotropic(0.01), key) {
                        panic!("{e}");
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("fused_prefetch_queued", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    let kernel = ForwardKernel::Prefetch;
                    if let Err(e) =
                        block.enqueue_forward_with(kernel, DeviceScale::Isotropic(0.01), key)
                    {
                        panic!("{e}");
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("naive", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) = naive.forward(&mut block, 0.01, key) {
                        panic!("{e}");
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("copy_same_bytes", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) = dev.copy(&src, &mut dst) {
                        panic!("{e}");
                    }
                })
            })
        });
        group.finish();

        let mut group = c.benchmark_group("gpu_backward");
        group.throughput(Throughput::Bytes((BACKWARD_BYTES_PER_WEIGHT * d) as u64));
        group.bench_function(BenchmarkId::new("fused", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) =
                        block.backward(DeviceScale::Isotropic(0.01), key, &g_dev, kl, &mut gm, None)
                    {
                        panic!("{e}");
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("naive_from_tape", &label), |b| {
            b.iter_custom(|iters| {
                timed(&dev, iters, || {
                    if let Err(e) = naive.backward(0.01, &g_dev, kl, &mut gm) {
                        panic!("{e}");
                    }
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, gpu);
criterion_main!(benches);
