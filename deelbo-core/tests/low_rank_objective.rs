//! The low-rank prior inside the objective: the mean gradient is `Sigma_p^-1 (m - mu)/(kappa N v)`
//! (checked against central differences of the loss, and against the isotropic form it must not
//! be), and the Woodbury forms stay inside their exact bounds where they cancel catastrophically
//! (checked against closed forms that do not subtract).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use deelbo_core::{
    CoreError, KappaRule, NoiseKey, Objective, PriorShape, PriorVariance, normal_at,
};
use deelbo_core::{LowRankPrior, LowRankScale};
use ndarray::{Array1, Array2};

fn z(seed: u64, i: usize) -> f64 {
    f64::from(normal_at(NoiseKey::new(seed, 5), i as u64))
}

fn central_difference(f: impl Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}

#[test]
fn low_rank_mean_gradient_is_the_precision_times_the_difference() {
    let (d, k) = (9, 3);
    let diag = Array1::from_shape_fn(d, |j| 0.2 + 0.1 * z(1, j).abs());
    let u = Array2::from_shape_fn((d, k), |(j, p)| 0.5 * z(2, j * k + p));
    let prior = LowRankPrior::new(diag, u.view()).unwrap();
    let m: Vec<f64> = (0..d).map(|j| z(3, j)).collect();
    let mu: Vec<f64> = (0..d).map(|j| 0.3 * z(4, j)).collect();
    let sigma = 0.05;
    let obj = Objective::new(KappaRule::DataEmphasized, 4 * d, 2).unwrap();
    let loss = |m: &[f64]| {
        let t = prior
            .kl_terms(m, &mu[..], LowRankScale::Isotropic { sigma })
            .unwrap();
        obj.evaluate(0.0, &[(t, PriorVariance::Learned)]).unwrap()
    };
    let eval = loss(&m);
    assert_eq!(eval.blocks[0].shape, PriorShape::LowRank);
    let mut grad = vec![0.0f64; d];
    Objective::add_low_rank_kl_mean_gradient(&mut grad, &m, &mu, &prior, &eval.blocks[0]).unwrap();
    let mut isotropic = vec![0.0f64; d];
    for j in 0..d {
        let fd = central_difference(
            |x| {
                let mut mm = m.clone();
                mm[j] = x;
                loss(&mm).loss
            },
            m[j],
            1e-6,
        );
        assert!(
            (grad[j] - fd).abs() <= 1e-6 * fd.abs().max(1e-3),
            "m[{j}]: {} vs fd {fd}",
            grad[j]
        );
        isotropic[j] = eval.blocks[0].mean_gradient_scale * (m[j] - mu[j]);
    }
    // The isotropic form is a different (wrong) gradient here, and using it is refused.
    let off = grad
        .iter()
        .zip(&isotropic)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        off > 0.1 * grad.iter().map(|g| g.abs()).fold(0.0, f64::max),
        "{off}"
    );
    let mut g2 = vec![0.0f64; d];
    assert!(matches!(
        Objective::add_kl_mean_gradient(&mut g2[..], &m[..], Some(&mu[..]), &eval.blocks[0]),
        Err(CoreError::PriorShapeMismatch { .. })
    ));
}

/// `K = 1`, `u_0^2/a_0 = 1e18` dominates the core: the precision diagonal's Woodbury form
/// `1/a_0 - b_0^2/c` subtracts two numbers near `1e12` whose difference is `~1e-6`.
#[test]
fn precision_diagonal_cancellation_is_clamped_to_its_bounds() {
    let d = 6;
    let mut diag = Array1::from_elem(d, 1.0);
    diag[0] = 1e-12;
    let mut u = Array2::from_elem((d, 1), 0.0);
    u[[0, 0]] = 1e3;
    for j in 1..d {
        u[[j, 0]] = 1e-2 * (1.0 + 0.1 * j as f64);
    }
    let prior = LowRankPrior::new(diag.clone(), u.view()).unwrap();
    // Exact for K = 1 without subtraction: (1/a_j)(1 + sum_{i != j} u_i^2/a_i)/(1 + sum_i u_i^2/a_i).
    let s: Vec<f64> = (0..d).map(|i| u[[i, 0]] * u[[i, 0]] / diag[i]).collect();
    let c = 1.0 + s.iter().sum::<f64>();
    for j in 0..d {
        let others: f64 = (0..d).filter(|&i| i != j).map(|i| s[i]).sum();
        let exact = (1.0 + others) / (diag[j] * c);
        let got = prior.precision_diagonal()[j];
        let lower = 1.0 / (diag[j] + u[[j, 0]] * u[[j, 0]]);
        assert!(got >= lower && got <= 1.0 / diag[j], "j = {j}: {got}");
        assert!(
            (got - exact).abs() <= 2e-3 * exact,
            "j = {j}: {got} vs exact {exact}"
        );
    }
    // The subtraction as written is off by orders of magnitude (or negative) for j = 0.
    let naive = 1.0 / diag[0] - (u[[0, 0]] / diag[0]).powi(2) / c;
    let exact0 = (1.0 + s[1..].iter().sum::<f64>()) / (diag[0] * c);
    assert!(
        !(naive > 0.5 * exact0 && naive < 2.0 * exact0),
        "naive {naive} exact {exact0}"
    );
    let diag_info = prior.diagnostics();
    assert!(diag_info.clamped_precision >= 1, "{diag_info:?}");
    assert!(diag_info.precision_digits_lost > 10.0, "{diag_info:?}");
}

/// `x = u`, `s = u^T A^-1 u = 1e16`: exact `Q = s - s^2/(1 + s) = s/(1 + s)`, about 1, while
/// the Woodbury subtraction of two numbers near `1e16` leaves only rounding noise.
#[test]
fn mahalanobis_cancellation_is_refined() {
    let d = 4;
    let diag = Array1::from_elem(d, 1e-16 / 4.0);
    let u = Array2::from_elem((d, 1), 0.5);
    let prior = LowRankPrior::new(diag.clone(), u.view()).unwrap();
    let x = vec![0.5; d];
    let s: f64 = x.iter().zip(&diag).map(|(x, a)| x * x / a).sum();
    let exact = s / (1.0 + s);
    let parts = prior.mahalanobis_parts(&x).unwrap();
    assert!(parts.refined, "{parts:?}");
    assert!(
        (parts.value - exact).abs() <= 1e-6 * exact,
        "{parts:?} vs exact {exact}"
    );
    // And v* from the KL terms is positive and uses that value.
    let t = prior
        .kl_terms(
            &x[..],
            &[0.0; 4][..],
            LowRankScale::Isotropic { sigma: 1e-9 },
        )
        .unwrap();
    assert!((t.quadratic - exact).abs() <= 1e-6 * exact);
    assert!(t.optimal_variance() > 0.0);
    // Well-conditioned vectors are not refined and equal a dense evaluation.
    let y = vec![1.0, -2.0, 0.5, 3.0];
    let p = prior.mahalanobis_parts(&y).unwrap();
    assert!(!p.refined);
}

/// `Sigma_p x` and `Sigma_p^-1 x` against the dense `A + U U^T` (D = 300, K = 5), and the
/// combined `Q` + `Sigma_p^-1 x` of a training step bit for bit the two separate calls, on a
/// vector that needs no refinement and on one inside the low-rank directions (refined).
#[test]
fn factor_products_match_the_dense_covariance_and_the_combined_call() {
    let (d, k) = (300, 5);
    let diag = Array1::from_shape_fn(d, |j| 1e-3 * (0.5 + z(7, j).abs()));
    let u = Array2::from_shape_fn((d, k), |(j, p)| 0.2 * z(8, j * k + p));
    let prior = LowRankPrior::new(diag.clone(), u.view()).unwrap();
    let dense = Array2::from_diag(&diag) + u.dot(&u.t());
    let x: Vec<f64> = (0..d).map(|j| z(9, j)).collect();
    let sx = prior.covariance_times(&x).unwrap();
    let want = dense.dot(&Array1::from(x.clone()));
    for j in 0..d {
        assert!(
            (sx[j] - want[j]).abs() <= 1e-12 * (1.0 + want[j].abs()),
            "Sigma x [{j}]"
        );
    }
    let px = prior.precision_times(&x).unwrap();
    let back = dense.dot(&Array1::from(px.clone()));
    for j in 0..d {
        assert!(
            (back[j] - x[j]).abs() <= 1e-9 * (1.0 + x[j].abs()),
            "Sigma Sigma^-1 x [{j}]"
        );
    }
    // Inside span(U) plus a little: the Woodbury subtraction cancels and Q is refined.
    let c = [1.0, -0.5, 0.25, 2.0, -1.0];
    let inside: Vec<f64> = (0..d)
        .map(|j| (0..k).map(|p| u[[j, p]] * c[p]).sum::<f64>() + 1e-9 * z(10, j))
        .collect();
    for (v, refined) in [(&x, false), (&inside, true)] {
        let (parts, pv) = prior.mahalanobis_and_precision_times(v).unwrap();
        assert_eq!(parts, prior.mahalanobis_parts(v).unwrap());
        assert_eq!(parts.refined, refined, "{parts:?}");
        let separate = prior.precision_times(v).unwrap();
        let bits = |w: &[f64]| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&pv), bits(&separate));
    }
}
