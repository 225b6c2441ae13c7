//! The fused CPU step against independent references: per-element formulas with the core's
//! pointwise noise, plain `f64` sums, the core's `KlTerms`, finite differences of the loss, and
//! the naive multi-pass version.

use deelbo_core::REDUCTION_CHUNK;
use deelbo_core::fused::{
    KlGradScales, Scale, SgdMomentum, backward, backward_sgd, forward, naive,
};
use deelbo_core::test_util::normal_data;
use deelbo_core::{
    CoreError, KappaRule, KlTerms, NoiseKey, Objective, PriorVariance, ScaleStats, normal_at,
};

/// Deterministic test data in a few units of magnitude: the shared helper on stream 99.
fn data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    normal_data(len, NoiseKey::new(seed, 99), scale)
}

fn plain_sq_dist(m: &[f32], mu: Option<&[f32]>) -> f64 {
    let mut s = 0.0f64;
    for (i, &x) in m.iter().enumerate() {
        let d = f64::from(x) - mu.map_or(0.0, |mu| f64::from(mu[i]));
        s += d * d;
    }
    s
}

const SIZES: [usize; 7] = [
    1,
    3,
    1000,
    REDUCTION_CHUNK,
    REDUCTION_CHUNK + 1,
    3 * REDUCTION_CHUNK - 5,
    50_001,
];

#[test]
fn forward_sample_is_m_plus_sigma_eps_bit_for_bit_and_reduction_is_thread_independent() {
    for &len in &SIZES {
        for first in [0u64, 1, 3, 4097] {
            let key = NoiseKey::new(11 + len as u64, 5);
            let m = data(len, 1, 0.3);
            let mu = data(len, 2, 0.3);
            let sigma = 0.05f32;
            let mut reference_bits = None;
            for threads in [1usize, 2, 3, 7] {
                let mut w = vec![0.0f32; len];
                let st = forward(
                    &m,
                    Some(&mu),
                    Scale::Isotropic(sigma),
                    key,
                    first,
                    &mut w,
                    threads,
                )
                .unwrap();
                for i in 0..len {
                    let expect = m[i] + sigma * normal_at(key, first + i as u64);
                    assert_eq!(w[i].to_bits(), expect.to_bits(), "len {len} i {i}");
                }
                let exact = plain_sq_dist(&m, Some(&mu));
                assert!(
                    (st.sq_dist - exact).abs() <= 1e-12 * exact,
                    "{} vs {exact}",
                    st.sq_dist
                );
                match reference_bits {
                    None => reference_bits = Some(st.sq_dist.to_bits()),
                    Some(b) => assert_eq!(b, st.sq_dist.to_bits(), "threads {threads}"),
                }
                assert_eq!(
                    st.scale,
                    ScaleStats::Isotropic {
                        sigma: f64::from(sigma)
                    }
                );
            }
        }
    }
}

#[test]
fn forward_with_zero_prior_mean_and_diagonal_scale() {
    let len = 3 * REDUCTION_CHUNK + 17;
    let key = NoiseKey::for_block_step(3, 1, 7);
    let m = data(len, 4, 1.0);
    let sig: Vec<f32> = (0..len).map(|j| 0.01 + 1e-5 * j as f32).collect();
    let mut w = vec![0.0f32; len];
    let st = forward(&m, None, Scale::Diagonal(&sig), key, 2, &mut w, 2).unwrap();
    for i in (0..len).step_by(7) {
        let expect = m[i] + sig[i] * normal_at(key, 2 + i as u64);
        assert_eq!(w[i].to_bits(), expect.to_bits());
    }
    let exact_m = plain_sq_dist(&m, None);
    assert!((st.sq_dist - exact_m).abs() <= 1e-12 * exact_m);
    let (s2, ln) = sig.iter().fold((0.0f64, 0.0f64), |(a, b), &s| {
        let s = f64::from(s);
        (a + s * s, b + (s * s).ln())
    });
    match st.scale {
        ScaleStats::Diagonal {
            sum_sigma2,
            sum_ln_sigma2,
        } => {
            assert!((sum_sigma2 - s2).abs() <= 1e-12 * s2);
            assert!((sum_ln_sigma2 - ln).abs() <= 1e-12 * ln.abs());
        }
        other => panic!("expected diagonal stats, got {other:?}"),
    }
    // v* and KL* through the core agree with the closed forms.
    let terms = st.kl_terms().unwrap();
    let v = (exact_m + s2) / len as f64;
    assert!((terms.optimal_variance() - v).abs() <= 1e-12 * v);
    let kl = 0.5 * (len as f64 * v.ln() - ln);
    assert!((terms.kl_at_optimum().unwrap() - kl).abs() <= 1e-9 * kl.abs());
}

#[test]
fn forward_stats_give_the_same_kl_terms_as_the_core_block_path() {
    let len = 20_000;
    let m = data(len, 7, 0.2);
    let mu = data(len, 8, 0.2);
    let sigma = 1e-3f32;
    let mut w = vec![0.0f32; len];
    let st = forward(
        &m,
        Some(&mu),
        Scale::Isotropic(sigma),
        NoiseKey::new(1, 1),
        0,
        &mut w,
        2,
    )
    .unwrap();
    let ours = st.kl_terms().unwrap();
    let core = KlTerms::from_block(
        &m[..],
        Some(&mu[..]),
        ScaleStats::Isotropic {
            sigma: f64::from(sigma),
        },
    )
    .unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(rel(ours.optimal_variance(), core.optimal_variance()) < 1e-12);
    assert!(rel(ours.kl_at_optimum().unwrap(), core.kl_at_optimum().unwrap()) < 1e-10);
}

/// A quadratic "model": loss(w) = sum_i a_i w_i + 1/2 sum_i b_i w_i^2 (per example), plus the
/// KL at the learned v*, all in f64: the truth the backward pass is checked against by finite
/// differences.
struct Quadratic {
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Quadratic {
    fn loss(&self, m: &[f64], mu: &[f64], sigma: f64, eps: &[f64], kappa_n: f64) -> f64 {
        let d = m.len() as f64;
        let mut nll = 0.0;
        let mut sq = 0.0;
        for i in 0..m.len() {
            let w = m[i] + sigma * eps[i];
            nll += self.a[i] * w + 0.5 * self.b[i] * w * w;
            sq += (m[i] - mu[i]).powi(2);
        }
        let v = sq / d + sigma * sigma;
        let kl = 0.5 * d * (v / (sigma * sigma)).ln();
        nll + kl / kappa_n
    }

    fn grad_w(&self, w: &[f32]) -> Vec<f32> {
        w.iter()
            .enumerate()
            .map(|(i, &w)| (self.a[i] + self.b[i] * f64::from(w)) as f32)
            .collect()
    }
}

#[test]
fn backward_matches_finite_differences_of_the_loss_at_the_learned_variance() {
    let len = 5000;
    let key = NoiseKey::new(21, 4);
    let m32 = data(len, 31, 0.1);
    let mu32 = data(len, 32, 0.1);
    let sigma = 0.02f32;
    let model = Quadratic {
        a: data(len, 33, 1.0).iter().map(|&x| f64::from(x)).collect(),
        b: data(len, 34, 1.0)
            .iter()
            .map(|&x| f64::from(x).abs())
            .collect(),
    };
    let objective = Objective::new(KappaRule::DataEmphasized, len, 50).unwrap();
    let kn = objective.kappa_n();

    let mut w = vec![0.0f32; len];
    let st = forward(
        &m32,
        Some(&mu32),
        Scale::Isotropic(sigma),
        key,
        0,
        &mut w,
        2,
    )
    .unwrap();
    let eval = objective
        .evaluate(0.0, &[(st.kl_terms().unwrap(), PriorVariance::Learned)])
        .unwrap();
    let kl = KlGradScales::from_evaluation(&objective, &eval.blocks[0]);
    let g = model.grad_w(&w);
    let mut grad_m = vec![0.0f32; len];
    let bs = backward(
        &m32,
        Some(&mu32),
        Scale::Isotropic(sigma),
        key,
        0,
        &g,
        kl,
        &mut grad_m,
        None,
        3,
    )
    .unwrap();

    let m: Vec<f64> = m32.iter().map(|&x| f64::from(x)).collect();
    let mu: Vec<f64> = mu32.iter().map(|&x| f64::from(x)).collect();
    let eps: Vec<f64> = (0..len)
        .map(|i| f64::from(normal_at(key, i as u64)))
        .collect();
    let s = f64::from(sigma);
    let h = 1e-6;
    let fd_sigma =
        (model.loss(&m, &mu, s + h, &eps, kn) - model.loss(&m, &mu, s - h, &eps, kn)) / (2.0 * h);
    let ours = bs.grad_sigma.unwrap();
    assert!(
        (ours - fd_sigma).abs() <= 1e-4 * fd_sigma.abs().max(1.0),
        "dL/dsigma {ours} vs finite difference {fd_sigma}"
    );
    for i in [0usize, 1, 777, 4999] {
        let mut mp = m.clone();
        let mut mm = m.clone();
        mp[i] += h;
        mm[i] -= h;
        let fd =
            (model.loss(&mp, &mu, s, &eps, kn) - model.loss(&mm, &mu, s, &eps, kn)) / (2.0 * h);
        let got = f64::from(grad_m[i]);
        assert!(
            (got - fd).abs() <= 1e-4 * fd.abs().max(1e-2),
            "dL/dm[{i}] {got} vs {fd}"
        );
    }
}

#[test]
fn backward_elementwise_outputs_are_bit_exact_and_match_the_naive_passes() {
    for &len in &SIZES {
        let key = NoiseKey::new(5, len as u64);
        let first = 6u64;
        let m = data(len, 41, 0.5);
        let mu = data(len, 42, 0.5);
        let g = data(len, 43, 1e-3);
        let sig: Vec<f32> = (0..len).map(|j| 0.02 + 1e-6 * (j % 97) as f32).collect();
        let kl = KlGradScales {
            inv_kappa_n: 1.0 / 3.0e4,
            variance: 0.07,
        };
        let (c, k, inv_v) = kl.f32_constants();

        // Isotropic.
        let mut gm = vec![0.0f32; len];
        let bs = backward(
            &m,
            Some(&mu),
            Scale::Isotropic(0.03),
            key,
            first,
            &g,
            kl,
            &mut gm,
            None,
            3,
        )
        .unwrap();
        let mut dot = 0.0f64;
        for i in 0..len {
            let z = normal_at(key, first + i as u64);
            dot += f64::from(g[i]) * f64::from(z);
            let expect = g[i] + c * (m[i] - mu[i]);
            assert_eq!(gm[i].to_bits(), expect.to_bits());
        }
        let scale_of_terms: f64 = g.iter().map(|&x| f64::from(x).abs()).sum::<f64>();
        assert!((bs.noise_dot - dot).abs() <= 1e-12 * scale_of_terms.max(1e-300));
        let term = kl.inv_kappa_n * len as f64 * (0.03f32 as f64 / 0.07 - 1.0 / 0.03f32 as f64);
        assert!((bs.grad_sigma.unwrap() - (bs.noise_dot + term)).abs() <= 1e-9 * term.abs());

        // Diagonal, against the naive passes from the stored tape.
        let mut w = vec![0.0f32; len];
        let mut w2 = vec![0.0f32; len];
        let (_, tape) =
            naive::forward(&m, Some(&mu), Scale::Diagonal(&sig), key, first, &mut w2).unwrap();
        forward(&m, Some(&mu), Scale::Diagonal(&sig), key, first, &mut w, 2).unwrap();
        assert_eq!(w, w2);
        let (mut gm1, mut gs1) = (vec![0.0f32; len], vec![0.0f32; len]);
        let (mut gm2, mut gs2) = (vec![0.0f32; len], vec![0.0f32; len]);
        let b1 = backward(
            &m,
            Some(&mu),
            Scale::Diagonal(&sig),
            key,
            first,
            &g,
            kl,
            &mut gm1,
            Some(&mut gs1),
            2,
        )
        .unwrap();
        let b2 = naive::backward(
            &tape,
            Scale::Diagonal(&sig),
            &g,
            kl,
            &mut gm2,
            Some(&mut gs2),
        )
        .unwrap();
        assert_eq!(gm1, gm2);
        assert_eq!(gs1, gs2);
        assert!(b1.grad_sigma.is_none());
        assert!((b1.noise_dot - b2.noise_dot).abs() <= 1e-12 * scale_of_terms.max(1e-300));
        for j in (0..len).step_by(13) {
            let z = normal_at(key, first + j as u64);
            let expect = g[j] * z + k * (sig[j] * inv_v - 1.0 / sig[j]);
            assert_eq!(gs1[j].to_bits(), expect.to_bits());
        }
    }
}

#[test]
fn fused_sgd_equals_backward_then_momentum_passes() {
    let len = 2 * REDUCTION_CHUNK + 333;
    let key = NoiseKey::new(8, 8);
    let mu = data(len, 51, 0.5);
    let g = data(len, 52, 1e-2);
    let kl = KlGradScales {
        inv_kappa_n: 1e-4,
        variance: 0.2,
    };
    let sgd = SgdMomentum {
        lr: 0.1,
        momentum: 0.9,
    };
    let mut m1 = data(len, 53, 0.5);
    let mut u1 = data(len, 54, 1e-3);
    let mut m2 = m1.clone();
    let mut u2 = u1.clone();

    let b1 = backward_sgd(
        &mut m1,
        &mut u1,
        Some(&mu),
        Scale::Isotropic(0.01),
        key,
        0,
        &g,
        kl,
        sgd,
        None,
        3,
    )
    .unwrap();
    let mut gm = vec![0.0f32; len];
    let b2 = backward(
        &m2,
        Some(&mu),
        Scale::Isotropic(0.01),
        key,
        0,
        &g,
        kl,
        &mut gm,
        None,
        1,
    )
    .unwrap();
    naive::sgd_step(&mut m2, &mut u2, &gm, sgd).unwrap();
    assert_eq!(m1, m2);
    assert_eq!(u1, u2);
    assert_eq!(b1, b2);
    // The update moved the means by -lr (beta u + grad).
    let i = 100;
    assert!(m1[i] != data(len, 53, 0.5)[i]);
}

#[test]
fn naive_forward_agrees_with_fused() {
    let len = 30_000;
    let key = NoiseKey::new(2, 2);
    let m = data(len, 61, 0.4);
    let mu = data(len, 62, 0.4);
    let mut w1 = vec![0.0f32; len];
    let mut w2 = vec![0.0f32; len];
    let s1 = forward(&m, Some(&mu), Scale::Isotropic(0.1), key, 9, &mut w1, 2).unwrap();
    let (s2, tape) = naive::forward(&m, Some(&mu), Scale::Isotropic(0.1), key, 9, &mut w2).unwrap();
    assert_eq!(w1, w2);
    assert!((s1.sq_dist - s2.sq_dist).abs() <= 1e-12 * s2.sq_dist);
    assert_eq!(tape.eps.len(), len);
    assert_eq!(tape.eps[5].to_bits(), normal_at(key, 14).to_bits());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = vec![0.0f32; 10];
    let mut w = vec![0.0f32; 10];
    let key = NoiseKey::default();
    let short = vec![0.0f32; 9];
    let iso = Scale::Isotropic(0.1);
    assert!(matches!(
        forward(&m, Some(&short), iso, key, 0, &mut w, 1),
        Err(CoreError::LengthMismatch { .. })
    ));
    assert!(matches!(
        forward(&m, None, iso, key, 0, &mut w[..9], 1),
        Err(CoreError::LengthMismatch { .. })
    ));
    assert!(matches!(
        forward(&m, None, iso, key, 0, &mut w, 0),
        Err(CoreError::NonPositive { .. })
    ));
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(forward(&m, None, Scale::Isotropic(bad), key, 0, &mut w, 1).is_err());
    }
    let mut sig = vec![0.1f32; 10];
    sig[4] = 0.0;
    match forward(&m, None, Scale::Diagonal(&sig), key, 0, &mut w, 1) {
        Err(CoreError::NonPositive { name, .. }) => assert_eq!(name, "sigma[4]"),
        other => panic!("{other:?}"),
    }
    let kl = KlGradScales {
        inv_kappa_n: 1.0,
        variance: 1.0,
    };
    let mut gm = vec![0.0f32; 10];
    // Diagonal backward needs its sigma-gradient buffer.
    let good_sig = vec![0.1f32; 10];
    assert!(
        backward(
            &m,
            None,
            Scale::Diagonal(&good_sig),
            key,
            0,
            &m,
            kl,
            &mut gm,
            None,
            1
        )
        .is_err()
    );
    let bad_kl = KlGradScales {
        inv_kappa_n: 1.0,
        variance: 0.0,
    };
    assert!(backward(&m, None, iso, key, 0, &m, bad_kl, &mut gm, None, 1).is_err());
    let mut u = vec![0.0f32; 10];
    let mut mm = m.clone();
    let nan_sgd = SgdMomentum {
        lr: f32::NAN,
        momentum: 0.9,
    };
    assert!(backward_sgd(&mut mm, &mut u, None, iso, key, 0, &m, kl, nan_sgd, None, 1).is_err());
    // An empty block is fine for the passes; its KL terms are the error.
    let st = forward(&[], None, iso, key, 0, &mut [], 2).unwrap();
    assert_eq!(st.sq_dist, 0.0);
    assert!(st.kl_terms().is_err());
}
