//! The closed-form prior variance and KL against numeric optimization, and the analytic
//! gradients against central finite differences: the KL gradients of the objective (f64) and the
//! fused step's per-weight gradients for a diagonal posterior (f32, against an f64 loss).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use deelbo_core::fused::{KlGradScales, Scale, backward, forward};
use deelbo_core::{
    DiagonalPosterior, IsotropicPosterior, KappaRule, KlTerms, Objective, PriorVariance,
    ScaleStats, isotropic_block,
};
use deelbo_core::{LowRankPrior, LowRankScale};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A block: means, prior means, and a sigma spanning many orders of magnitude.
fn block_strategy() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, f64)> {
    (1usize..40).prop_flat_map(|d| {
        (
            prop::collection::vec(-3.0f64..3.0, d),
            prop::collection::vec(-3.0f64..3.0, d),
            -9.0f64..1.0,
        )
            .prop_map(|(m, mu, log_sigma)| (m, mu, 10f64.powf(log_sigma)))
    })
}

/// Golden-section search for the minimum of a unimodal function of `ln v`.
fn minimize_over_log_v(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo, hi);
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    for _ in 0..200 {
        if f(c.exp()) < f(d.exp()) {
            b = d;
        } else {
            a = c;
        }
        c = b - g * (b - a);
        d = a + g * (b - a);
    }
    ((a + b) / 2.0).exp()
}

proptest! {
    #![proptest_config(config(3000))]

    /// v* minimizes KL over v (so maximizes J for any kappa), and KL* is KL at v*.
    #[test]
    fn optimal_variance_minimizes_kl((m, mu, sigma) in block_strategy(), log_v in -25.0f64..5.0) {
        let t = KlTerms::from_block(&m[..], Some(&mu[..]), ScaleStats::Isotropic { sigma }).unwrap();
        let v_star = t.optimal_variance();
        let kl_star = t.kl_at_optimum().unwrap();
        let kl_at = t.kl(v_star).unwrap();
        prop_assert!((kl_star - kl_at).abs() <= 1e-9 * kl_star.abs().max(1.0));
        let other = t.kl(log_v.exp()).unwrap();
        prop_assert!(kl_star <= other + 1e-9 * other.abs().max(1.0));
        // KL >= 0 always, and KL* = (D/2) ln(1 + M/(D sigma^2)) by direct evaluation.
        prop_assert!(kl_star >= 0.0);
        let d = m.len() as f64;
        let msq: f64 = m.iter().zip(&mu).map(|(a, b)| (a - b) * (a - b)).sum();
        let direct = 0.5 * d * (1.0 + msq / (d * sigma * sigma)).ln();
        prop_assert!((kl_star - direct).abs() <= 1e-9 * direct.max(1.0));
    }

    /// Diagonal posterior: the same properties with v* = (M + sum sigma_j^2)/D.
    #[test]
    fn diagonal_optimal_variance_minimizes_kl(
        (m, mu, _s) in block_strategy(),
        rho_seed in prop::collection::vec(-12.0f64..3.0, 40),
        log_v in -25.0f64..5.0,
    ) {
        let d = m.len();
        let q = DiagonalPosterior::from_rho(rho_seed[..d].to_vec()).unwrap();
        let stats = q.stats().unwrap();
        let t = KlTerms::from_block(&m[..], Some(&mu[..]), stats).unwrap();
        let sum_s2: f64 = (0..d).map(|j| q.sigma(j).powi(2)).sum();
        let msq: f64 = m.iter().zip(&mu).map(|(a, b)| (a - b) * (a - b)).sum();
        prop_assert!((t.optimal_variance() - (msq + sum_s2) / d as f64).abs() <= 1e-12 * t.optimal_variance());
        let kl_star = t.kl_at_optimum().unwrap();
        prop_assert!((kl_star - t.kl(t.optimal_variance()).unwrap()).abs() <= 1e-9 * kl_star.abs().max(1.0));
        prop_assert!(kl_star <= t.kl(log_v.exp()).unwrap() + 1e-9 * kl_star.abs().max(1.0));
        // KL of the diagonal Gaussian by its textbook formula, term by term.
        let v = log_v.exp();
        let textbook: f64 = (0..d).map(|j| {
            let s2 = q.sigma(j).powi(2);
            0.5 * (s2 / v + (m[j] - mu[j]).powi(2) / v - 1.0 + v.ln() - s2.ln())
        }).sum();
        prop_assert!((t.kl(v).unwrap() - textbook).abs() <= 1e-8 * textbook.abs().max(1.0));
    }
}

#[test]
fn closed_form_agrees_with_golden_section_search() {
    for (d, msq, sigma) in [(10usize, 3.0, 0.1), (1000, 0.02, 1e-4), (5, 40.0, 2.0)] {
        let t = KlTerms::isotropic(d, msq, ScaleStats::Isotropic { sigma }).unwrap();
        let v_num = minimize_over_log_v(|v| t.kl(v).unwrap(), -30.0, 10.0);
        assert!(
            (v_num - t.optimal_variance()).abs() < 1e-6 * t.optimal_variance(),
            "numeric {v_num} vs closed form {}",
            t.optimal_variance()
        );
    }
}

fn central_difference(f: impl Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}

proptest! {
    #![proptest_config(config(1000))]

    /// d loss/d m and d loss/d rho of the KL part (learned and fixed variances, two blocks with
    /// a shared sigma) against central differences of `Objective::evaluate`.
    #[test]
    fn objective_gradients_match_finite_differences(
        (m, mu, _s) in block_strategy(),
        head in prop::collection::vec(-2.0f64..2.0, 1..10),
        rho in -6.0f64..1.0,
        fixed in prop::bool::ANY,
        kappa in 1.0f64..100.0,
    ) {
        let n = 7;
        let obj = Objective::new(KappaRule::Fixed(kappa), m.len() + head.len(), n).unwrap();
        let setting = if fixed { PriorVariance::Fixed(0.37) } else { PriorVariance::Learned };
        let loss = |m: &[f64], rho: f64| {
            let q = IsotropicPosterior::from_rho(rho).unwrap();
            let a = isotropic_block(m, Some(&mu[..]), &q, setting).unwrap();
            let b = isotropic_block(&head[..], None, &q, PriorVariance::Learned).unwrap();
            obj.evaluate(0.25, &[a, b]).unwrap()
        };
        let eval = loss(&m, rho);
        let q = IsotropicPosterior::from_rho(rho).unwrap();
        let mut grad = vec![0.0; m.len()];
        Objective::add_kl_mean_gradient(&mut grad[..], &m[..], Some(&mu[..]), &eval.blocks[0]).unwrap();
        for i in 0..m.len() {
            let h = 1e-5 * (1.0 + m[i].abs());
            let fd = central_difference(|x| { let mut mm = m.clone(); mm[i] = x; loss(&mm, rho).loss }, m[i], h);
            prop_assert!((fd - grad[i]).abs() <= 1e-5 * grad[i].abs().max(1e-3), "m[{}]: fd {} analytic {}", i, fd, grad[i]);
        }
        let g_rho = eval.loss_grad_rho(&q).unwrap();
        let fd = central_difference(|r| loss(&m, r).loss, rho, 1e-6);
        prop_assert!((fd - g_rho).abs() <= 1e-5 * g_rho.abs().max(1e-3), "rho: fd {} analytic {}", fd, g_rho);
    }

    /// Diagonal posterior: d loss/d rho_j against central differences.
    #[test]
    fn diagonal_rho_gradient_matches_finite_differences(
        (m, mu, _s) in block_strategy(),
        rho in prop::collection::vec(-6.0f64..1.0, 40),
        kappa in 1.0f64..50.0,
    ) {
        let d = m.len();
        let obj = Objective::new(KappaRule::Fixed(kappa), d, 11).unwrap();
        let loss = |rho: &[f64]| {
            let stats = DiagonalPosterior::from_rho(rho.to_vec()).unwrap().stats().unwrap();
            let t = KlTerms::from_block(&m[..], Some(&mu[..]), stats).unwrap();
            obj.evaluate(0.0, &[(t, PriorVariance::Learned)]).unwrap()
        };
        let rho = &rho[..d];
        let eval = loss(rho);
        prop_assert!(eval.loss_grad_rho(&IsotropicPosterior::default()).is_none());
        for j in 0..d {
            let g = eval.loss_grad_rho_element(0, rho[j], 1.0, obj.kappa_n()).unwrap();
            let fd = central_difference(|x| { let mut r = rho.to_vec(); r[j] = x; loss(&r).loss }, rho[j], 1e-6);
            prop_assert!((fd - g).abs() <= 1e-5 * g.abs().max(1e-4), "rho[{}]: fd {} analytic {}", j, fd, g);
        }
    }
}

/// A random low-rank prior of size `d x k` from a seed (deterministic, no external RNG).
fn low_rank_case(seed: u64, d: usize, k: usize) -> (Array1<f64>, Array2<f64>) {
    let key = deelbo_core::NoiseKey::new(seed, 0);
    let z = |i: u64| f64::from(deelbo_core::normal_at(key, i));
    let diag = Array1::from_shape_fn(d, |j| (0.5 * z(j as u64)).exp() * 0.3);
    let u = Array2::from_shape_fn((d, k), |(j, p)| 0.4 * z(1000 + (j * k + p) as u64));
    (diag, u)
}

proptest! {
    #![proptest_config(config(500))]

    /// Low-rank prior: KL* is the minimum over v, and its gradients in m and sigma^2 match
    /// central differences.
    #[test]
    fn low_rank_closed_forms_and_gradients(
        seed in 0u64..10_000, d in 2usize..12, k in 1usize..5,
        sigma in 0.01f64..1.0, log_v in -8.0f64..4.0,
    ) {
        let (diag, u) = low_rank_case(seed, d, k);
        let prior = LowRankPrior::new(diag, u.view()).unwrap();
        let key = deelbo_core::NoiseKey::new(seed, 1);
        let m: Vec<f64> = (0..d).map(|i| f64::from(deelbo_core::normal_at(key, i as u64))).collect();
        let mu: Vec<f64> = (0..d).map(|i| 0.3 * f64::from(deelbo_core::normal_at(key, 100 + i as u64))).collect();
        let kl_star = |m: &[f64], sigma: f64| {
            prior.kl_terms(m, &mu[..], LowRankScale::Isotropic { sigma }).unwrap().kl_at_optimum().unwrap()
        };
        let t = prior.kl_terms(&m[..], &mu[..], LowRankScale::Isotropic { sigma }).unwrap();
        let ks = t.kl_at_optimum().unwrap();
        prop_assert!((ks - t.kl(t.optimal_variance()).unwrap()).abs() <= 1e-9 * ks.abs().max(1.0));
        prop_assert!(ks <= t.kl(log_v.exp()).unwrap() + 1e-9 * ks.abs().max(1.0));
        let g = prior.kl_grad_mean(&m[..], &mu[..], t.optimal_variance()).unwrap();
        for i in 0..d {
            let fd = central_difference(|x| { let mut mm = m.clone(); mm[i] = x; kl_star(&mm, sigma) }, m[i], 1e-6);
            prop_assert!((fd - g[i]).abs() <= 1e-5 * g[i].abs().max(1e-3), "m[{}]: fd {} analytic {}", i, fd, g[i]);
        }
        let g_s2 = t.kl_grad_sigma2(t.optimal_variance()).unwrap();
        let fd = central_difference(|s2| kl_star(&m, s2.sqrt()), sigma * sigma, 1e-7 * sigma * sigma);
        prop_assert!((fd - g_s2).abs() <= 1e-4 * g_s2.abs().max(1e-3), "sigma^2: fd {} analytic {}", fd, g_s2);
    }
}

/// A diagonal-posterior block with a quadratic likelihood, all in f64: the truth the fused step's
/// per-weight gradients are checked against.
///
/// `loss(m, sigma) = sum_i [a_i w_i + b_i w_i^2/2] + KL/(kappa N)`, `w_i = m_i + sigma_i eps_i`,
/// with `KL = KL(v)` at a fixed `v` or `KL* = 1/2 [D ln v* - sum ln sigma_j^2]` at the learned
/// `v* = (||m - mu||^2 + sum sigma_j^2)/D` (its own dependence on `sigma_j` included: the
/// analytic gradient at `v = v*` must equal the total derivative, by the envelope theorem).
struct DiagonalQuadratic {
    a: Vec<f64>,
    b: Vec<f64>,
    mu: Vec<f64>,
    eps: Vec<f64>,
    kappa_n: f64,
    fixed_v: Option<f64>,
}

impl DiagonalQuadratic {
    fn loss(&self, m: &[f64], sigma: &[f64]) -> f64 {
        let d = m.len() as f64;
        let mut nll = 0.0;
        for i in 0..m.len() {
            let w = m[i] + sigma[i] * self.eps[i];
            nll += self.a[i] * w + 0.5 * self.b[i] * w * w;
        }
        let sq: f64 = m.iter().zip(&self.mu).map(|(m, mu)| (m - mu).powi(2)).sum();
        let s2: f64 = sigma.iter().map(|s| s * s).sum();
        let ln_s2: f64 = sigma.iter().map(|s| (s * s).ln()).sum();
        let kl = match self.fixed_v {
            Some(v) => 0.5 * ((s2 + sq) / v - d + d * v.ln() - ln_s2),
            None => 0.5 * (d * ((sq + s2) / d).ln() - ln_s2),
        };
        nll + kl / self.kappa_n
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// The fused backward pass for a diagonal posterior:
    /// `d loss/d sigma_j = g_j eps_j + (sigma_j/v - 1/sigma_j)/(kappa N)` and
    /// `d loss/d m_j = g_j + (m_j - mu_j)/(kappa N v)`, with `g = d NLL/d w` at the forward pass's
    /// sample and `v = v*` from its reductions (or fixed), against central differences of the
    /// f64 loss in every `sigma_j` and `m_j`.
    #[test]
    fn fused_diagonal_gradients_match_finite_differences(
        seed in 0u64..1_000_000, d in 1usize..48,
        log_sigma in prop::collection::vec(-7.0f64..-0.7, 48),
        kappa in 1.0f64..100.0, n in 1usize..50,
        fixed in prop::bool::ANY, log_v in -6.0f64..0.0,
        first in 0u64..10_000,
    ) {
        let key = deelbo_core::NoiseKey::new(seed, 3);
        let z = |stream: u64, scale: f32| {
            deelbo_core::test_util::normal_data(d, deelbo_core::NoiseKey::new(seed, stream), scale)
        };
        let (m32, mu32) = (z(10, 0.3), z(11, 0.3));
        let sigma32: Vec<f32> = log_sigma[..d].iter().map(|l| l.exp() as f32).collect();
        let kappa_n = kappa * n as f64;
        let model = DiagonalQuadratic {
            a: z(12, 1.0).iter().map(|&x| f64::from(x)).collect(),
            b: z(13, 1.0).iter().map(|&x| f64::from(x).abs()).collect(),
            mu: mu32.iter().map(|&x| f64::from(x)).collect(),
            eps: (0..d).map(|i| f64::from(deelbo_core::normal_at(key, first + i as u64))).collect(),
            kappa_n,
            fixed_v: fixed.then(|| log_v.exp()),
        };

        let mut w = vec![0.0f32; d];
        let scale = Scale::Diagonal(&sigma32);
        let stats = forward(&m32, Some(&mu32), scale, key, first, &mut w, 1).unwrap();
        let v = model.fixed_v.unwrap_or(stats.kl_terms().unwrap().optimal_variance());
        let g: Vec<f32> = (0..d).map(|i| (model.a[i] + model.b[i] * f64::from(w[i])) as f32).collect();
        let kl = KlGradScales { inv_kappa_n: 1.0 / kappa_n, variance: v };
        let (mut grad_m, mut grad_s) = (vec![0.0f32; d], vec![0.0f32; d]);
        backward(&m32, Some(&mu32), scale, key, first, &g, kl, &mut grad_m, Some(&mut grad_s), 1).unwrap();

        let m: Vec<f64> = m32.iter().map(|&x| f64::from(x)).collect();
        let sigma: Vec<f64> = sigma32.iter().map(|&x| f64::from(x)).collect();
        for j in 0..d {
            // Magnitude of the terms of each gradient: the f32 arithmetic errs by a few 2^-24 of
            // it, and the f32 sample feeds g an error of b |w| 2^-24.
            let like = (model.a[j].abs() + model.b[j] * f64::from(w[j]).abs()) * model.eps[j].abs();
            let scale_s = like + (sigma[j] / v + 1.0 / sigma[j]) / kappa_n;
            // Step 1e-3 sigma_j: the truncation error h^2/6 |f'''| stays below 1e-6 of the KL
            // term's k/sigma_j (the likelihood part is quadratic in sigma_j: exact), and the
            // rounding of a loss below ~300, 1e-16 * 300/h, below 1e-6 of k/sigma_j >= 2e-4/sigma_j.
            let fd = central_difference(
                |x| { let mut s = sigma.clone(); s[j] = x; model.loss(&m, &s) },
                sigma[j],
                1e-3 * sigma[j],
            );
            let got = f64::from(grad_s[j]);
            prop_assert!((got - fd).abs() <= 2e-5 * scale_s, "sigma[{}] = {}: fused {} fd {} (v {}, fixed {})", j, sigma[j], got, fd, v, fixed);

            let scale_m = (model.a[j].abs() + model.b[j] * f64::from(w[j]).abs())
                + (m[j] - model.mu[j]).abs() / (kappa_n * v);
            // Step 1e-4 sqrt(v), capped at 1e-4: with a learned v the KL* term curves on the
            // scale sqrt(v*) >= sigma_j in m_j (e.g. (1/2) ln(1 + (m - mu)^2/sigma^2) for d = 1),
            // so a fixed step's truncation error h^2/6 |f'''| ~ h^2/v grows without bound as
            // sigma shrinks; with h relative to sqrt(v) it stays near 1e-8 of the KL gradient.
            let fd = central_difference(
                |x| { let mut mm = m.clone(); mm[j] = x; model.loss(&mm, &sigma) },
                m[j],
                1e-4 * v.sqrt().min(1.0),
            );
            let got = f64::from(grad_m[j]);
            prop_assert!((got - fd).abs() <= 2e-5 * scale_m + 1e-9, "m[{}]: fused {} fd {}", j, got, fd);
        }
    }
}
