//! The variational VarBuilder on models written with plain candle-nn (no deelbo code inside):
//! an MLP of `candle_nn::linear` layers equals the `Weights`-based [`Mlp`] bit for bit (logits,
//! loss and every gradient); a conv net with `conv2d`, `batch_norm` and `linear` trains with its
//! running statistics persisting across per-step rebuilds; the sampled tensors are the core's
//! `m + sigma eps`; bad names and shapes are typed errors.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use candle_core::{DType, Device, Module, ModuleT};
use candle_nn::loss::cross_entropy;
use candle_nn::{VarBuilder, VarMap};
use deelbo_candle::{
    AdapterError, BlockPlan, Mlp, NesterovSgd, ParamGroup, VariationalModel, elbo_loss,
    seeded_var_builder,
};
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective, normal_at};

mod common;

use common::{UserConv, UserMlp, bits, inputs};

#[test]
fn candle_nn_mlp_equals_the_weights_path_bit_for_bit() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    UserMlp::new(
        seeded_var_builder(&varmap, 4, DType::F32, &dev),
        &[10, 16, 12],
        3,
    )
    .unwrap();
    let plan = BlockPlan::transfer(&["hidden0", "hidden1"], &["head"]);
    let model = VariationalModel::from_varmap(
        &varmap,
        &plan,
        IsotropicPosterior::from_sigma(0.05).unwrap(),
    )
    .unwrap();
    assert_eq!(model.num_params(), 10 * 16 + 16 + 16 * 12 + 12 + 12 * 3 + 3);
    let mlp = Mlp::new(10, vec![16, 12], 3).unwrap();
    let (x, y) = inputs(7, 10, 1);
    let obj = Objective::new(KappaRule::DataEmphasized, model.num_params(), 7).unwrap();
    for step in [0u32, 5] {
        let net = UserMlp::new(model.var_builder(9, step).unwrap(), &[10, 16, 12], 3).unwrap();
        let a = net.forward(&x).unwrap();
        let b = mlp.forward(&model.sample(9, step).unwrap(), &x).unwrap();
        assert_eq!(bits(&a), bits(&b), "logits at step {step}");
        let la = elbo_loss(&cross_entropy(&a, &y).unwrap(), &model.kl(&obj).unwrap()).unwrap();
        let lb = elbo_loss(&cross_entropy(&b, &y).unwrap(), &model.kl(&obj).unwrap()).unwrap();
        assert_eq!(
            la.to_scalar::<f64>().unwrap().to_bits(),
            lb.to_scalar::<f64>().unwrap().to_bits()
        );
        let (ga, gb) = (la.backward().unwrap(), lb.backward().unwrap());
        for v in model.mean_vars() {
            let (p, q) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(bits(p), bits(q));
        }
        let rho = |g: &candle_core::backprop::GradStore| {
            g.get(model.rho().as_tensor())
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert_eq!(rho(&ga).to_bits(), rho(&gb).to_bits());
    }
    // The VarMap's Vars are the means: a step through the optimizer moves what the VarMap holds.
    let before = bits(varmap.data().lock().unwrap()["head.weight"].as_tensor());
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: model.mean_vars(),
            clip_norm: None,
        }],
        0.0,
    )
    .unwrap();
    let net = UserMlp::new(model.var_builder(9, 0).unwrap(), &[10, 16, 12], 3).unwrap();
    let loss = cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
    opt.step(&loss.backward().unwrap(), 0.1).unwrap();
    assert_ne!(
        before,
        bits(varmap.data().lock().unwrap()["head.weight"].as_tensor())
    );
    // The mean builder hands out the means themselves.
    let mean_net = UserMlp::new(model.mean_var_builder(), &[10, 16, 12], 3).unwrap();
    let direct = UserMlp::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        &[10, 16, 12],
        3,
    )
    .unwrap();
    assert_eq!(
        bits(&mean_net.forward(&x).unwrap()),
        bits(&direct.forward(&x).unwrap())
    );
}

#[test]
fn conv_net_trains_with_persistent_batch_norm_statistics() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    UserConv::new(seeded_var_builder(&varmap, 2, DType::F32, &dev)).unwrap();
    let plan = BlockPlan::transfer(&["conv1", "bn1", "conv2", "fc"], &["head"]);
    let model =
        VariationalModel::from_varmap(&varmap, &plan, IsotropicPosterior::default()).unwrap();
    assert_eq!(model.buffers().len(), 2);
    let names: Vec<String> = model.blocks()[0]
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "the block layout is sorted by name");
    assert!(!names.iter().any(|n| n.contains("running")));
    let (x, y) = inputs(12, 64, 5);
    let x = x.reshape((12, 1, 8, 8)).unwrap();
    let obj = Objective::new(KappaRule::DataEmphasized, model.num_params(), 12).unwrap();
    let mut opt = NesterovSgd::new(
        vec![
            ParamGroup {
                vars: model.mean_vars(),
                clip_norm: Some(1.0),
            },
            ParamGroup {
                vars: vec![model.rho().clone()],
                clip_norm: Some(1.0),
            },
        ],
        0.9,
    )
    .unwrap();
    let running0: Vec<f32> = model.buffer("bn1.running_mean").unwrap().to_vec1().unwrap();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..60u32 {
        let net = UserConv::new(model.var_builder(3, step).unwrap()).unwrap();
        let nll = cross_entropy(&net.forward_t(&x, true).unwrap(), &y).unwrap();
        let loss = elbo_loss(&nll, &model.kl(&obj).unwrap()).unwrap();
        last = loss.to_scalar::<f64>().unwrap();
        first.get_or_insert(last);
        opt.step(&loss.backward().unwrap(), 0.05).unwrap();
    }
    assert!(last < 0.5 * first.unwrap(), "loss {first:?} -> {last}");
    let running: Vec<f32> = model.buffer("bn1.running_mean").unwrap().to_vec1().unwrap();
    assert_ne!(
        running0, running,
        "batch-norm updates persist across rebuilds"
    );
    // The sampled conv weight is m + sigma eps with the core's noise at the tensor's offset.
    let (b, t) = model
        .blocks()
        .iter()
        .enumerate()
        .find_map(|(b, blk)| {
            blk.tensors()
                .iter()
                .find(|t| t.name == "conv2.weight")
                .map(|t| (b, t))
        })
        .unwrap();
    let sigma = model.sigma().unwrap() as f32;
    let vb = model.var_builder(3, 77).unwrap();
    let w = vb.get((6, 4, 3, 3), "conv2.weight").unwrap();
    let m: Vec<f32> = t.mean.flatten_all().unwrap().to_vec1().unwrap();
    let key = NoiseKey::for_block_step(3, b as u32, 77);
    let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    for (j, (&w, &m)) in w.iter().zip(&m).enumerate() {
        let expect = m + sigma * normal_at(key, t.offset + j as u64);
        assert_eq!(w.to_bits(), expect.to_bits(), "element {j}");
    }
    // The predictive builder is detached and equals sample_predictive.
    let p = model
        .predictive_var_builder(3, 2)
        .unwrap()
        .get((6, 4, 3, 3), "conv2.weight")
        .unwrap();
    assert!(p.backward().is_err() || p.backward().unwrap().get(t.mean.as_tensor()).is_none());
    let q = model.sample_predictive(3, 2).unwrap();
    assert_eq!(bits(&p), bits(q.get("conv2.weight").unwrap()));
    // Eval-mode forward runs on the means.
    let net = UserConv::new(model.mean_var_builder()).unwrap();
    let logits = net.forward_t(&x, false).unwrap();
    assert_eq!(logits.dims(), &[12, 3]);
}

#[test]
fn wrong_names_shapes_and_plans_are_typed_errors() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    UserMlp::new(seeded_var_builder(&varmap, 4, DType::F32, &dev), &[5, 4], 2).unwrap();
    let model = VariationalModel::from_varmap(
        &varmap,
        &BlockPlan::transfer(&["hidden0"], &["head"]),
        IsotropicPosterior::default(),
    )
    .unwrap();
    let vb = model.var_builder(1, 0).unwrap();
    let e = UserMlp::new(vb.clone(), &[5, 6], 2)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden0.weight") && e.contains("shape"), "{e}");
    let e = vb.get(3, "nowhere").err().unwrap().to_string();
    assert!(e.contains("nowhere"), "{e}");
    assert!(!vb.contains_tensor("nowhere") && vb.contains_tensor("head.bias"));
    // A tensor no rule claims.
    let e = VariationalModel::from_varmap(
        &varmap,
        &BlockPlan::transfer(&["hidden0"], &["classifier"]),
        IsotropicPosterior::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, AdapterError::UnassignedTensor { ref name, .. } if name.starts_with("head")),
        "{e}"
    );
    // A rule that claims nothing.
    let e = VariationalModel::from_varmap(
        &varmap,
        &BlockPlan::transfer(&["hidden0", "head"], &["missing"]),
        IsotropicPosterior::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, AdapterError::InvalidBlock { ref name, .. } if name == "head"),
        "{e}"
    );
}

#[test]
fn seeded_initialization_is_reproducible_and_follows_the_hints() {
    let dev = Device::Cpu;
    let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
    UserMlp::new(seeded_var_builder(&a, 7, DType::F32, &dev), &[300, 200], 2).unwrap();
    UserMlp::new(seeded_var_builder(&b, 7, DType::F32, &dev), &[300, 200], 2).unwrap();
    UserMlp::new(seeded_var_builder(&c, 8, DType::F32, &dev), &[300, 200], 2).unwrap();
    let get = |m: &VarMap, n: &str| bits(m.data().lock().unwrap()[n].as_tensor());
    assert_eq!(get(&a, "hidden0.weight"), get(&b, "hidden0.weight"));
    assert_ne!(get(&a, "hidden0.weight"), get(&c, "hidden0.weight"));
    // candle_nn::linear: Kaiming normal weights, std = sqrt(2/fan_in); uniform bias in
    // +-1/sqrt(fan_in).
    let w: Vec<f32> = a.data().lock().unwrap()["hidden0.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let var = w.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / w.len() as f64;
    assert!((var / (2.0 / 300.0) - 1.0).abs() < 0.03, "variance {var}");
    let bias: Vec<f32> = a.data().lock().unwrap()["hidden0.bias"].to_vec1().unwrap();
    let bound = 1.0 / 300f32.sqrt();
    assert!(bias.iter().all(|x| x.abs() <= bound));
    assert!(bias.iter().any(|x| x.abs() > 0.5 * bound));
}
