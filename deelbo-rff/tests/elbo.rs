//! The closed-form (DE-)ELBO: agreement with the core's formulas, monotone exact coordinate
//! updates, the lower bound at kappa = 1, the envelope gradient, and the kappa > D/N boundary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use deelbo_core::Kappa;
use deelbo_core::{NoiseKey, normal_at, uniform_at};
use deelbo_rff::elbo::{
    AscentSettings, ClosedFormElbo, ElboState, dense_objective, log_lengthscale_gradient,
};
use deelbo_rff::evidence::{NoiseBounds, maximize_evidence, spectral_log_evidence};
use deelbo_rff::spectrum::Spectrum;
use deelbo_rff::{Lengthscale, RffFeatures};
use ndarray::{Array1, Array2};

fn data(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let x = Array2::from_shape_fn((n, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(seed, 1), (i * d + k) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (3.0 * x[[i, 0]]).sin() + 0.1 * f64::from(normal_at(NoiseKey::new(seed, 2), i as u64))
    });
    (x, y)
}

fn u(seed: u64, i: u64) -> f64 {
    uniform_at(NoiseKey::new(seed, 77), i)
}

#[test]
fn spectral_objective_equals_the_core_based_dense_objective() {
    for &(n, r) in &[(20usize, 128usize), (80, 32)] {
        let (x, y) = data(n, 1, 4);
        let f = RffFeatures::new(3, r, 1).unwrap();
        let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.4)).unwrap();
        let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
        for (t, &kappa) in [1.0, 6.4, 51.2].iter().enumerate() {
            let elbo = ClosedFormElbo::new(&sp, Kappa::new(kappa).unwrap(), NoiseBounds::default())
                .unwrap();
            // A state off the optimum: shrinkage coefficients perturbed by up to +-50 % each (so
            // directions with tiny singular values keep tiny coefficients, as every estimate has).
            let coeffs: Vec<f64> = sp
                .shrunk_coefficients(2.0, 0.05)
                .iter()
                .enumerate()
                .map(|(i, c)| c * (0.5 + u(t as u64, i as u64)))
                .collect();
            let state = ElboState {
                coeffs: coeffs.clone(),
                sigma2: 0.013,
                tau: 0.37,
                noise_variance: 0.05,
            };
            let m = sp.weights(phi.view(), &coeffs).unwrap();
            // ||m||^2 = ||m~||^2 (V has orthonormal columns).
            let msq: f64 = coeffs.iter().map(|c| c * c).sum();
            assert!((m.dot(&m) - msq).abs() < 1e-9 * (1.0 + msq));
            let dense =
                dense_objective(phi.view(), y.view(), m.view(), 0.013, 0.37, 0.05, kappa).unwrap();
            let spectral = elbo.evaluate(&state).unwrap();
            assert!(
                (dense - spectral).abs() < 1e-8 * (1.0 + dense.abs()),
                "N={n} R={r} kappa={kappa}: dense {dense} vs spectral {spectral}"
            );
        }
    }
}

#[test]
fn every_coordinate_update_is_a_monotone_exact_block_maximizer() {
    for &(n, r, kappa) in &[
        (20usize, 256usize, 1.0),
        (20, 256, 12.8),
        (20, 256, 51.2),
        (60, 40, 3.0),
        (15, 64, 40.0),
    ] {
        let (x, y) = data(n, 1, n as u64 + r as u64);
        let f = RffFeatures::new(9, r, 1).unwrap();
        let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.3)).unwrap();
        let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
        let elbo =
            ClosedFormElbo::new(&sp, Kappa::new(kappa).unwrap(), NoiseBounds::default()).unwrap();
        let mut state = ElboState {
            coeffs: (0..sp.len())
                .map(|i| 0.3 * (u(5, i as u64) - 0.5))
                .collect(),
            sigma2: 0.5,
            tau: 2.0,
            noise_variance: 0.9,
        };
        let mut j = elbo.evaluate(&state).unwrap();
        let tol = |j: f64| 1e-11 * (1.0 + j.abs());
        for _ in 0..40 {
            for step in 0..3 {
                match step {
                    0 => elbo.update_mean_and_sigma(&mut state),
                    1 => elbo.update_prior_variance(&mut state),
                    _ => elbo.update_noise(&mut state),
                }
                let next = elbo.evaluate(&state).unwrap();
                assert!(
                    next >= j - tol(j),
                    "kappa {kappa}: update {step} lowered J from {j} to {next}"
                );
                j = next;
                // Block optimality: nudging the updated block lowers J.
                for factor in [1.0 - 1e-3, 1.0 + 1e-3] {
                    let mut p = state.clone();
                    match step {
                        0 => {
                            p.sigma2 *= factor;
                            let mut q = state.clone();
                            q.coeffs.iter_mut().for_each(|c| *c *= factor);
                            assert!(elbo.evaluate(&q).unwrap() <= j + tol(j), "mean not optimal");
                        }
                        1 => p.tau *= factor,
                        _ => p.noise_variance *= factor,
                    }
                    assert!(
                        elbo.evaluate(&p).unwrap() <= j + tol(j),
                        "block {step} not optimal (kappa {kappa})"
                    );
                }
            }
        }
        let opt = elbo.maximize(&AscentSettings::default()).unwrap();
        assert!(
            opt.objective >= j - tol(j),
            "full ascent {} below 40 sweeps {j}",
            opt.objective
        );
    }
}

#[test]
fn elbo_at_kappa_one_is_below_the_exact_evidence() {
    let one = Kappa::new(1.0).unwrap();
    for &(n, r) in &[(20usize, 512usize), (70, 30)] {
        let (x, y) = data(n, 1, 21);
        let f = RffFeatures::new(2, r, 1).unwrap();
        for &l in &[0.1, 0.3, 1.0] {
            let phi = f.matrix(x.view(), &Lengthscale::Isotropic(l)).unwrap();
            let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
            let elbo = ClosedFormElbo::new(&sp, one, NoiseBounds::default()).unwrap();
            // Same hyperparameters: the best isotropic q stays strictly below ln p(y | tau, s2).
            for &(tau, s2) in &[(0.5, 0.02), (2.0, 0.3), (0.05, 1.0)] {
                let mut state = ElboState {
                    coeffs: vec![0.0; sp.len()],
                    sigma2: 1.0,
                    tau,
                    noise_variance: s2,
                };
                elbo.update_mean_and_sigma(&mut state);
                let j = elbo.evaluate(&state).unwrap();
                let ev = spectral_log_evidence(&sp, tau, s2);
                assert!(
                    j < ev,
                    "l={l} tau={tau} s2={s2}: ELBO {j} above evidence {ev}"
                );
            }
            // And at the optima over the hyperparameters.
            let jmax = elbo.maximize(&AscentSettings::default()).unwrap().objective;
            let evmax = maximize_evidence(&sp, &NoiseBounds::default())
                .unwrap()
                .log_evidence;
            assert!(
                jmax <= evmax,
                "l={l}: max ELBO {jmax} above max evidence {evmax}"
            );
        }
    }
}

/// `J*` at per-dimension lengthscales, inner optimum to tight tolerance.
fn j_star(
    f: &RffFeatures,
    x: &Array2<f64>,
    y: &Array1<f64>,
    ls: &[f64],
    kappa: f64,
) -> (f64, ElboState, Spectrum, Array2<f64>) {
    let phi = f.matrix(x.view(), &Lengthscale::Ard(ls.to_vec())).unwrap();
    let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
    let settings = AscentSettings {
        tolerance: 1e-15,
        max_sweeps: 200_000,
        ..Default::default()
    };
    let opt = ClosedFormElbo::new(&sp, Kappa::new(kappa).unwrap(), NoiseBounds::default())
        .unwrap()
        .maximize(&settings)
        .unwrap();
    (opt.objective, opt.state, sp, phi)
}

#[test]
fn envelope_gradient_matches_finite_differences_of_the_maximized_objective() {
    let (x, y) = data(30, 2, 8);
    let f = RffFeatures::new(4, 64, 2).unwrap();
    let ls = [0.7, 1.6];
    for kappa in [2.0, 8.0] {
        let (_, state, sp, phi) = j_star(&f, &x, &y, &ls, kappa);
        let m = sp.weights(phi.view(), &state.coeffs).unwrap();
        let fs = f
            .matrix_with_sines(x.view(), &Lengthscale::Ard(ls.to_vec()))
            .unwrap();
        let g = log_lengthscale_gradient(
            x.view(),
            f.frequencies(),
            fs.phi.view(),
            fs.sines.view(),
            y.view(),
            m.view(),
            state.sigma2,
            state.noise_variance,
            kappa,
            &ls,
        );
        let h = 1e-4f64;
        for k in 0..2 {
            let mut up = ls;
            let mut down = ls;
            up[k] *= h.exp();
            down[k] *= (-h).exp();
            let fd =
                (j_star(&f, &x, &y, &up, kappa).0 - j_star(&f, &x, &y, &down, kappa).0) / (2.0 * h);
            assert!(
                (g[k] - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                "kappa {kappa}, dim {k}: envelope {} vs finite difference {fd}",
                g[k]
            );
        }
    }
}

#[test]
fn kappa_above_d_over_n_makes_the_objective_unbounded_in_the_noise() {
    // N = 20 <= R = 256: the features can interpolate. Along the interpolating solution
    // J ~ (R - kappa N)/2 ln s_n^2 + const as s_n -> 0, so for kappa > R/N the supremum is +inf:
    // started near the noise floor, the ascent stays on it and J rises by
    // (kappa N - R)/2 ln(floor_a^2/floor_b^2) when the floor drops. For kappa < R/N the optimum is
    // interior and ignores the floor and the start.
    let (x, y) = data(20, 1, 3);
    let (n, r) = (20.0, 256.0);
    let f = RffFeatures::new(1, 256, 1).unwrap();
    // A short lengthscale keeps the Gram matrix well conditioned, so the asymptotic regime
    // starts at a moderate noise level.
    let phi = f.matrix(x.view(), &Lengthscale::Isotropic(0.05)).unwrap();
    let sp = Spectrum::of_features(phi.view(), y.view()).unwrap();
    let run = |kappa: f64, floor: f64, start: f64| {
        let b = NoiseBounds {
            min_std: floor,
            max_std: 10.0,
        };
        let settings = AscentSettings {
            initial_noise_variance: start,
            ..Default::default()
        };
        ClosedFormElbo::new(&sp, Kappa::new(kappa).unwrap(), b)
            .unwrap()
            .maximize(&settings)
            .unwrap()
    };
    for kappa in [40.0, 100.0] {
        let (a, b) = (run(kappa, 1e-3, 1e-6), run(kappa, 1e-5, 1e-10));
        assert!(
            (a.state.noise_variance.sqrt() - 1e-3).abs() < 1e-12,
            "kappa {kappa} left the floor"
        );
        let predicted = (kappa * n - r) / 2.0 * (1e-6f64 / 1e-10).ln();
        let gained = b.objective - a.objective;
        assert!(
            (gained - predicted).abs() < 0.01 * predicted,
            "kappa {kappa}: J rose by {gained}, asymptotics say {predicted}"
        );
    }
    // At a longer lengthscale the Gram matrix is ill conditioned, the asymptotic regime starts far
    // below the floor, and the ascent from the default start ends at an interior local maximum.
    let phi_long = f.matrix(x.view(), &Lengthscale::Isotropic(0.3)).unwrap();
    let sp_long = Spectrum::of_features(phi_long.view(), y.view()).unwrap();
    let local = ClosedFormElbo::new(
        &sp_long,
        Kappa::new(40.0).unwrap(),
        NoiseBounds {
            min_std: 1e-3,
            max_std: 10.0,
        },
    )
    .unwrap()
    .maximize(&AscentSettings::default())
    .unwrap();
    assert!(
        local.state.noise_variance.sqrt() > 0.01,
        "{}",
        local.state.noise_variance.sqrt()
    );
    for start in [1e-6, 0.1] {
        let (a, b) = (run(6.4, 1e-3, start), run(6.4, 1e-5, start));
        assert!(
            a.state.noise_variance.sqrt() > 0.02,
            "kappa < R/N keeps an interior noise"
        );
        assert!((a.objective - b.objective).abs() < 1e-6 * (1.0 + a.objective.abs()));
    }
}
