//! The exact ARD GP against dense references written out here: its log marginal likelihood
//! against the N x N formula, its gradient against central differences, its predictive mean and
//! variance against the textbook formulas, and the fit at a stationary point of the evidence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::Dataset;
use deelbo_rff::gp::{GpSettings, ard_log_evidence, fit_gp_ard};
use ndarray::{Array1, Array2};
use ndarray_linalg::{Determinant, Inverse};

fn data(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let x = Array2::from_shape_fn((n, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(seed, 1), (i * d + k) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (1.5 * x[[i, 0]]).sin() + 0.1 * f64::from(normal_at(NoiseKey::new(seed, 2), i as u64))
    });
    (x, y)
}

fn kernel(a: &Array2<f64>, b: &Array2<f64>, ls: &[f64], s2: f64) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), b.nrows()), |(i, j)| {
        let q: f64 = (0..ls.len())
            .map(|k| ((a[[i, k]] - b[[j, k]]) / ls[k]).powi(2))
            .sum();
        s2 * (-0.5 * q).exp()
    })
}

#[test]
fn log_evidence_and_gradient_match_dense_references() {
    let (x, y) = data(25, 3, 4);
    let theta = [0.3f64, -0.2, 0.7, 0.1, (0.05f64).ln()];
    let (v, g) = ard_log_evidence(x.view(), y.view(), &theta).unwrap();
    let ls: Vec<f64> = theta[..3].iter().map(|t| t.exp()).collect();
    let mut k = kernel(&x, &x, &ls, theta[3].exp());
    for i in 0..25 {
        k[[i, i]] += theta[4].exp();
    }
    let dense = -0.5
        * (y.dot(&k.inv().unwrap().dot(&y))
            + k.det().unwrap().ln()
            + 25.0 * (2.0 * std::f64::consts::PI).ln());
    assert!((v - dense).abs() < 1e-9 * dense.abs(), "{v} vs {dense}");
    for i in 0..theta.len() {
        let h = 1e-5;
        let (mut a, mut b) = (theta, theta);
        a[i] += h;
        b[i] -= h;
        let fd = (ard_log_evidence(x.view(), y.view(), &a).unwrap().0
            - ard_log_evidence(x.view(), y.view(), &b).unwrap().0)
            / (2.0 * h);
        assert!(
            (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
            "entry {i}: {} vs {fd}",
            g[i]
        );
    }
}

#[test]
fn fitted_gp_predicts_with_the_textbook_formulas_at_a_stationary_point() {
    let (x, y) = data(40, 2, 9);
    let train = Dataset::new(x.clone(), y.clone()).unwrap();
    let gp = fit_gp_ard(&train, &GpSettings::default()).unwrap();
    // Known truth: noise std 0.1, x1 irrelevant.
    assert!(
        (gp.noise_std() - 0.1).abs() < 0.05,
        "noise {}",
        gp.noise_std()
    );
    let deelbo_rff::Lengthscale::Ard(l) = gp.lengthscale_original() else {
        panic!("ARD expected")
    };
    assert!(l[1] > 3.0 * l[0], "{l:?}");
    // Predictive mean/variance at new points, written out in original units.
    let (xt, _) = data(7, 2, 10);
    let p = gp.predict(xt.view()).unwrap();
    let mx = Array1::from_shape_fn(2, |k| x.column(k).mean().unwrap());
    let sx = Array1::from_shape_fn(2, |k| x.column(k).std(0.0));
    let (my, sy) = (y.mean().unwrap(), y.std(0.0));
    let z = |a: &Array2<f64>| Array2::from_shape_fn(a.dim(), |(i, k)| (a[[i, k]] - mx[k]) / sx[k]);
    let (zx, zt) = (z(&x), z(&xt));
    let ls_std: Vec<f64> = l.iter().zip(sx.iter()).map(|(a, b)| a / b).collect();
    let s2f = gp.signal_variance_original() / (sy * sy);
    let s2n = (gp.noise_std() / sy).powi(2);
    let mut k = kernel(&zx, &zx, &ls_std, s2f);
    for i in 0..40 {
        k[[i, i]] += s2n;
    }
    let ki = k.inv().unwrap();
    let ks = kernel(&zx, &zt, &ls_std, s2f);
    let ys = y.mapv(|v| (v - my) / sy);
    for j in 0..7 {
        let kj = ks.column(j);
        let mean = my + sy * kj.dot(&ki.dot(&ys));
        let var = sy * sy * (s2f - kj.dot(&ki.dot(&kj)) + s2n);
        assert!(
            (p.mean[j] - mean).abs() < 1e-8 * (1.0 + mean.abs()),
            "{} vs {mean}",
            p.mean[j]
        );
        assert!(
            (p.std[j] - var.sqrt()).abs() < 1e-8,
            "{} vs {}",
            p.std[j],
            var.sqrt()
        );
    }
    // The fit is a KKT point of the evidence: interior coordinates have a zero gradient.
    let mut theta: Vec<f64> = ls_std.iter().map(|v| v.ln()).collect();
    theta.extend([s2f.ln(), s2n.ln()]);
    let (_, g) = ard_log_evidence(zx.view(), ys.view(), &theta).unwrap();
    for (i, gi) in g.iter().enumerate() {
        let at_bound = i < 2 && (theta[i] - 1e3f64.ln()).abs() < 1e-6;
        assert!(
            at_bound || gi.abs() < 0.05,
            "gradient entry {i} = {gi} at {theta:?}"
        );
    }
}
