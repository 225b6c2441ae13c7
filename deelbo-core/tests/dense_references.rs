//! Independent dense linear algebra (ndarray-linalg / LAPACK) as the truth for the low-rank prior
//! and for the lower-bound property of the ELBO on a conjugate linear-Gaussian model.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use deelbo_core::likelihood::{categorical_log_likelihood, expected_gaussian_log_likelihood};
use deelbo_core::prior::low_rank::{LowRankPrior, LowRankScale};
use deelbo_core::{
    DiagonalPosterior, KappaRule, KlTerms, NoiseKey, Objective, PriorVariance, ScaleStats,
    normal_at,
};
use ndarray::{Array1, Array2, Axis};
use ndarray_linalg::{Determinant, Inverse, UPLO, cholesky::Cholesky};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn normals(seed: u64, stream: u64, len: usize) -> Vec<f64> {
    let key = NoiseKey::new(seed, stream);
    (0..len)
        .map(|i| f64::from(normal_at(key, i as u64)))
        .collect()
}

/// `ln N(y; 0, C)` by a dense Cholesky of `C`.
fn dense_log_gaussian(y: &Array1<f64>, c: &Array2<f64>) -> f64 {
    let l = c.cholesky(UPLO::Lower).unwrap();
    let n = y.len();
    // Forward substitution L z = y.
    let mut z = y.to_vec();
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[[i, k]] * z[k]).sum();
        z[i] = (z[i] - s) / l[[i, i]];
    }
    let log_det: f64 = 2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>();
    -0.5 * (n as f64 * (2.0 * std::f64::consts::PI).ln()
        + log_det
        + z.iter().map(|v| v * v).sum::<f64>())
}

proptest! {
    #![proptest_config(config(1000))]

    /// v*, KL at any v, KL* and the log-density of the low-rank prior equal a dense computation
    /// with the full D x D matrix Sigma_p = A + U U^T (its inverse and determinant from LAPACK),
    /// for isotropic and diagonal posteriors.
    #[test]
    fn low_rank_prior_equals_dense(
        seed in 0u64..100_000, d in 1usize..14, k in 0usize..6,
        sigma in 0.01f64..2.0, v in 0.01f64..10.0, diagonal in prop::bool::ANY,
    ) {
        let z = normals(seed, 0, d * k + 3 * d);
        let diag = Array1::from_shape_fn(d, |j| 0.2 + z[j].abs());
        let u = Array2::from_shape_fn((d, k), |(j, p)| 0.5 * z[d + j * k + p]);
        let m: Vec<f64> = (0..d).map(|j| z[d + d * k + j]).collect();
        let mu: Vec<f64> = (0..d).map(|j| 0.5 * z[2 * d + d * k + j]).collect();
        let variances: Vec<f64> = (0..d).map(|j| sigma * sigma * (1.0 + 0.5 * (j as f64).sin())).collect();

        let prior = LowRankPrior::new(diag.clone(), u.view()).unwrap();
        let scale = if diagonal {
            LowRankScale::Diagonal { variances: &variances }
        } else {
            LowRankScale::Isotropic { sigma }
        };
        let terms = prior.kl_terms(&m[..], &mu[..], scale).unwrap();

        // Dense truth.
        let mut sp = u.dot(&u.t());
        for j in 0..d { sp[[j, j]] += diag[j]; }
        let sp_inv = sp.inv().unwrap();
        let (sign, ln_det) = sp.sln_det().unwrap();
        prop_assert!(sign > 0.0);
        let diff = Array1::from_shape_fn(d, |j| m[j] - mu[j]);
        let quad = diff.dot(&sp_inv.dot(&diff));
        let s_diag: Vec<f64> = if diagonal { variances.clone() } else { vec![sigma * sigma; d] };
        let trace: f64 = (0..d).map(|j| sp_inv[[j, j]] * s_diag[j]).sum();
        let sum_ln_s: f64 = s_diag.iter().map(|s| s.ln()).sum();
        let df = d as f64;
        let v_star = (quad + trace) / df;
        let kl_v = 0.5 * (trace / v + quad / v - df + df * v.ln() + ln_det - sum_ln_s);
        let kl_star = 0.5 * (df * v_star.ln() + ln_det - sum_ln_s);
        let log_density = -0.5 * (df * (2.0 * std::f64::consts::PI * v).ln() + ln_det + quad / v);

        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        prop_assert!(close(prior.log_det(), ln_det), "ln det {} vs {}", prior.log_det(), ln_det);
        prop_assert!(close(prior.trace_inverse(), sp_inv.diag().sum()));
        prop_assert!(close(terms.optimal_variance(), v_star), "v* {} vs {}", terms.optimal_variance(), v_star);
        prop_assert!(close(terms.kl(v).unwrap(), kl_v), "KL {} vs {}", terms.kl(v).unwrap(), kl_v);
        prop_assert!(close(terms.kl_at_optimum().unwrap(), kl_star), "KL* {} vs {}", terms.kl_at_optimum().unwrap(), kl_star);
        prop_assert!(close(prior.log_density(&m[..], &mu[..], v).unwrap(), log_density));
        let g = prior.kl_grad_mean(&m[..], &mu[..], v).unwrap();
        let g_dense = sp_inv.dot(&diff) / v;
        for j in 0..d { prop_assert!(close(g[j], g_dense[j])); }
    }
}

/// A conjugate model: y = X w + e, w ~ N(0, v I), e ~ N(0, s2 I).
struct LinearGaussian {
    x: Array2<f64>,
    y: Array1<f64>,
    v: f64,
    s2: f64,
}

impl LinearGaussian {
    fn new(seed: u64, n: usize, d: usize, v: f64, s2: f64) -> Self {
        let z = normals(seed, 7, n * d + d + n);
        let x = Array2::from_shape_fn((n, d), |(i, j)| z[i * d + j]);
        let w = Array1::from_shape_fn(d, |j| v.sqrt() * z[n * d + j]);
        let y = x.dot(&w) + Array1::from_shape_fn(n, |i| s2.sqrt() * z[n * d + d + i]);
        Self { x, y, v, s2 }
    }

    /// ln p(y | v, s2) = ln N(y; 0, v X X^T + s2 I), dense.
    fn log_evidence(&self) -> f64 {
        let mut c = self.x.dot(&self.x.t()) * self.v;
        for i in 0..c.nrows() {
            c[[i, i]] += self.s2;
        }
        dense_log_gaussian(&self.y, &c)
    }

    /// ELBO(kappa) for q = N(m, diag(s)) through deelbo-core: the analytic expected
    /// log-likelihood and the objective with a fixed prior variance.
    fn elbo_core(
        &self,
        m: &[f64],
        scale: ScaleStats,
        s_diag: &[f64],
        kappa: KappaRule,
        prior: PriorVariance,
    ) -> f64 {
        let n = self.y.len();
        let pred = self.x.dot(&Array1::from(m.to_vec()));
        let feat_var: Vec<f64> = self
            .x
            .axis_iter(Axis(0))
            .map(|row| row.iter().zip(s_diag).map(|(x, s)| x * x * s).sum())
            .collect();
        let ell = expected_gaussian_log_likelihood(
            self.y.as_slice().unwrap(),
            pred.as_slice().unwrap(),
            &feat_var,
            self.s2,
        )
        .unwrap();
        let obj = Objective::new(kappa, m.len(), n).unwrap();
        let terms = KlTerms::from_block(m, None, scale).unwrap();
        obj.evaluate(-ell / n as f64, &[(terms, prior)])
            .unwrap()
            .objective
    }

    /// The exact posterior N(m, S): S = (X^T X/s2 + I/v)^-1, m = S X^T y/s2.
    fn exact_posterior(&self) -> (Array1<f64>, Array2<f64>) {
        let d = self.x.ncols();
        let mut prec = self.x.t().dot(&self.x) / self.s2;
        for j in 0..d {
            prec[[j, j]] += 1.0 / self.v;
        }
        let s = prec.inv().unwrap();
        let m = s.dot(&self.x.t().dot(&self.y)) / self.s2;
        (m, s)
    }

    /// The ELBO with a full-covariance q, computed densely (expected log-likelihood through
    /// deelbo-core with phi^T S phi, KL by its textbook formula).
    fn elbo_full(&self, m: &Array1<f64>, s: &Array2<f64>) -> f64 {
        let d = m.len() as f64;
        let pred = self.x.dot(m);
        let feat_var: Vec<f64> = self
            .x
            .axis_iter(Axis(0))
            .map(|row| row.dot(&s.dot(&row)))
            .collect();
        let ell = expected_gaussian_log_likelihood(
            self.y.as_slice().unwrap(),
            pred.as_slice().unwrap(),
            &feat_var,
            self.s2,
        )
        .unwrap();
        let (_, ln_det_s) = s.sln_det().unwrap();
        let kl =
            0.5 * (s.diag().sum() / self.v + m.dot(m) / self.v - d + d * self.v.ln() - ln_det_s);
        ell - kl
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// ELBO(kappa = 1) <= ln p(y) for random isotropic and diagonal q, at the true prior variance
    /// and at the learned v* (then against ln p(y | v*)).
    #[test]
    fn elbo_is_a_lower_bound_on_the_exact_evidence(
        seed in 0u64..1_000_000, n in 1usize..12, d in 1usize..8,
        log_v in -3.0f64..1.5, log_s2 in -3.0f64..1.0,
        m_scale in 0.0f64..2.0, log_sigma in -4.0f64..0.5, diagonal in prop::bool::ANY,
    ) {
        let model = LinearGaussian::new(seed, n, d, log_v.exp(), log_s2.exp());
        let z = normals(seed, 11, 2 * d);
        let m: Vec<f64> = z[..d].iter().map(|v| m_scale * v).collect();
        let sigma = log_sigma.exp();
        let (scale, s_diag) = if diagonal {
            let rho: Vec<f64> = z[d..].iter().map(|v| deelbo_core::posterior::inverse_softplus(sigma).unwrap() + 0.5 * v).collect();
            let q = DiagonalPosterior::from_rho(rho).unwrap();
            let s: Vec<f64> = (0..d).map(|j| q.sigma(j).powi(2)).collect();
            (q.stats().unwrap(), s)
        } else {
            (ScaleStats::Isotropic { sigma }, vec![sigma * sigma; d])
        };
        let bound = model.elbo_core(&m, scale, &s_diag, KappaRule::Standard, PriorVariance::Fixed(model.v));
        let evidence = model.log_evidence();
        prop_assert!(bound <= evidence + 1e-9 * evidence.abs().max(1.0), "ELBO {} > ln p(y) {}", bound, evidence);

        // With the learned prior variance the bound is on ln p(y | v*).
        let learned = model.elbo_core(&m, scale, &s_diag, KappaRule::Standard, PriorVariance::Learned);
        let v_star = KlTerms::from_block(&m[..], None, scale).unwrap().optimal_variance();
        let at_v_star = LinearGaussian { v: v_star, x: model.x.clone(), y: model.y.clone(), s2: model.s2 };
        let ev_star = at_v_star.log_evidence();
        prop_assert!(learned <= ev_star + 1e-9 * ev_star.abs().max(1.0), "ELBO(v*) {} > ln p(y|v*) {}", learned, ev_star);
        // Learning v can only raise the bound.
        prop_assert!(learned >= bound - 1e-9 * bound.abs().max(1.0));
    }

    /// With q equal to the exact posterior (full covariance) the ELBO is the log evidence.
    #[test]
    fn elbo_is_tight_at_the_exact_posterior(
        seed in 0u64..1_000_000, n in 1usize..12, d in 1usize..8,
        log_v in -3.0f64..1.5, log_s2 in -3.0f64..1.0,
    ) {
        let model = LinearGaussian::new(seed, n, d, log_v.exp(), log_s2.exp());
        let (m, s) = model.exact_posterior();
        let elbo = model.elbo_full(&m, &s);
        let evidence = model.log_evidence();
        prop_assert!((elbo - evidence).abs() <= 1e-7 * evidence.abs().max(1.0), "ELBO {} vs ln p(y) {}", elbo, evidence);
        // And the isotropic family through the core matches the full formula when S is isotropic.
        let sigma = s.diag().mean().unwrap().sqrt();
        let iso_core = model.elbo_core(m.as_slice().unwrap(), ScaleStats::Isotropic { sigma }, &vec![sigma * sigma; d], KappaRule::Standard, PriorVariance::Fixed(model.v));
        let iso_full = model.elbo_full(&m, &(Array2::eye(d) * sigma * sigma));
        prop_assert!((iso_core - iso_full).abs() <= 1e-9 * iso_full.abs().max(1.0));
    }

    /// Categorical likelihood (log p <= 0): J_kappa <= J_1 for every kappa >= 1, for the same
    /// Monte Carlo samples of a softmax-linear model.
    #[test]
    fn de_elbo_is_below_the_elbo_for_categorical_likelihoods(
        seed in 0u64..1_000_000, n in 1usize..10, d in 1usize..6, c in 2usize..5,
        kappa in 1.0f64..500.0, sigma in 0.001f64..2.0,
    ) {
        let z = normals(seed, 3, n * d + d * c + 3 * d * c);
        let x = Array2::from_shape_fn((n, d), |(i, j)| z[i * d + j]);
        let m = Array2::from_shape_fn((d, c), |(j, k)| z[n * d + j * c + k]);
        let labels: Vec<usize> = (0..n).map(|i| (seed as usize + i) % c).collect();
        // Three reparameterized samples, averaged: an unbiased estimate of E_q[log p].
        let mut ell = 0.0;
        for s in 0..3 {
            let eps = Array2::from_shape_fn((d, c), |(j, k)| z[n * d + d * c + s * d * c + j * c + k]);
            let w = &m + &(eps * sigma);
            ell += categorical_log_likelihood(x.dot(&w).view(), &labels).unwrap() / 3.0;
        }
        prop_assert!(ell <= 0.0);
        let flat: Vec<f64> = m.iter().copied().collect();
        let terms = KlTerms::from_block(&flat[..], None, ScaleStats::Isotropic { sigma }).unwrap();
        let j = |rule: KappaRule| Objective::new(rule, d * c, n).unwrap()
            .evaluate(-ell / n as f64, &[(terms, PriorVariance::Learned)]).unwrap().objective;
        let (j1, jk) = (j(KappaRule::Standard), j(KappaRule::Fixed(kappa)));
        prop_assert!(jk <= j1 + 1e-9 * j1.abs().max(1.0), "J_kappa {} > J_1 {}", jk, j1);
    }
}
