//! The optimizer against hand-computed Nesterov updates, and the evaluation helpers.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use candle_core::{DType, Device, Tensor, Var};
use deelbo_candle::{
    BlockSpec, CosineSchedule, Mlp, NesterovSgd, ParamGroup, VariationalModel,
    metrics_from_log_probs, posterior_mean_log_probs, predictive_log_probs,
};
use deelbo_core::IsotropicPosterior;

#[test]
fn cosine_schedule_endpoints() {
    let s = CosineSchedule::new(0.1, 100).unwrap();
    assert_eq!(s.lr(0), 0.1);
    assert!((s.lr(50) - 0.05).abs() < 1e-15);
    assert!(s.lr(99) < 1e-4 && s.lr(99) > 0.0);
    assert!(CosineSchedule::new(0.0, 10).is_err());
    assert!(CosineSchedule::new(0.1, 0).is_err());
}

#[test]
fn nesterov_steps_and_clipping_match_hand_computation() {
    let dev = Device::Cpu;
    let p = Var::new(&[1.0f64, -2.0], &dev).unwrap();
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: vec![p.clone()],
            clip_norm: Some(5.0),
        }],
        0.9,
    )
    .unwrap();
    // loss = 3 p0 + 4 p1 -> g = (3, 4), |g| = 5 (not clipped).
    let c = Tensor::new(&[3.0f64, 4.0], &dev).unwrap();
    let loss = p.as_tensor().mul(&c).unwrap().sum_all().unwrap();
    let r = opt.step(&loss.backward().unwrap(), 0.1).unwrap();
    assert_eq!(r.clip_scales, vec![1.0]);
    // b = g; p -= lr (g + 0.9 b) = lr 1.9 g
    let v: Vec<f64> = p.as_tensor().to_vec1().unwrap();
    assert!((v[0] - (1.0 - 0.1 * 1.9 * 3.0)).abs() < 1e-12);
    assert!((v[1] - (-2.0 - 0.1 * 1.9 * 4.0)).abs() < 1e-12);
    // Second step with g = (30, 40): clipped to norm 5 -> (3, 4); b = 0.9 (3,4) + (3,4) = 1.9 g.
    let c = Tensor::new(&[30.0f64, 40.0], &dev).unwrap();
    let loss = p.as_tensor().mul(&c).unwrap().sum_all().unwrap();
    let r = opt.step(&loss.backward().unwrap(), 0.1).unwrap();
    assert!((r.grad_norms[0] - 50.0).abs() < 1e-12);
    assert!((r.clip_scales[0] - 0.1).abs() < 1e-15);
    let w: Vec<f64> = p.as_tensor().to_vec1().unwrap();
    let step = 0.1 * (1.0 + 0.9 * 1.9);
    assert!((w[0] - (v[0] - step * 3.0)).abs() < 1e-12);
    assert!((w[1] - (v[1] - step * 4.0)).abs() < 1e-12);
    assert!(NesterovSgd::new(vec![], 1.0).is_err());
}

/// The one-pass CPU update and the candle-op update give the same bits, step after step, in
/// f32 and f64, clipped and not, with gradients that arrive transposed (a matmul's weight).
#[test]
fn the_fused_update_has_the_candle_ops_bits() {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let run = |fused: bool| {
            let w0 = Tensor::arange(0u32, 12, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .affine(0.37, -1.9)
                .unwrap()
                .reshape((3, 4))
                .unwrap();
            let w = Var::from_tensor(&w0).unwrap();
            let h = Var::from_tensor(&Tensor::zeros(4, dtype, &dev).unwrap()).unwrap();
            let x = Tensor::arange(0u32, 15, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .affine(0.13, -0.7)
                .unwrap()
                .reshape((5, 3))
                .unwrap();
            let mut opt = NesterovSgd::new(
                vec![ParamGroup {
                    vars: vec![w.clone(), h.clone()],
                    clip_norm: Some(2.0),
                }],
                0.9,
            )
            .unwrap()
            .with_fused(fused);
            let mut scales = Vec::new();
            for step in 0..6 {
                // The gradient of w (3 x 4) comes from x^T (.), and its size swings across the
                // clip norm with the step.
                let amp = if step % 2 == 0 { 10.0 } else { 0.05 };
                let y = x
                    .matmul(w.as_tensor())
                    .unwrap()
                    .broadcast_add(h.as_tensor())
                    .unwrap();
                let loss = y
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .affine(amp, 0.0)
                    .unwrap();
                let r = opt.step(&loss.backward().unwrap(), 0.1).unwrap();
                scales.push(r.clip_scales[0]);
            }
            let bits = |t: &Tensor| -> Vec<u64> {
                let v: Vec<f64> = t
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            (bits(w.as_tensor()), bits(h.as_tensor()), scales)
        };
        let (fused, ops) = (run(true), run(false));
        assert!(
            fused.2.iter().any(|&s| s < 1.0) && fused.2.contains(&1.0),
            "{:?}",
            fused.2
        );
        assert_eq!(fused, ops, "{dtype:?}");
    }
}

/// A gradient that shares the parameter's storage (here put into the store by hand:
/// `p.detach()`) cannot be read while the parameter is written in place: the step falls back
/// to the candle ops and gives their values.
#[test]
fn a_gradient_aliasing_its_parameter_takes_the_candle_ops() {
    let dev = Device::Cpu;
    let run = |fused: bool| {
        let p = Var::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let mut opt = NesterovSgd::new(
            vec![ParamGroup {
                vars: vec![p.clone()],
                clip_norm: None,
            }],
            0.9,
        )
        .unwrap()
        .with_fused(fused);
        for _ in 0..3 {
            let loss = p.as_tensor().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            grads.insert(p.as_tensor(), p.as_tensor().detach());
            opt.step(&grads, 0.1).unwrap();
        }
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let fused = run(true);
    assert_eq!(fused, run(false));
    // And it moved: p <- p - 0.1 (g + 0.9 b) with g = p, three times.
    assert_ne!(fused[0], 1.0f32.to_bits());
}

#[test]
fn metrics_of_a_known_matrix() {
    let dev = Device::Cpu;
    let p = Tensor::new(
        &[[0.7f64, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]],
        &dev,
    )
    .unwrap();
    let m = metrics_from_log_probs(&p.log().unwrap(), &[0, 2, 1]).unwrap();
    assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-15);
    let nll = -(0.7f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0;
    assert!((m.nll - nll).abs() < 1e-14);
    assert!(metrics_from_log_probs(&p, &[0, 1]).is_err());
    assert!(metrics_from_log_probs(&p, &[0, 1, 3]).is_err());
}

#[test]
fn predictive_averages_sampled_softmaxes() {
    let dev = Device::Cpu;
    let mlp = Mlp::new(4, vec![6], 3).unwrap();
    let bb = mlp.init_backbone(1, DType::F64, &dev).unwrap();
    let head = mlp.init_head(2, DType::F64, &dev).unwrap();
    let model = VariationalModel::new(
        vec![
            BlockSpec::l2sp("backbone", bb),
            BlockSpec::zero_mean("head", head),
        ],
        IsotropicPosterior::from_sigma(0.3).unwrap(),
    )
    .unwrap();
    let x = Tensor::new(&[[0.1f64, 0.5, -0.2, 1.0], [1.0, -1.0, 0.3, 0.0]], &dev).unwrap();
    let fwd = |w: &deelbo_candle::Weights, x: &Tensor| mlp.forward(w, x);
    let lp = predictive_log_probs(&model, fwd, &x, 3, 7).unwrap();
    let mut expect = [[0.0f64; 3]; 2];
    for s in 0..3 {
        let w = model.sample_predictive(7, s).unwrap();
        let p = candle_nn::ops::softmax(&mlp.forward(&w, &x).unwrap(), 1).unwrap();
        let p: Vec<Vec<f64>> = p.to_vec2().unwrap();
        for i in 0..2 {
            for c in 0..3 {
                expect[i][c] += p[i][c] / 3.0;
            }
        }
    }
    let got: Vec<Vec<f64>> = lp.to_vec2().unwrap();
    for i in 0..2 {
        for c in 0..3 {
            assert!((got[i][c] - expect[i][c].ln()).abs() < 1e-12);
        }
    }
    // The predictive differs from the posterior-mean prediction at sigma = 0.3.
    let mean_lp: Vec<Vec<f64>> = posterior_mean_log_probs(&model, fwd, &x)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert!((mean_lp[0][0] - got[0][0]).abs() > 1e-6);
}
