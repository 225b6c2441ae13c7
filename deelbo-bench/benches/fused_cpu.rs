//! The fused CPU step against its in-process memory ceiling and the eager multi-pass version,
//! every row on the same threads (the machine's available parallelism), in bytes/s of the pass's
//! traffic (forward 12 bytes per weight, backward 16, backward + SGD 24), so the rows of a
//! group compare directly: `fused / ceiling` is the fraction of the memory floor reached, and
//! `eager / fused` is what fusion alone buys. `noise` generates the forward's noise alone.
//!
//! `cargo bench -p deelbo-bench --bench fused_cpu` (`deelbo-bench-report` prints the same
//! rows as fractions, interleaved and with medians).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deelbo_bench::stream::{self, Stores, for_each_range};
use deelbo_bench::{cpu_threads, data, eager, size_label, sizes};
use deelbo_core::NoiseKey;
use deelbo_core::fused::{
    self, BACKWARD_BYTES_PER_WEIGHT, BACKWARD_SGD_BYTES_PER_WEIGHT, FORWARD_BYTES_PER_WEIGHT,
    KlGradScales, Scale, SgdMomentum,
};
use deelbo_core::{InstructionSet, fill_normals_on};

const SIGMA: f32 = 0.01;
const KL: KlGradScales = KlGradScales {
    inv_kappa_n: 1e-5,
    variance: 0.01,
};
const SGD: SgdMomentum = SgdMomentum {
    lr: 1e-3,
    momentum: 0.9,
};

fn forward(c: &mut Criterion) {
    let threads = cpu_threads();
    let mut group = c.benchmark_group(format!("cpu_forward_{threads}t"));
    group.sample_size(10);
    let key = NoiseKey::new(1, 0);
    for d in sizes() {
        let m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let mut w = vec![0.0f32; d];
        let mut tape = eager::Tape::new(d);
        group.throughput(Throughput::Bytes((FORWARD_BYTES_PER_WEIGHT * d) as u64));
        let label = size_label(d);
        for stores in [Stores::Regular, Stores::Streaming] {
            let id = BenchmarkId::new(format!("ceiling_{}", stores.name()), &label);
            group.bench_function(id, |b| {
                b.iter(|| stream::read2_write1(&m, &mu, &mut w, threads, stores))
            });
        }
        for isa in InstructionSet::available() {
            let id = BenchmarkId::new(format!("fused_{}", isa.name()), &label);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let iso = Scale::Isotropic(SIGMA);
                    fused::forward_on(isa, &m, Some(&mu), iso, key, 0, &mut w, threads)
                        .map(|s| black_box(s.sq_dist))
                })
            });
        }
        group.bench_function(BenchmarkId::new("eager", &label), |b| {
            b.iter(|| {
                black_box(eager::forward(
                    &m, &mu, SIGMA, key, &mut w, &mut tape, threads,
                ))
            })
        });
        let isa = InstructionSet::detected();
        group.bench_function(
            BenchmarkId::new(format!("noise_{}", isa.name()), &label),
            |b| {
                b.iter(|| {
                    for_each_range(d, threads, [&mut w[..]], |s, _, [e]| {
                        fill_normals_on(isa, key, s as u64, e)
                    })
                })
            },
        );
    }
    group.finish();
}

fn backward(c: &mut Criterion) {
    let threads = cpu_threads();
    let mut group = c.benchmark_group(format!("cpu_backward_{threads}t"));
    group.sample_size(10);
    let key = NoiseKey::new(1, 0);
    for d in sizes() {
        let m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let g = data(d, 3, 1e-3);
        let mut w = vec![0.0f32; d];
        let mut gm = vec![0.0f32; d];
        let mut tape = eager::Tape::new(d);
        eager::forward(&m, &mu, SIGMA, key, &mut w, &mut tape, threads);
        group.throughput(Throughput::Bytes((BACKWARD_BYTES_PER_WEIGHT * d) as u64));
        let label = size_label(d);
        for stores in [Stores::Regular, Stores::Streaming] {
            let id = BenchmarkId::new(format!("ceiling_{}", stores.name()), &label);
            group.bench_function(id, |b| {
                b.iter(|| stream::read3_write1(&g, &m, &mu, &mut gm, threads, stores))
            });
        }
        group.bench_function(BenchmarkId::new("fused", &label), |b| {
            b.iter(|| {
                let iso = Scale::Isotropic(SIGMA);
                fused::backward(&m, Some(&mu), iso, key, 0, &g, KL, &mut gm, None, threads)
                    .map(|s| black_box(s.noise_dot))
            })
        });
        group.bench_function(BenchmarkId::new("eager", &label), |b| {
            b.iter(|| black_box(eager::backward(&g, &mut tape, KL, &mut gm, threads)))
        });
    }
    group.finish();
}

fn backward_sgd(c: &mut Criterion) {
    let threads = cpu_threads();
    let mut group = c.benchmark_group(format!("cpu_backward_sgd_{threads}t"));
    group.sample_size(10);
    let key = NoiseKey::new(1, 0);
    for d in sizes() {
        let mut m = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let g = data(d, 3, 1e-3);
        let mut u = vec![0.0f32; d];
        let mut w = vec![0.0f32; d];
        let mut gm = vec![0.0f32; d];
        let mut tape = eager::Tape::new(d);
        eager::forward(&m, &mu, SIGMA, key, &mut w, &mut tape, threads);
        group.throughput(Throughput::Bytes(
            (BACKWARD_SGD_BYTES_PER_WEIGHT * d) as u64,
        ));
        let label = size_label(d);
        group.bench_function(BenchmarkId::new("ceiling_regular", &label), |b| {
            b.iter(|| stream::read4_write2(&g, &mu, &mut m, &mut u, threads))
        });
        group.bench_function(BenchmarkId::new("fused", &label), |b| {
            b.iter(|| {
                let iso = Scale::Isotropic(SIGMA);
                fused::backward_sgd(
                    &mut m,
                    &mut u,
                    Some(&mu),
                    iso,
                    key,
                    0,
                    &g,
                    KL,
                    SGD,
                    None,
                    threads,
                )
                .map(|s| black_box(s.noise_dot))
            })
        });
        group.bench_function(BenchmarkId::new("eager", &label), |b| {
            b.iter(|| {
                eager::backward(&g, &mut tape, KL, &mut gm, threads);
                eager::sgd_step(&mut m, &mut u, &gm, SGD, threads);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward, backward, backward_sgd);
criterion_main!(benches);
