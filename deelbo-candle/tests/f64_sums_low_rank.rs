//! Sums over weights are `f64` on every path (fused, composite, leaves, gradient-norm clipping,
//! the sample's `dL/dsigma`), checked
//! on a block of 1.2e6 weights against an `f64` host sum where an `f32` sum is measurably off;
//! and a low-rank (PTYL) block's candle KL and gradients equal the core's.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use deelbo_candle::{BlockSpec, NesterovSgd, ParamGroup, VariationalModel};
use deelbo_core::{IsotropicPosterior, KappaRule, LowRankPrior, NoiseKey, Objective, normal_at};
use ndarray::{Array1, Array2};

const BIG: usize = 1_200_000;

fn big_values(seed: u64, offset: f32) -> Vec<f32> {
    let key = NoiseKey::new(seed, 11);
    (0..BIG)
        .map(|i| offset + 0.37 * normal_at(key, i as u64))
        .collect()
}

#[test]
fn squared_distance_and_gradient_norm_of_a_million_weights_are_f64() {
    let dev = Device::Cpu;
    let m = big_values(1, 0.9);
    let mu = big_values(2, 0.1);
    let reference: f64 = m
        .iter()
        .zip(&mu)
        .map(|(a, b)| {
            let d = f64::from(*a) - f64::from(*b);
            d * d
        })
        .sum();
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1200, 1000), &dev).unwrap();
    for fused in [true, false] {
        let mut model = VariationalModel::new(
            vec![BlockSpec::l2sp("big", vec![("w".into(), t(&mu))])],
            IsotropicPosterior::default(),
        )
        .unwrap();
        model.set_fused(fused);
        model.blocks()[0].tensors()[0].mean.set(&t(&m)).unwrap();
        let got = model.squared_distances().unwrap()[0]
            .to_scalar::<f64>()
            .unwrap();
        let err = (got - reference).abs() / reference;
        assert!(
            err < 1e-12,
            "fused={fused}: M = {got}, f64 reference {reference}, rel {err:e}"
        );
    }
    // What an f32 accumulation gives (the composite path before): measurably off.
    let f32_sum = t(&m)
        .sub(&t(&mu))
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let f32_err = (f64::from(f32_sum.to_scalar::<f32>().unwrap()) - reference).abs() / reference;
    assert!(
        f32_err > 1e-9,
        "an f32 sum is expected to be off: {f32_err:e}"
    );

    // Gradient-norm clipping: loss = sum_i c_i p_i, so g = c and ||g||^2 = sum c_i^2.
    let p = Var::from_tensor(&t(&m)).unwrap();
    let c = t(&mu);
    let loss = p.as_tensor().mul(&c).unwrap().sum_all().unwrap();
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: vec![p.clone()],
            clip_norm: Some(1.0),
        }],
        0.0,
    )
    .unwrap();
    let r = opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
    let norm_ref = mu.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let err = (r.grad_norms[0] - norm_ref).abs() / norm_ref;
    assert!(
        err < 1e-12,
        "grad norm {} vs {norm_ref}: {err:e}",
        r.grad_norms[0]
    );
}

/// `dL/drho = sigmoid(rho) sum_i c_i eps_i` for `L = sum_i c_i w~_i` over 1.2e6 sampled
/// weights: `f64` on the fused and the composite graph path and on both leaf paths, against an
/// `f64` host sum over the core's normals (an `f32` sum of the same products is off by ~1e-7).
#[test]
fn the_noise_dot_of_a_million_sampled_weights_is_f64_on_every_path() {
    let dev = Device::Cpu;
    let m = big_values(3, 0.2);
    let c = big_values(4, 0.5);
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1200, 1000), &dev).unwrap();
    let (seed, step) = (21u64, 2u32);
    let key = NoiseKey::for_block_step(seed, 0, step);
    let products: Vec<f64> = c
        .iter()
        .enumerate()
        .map(|(i, &c)| f64::from(c) * f64::from(normal_at(key, i as u64)))
        .collect();
    let dot: f64 = products.iter().sum();
    let f32_dot: f32 = c
        .iter()
        .enumerate()
        .map(|(i, &c)| c * normal_at(key, i as u64))
        .sum();
    assert!(
        (f64::from(f32_dot) - dot).abs() > 1e-9 * dot.abs(),
        "an f32 sum is expected to be off"
    );
    for fused in [true, false] {
        let mut model = VariationalModel::new(
            vec![BlockSpec::zero_mean("big", vec![("w".into(), t(&m))])],
            IsotropicPosterior::from_sigma(0.01).unwrap(),
        )
        .unwrap();
        model.set_fused(fused);
        let want = model.posterior().unwrap().dsigma_drho() * dot;
        let graph = {
            let w = model.sample(seed, step).unwrap();
            let loss = w.get("w").unwrap().mul(&t(&c)).unwrap().sum_all().unwrap();
            loss.backward().unwrap()
        };
        let mut sample = deelbo_candle::LeafSample::new(&model).unwrap();
        sample.resample(&model, seed, step).unwrap();
        let mut leaf = {
            let w = sample.leaf("w").unwrap().as_tensor();
            w.mul(&t(&c))
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let leaf_dot = sample.gradients_to_posterior(&model, &mut leaf).unwrap();
        assert!((leaf_dot - dot).abs() <= 1e-12 * dot.abs(), "fused={fused}");
        for (path, g) in [("graph", &graph), ("leaves", &leaf)] {
            let got = g
                .get(model.rho().as_tensor())
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let err = (got - want).abs() / want.abs();
            assert!(
                err < 1e-12,
                "{path}, fused={fused}: dL/drho {got} vs {want}: {err:e}"
            );
        }
    }
}

#[test]
fn low_rank_block_kl_and_gradients_equal_the_core() {
    let dev = Device::Cpu;
    let (rows, cols, k) = (6, 5, 3);
    let d = rows * cols + cols;
    let key = NoiseKey::new(4, 1);
    let z = |i: usize| f64::from(normal_at(key, i as u64));
    let diag = Array1::from_shape_fn(d, |j| 0.01 * (1.0 + 0.5 * z(j).abs()));
    let u = Array2::from_shape_fn((d, k), |(j, p)| 0.05 * z(500 + j * k + p));
    let prior = Arc::new(LowRankPrior::new(diag, u.view()).unwrap());
    let mu_w: Vec<f64> = (0..rows * cols).map(|i| 0.2 * z(1000 + i)).collect();
    let mu_b: Vec<f64> = (0..cols).map(|i| 0.1 * z(2000 + i)).collect();
    let tw = |v: &[f64]| Tensor::from_vec(v.to_vec(), (rows, cols), &dev).unwrap();
    let tb = |v: &[f64]| Tensor::from_vec(v.to_vec(), cols, &dev).unwrap();
    let head = Tensor::from_vec(
        (0..8).map(|i| 0.1 * z(3000 + i)).collect::<Vec<f64>>(),
        (2, 4),
        &dev,
    )
    .unwrap();
    let model = VariationalModel::new(
        vec![
            BlockSpec::low_rank(
                "backbone",
                vec![("b".into(), tb(&mu_b)), ("w".into(), tw(&mu_w))],
                vec![tb(&mu_b), tw(&mu_w)],
                prior.clone(),
            ),
            BlockSpec::zero_mean("head", vec![("h".into(), head)]),
        ],
        IsotropicPosterior::from_sigma(0.02).unwrap(),
    )
    .unwrap();
    // Move the means off the prior mean.
    let bt = &model.blocks()[0].tensors();
    let moved_b: Vec<f64> = mu_b
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.05 * z(4000 + i))
        .collect();
    let moved_w: Vec<f64> = mu_w
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.05 * z(5000 + i))
        .collect();
    bt[0].mean.set(&tb(&moved_b)).unwrap();
    bt[1].mean.set(&tw(&moved_w)).unwrap();
    let obj = Objective::new(KappaRule::DataEmphasized, model.num_params(), 3).unwrap();
    let kl = model.kl(&obj).unwrap();
    let core = model.core_evaluate(&obj, 0.0).unwrap();
    for (b, c) in kl.blocks.iter().zip(&core.blocks) {
        let (a, e) = (b.kl.to_scalar::<f64>().unwrap(), c.kl);
        assert!(
            (a - e).abs() <= 1e-11 * e.abs(),
            "{}: KL {a} vs core {e}",
            b.name
        );
        let v = b.variance.to_scalar::<f64>().unwrap();
        assert!((v - c.variance).abs() <= 1e-12 * c.variance);
    }
    let grads = kl.loss.backward().unwrap();
    // Core: grad = Sigma_p^-1 (m - mu)/(kappa N v*) over the flat layout (b then w).
    let m_flat: Vec<f64> = moved_b.iter().chain(&moved_w).copied().collect();
    let mu_flat: Vec<f64> = mu_b.iter().chain(&mu_w).copied().collect();
    let mut expect = vec![0.0f64; d];
    Objective::add_low_rank_kl_mean_gradient(
        &mut expect,
        &m_flat,
        &mu_flat,
        &prior,
        &core.blocks[0],
    )
    .unwrap();
    let mut got: Vec<f64> = grads
        .get(bt[0].mean.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    got.extend(
        grads
            .get(bt[1].mean.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap(),
    );
    let scale = expect.iter().map(|g| g.abs()).fold(0.0, f64::max);
    for (j, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert!(
            (g - e).abs() <= 1e-10 * scale,
            "weight {j}: {g} vs core {e}"
        );
    }
    let q = model.posterior().unwrap();
    let g_rho = grads
        .get(model.rho().as_tensor())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let e_rho = core.loss_grad_rho(&q).unwrap();
    assert!(
        (g_rho - e_rho).abs() <= 1e-9 * e_rho.abs(),
        "{g_rho} vs {e_rho}"
    );
    let _ = DType::F64;
}
