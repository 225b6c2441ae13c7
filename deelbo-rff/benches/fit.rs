//! Fit time against the number of examples N (100 ... 20 000) and features R (256 ... 4096).
//!
//! Two groups:
//! - `inner`: one lengthscale — features, Gram eigendecomposition (the `min(N, R)`-sized one),
//!   and the DE-ELBO coordinate ascent. Every point of the lengthscale search costs this much.
//! - `fit`: the whole DE-ELBO fit (a 20-point lengthscale grid plus Brent refinement,
//!   about 35 inner fits), for the sizes where that stays within seconds.
//!
//! Run: `cargo bench -p deelbo-rff --bench fit`. The cost of one inner fit is dominated by the
//! `min(N, R)`-sized eigendecomposition (LAPACK `dsyevd`) once `min(N, R)` reaches ~1000.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use deelbo_core::KappaRule;
use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::elbo::{AscentSettings, ClosedFormElbo};
use deelbo_rff::evidence::NoiseBounds;
use deelbo_rff::search::GridSearch;
use deelbo_rff::spectrum::Spectrum;
use deelbo_rff::{Dataset, Lengthscale, Method, RffConfig, RffFeatures, fit};
use ndarray::{Array1, Array2};

fn sine(n: usize) -> Dataset {
    let x = Array2::from_shape_fn((n, 1), |(i, _)| {
        f64::from(normal_at(NoiseKey::new(0, 1), i as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (3.0 * x[[i, 0]]).sin() + 0.1 * f64::from(normal_at(NoiseKey::new(0, 2), i as u64))
    });
    Dataset::new(x, y).unwrap()
}

fn inner(c: &mut Criterion) {
    let mut g = c.benchmark_group("inner");
    g.sample_size(10);
    let sizes = [
        (100, 256),
        (1000, 256),
        (5000, 256),
        (20_000, 256),
        (1000, 1024),
        (1000, 4096),
    ];
    for (n, r) in sizes {
        let data = sine(n);
        let features = RffFeatures::new(0, r, 1).unwrap();
        let kappa = KappaRule::DataEmphasized.resolve(r, n).unwrap();
        g.bench_with_input(BenchmarkId::new(format!("R={r}"), n), &n, |b, _| {
            b.iter(|| {
                let phi = features
                    .matrix(data.x(), &Lengthscale::Isotropic(0.3))
                    .unwrap();
                let sp = Spectrum::of_features(phi.view(), data.y()).unwrap();
                ClosedFormElbo::new(&sp, kappa, NoiseBounds::default())
                    .unwrap()
                    .maximize(&AscentSettings::default())
                    .unwrap()
                    .objective
            })
        });
    }
    g.finish();
}

fn full(c: &mut Criterion) {
    let mut g = c.benchmark_group("fit");
    g.sample_size(10);
    let search = GridSearch {
        grid_points: 20,
        ..deelbo_rff::fit::DEFAULT_LENGTHSCALE_SEARCH
    };
    for (n, r) in [
        (100, 256),
        (1000, 256),
        (5000, 256),
        (100, 1024),
        (100, 4096),
    ] {
        let data = sine(n);
        let config = RffConfig::new(Method::Elbo(KappaRule::DataEmphasized))
            .with_features(r)
            .with_lengthscale_search(search);
        g.bench_with_input(BenchmarkId::new(format!("R={r}"), n), &n, |b, _| {
            b.iter(|| fit(&data, &config).unwrap().model.objective)
        });
    }
    g.finish();
}

criterion_group!(benches, inner, full);
criterion_main!(benches);
