//! Fused one-pass CPU step vs the naive multi-pass version, in bytes/s of the traffic a
//! bandwidth-bound pass must move (forward: 12 bytes per weight; backward: 16).
//!
//! `cargo bench -p deelbo-bench --bench fused_cpu`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deelbo_bench::{cpu_threads, data, size_label, sizes};
use deelbo_core::NoiseKey;
use deelbo_core::fused::{
    self, BACKWARD_BYTES_PER_WEIGHT, FORWARD_BYTES_PER_WEIGHT, KlGradScales, Scale, naive,
};

fn forward(c: &mut Criterion) {
    let threads = cpu_threads();
    let mut group = c.benchmark_group("cpu_forward");
    group.sample_size(10);
    for d in sizes() {
        let m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let mut w = vec![0.0f32; d];
        let key = NoiseKey::new(1, 0);
        group.throughput(Throughput::Bytes((FORWARD_BYTES_PER_WEIGHT * d) as u64));
        let label = size_label(d);
        group.bench_function(BenchmarkId::new(format!("fused_{threads}t"), &label), |b| {
            b.iter(|| {
                fused::forward(
                    &m,
                    Some(&mu),
                    Scale::Isotropic(0.01),
                    key,
                    0,
                    &mut w,
                    threads,
                )
                .map(|s| black_box(s.sq_dist))
            })
        });
        group.bench_function(BenchmarkId::new("fused_1t", &label), |b| {
            b.iter(|| {
                fused::forward(&m, Some(&mu), Scale::Isotropic(0.01), key, 0, &mut w, 1)
                    .map(|s| black_box(s.sq_dist))
            })
        });
        group.bench_function(BenchmarkId::new("naive", &label), |b| {
            b.iter(|| {
                naive::forward(&m, Some(&mu), Scale::Isotropic(0.01), key, 0, &mut w)
                    .map(|(s, tape)| black_box((s.sq_dist, tape.eps.len())))
            })
        });
    }
    group.finish();
}

fn backward(c: &mut Criterion) {
    let threads = cpu_threads();
    let mut group = c.benchmark_group("cpu_backward");
    group.sample_size(10);
    let kl = KlGradScales {
        inv_kappa_n: 1e-5,
        variance: 0.01,
    };
    for d in sizes() {
        let m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let g = data(d, 3, 1e-3);
        let mut w = vec![0.0f32; d];
        let mut gm = vec![0.0f32; d];
        let key = NoiseKey::new(1, 0);
        let tape = match naive::forward(&m, Some(&mu), Scale::Isotropic(0.01), key, 0, &mut w) {
            Ok((_, tape)) => tape,
            Err(e) => panic!("naive forward failed: {e}"),
        };
        group.throughput(Throughput::Bytes((BACKWARD_BYTES_PER_WEIGHT * d) as u64));
        let label = size_label(d);
        group.bench_function(BenchmarkId::new(format!("fused_{threads}t"), &label), |b| {
            b.iter(|| {
                fused::backward(
                    &m,
                    Some(&mu),
                    Scale::Isotropic(0.01),
                    key,
                    0,
                    &g,
                    kl,
                    &mut gm,
                    None,
                    threads,
                )
                .map(|s| black_box(s.noise_dot))
            })
        });
        group.bench_function(BenchmarkId::new("naive_from_tape", &label), |b| {
            b.iter(|| {
                naive::backward(&tape, Scale::Isotropic(0.01), &g, kl, &mut gm, None)
                    .map(|s| black_box(s.noise_dot))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward, backward);
criterion_main!(benches);
