//! The hyperparameter objectives (one Cholesky per evaluation) against independent references:
//! the dense evidence, the core-based dense ELBO at the closed-form posterior, and central
//! finite differences of the value for every gradient entry, in both the `N <= R` and `N > R`
//! forms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::elbo::dense_objective;
use deelbo_rff::evidence::log_evidence;
use deelbo_rff::hyper::{HyperObjective, HyperProblem, PosteriorFamily};
use deelbo_rff::{Lengthscale, RffFeatures};
use ndarray::{Array1, Array2};

fn data(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let x = Array2::from_shape_fn((n, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(seed, 1), (i * d + k) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (2.0 * x[[i, 0]]).sin()
            + 0.3 * x[[i, d - 1]]
            + 0.2 * f64::from(normal_at(NoiseKey::new(seed, 2), i as u64))
    });
    (x, y)
}

const OBJECTIVES: [HyperObjective; 4] = [
    HyperObjective::Evidence,
    HyperObjective::Elbo {
        kappa: 1.0,
        family: PosteriorFamily::Isotropic,
    },
    HyperObjective::Elbo {
        kappa: 3.5,
        family: PosteriorFamily::Isotropic,
    },
    HyperObjective::Elbo {
        kappa: 2.0,
        family: PosteriorFamily::Diagonal,
    },
];

#[test]
fn values_match_the_dense_references_in_both_forms() {
    for (n, r) in [(30, 64), (90, 40)] {
        let (x, y) = data(n, 3, 7);
        let f = RffFeatures::new(3, r, 3).unwrap();
        let ls = [0.7f64, 1.3, 2.1];
        let (tau, s2) = (0.8f64, 0.05f64);
        let theta = [ls[0].ln(), ls[1].ln(), ls[2].ln(), tau.ln(), s2.ln()];
        let phi = f.matrix(x.view(), &Lengthscale::Ard(ls.to_vec())).unwrap();
        for obj in OBJECTIVES {
            let p = HyperProblem::new(x.view(), y.view(), &f, obj, true).unwrap();
            let v = p.evaluate(&theta, false).unwrap();
            let reference = match obj {
                HyperObjective::Evidence => log_evidence(phi.view(), y.view(), tau, s2).unwrap(),
                HyperObjective::Elbo { kappa, family } => {
                    // The closed-form q: m = posterior mean at noise s2/kappa; v from the docs.
                    let s2e = s2 / kappa;
                    let mut a = phi.t().dot(&phi) / s2e;
                    for j in 0..r {
                        a[[j, j]] += 1.0 / tau;
                    }
                    use ndarray_linalg::Solve;
                    let m = a.solve(&(phi.t().dot(&y) / s2e)).unwrap();
                    for (u, w) in m.iter().zip(&v.mean) {
                        assert!((u - w).abs() < 1e-8 * (1.0 + u.abs()), "mean {u} vs {w}");
                    }
                    match family {
                        PosteriorFamily::Isotropic => {
                            let sigma2 = v.variances[0];
                            dense_objective(phi.view(), y.view(), m.view(), sigma2, tau, s2, kappa)
                                .unwrap()
                        }
                        PosteriorFamily::Diagonal => {
                            // kappa E_q[log lik] - KL with a diagonal q, written out.
                            let fitted = phi.dot(&m);
                            let mut e = 0.0;
                            for i in 0..n {
                                let mut var = 0.0;
                                for j in 0..r {
                                    var += phi[[i, j]].powi(2) * v.variances[j];
                                }
                                e += -0.5 * (2.0 * std::f64::consts::PI * s2).ln()
                                    - ((y[i] - fitted[i]).powi(2) + var) / (2.0 * s2);
                            }
                            let kl: f64 = (0..r)
                                .map(|j| {
                                    let vj = v.variances[j];
                                    0.5 * ((vj + m[j] * m[j]) / tau - 1.0 + (tau / vj).ln())
                                })
                                .sum();
                            // The variances are the exact maximizers: each 1/v_j.
                            for j in 0..r {
                                let g: f64 = phi.column(j).dot(&phi.column(j));
                                let want = 1.0 / (1.0 / tau + kappa * g / s2);
                                assert!((v.variances[j] - want).abs() < 1e-12 * want);
                            }
                            kappa * e - kl
                        }
                    }
                }
            };
            assert!(
                (v.value - reference).abs() < 1e-7 * (1.0 + reference.abs()),
                "{obj:?} N={n} R={r}: {} vs {reference}",
                v.value
            );
        }
    }
}

#[test]
fn gradients_match_central_differences() {
    for (n, r, ard) in [(25, 48, true), (70, 32, true), (40, 64, false)] {
        let (x, y) = data(n, 2, 11);
        let f = RffFeatures::new(5, r, 2).unwrap();
        for obj in OBJECTIVES {
            let p = HyperProblem::new(x.view(), y.view(), &f, obj, ard).unwrap();
            let mut theta: Vec<f64> = if ard { vec![0.2, -0.3] } else { vec![0.1] };
            theta.extend([(-0.4f64), (-2.5f64)]);
            let v = p.evaluate(&theta, true).unwrap();
            for i in 0..theta.len() {
                let h = 1e-5;
                let mut a = theta.clone();
                let mut b = theta.clone();
                a[i] += h;
                b[i] -= h;
                let fd = (p.evaluate(&a, false).unwrap().value
                    - p.evaluate(&b, false).unwrap().value)
                    / (2.0 * h);
                assert!(
                    (fd - v.gradient[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{obj:?} N={n} R={r} ard={ard} entry {i}: analytic {} vs numeric {fd}",
                    v.gradient[i]
                );
            }
        }
    }
}
