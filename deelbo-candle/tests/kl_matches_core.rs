//! The candle KL term and its autodiff gradients against the core's analytic values
//! (`KlTerms::kl_at_optimum`, `Objective::evaluate`, `BlockEvaluation::mean_gradient_scale`,
//! `Evaluation::loss_grad_rho`), in f64 (tight) and f32 (loose), on both the fused and the
//! composite path, plus a finite-difference check of d loss / d rho that uses neither.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use candle_core::{DType, Device, Tensor};
use deelbo_candle::{BlockSpec, VariationalModel, elbo_loss};
use deelbo_core::test_util::rel_err;
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective, PriorVariance, normal_at};

/// Deterministic pseudo-random values of a given scale.
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|i| scale * f64::from(normal_at(NoiseKey::new(seed, 99), i as u64)))
        .collect()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// A two-block model (backbone with an L2-SP prior, zero-mean head) whose means are moved away
/// from the prior means, with sigma = `sigma`.
fn model(dtype: DType, sigma: f64, head_variance: PriorVariance) -> VariationalModel {
    let pre_w = values(20 * 30, 1, 0.3);
    let pre_b = values(30, 2, 0.1);
    let backbone = vec![
        ("w".to_string(), tensor(&pre_w, &[20, 30], dtype)),
        ("b".to_string(), tensor(&pre_b, &[30], dtype)),
    ];
    let head = vec![
        (
            "h".to_string(),
            tensor(&values(30 * 5, 3, 0.2), &[30, 5], dtype),
        ),
        ("hb".to_string(), tensor(&values(5, 4, 0.05), &[5], dtype)),
    ];
    let m = VariationalModel::new(
        vec![
            BlockSpec::l2sp("backbone", backbone),
            BlockSpec::zero_mean("head", head).with_variance(head_variance),
        ],
        IsotropicPosterior::from_sigma(sigma).unwrap(),
    )
    .unwrap();
    // Move the backbone means off the pretrained weights: m = mu + delta.
    let t = &m.blocks()[0].tensors()[0];
    let moved: Vec<f64> = pre_w
        .iter()
        .zip(values(600, 5, 0.02))
        .map(|(a, d)| a + d)
        .collect();
    t.mean.set(&tensor(&moved, &[20, 30], dtype)).unwrap();
    let t = &m.blocks()[0].tensors()[1];
    let moved: Vec<f64> = pre_b
        .iter()
        .zip(values(30, 6, 0.01))
        .map(|(a, d)| a + d)
        .collect();
    t.mean.set(&tensor(&moved, &[30], dtype)).unwrap();
    m
}

struct Check {
    loss: f64,
    kl: Vec<f64>,
    variances: Vec<f64>,
    /// max over weights of |autodiff grad - core grad| / max |core grad|, per block
    mean_grad_err: Vec<f64>,
    grad_rho: f64,
    core_grad_rho: f64,
    core_loss: f64,
    core_kl: Vec<f64>,
    core_variances: Vec<f64>,
}

fn check(m: &VariationalModel, rule: KappaRule, n: usize) -> Check {
    let obj = Objective::new(rule, m.num_params(), n).unwrap();
    let mean_nll = 0.7;
    let nll = Tensor::new(mean_nll, &Device::Cpu).unwrap();
    let kl = m.kl(&obj).unwrap();
    let loss = elbo_loss(&nll, &kl).unwrap();
    let grads = loss.backward().unwrap();
    let core = m.core_evaluate(&obj, mean_nll).unwrap();
    let q = m.posterior().unwrap();
    let mut mean_grad_err = Vec::new();
    for (b, be) in m.blocks().iter().zip(&core.blocks) {
        let mut worst = 0.0f64;
        let mut scale = 0.0f64;
        for t in b.tensors() {
            let g: Vec<f64> = grads
                .get(t.mean.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            let mv: Vec<f64> = t
                .mean
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            let mu: Vec<f64> = match &t.prior_mean {
                Some(p) => p
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                None => vec![0.0; mv.len()],
            };
            for ((g, m), mu) in g.iter().zip(&mv).zip(&mu) {
                let expect = be.mean_gradient_scale * (m - mu);
                worst = worst.max((g - expect).abs());
                scale = scale.max(expect.abs());
            }
        }
        mean_grad_err.push(worst / scale);
    }
    let grad_rho = grads
        .get(m.rho().as_tensor())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    Check {
        loss: loss.to_scalar::<f64>().unwrap(),
        kl: kl
            .blocks
            .iter()
            .map(|b| b.kl.to_scalar::<f64>().unwrap())
            .collect(),
        variances: kl.variances().unwrap(),
        mean_grad_err,
        grad_rho,
        core_grad_rho: core.loss_grad_rho(&q).unwrap(),
        core_loss: core.loss,
        core_kl: core.blocks.iter().map(|b| b.kl).collect(),
        core_variances: core.blocks.iter().map(|b| b.variance).collect(),
    }
}

#[test]
fn f64_kl_values_and_gradients_equal_the_core() {
    for fused in [true, false] {
        for (rule, sigma) in [
            (KappaRule::DataEmphasized, 1e-4),
            (KappaRule::DataEmphasized, 0.03),
            (KappaRule::Standard, 0.01),
            (KappaRule::Fixed(3.5), 0.2),
        ] {
            let mut m = model(DType::F64, sigma, PriorVariance::Learned);
            m.set_fused(fused);
            // Cross-check the core's own closed forms on the same state.
            for (terms, _) in m.core_kl_terms().unwrap() {
                let d = terms.len as f64;
                let s2 = sigma * sigma;
                let direct = 0.5 * d * (1.0 + terms.quadratic / (d * s2)).ln();
                assert!(rel_err(terms.kl_at_optimum().unwrap(), direct) < 1e-9);
            }
            let c = check(&m, rule, 40);
            let what = format!("fused={fused} rule={rule:?} sigma={sigma}");
            assert!(
                rel_err(c.loss, c.core_loss) < 1e-13,
                "{what}: loss {} vs {}",
                c.loss,
                c.core_loss
            );
            for b in 0..2 {
                assert!(
                    rel_err(c.kl[b], c.core_kl[b]) < 1e-12,
                    "{what}: KL {:?} vs {:?}",
                    c.kl,
                    c.core_kl
                );
                assert!(
                    rel_err(c.variances[b], c.core_variances[b]) < 1e-13,
                    "{what}"
                );
                assert!(
                    c.mean_grad_err[b] < 1e-12,
                    "{what}: mean grads off by {:?}",
                    c.mean_grad_err
                );
            }
            assert!(
                rel_err(c.grad_rho, c.core_grad_rho) < 1e-10,
                "{what}: d loss/d rho {} vs core {}",
                c.grad_rho,
                c.core_grad_rho
            );
        }
    }
}

#[test]
fn fixed_head_variance_matches_the_core() {
    for v in [1e-3, 0.5] {
        let m = model(DType::F64, 0.02, PriorVariance::Fixed(v));
        let c = check(&m, KappaRule::DataEmphasized, 25);
        assert_eq!(c.core_variances[1], v);
        assert_eq!(c.variances[1], v);
        assert!(rel_err(c.loss, c.core_loss) < 1e-13);
        assert!(
            rel_err(c.kl[1], c.core_kl[1]) < 1e-12,
            "{:?} vs {:?}",
            c.kl,
            c.core_kl
        );
        assert!(
            c.mean_grad_err.iter().all(|&e| e < 1e-12),
            "{:?}",
            c.mean_grad_err
        );
        assert!(
            rel_err(c.grad_rho, c.core_grad_rho) < 1e-10,
            "{} vs {}",
            c.grad_rho,
            c.core_grad_rho
        );
    }
}

#[test]
fn f32_model_matches_the_f64_core_loosely() {
    for fused in [true, false] {
        let mut m32 = model(DType::F32, 0.03, PriorVariance::Learned);
        m32.set_fused(fused);
        let m64 = model(DType::F64, 0.03, PriorVariance::Learned);
        let c32 = check(&m32, KappaRule::DataEmphasized, 40);
        let c64 = check(&m64, KappaRule::DataEmphasized, 40);
        // The f32 model's own core reference uses its (rounded) f32 values...
        assert!(rel_err(c32.loss, c32.core_loss) < 1e-6, "fused={fused}");
        // ...and stays close to the f64 model.
        assert!(
            rel_err(c32.loss, c64.core_loss) < 1e-5,
            "{} vs {}",
            c32.loss,
            c64.core_loss
        );
        for b in 0..2 {
            assert!(rel_err(c32.kl[b], c64.core_kl[b]) < 1e-4);
            assert!(c32.mean_grad_err[b] < 1e-5, "{:?}", c32.mean_grad_err);
        }
        assert!(rel_err(c32.grad_rho, c64.core_grad_rho) < 1e-4);
    }
}

#[test]
fn rho_gradient_matches_finite_differences() {
    // Independent of the core: central differences of the candle loss in rho.
    let m = model(DType::F64, 0.01, PriorVariance::Learned);
    let obj = Objective::new(KappaRule::DataEmphasized, m.num_params(), 40).unwrap();
    let loss_at = |rho: f64| {
        m.rho()
            .set(&Tensor::new(rho, &Device::Cpu).unwrap())
            .unwrap();
        m.kl(&obj).unwrap().loss.to_scalar::<f64>().unwrap()
    };
    let rho0 = m.posterior().unwrap().rho();
    let h = 1e-5;
    let fd = (loss_at(rho0 + h) - loss_at(rho0 - h)) / (2.0 * h);
    m.rho()
        .set(&Tensor::new(rho0, &Device::Cpu).unwrap())
        .unwrap();
    let g = m.kl(&obj).unwrap().loss.backward().unwrap();
    let ad = g
        .get(m.rho().as_tensor())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        rel_err(ad, fd) < 1e-6,
        "autodiff {ad} vs finite difference {fd}"
    );
}
