//! Random Fourier features against the exact RBF kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::features::rbf_kernel;
use deelbo_rff::{Lengthscale, RffFeatures};
use ndarray::Array2;

fn max_kernel_error(r: usize, ls: &Lengthscale, d: usize, seed: u64) -> f64 {
    let x = Array2::from_shape_fn((30, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(11, 0), (i * d + k) as u64))
    });
    let f = RffFeatures::new(seed, r, d).unwrap();
    let phi = f.matrix(x.view(), ls).unwrap();
    let approx = phi.dot(&phi.t());
    let exact = rbf_kernel(x.view(), x.view(), ls).unwrap();
    (&approx - &exact)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

#[test]
fn feature_kernel_approaches_the_rbf_kernel_as_r_grows() {
    for (ls, d) in [
        (Lengthscale::Isotropic(0.8), 1),
        (Lengthscale::Ard(vec![0.5, 2.0]), 2),
    ] {
        // Average over 3 feature seeds to smooth out luck; the error shrinks like 1/sqrt(R).
        let err = |r| (0..3).map(|s| max_kernel_error(r, &ls, d, s)).sum::<f64>() / 3.0;
        let (e64, e1k, e16k) = (err(64), err(1024), err(16384));
        assert!(e1k < e64 / 2.5, "{ls:?}: R=1024 {e1k} vs R=64 {e64}");
        assert!(e16k < e1k / 2.5, "{ls:?}: R=16384 {e16k} vs R=1024 {e1k}");
        assert!(e16k < 0.06, "{ls:?}: R=16384 max error {e16k}");
    }
}

#[test]
fn features_are_deterministic_and_seeded() {
    let a = RffFeatures::new(5, 32, 2).unwrap();
    let b = RffFeatures::new(5, 32, 2).unwrap();
    let c = RffFeatures::new(6, 32, 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.frequencies(), c.frequencies());
    // ||phi(x)||^2 = (2/R) sum cos^2 is close to 1 for large R.
    let x = ndarray::array![[0.3, -1.0]];
    let f = RffFeatures::new(1, 4096, 2).unwrap();
    let phi = f.matrix(x.view(), &Lengthscale::Isotropic(1.0)).unwrap();
    let norm = phi.row(0).dot(&phi.row(0));
    assert!((norm - 1.0).abs() < 0.05, "{norm}");
    assert!(RffFeatures::new(0, 0, 1).is_err());
    assert!(f.matrix(x.view(), &Lengthscale::Isotropic(-1.0)).is_err());
    assert!(f.matrix(x.view(), &Lengthscale::Ard(vec![1.0])).is_err());
}
