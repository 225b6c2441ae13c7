//! Formula-level checks against dense references computed here, independently of the crate's
//! spectral shortcuts: LA-LML, the MAP validation NLL, the ELBO's mean update at kappa > 1, the
//! flat slope of `J` along interpolating fits at `kappa = D/N`, and the streamed Gram sums.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use deelbo_core::{Kappa, NoiseKey, normal_at};
use deelbo_rff::elbo::{ClosedFormElbo, ElboState};
use deelbo_rff::evidence::NoiseBounds;
use deelbo_rff::fit::{laplace_log_marginal, map_validation_nll};
use deelbo_rff::linalg::GramAccumulator;
use deelbo_rff::spectrum::Spectrum;
use deelbo_rff::{Lengthscale, RffFeatures};
use ndarray::{Array1, Array2, s};
use ndarray_linalg::Solve;

const LN_2PI: f64 = 1.837_877_066_409_345_3;

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

fn features(x: &Array2<f64>, r: usize, l: f64, seed: u64) -> Array2<f64> {
    RffFeatures::new(seed, r, x.ncols())
        .unwrap()
        .matrix(x.view(), &Lengthscale::Isotropic(l))
        .unwrap()
}

/// `(A^T A + c I)^-1 A^T b` by a dense LU solve of the `R x R` system.
fn ridge(a: &Array2<f64>, b: &Array1<f64>, c: f64) -> Array1<f64> {
    let mut m = a.t().dot(a);
    m.diag_mut().mapv_inplace(|v| v + c);
    m.solve_into(a.t().dot(b)).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn la_lml_matches_the_dense_formula() {
    // Both sides of N = R: the spectrum in the example basis (N < R) and the feature basis.
    for &(n, r, l) in &[(25usize, 64usize, 0.7), (90, 40, 1.3), (12, 12, 0.4)] {
        let (x, y) = data(n, 2, n as u64);
        let phi = features(&x, r, l, 3);
        for &(tau, s2) in &[(1.0, 0.05), (0.2, 0.5), (30.0, 1e-3)] {
            let w = ridge(&phi, &y, s2 / tau);
            let res = &y - &phi.dot(&w);
            let h: Vec<f64> = (0..r)
                .map(|j| {
                    (0..n)
                        .map(|i| res[i] * res[i] * phi[[i, j]] * phi[[i, j]])
                        .sum::<f64>()
                        / (s2 * s2)
                })
                .collect();
            let dense = -0.5 * n as f64 * (LN_2PI + s2.ln())
                - res.dot(&res) / (2.0 * s2)
                - w.dot(&w) / (2.0 * tau)
                - 0.5 * h.iter().map(|hj| (1.0 + tau * hj).ln()).sum::<f64>();
            let got = laplace_log_marginal(&phi, &y, tau, s2).unwrap();
            assert!(
                close(got, dense, 1e-9),
                "N={n} R={r} tau={tau} s2={s2}: {got} vs dense {dense}"
            );
        }
    }
    // Typed errors, not panics.
    let (x, y) = data(5, 1, 1);
    let phi = features(&x, 8, 1.0, 1);
    assert!(laplace_log_marginal(&phi, &y, -1.0, 0.1).is_err());
    assert!(laplace_log_marginal(&phi, &y.slice(s![..4]).to_owned(), 1.0, 0.1).is_err());
}

#[test]
fn map_validation_nll_matches_the_dense_formula() {
    for &(n_tr, n_va, r) in &[(30usize, 10usize, 64usize), (80, 20, 32)] {
        let (x, y) = data(n_tr + n_va, 3, 7 + r as u64);
        let phi = features(&x, r, 1.1, 5);
        let (pt, pv) = (phi.slice(s![..n_tr, ..]), phi.slice(s![n_tr.., ..]));
        let (yt, yv) = (y.slice(s![..n_tr]), y.slice(s![n_tr..]));
        for &(tau, s2) in &[(1.0, 0.04), (0.05, 1.0), (100.0, 1e-3)] {
            let w = ridge(&pt.to_owned(), &yt.to_owned(), s2 / tau);
            let pred = pv.dot(&w);
            let dense = (0..n_va)
                .map(|i| 0.5 * (LN_2PI + s2.ln()) + (yv[i] - pred[i]).powi(2) / (2.0 * s2))
                .sum::<f64>()
                / n_va as f64;
            let got = map_validation_nll(pt, yt, pv, yv, tau, s2).unwrap();
            assert!(
                close(got, dense, 1e-9),
                "N={n_tr}+{n_va} R={r} tau={tau} s2={s2}: {got} vs dense {dense}"
            );
        }
    }
}

#[test]
fn elbo_mean_update_at_kappa_above_one_is_the_dense_solve() {
    // dJ/dm = kappa Phi^T (y - Phi m)/s2 - m/tau = 0:
    // m = (kappa Phi^T Phi/s2 + I/tau)^-1 kappa Phi^T y/s2 = (Phi^T Phi + s2/(kappa tau) I)^-1 Phi^T y;
    // dJ/d(sigma^2) = 0: 1/sigma^2 = 1/tau + kappa tr(Phi^T Phi)/(R s2).
    for &(n, r, kappa) in &[(20usize, 128usize, 3.2), (20, 128, 12.8), (70, 48, 2.5)] {
        let (x, y) = data(n, 1, 11 + n as u64);
        let phi = features(&x, r, 0.5, 9);
        let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
        let elbo =
            ClosedFormElbo::new(&sp, Kappa::new(kappa).unwrap(), NoiseBounds::default()).unwrap();
        let (tau, s2) = (0.7, 0.09);
        let mut state = ElboState {
            coeffs: vec![0.0; sp.len()],
            sigma2: 1.0,
            tau,
            noise_variance: s2,
        };
        elbo.update_mean_and_sigma(&mut state);
        let m = sp.weights(phi.view(), &state.coeffs).unwrap();
        let mut a = phi.t().dot(&phi) * (kappa / s2);
        a.diag_mut().mapv_inplace(|v| v + 1.0 / tau);
        let dense = a.solve_into(phi.t().dot(&y) * (kappa / s2)).unwrap();
        let err = (&m - &dense).iter().fold(0.0f64, |e, v| e.max(v.abs()));
        let scale = dense.iter().fold(0.0f64, |e, v| e.max(v.abs()));
        assert!(
            err <= 1e-6 * (1.0 + scale),
            "N={n} R={r} kappa={kappa}: max |m - dense| = {err}"
        );
        let trace: f64 = phi.iter().map(|v| v * v).sum();
        let sigma2 = 1.0 / (1.0 / tau + kappa * trace / (r as f64 * s2));
        assert!(
            close(state.sigma2, sigma2, 1e-12),
            "{} vs {sigma2}",
            state.sigma2
        );
    }
}

/// `J` maximized over `m`, `sigma^2` and `tau` at a fixed noise variance `s2`.
fn j_at_fixed_noise(sp: &Spectrum, kappa: f64, s2: f64) -> f64 {
    let elbo = ClosedFormElbo::new(sp, Kappa::new(kappa).unwrap(), NoiseBounds::default()).unwrap();
    let mut state = ElboState {
        coeffs: vec![0.0; sp.len()],
        sigma2: 1.0,
        tau: 1.0,
        noise_variance: s2,
    };
    let mut j = f64::NEG_INFINITY;
    for _ in 0..10_000 {
        elbo.update_mean_and_sigma(&mut state);
        elbo.update_prior_variance(&mut state);
        let next = elbo.evaluate(&state).unwrap();
        if (next - j).abs() <= 1e-13 * (1.0 + next.abs()) {
            break;
        }
        j = next;
    }
    elbo.evaluate(&state).unwrap()
}

#[test]
fn along_interpolating_fits_j_is_flat_at_kappa_d_over_n() {
    // N = 10 <= R = D = 60: the features interpolate; with the noise held at s2 and the rest
    // maximized exactly, J*(s2) = (D - kappa N)/2 ln s2 + const + o(1) as s2 -> 0
    // (docs/DESIGN.md §5): a positive slope below D/N, zero at D/N, negative above.
    let (n, r) = (10usize, 60usize);
    let (x, y) = data(n, 1, 4);
    let phi = features(&x, r, 0.05, 2);
    let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
    let d_over_n = r as f64 / n as f64;
    let (s_hi, s_lo) = (1e-8f64, 1e-10f64);
    for kappa in [1.0, d_over_n / 2.0, d_over_n, 2.0 * d_over_n] {
        let slope = (j_at_fixed_noise(&sp, kappa, s_hi) - j_at_fixed_noise(&sp, kappa, s_lo))
            / (s_hi.ln() - s_lo.ln());
        let predicted = (r as f64 - kappa * n as f64) / 2.0;
        assert!(
            (slope - predicted).abs() < 0.01 * r as f64,
            "kappa {kappa}: slope {slope}, predicted (D - kappa N)/2 = {predicted}"
        );
    }
}

#[test]
fn streamed_gram_sums_match_the_dense_products_at_any_block_size() {
    // G = A^T A, c = A^T y, y^T y summed over row blocks (tiles of 256 columns, R = 300 spans two
    // tiles with a ragged one) against ndarray's own dense products.
    let (n, k) = (1000usize, 300usize);
    let a = Array2::from_shape_fn((n, k), |(i, j)| {
        f64::from(normal_at(NoiseKey::new(3, 4), (i * k + j) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| f64::from(normal_at(NoiseKey::new(3, 5), i as u64)));
    let (g, c) = (a.t().dot(&a), a.t().dot(&y));
    for block in [1usize, 77, 1000] {
        let mut acc = GramAccumulator::new(k);
        let mut start = 0;
        while start < n {
            let end = (start + block).min(n);
            acc.add(a.slice(s![start..end, ..]), y.slice(s![start..end]))
                .unwrap();
            start = end;
        }
        let sums = acc.finish().unwrap();
        assert_eq!(sums.rows, n);
        let ge = (&sums.gram - &g).iter().fold(0.0f64, |e, v| e.max(v.abs()));
        let ce = (&sums.cross - &c)
            .iter()
            .fold(0.0f64, |e, v| e.max(v.abs()));
        assert!(
            ge < 1e-10 * n as f64 && ce < 1e-10 * n as f64,
            "block {block}: {ge} {ce}"
        );
        assert!(close(sums.yy, y.dot(&y), 1e-12));
        // Symmetric to the bit (the lower triangle mirrors the upper one).
        assert_eq!(sums.gram, sums.gram.t());
    }
}

#[test]
fn the_vectorized_cosine_matches_the_c_library() {
    // Phases from tiny to the reduction limit, both signs, plus values past the limit and
    // non-finite ones (the C library path).
    let mut z: Vec<f64> = (0..200_000)
        .map(|i| {
            let u = f64::from(normal_at(NoiseKey::new(8, 1), i as u64));
            u * 10f64.powf((i % 7) as f64 - 1.0)
        })
        .collect();
    z.extend([0.0, -0.0, 1e-300, 999_999.9, -999_999.9, 2e6, -3e12, 1e300]);
    let mut cos = z.clone();
    deelbo_rff::trig::cos_scaled_in_place(&mut cos, 1.0);
    let (mut c2, mut s2) = (vec![0.0; z.len()], z.clone());
    deelbo_rff::trig::sin_cos_scaled_in_place(&mut s2, 1.0, &mut c2);
    for (i, &v) in z.iter().enumerate() {
        // Absolute error: the reduced argument carries ~ulp(|v|) of the input's own rounding.
        let tol = 4e-16 + 2.0 * f64::EPSILON * v.abs() * 1e-6;
        assert!(
            (cos[i] - v.cos()).abs() <= tol,
            "cos({v}) = {} vs {}",
            cos[i],
            v.cos()
        );
        assert_eq!(cos[i].to_bits(), c2[i].to_bits(), "cos of sin_cos at {v}");
        assert!(
            (s2[i] - v.sin()).abs() <= tol,
            "sin({v}) = {} vs {}",
            s2[i],
            v.sin()
        );
    }
    let mut nan = vec![f64::NAN, f64::INFINITY, 1.0];
    deelbo_rff::trig::cos_scaled_in_place(&mut nan, 2.0);
    assert!(nan[0].is_nan() && nan[1].is_nan());
    assert!((nan[2] - 2.0 * 1f64.cos()).abs() < 1e-15);
}
