//! The exact evidence and posterior against independent dense computations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::evidence::{
    ExactPosterior, NoiseBounds, cholesky_lower, log_evidence, maximize_evidence,
    spectral_log_evidence,
};
use deelbo_rff::fit::exact_posterior_from_spectrum;
use deelbo_rff::spectrum::Spectrum;
use deelbo_rff::{Lengthscale, RffError, RffFeatures, RffModel, Standardizer, WeightCovariance};
use ndarray::{Array1, Array2};
use ndarray_linalg::{Cholesky, Inverse, UPLO};

fn data(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let x = Array2::from_shape_fn((n, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(seed, 1), (i * d + k) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        x.row(i).iter().map(|v| (2.0 * v).sin()).sum::<f64>()
            + 0.2 * f64::from(normal_at(NoiseKey::new(seed, 2), i as u64))
    });
    (x, y)
}

/// `ln N(y | 0, K)` with `K = tau Phi Phi^T + s2 I` built and factorized directly (N x N).
fn dense_reference(phi: &Array2<f64>, y: &Array1<f64>, tau: f64, s2: f64) -> f64 {
    let n = y.len();
    let mut k = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            k[[i, j]] = tau * phi.row(i).dot(&phi.row(j)) + if i == j { s2 } else { 0.0 };
        }
    }
    let l = k.cholesky(UPLO::Lower).unwrap();
    // Forward substitution by hand.
    let mut z = Array1::<f64>::zeros(n);
    for i in 0..n {
        let s: f64 = (0..i).map(|j| l[[i, j]] * z[j]).sum();
        z[i] = (y[i] - s) / l[[i, i]];
    }
    let log_det: f64 = (0..n).map(|i| 2.0 * l[[i, i]].ln()).sum();
    -0.5 * (n as f64 * (2.0 * std::f64::consts::PI).ln() + log_det + z.dot(&z))
}

#[test]
fn evidence_matches_a_direct_dense_computation_in_both_forms() {
    // (N, R): N <= R uses the N x N form, N > R the R x R Woodbury form.
    for &(n, r, d) in &[(15usize, 64usize, 1usize), (60, 24, 2), (40, 40, 3)] {
        let (x, y) = data(n, d, n as u64);
        let f = RffFeatures::new(7, r, d).unwrap();
        let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.7)).unwrap();
        for &(tau, s2) in &[(1.0, 0.05), (0.3, 1.2), (5.0, 1e-3)] {
            let reference = dense_reference(&phi, &y, tau, s2);
            let ours = log_evidence(phi.view(), y.view(), tau, s2).unwrap();
            assert!(
                (ours - reference).abs() < 1e-8 * (1.0 + reference.abs()),
                "N={n} R={r} tau={tau} s2={s2}: {ours} vs {reference}"
            );
            let spectrum = Spectrum::of_features(phi.view(), y.view()).unwrap();
            let spectral = spectral_log_evidence(&spectrum, tau, s2);
            assert!(
                (spectral - reference).abs() < 1e-7 * (1.0 + reference.abs()),
                "spectral N={n} R={r}: {spectral} vs {reference}"
            );
            // The search's spectrum without eigenvectors gives the same evidence.
            let values = Spectrum::values_of_features(phi.view(), y.view()).unwrap();
            let from_values = spectral_log_evidence(&values, tau, s2);
            assert!(
                (from_values - reference).abs() < 1e-7 * (1.0 + reference.abs()),
                "values-only spectrum N={n} R={r}: {from_values} vs {reference}"
            );
            assert!(values.weights(phi.view(), &values.cross_targets).is_err());
        }
    }
}

#[test]
fn posterior_mean_and_variance_match_the_dense_inverse() {
    for &(n, r) in &[(12usize, 50usize), (50, 20)] {
        let (x, y) = data(n, 1, 3);
        let f = RffFeatures::new(1, r, 1).unwrap();
        let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.5)).unwrap();
        let (tau, s2) = (0.8, 0.04);
        // Dense: S = (Phi^T Phi/s2 + I/tau)^-1, m = S Phi^T y/s2.
        let mut a = phi.t().dot(&phi) / s2;
        a.diag_mut().mapv_inplace(|v| v + 1.0 / tau);
        let s = a.inv().unwrap();
        let m = s.dot(&phi.t().dot(&y)) / s2;
        let (xs, _) = data(9, 1, 99);
        let phi_star = f.matrix(xs.view(), &Lengthscale::Isotropic(0.5)).unwrap();
        let var_dense: Vec<f64> = phi_star
            .rows()
            .into_iter()
            .map(|p| p.dot(&s.dot(&p)))
            .collect();

        let post = ExactPosterior::fit(phi.view(), y.view(), tau, s2).unwrap();
        let var_chol = post.epistemic_variance(phi_star.view()).unwrap();
        let spectrum = Spectrum::of_features(phi.view(), y.view()).unwrap();
        let (w, cov) = exact_posterior_from_spectrum(&spectrum, phi.view(), tau, s2).unwrap();
        let model = RffModel {
            method: "evidence".into(),
            kappa: None,
            seed: 1,
            features: r,
            lengthscale: Lengthscale::Isotropic(0.5),
            standardizer: Standardizer::identity(1),
            weights: w.to_vec(),
            noise_variance: s2,
            prior_variance: tau,
            covariance: cov.clone(),
            objective: 0.0,
            kappa_report: None,
            warnings: Vec::new(),
        };
        assert!(matches!(cov, WeightCovariance::LowRank { .. }));
        let var_spec = model.epistemic_variance(phi_star.view());
        for j in 0..m.len() {
            assert!((post.mean[j] - m[j]).abs() < 1e-8 * (1.0 + m[j].abs()));
            assert!(
                (w[j] - m[j]).abs() < 1e-7 * (1.0 + m[j].abs()),
                "spectral mean {j} n={n}: {} vs {}",
                w[j],
                m[j]
            );
        }
        for j in 0..var_dense.len() {
            assert!(
                (var_chol[j] - var_dense[j]).abs() < 1e-8,
                "cholesky var {j}"
            );
            assert!(
                (var_spec[j] - var_dense[j]).abs() < 1e-7,
                "spectral var {j}: {} vs {}",
                var_spec[j],
                var_dense[j]
            );
        }
    }
}

#[test]
fn profiled_type_two_ml_beats_a_dense_grid() {
    let (x, y) = data(25, 1, 5);
    let f = RffFeatures::new(2, 128, 1).unwrap();
    let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.6)).unwrap();
    let spectrum = Spectrum::of_features(phi.view(), y.view()).unwrap();
    let opt = maximize_evidence(&spectrum, &NoiseBounds::default()).unwrap();
    let direct = log_evidence(phi.view(), y.view(), opt.tau, opt.noise_variance).unwrap();
    assert!((direct - opt.log_evidence).abs() < 1e-8 * (1.0 + direct.abs()));
    let mut best = f64::NEG_INFINITY;
    for i in 0..60 {
        for j in 0..60 {
            let tau = 10f64.powf(-3.0 + 6.0 * i as f64 / 59.0);
            let s2 = 10f64.powf(-4.0 + 4.0 * j as f64 / 59.0);
            best = best.max(log_evidence(phi.view(), y.view(), tau, s2).unwrap());
        }
    }
    assert!(
        opt.log_evidence >= best - 1e-9,
        "{} < grid {best}",
        opt.log_evidence
    );
    assert!(
        opt.log_evidence - best < 0.05,
        "grid is fine enough to come close"
    );
}

#[test]
fn cholesky_failure_is_a_typed_error() {
    let a = ndarray::array![[1.0, 2.0], [2.0, 1.0]];
    match cholesky_lower("test matrix", &a) {
        Err(RffError::NotPositiveDefinite { name, minor }) => {
            assert_eq!(name, "test matrix");
            assert_eq!(minor, 2);
        }
        other => panic!("expected NotPositiveDefinite, got {other:?}"),
    }
    let phi = Array2::<f64>::ones((3, 2));
    let y = Array1::<f64>::ones(3);
    assert!(matches!(
        log_evidence(phi.view(), y.view(), -1.0, 0.1),
        Err(RffError::Core(deelbo_core::CoreError::NonPositive { .. }))
    ));
    assert!(matches!(
        log_evidence(phi.view(), y.view(), 1.0, 0.0),
        Err(RffError::Core(deelbo_core::CoreError::NonPositive { .. }))
    ));
}

#[test]
fn the_tridiagonal_profile_gives_the_dense_evidence_and_the_spectral_optimum() {
    use deelbo_rff::evidence::EvidenceProfile;
    use deelbo_rff::tridiagonal::TridiagonalProfile;
    // N <= R, the form the lengthscale search uses it in; and one N > R (still exact, just
    // not the cheaper choice there).
    for &(n, r, d) in &[
        (15usize, 64usize, 1usize),
        (40, 40, 3),
        (33, 200, 2),
        (50, 20, 2),
    ] {
        let (x, y) = data(n, d, 100 + n as u64);
        let f = RffFeatures::new(11, r, d).unwrap();
        let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.8)).unwrap();
        let tri = TridiagonalProfile::of_features(phi.view(), y.view()).unwrap();
        // At tau/s_n^2 = 1e10 every method (dense, spectral, Cholesky) is off by ~1e-6 relative
        // (the condition number), so that point gets a looser bar.
        for &(tau, s2, tol) in &[
            (1.0, 0.05, 1e-8),
            (0.3, 1.2, 1e-8),
            (5.0, 1e-3, 1e-8),
            (50.0, 1e-4, 1e-7),
            (1e4, 1e-6, 1e-5),
        ] {
            let reference = dense_reference(&phi, &y, tau, s2);
            let ours = tri.log_evidence(tau, s2);
            assert!(
                (ours - reference).abs() < tol * (1.0 + reference.abs()),
                "N={n} R={r} tau={tau} s2={s2}: {ours} vs {reference}"
            );
        }
        // The profile search lands where the eigendecomposition's does.
        let spectrum = Spectrum::of_features(phi.view(), y.view()).unwrap();
        let bounds = NoiseBounds::default();
        let a = maximize_evidence(&tri, &bounds).unwrap();
        let b = maximize_evidence(&spectrum, &bounds).unwrap();
        assert!(
            (a.log_evidence - b.log_evidence).abs() < 1e-9 * (1.0 + b.log_evidence.abs()),
            "N={n}: {} vs {}",
            a.log_evidence,
            b.log_evidence
        );
        assert!(
            (a.tau / b.tau - 1.0).abs() < 1e-4,
            "N={n}: tau {} vs {}",
            a.tau,
            b.tau
        );
        assert!((a.noise_variance / b.noise_variance - 1.0).abs() < 1e-4);
        // And each profiled point equals the spectral one, up to huge signal-to-noise ratios
        // where N <= R (for N > R, K is singular and its rounded null space, times rho = 1e10,
        // moves the tridiagonal value by ~2e-7 relative: the search uses it only for N <= R).
        let top = if n <= r { 23.0 } else { 16.0 };
        for t in [-10.0, 0.0, 8.0, top] {
            let (p, q) = (tri.profile(t, &bounds), spectrum.profile(t, &bounds));
            assert!(
                (p.log_evidence - q.log_evidence).abs() < 1e-7 * (1.0 + q.log_evidence.abs()),
                "N={n} ln rho={t}: {} vs {}",
                p.log_evidence,
                q.log_evidence
            );
        }
    }
    // Zero targets: no energy, the noise at its lower bound, a finite evidence.
    let (x, _) = data(10, 1, 9);
    let f = RffFeatures::new(1, 32, 1).unwrap();
    let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.5)).unwrap();
    let zeros = Array1::zeros(10);
    let tri = TridiagonalProfile::of_features(phi.view(), zeros.view()).unwrap();
    let o = maximize_evidence(&tri, &NoiseBounds::default()).unwrap();
    assert!(o.log_evidence.is_finite());
    assert!(TridiagonalProfile::of_features(phi.view(), Array1::zeros(9).view()).is_err());
}
