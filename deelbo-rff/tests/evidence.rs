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

/// A double-double number `hi + lo` (|lo| <= ulp(hi)/2): about 32 significant digits, enough
/// for a reference that stays exact where `K = Phi Phi^T` is numerically singular in f64.
#[derive(Clone, Copy, Debug)]
struct Dd {
    hi: f64,
    lo: f64,
}

impl Dd {
    fn new(v: f64) -> Self {
        Self { hi: v, lo: 0.0 }
    }
    fn renorm(a: f64, b: f64) -> Self {
        let hi = a + b;
        Self {
            hi,
            lo: b - (hi - a),
        }
    }
    /// `a + b` exactly as a pair (Knuth's two-sum).
    fn two_sum(a: f64, b: f64) -> Self {
        let s = a + b;
        let v = s - a;
        Self {
            hi: s,
            lo: (a - (s - v)) + (b - v),
        }
    }
    /// `a * b` exactly as a pair (the fused multiply-add residual).
    fn two_prod(a: f64, b: f64) -> Self {
        let p = a * b;
        Self {
            hi: p,
            lo: a.mul_add(b, -p),
        }
    }
    fn add(self, o: Self) -> Self {
        let s = Self::two_sum(self.hi, o.hi);
        Self::renorm(s.hi, s.lo + self.lo + o.lo)
    }
    fn neg(self) -> Self {
        Self {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
    fn sub(self, o: Self) -> Self {
        self.add(o.neg())
    }
    fn mul(self, o: Self) -> Self {
        let p = Self::two_prod(self.hi, o.hi);
        Self::renorm(p.hi, p.lo + self.hi * o.lo + self.lo * o.hi)
    }
    fn div(self, o: Self) -> Self {
        let q1 = self.hi / o.hi;
        let r = self.sub(o.mul(Self::new(q1)));
        let q2 = r.hi / o.hi;
        let r = r.sub(o.mul(Self::new(q2)));
        Self::renorm(q1, q2).add(Self::new(r.hi / o.hi))
    }
    fn sqrt(self) -> Self {
        let x = self.hi.sqrt();
        let r = self.sub(Self::two_prod(x, x));
        Self::renorm(x, r.hi / (2.0 * x))
    }
    /// `ln(hi + lo) = ln hi + ln(1 + lo/hi)`, to f64 precision of the logarithm itself.
    fn ln(self) -> f64 {
        self.hi.ln() + (self.lo / self.hi).ln_1p()
    }
}

/// The profiled evidence at `ln rho = t` (noise `s2 = Q/N` clamped to `bounds`) computed in
/// double-double from `phi` and `y`: `K` with exact products, `I + rho K` by Cholesky. Also
/// returns the first-order change of that value when `K` moves by one f64 rounding of its
/// largest eigenvalue, `eps lambda_max`, in its worst direction:
/// `1/2 rho eps lambda_max [tr (I + rho K)^-1 + N ||(I + rho K)^-1 y||^2 / Q]`, the accuracy any
/// f64 method that stores `K` can be held to.
#[allow(clippy::needless_range_loop)] // triangular solves read as the textbook index loops
fn exact_profile(phi: &Array2<f64>, y: &Array1<f64>, t: f64, bounds: &NoiseBounds) -> (f64, f64) {
    let n = y.len();
    let rho = t.exp();
    let mut a = vec![Dd::new(0.0); n * n];
    let mut lambda_max_bound: f64 = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let mut k = Dd::new(0.0);
            for (p, q) in phi.row(i).iter().zip(phi.row(j)) {
                k = k.add(Dd::two_prod(*p, *q));
            }
            let mut v = Dd::new(rho).mul(k);
            if i == j {
                v = v.add(Dd::new(1.0));
                lambda_max_bound += k.hi; // tr K >= lambda_max
            }
            a[i * n + j] = v;
        }
    }
    // Cholesky, lower triangle in place.
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d = d.sub(a[j * n + k].mul(a[j * n + k]));
        }
        let l = d.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v = v.sub(a[i * n + k].mul(a[j * n + k]));
            }
            a[i * n + j] = v.div(l);
        }
    }
    let mut z = vec![Dd::new(0.0); n];
    for i in 0..n {
        let mut v = Dd::new(y[i]);
        for k in 0..i {
            v = v.sub(a[i * n + k].mul(z[k]));
        }
        z[i] = v.div(a[i * n + i]);
    }
    let q = z.iter().fold(Dd::new(0.0), |s, v| s.add(v.mul(*v)));
    let log_det = 2.0 * (0..n).map(|i| a[i * n + i].ln()).sum::<f64>();
    let s2 = bounds.clamp_variance(q.hi / n as f64);
    let s2 = if s2 == q.hi / n as f64 {
        q.div(Dd::new(n as f64))
    } else {
        Dd::new(s2)
    };
    let value = -0.5
        * (n as f64 * (2.0 * std::f64::consts::PI).ln()
            + n as f64 * s2.ln()
            + log_det
            + q.div(s2).hi);
    // The sensitivity, in f64 from the factor's leading parts: tr A^-1 = ||L^-1||_F^2 and
    // ||A^-1 y||^2 = ||L^-T z||^2.
    let l = |i: usize, j: usize| a[i * n + j].hi;
    let mut trace = 0.0;
    for c in 0..n {
        let mut col = vec![0.0; n];
        for i in c..n {
            let mut v = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                v -= l(i, k) * col[k];
            }
            col[i] = v / l(i, i);
        }
        trace += col.iter().map(|v| v * v).sum::<f64>();
    }
    let mut w = vec![0.0; n];
    for i in (0..n).rev() {
        let mut v = z[i].hi;
        for k in i + 1..n {
            v -= l(k, i) * w[k];
        }
        w[i] = v / l(i, i);
    }
    let solved = w.iter().map(|v| v * v).sum::<f64>();
    let sensitivity =
        0.5 * rho * f64::EPSILON * lambda_max_bound * (trace + n as f64 * solved / q.hi);
    (value, sensitivity)
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
        // And each profiled point equals the exact one (double-double), to 1e-10 relative plus
        // what one rounding of K moves it by. Where K is numerically singular (cond ~1e31 for
        // N = 15 points in 1-D) and rho = 1e10, that term is ~3e-4 nats and no f64 method can
        // be held to better: the spectral value is then 1.1e-5 off, the tridiagonal 3e-7
        // (a 60-digit mpmath evaluation agrees with the double-double one to 1e-10).
        for t in [-10.0, 0.0, 8.0, 16.0, 23.0] {
            let (exact, sensitivity) = exact_profile(&phi, &y, t, &bounds);
            let bar = 1e-10 * (1.0 + exact.abs()) + sensitivity;
            for (name, got) in [
                ("tridiagonal", tri.profile(t, &bounds).log_evidence),
                ("spectral", spectrum.profile(t, &bounds).log_evidence),
            ] {
                assert!(
                    (got - exact).abs() < bar,
                    "N={n} R={r} ln rho={t} {name}: {got} vs exact {exact} (bar {bar:e})"
                );
            }
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
