//! Batch-norm statistics of an evaluated variational network belong to its own weights.
//!
//! A variational run trains on sampled weights `m + sigma eps_t`, so the running statistics a
//! batch-norm layer accumulates are an average over those sampled networks. Evaluating the
//! posterior mean (or one predictive sample) with them normalizes by statistics of other
//! networks. `Architecture::calibrated` recomputes them on the training set for the weights
//! at hand; here they are checked against the per-channel mean and variance of `conv1`'s output
//! computed directly from the weights (candle `conv2d`, independent of `BatchNorm`), after
//! training with a posterior scale large enough that the training-time averages are measurably
//! off (the old evaluation, which used them, fails the same check).

#![allow(clippy::unwrap_used)] // tests unwrap

use candle_core::{D, DType, Device, ModuleT, Tensor};
use candle_nn::VarMap;
use candle_nn::loss::cross_entropy;
use deelbo_candle::{
    BlockPlan, CosineSchedule, NesterovSgd, ParamGroup, VariationalModel, elbo_loss,
    seeded_var_builder,
};
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective, normal_at};
use deelbo_transfer::{Architecture, ConvNet};

/// Per-channel mean and unbiased variance of `conv1(x)` over (batch, height, width), computed
/// from the weights the model's builder hands out.
fn conv1_stats(model: &VariationalModel, x: &Tensor, sample: Option<u32>) -> (Vec<f32>, Vec<f32>) {
    let vb = match sample {
        None => model.mean_var_builder(),
        Some(s) => model.predictive_var_builder(5, s).unwrap(),
    };
    let w = vb.pp("conv1").get((8, 1, 3, 3), "weight").unwrap();
    let b = vb.pp("conv1").get(8, "bias").unwrap();
    let n = x.dim(0).unwrap();
    let h = x
        .reshape((n, 1, 8, 8))
        .unwrap()
        .conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, 8, 1, 1)).unwrap())
        .unwrap();
    let h = h
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let count = h.dim(1).unwrap() as f64;
    let mean = h.mean_keepdim(D::Minus1).unwrap();
    let var = h
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .affine(1.0 / (count - 1.0), 0.0)
        .unwrap();
    let f32s = |t: Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    (f32s(mean), f32s(var))
}

fn running(model: &VariationalModel) -> (Vec<f32>, Vec<f32>) {
    let get = |name: &str| {
        model
            .buffer(name)
            .unwrap()
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    };
    (get("bn1.running_mean"), get("bn1.running_var"))
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f32::max)
}

#[test]
fn calibrated_batch_norm_statistics_are_those_of_the_evaluated_weights() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    ConvNet::new(seeded_var_builder(&varmap, 3, DType::F32, &dev), 5).unwrap();
    let plan = BlockPlan::transfer(&["conv1", "bn1", "conv2", "bn2", "fc"], &["head"]);
    // sigma = 0.15: the sampled networks differ clearly from the mean.
    let model = VariationalModel::from_varmap(
        &varmap,
        &plan,
        IsotropicPosterior::from_sigma(0.15).unwrap(),
    )
    .unwrap();
    let n = 40;
    let key = NoiseKey::new(11, 0);
    let x: Vec<f32> = (0..n * 64)
        .map(|i| normal_at(key, i as u64).abs().min(2.0))
        .collect();
    let x = Tensor::from_vec(x, (n, 64), &dev).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    let y = Tensor::from_vec(labels, n, &dev).unwrap();
    let objective = Objective::new(KappaRule::DataEmphasized, model.num_params(), n).unwrap();
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: model.mean_vars(),
            clip_norm: Some(1.0),
        }],
        0.9,
    )
    .unwrap();
    let schedule = CosineSchedule::new(1e-3, 20).unwrap();
    for step in 0..20 {
        let net = ConvNet::new(model.var_builder(0, step).unwrap(), 5).unwrap();
        let nll = cross_entropy(&net.forward_t(&x, true).unwrap(), &y).unwrap();
        let loss = elbo_loss(&nll, &model.kl(&objective).unwrap()).unwrap();
        opt.step(&loss.backward().unwrap(), schedule.lr(step as usize))
            .unwrap();
    }

    // The training-time running statistics do not belong to the posterior mean.
    let (truth_mean, truth_var) = conv1_stats(&model, &x, None);
    let (old_mean, old_var) = running(&model);
    let old_error = max_rel(&old_mean, &truth_mean).max(max_rel(&old_var, &truth_var));
    assert!(
        old_error > 0.05,
        "training-time statistics off by only {old_error}"
    );

    // Calibrated on the training set: the posterior mean's own statistics.
    let net = Architecture::Conv
        .calibrated(model.mean_var_builder(), &[], 5, &x)
        .unwrap();
    let (mean, var) = running(&model);
    assert!(
        max_rel(&mean, &truth_mean) < 1e-4,
        "{mean:?} vs {truth_mean:?}"
    );
    assert!(max_rel(&var, &truth_var) < 1e-4, "{var:?} vs {truth_var:?}");
    // The eval-mode forward uses them: the same logits as a fresh network built afterwards.
    let a = net.forward_t(&x, false).unwrap();
    let b = ConvNet::new(model.mean_var_builder(), 5)
        .unwrap()
        .forward_t(&x, false)
        .unwrap();
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    // And for a predictive sample, its own (different) statistics.
    Architecture::Conv
        .calibrated(model.predictive_var_builder(5, 2).unwrap(), &[], 5, &x)
        .unwrap();
    let (s_mean, s_var) = running(&model);
    let (t_mean, t_var) = conv1_stats(&model, &x, Some(2));
    assert!(max_rel(&s_mean, &t_mean) < 1e-4);
    assert!(max_rel(&s_var, &t_var) < 1e-4);
    assert!(
        max_rel(&t_var, &truth_var) > 1e-3,
        "the sample's statistics equal the mean's"
    );
}
