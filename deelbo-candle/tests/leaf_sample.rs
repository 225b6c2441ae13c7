//! [`LeafSample`] against the graph path it replaces in a training loop: on candle-nn models (an
//! MLP, a conv net with batch norm), built once from the leaves, every step's sample is the
//! bits of `VariationalModel::sample`, the loss and every mean gradient are the bits of the
//! per-step `var_builder` graph, and `dL/drho` of both agrees to 1e-12 with the KL's part plus
//! `sigmoid(rho) sum g eps` summed on the host; also on the composite (non-fused) path, when the noise buffer
//! was overwritten in between, over a few optimizer steps, and with typed errors for misuse.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::loss::cross_entropy;
use candle_nn::{VarBuilder, VarMap};
use deelbo_candle::{
    AdapterError, BlockPlan, LeafSample, NesterovSgd, ParamGroup, VariationalModel, elbo_loss,
    seeded_var_builder,
};
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective, normal_at};

mod common;

use common::{UserConv, UserMlp, bits, inputs};

const SIZES: [usize; 3] = [10, 16, 12];

enum Net {
    Mlp(UserMlp),
    Conv(UserConv),
}

impl Net {
    fn build(conv: bool, vb: VarBuilder) -> Net {
        if conv {
            Net::Conv(UserConv::new(vb).unwrap())
        } else {
            Net::Mlp(UserMlp::new(vb, &SIZES, 3).unwrap())
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Net::Mlp(n) => n.forward(x).unwrap(),
            Net::Conv(n) => n.forward_t(x, true).unwrap(),
        }
    }
}

/// A model over a freshly initialized user network, its data and objective.
fn setup(conv: bool, fused: bool) -> (VarMap, VariationalModel, Tensor, Tensor, Objective) {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    Net::build(conv, seeded_var_builder(&varmap, 6, DType::F32, &dev));
    let plan = if conv {
        BlockPlan::transfer(&["conv1", "bn1", "conv2", "fc"], &["head"])
    } else {
        BlockPlan::transfer(&["hidden0", "hidden1"], &["head"])
    };
    let mut model = VariationalModel::from_varmap(
        &varmap,
        &plan,
        IsotropicPosterior::from_sigma(0.03).unwrap(),
    )
    .unwrap();
    model.set_fused(fused);
    let (x, y) = if conv {
        let (x, y) = inputs(9, 64, 2);
        (x.reshape((9, 1, 8, 8)).unwrap(), y)
    } else {
        inputs(9, 10, 2)
    };
    let obj = Objective::new(KappaRule::DataEmphasized, model.num_params(), 9).unwrap();
    (varmap, model, x, y, obj)
}

fn loss_of(net: &Net, model: &VariationalModel, x: &Tensor, y: &Tensor, obj: &Objective) -> Tensor {
    let nll = cross_entropy(&net.forward(x), y).unwrap();
    elbo_loss(&nll, &model.kl(obj).unwrap()).unwrap()
}

fn rho_grad(g: &GradStore, model: &VariationalModel) -> f64 {
    g.get(model.rho().as_tensor())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The leaf path's `(loss, grads)` equal the graph path's, at the steps given, for one net
/// built once from the leaves; `between` runs after the backward, before the gradients are
/// moved (e.g. something that overwrites the noise buffers).
fn compare(conv: bool, fused: bool, between: impl Fn(&VariationalModel)) {
    let (_varmap, model, x, y, obj) = setup(conv, fused);
    let mut sample = LeafSample::new(&model).unwrap();
    let leaf_net = Net::build(conv, sample.var_builder());
    for step in [0u32, 3, 4] {
        sample.resample(&model, 11, step).unwrap();
        assert_eq!(sample.drawn(), Some((11, step)));
        let want = model.sample(11, step).unwrap();
        for (name, w) in want.iter() {
            assert_eq!(
                bits(sample.leaf(name).unwrap().as_tensor()),
                bits(w),
                "{name} at step {step}"
            );
        }
        let graph_net = Net::build(conv, model.var_builder(11, step).unwrap());
        let lg = loss_of(&graph_net, &model, &x, &y, &obj);
        let ll = loss_of(&leaf_net, &model, &x, &y, &obj);
        assert_eq!(
            lg.to_scalar::<f64>().unwrap().to_bits(),
            ll.to_scalar::<f64>().unwrap().to_bits(),
            "loss at step {step}"
        );
        let gg = lg.backward().unwrap();
        let mut gl = ll.backward().unwrap();
        // Independent: the KL's part of dL/drho plus sigmoid(rho) sum g eps on the host.
        let mut host_dot = 0.0f64;
        for block in model.blocks() {
            let key = NoiseKey::for_block_step(11, block.index(), step);
            for t in block.tensors() {
                let g: Vec<f32> = gl
                    .get(sample.leaf(&t.name).unwrap().as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                for (j, g) in g.iter().enumerate() {
                    host_dot += f64::from(*g) * f64::from(normal_at(key, t.offset + j as u64));
                }
            }
        }
        let want_rho = rho_grad(&gl, &model) + model.posterior().unwrap().dsigma_drho() * host_dot;
        between(&model);
        let dot = sample.gradients_to_posterior(&model, &mut gl).unwrap();
        assert!(
            (dot - host_dot).abs() <= 1e-12 * host_dot.abs(),
            "{dot} vs {host_dot}"
        );
        for v in model.mean_vars() {
            let (a, b) = (
                gg.get(v.as_tensor()).unwrap(),
                gl.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(bits(a), bits(b), "mean gradient at step {step}");
        }
        for (name, _) in want.iter() {
            assert!(gl.get(sample.leaf(name).unwrap().as_tensor()).is_none());
        }
        let (a, b) = (rho_grad(&gg, &model), rho_grad(&gl, &model));
        for (path, got) in [("graph", a), ("leaves", b)] {
            assert!(
                (got - want_rho).abs() <= 1e-12 * want_rho.abs(),
                "{path}: rho gradient {got} vs {want_rho} at step {step}"
            );
        }
    }
}

#[test]
fn mlp_leaves_give_the_graph_paths_samples_loss_and_gradients() {
    compare(false, true, |_| ());
    compare(false, false, |_| ());
}

#[test]
fn conv_net_leaves_give_the_graph_paths_samples_loss_and_gradients() {
    compare(true, true, |_| ());
    compare(true, false, |_| ());
}

#[test]
fn noise_overwritten_before_the_gradients_is_regenerated() {
    // A predictive sample reuses the tensors' noise buffers with other keys.
    compare(false, true, |m| {
        m.sample_predictive(11, 1).unwrap();
    });
}

#[test]
fn training_on_leaves_follows_the_graph_path() {
    let (_varmap, model, x, y, obj) = setup(true, true);
    let (_varmap2, twin, _, _, _) = setup(true, true);
    let groups = |m: &VariationalModel| {
        vec![
            ParamGroup {
                vars: m.mean_vars(),
                clip_norm: Some(1.0),
            },
            ParamGroup {
                vars: vec![m.rho().clone()],
                clip_norm: Some(1.0),
            },
        ]
    };
    let mut opt_leaf = NesterovSgd::new(groups(&model), 0.9).unwrap();
    let mut opt_graph = NesterovSgd::new(groups(&twin), 0.9).unwrap();
    let mut sample = LeafSample::new(&model).unwrap();
    let net = Net::build(true, sample.var_builder());
    let (mut first, mut last) = (None, 0.0);
    for step in 0..25u32 {
        sample.resample(&model, 5, step).unwrap();
        let l = loss_of(&net, &model, &x, &y, &obj);
        let mut g = l.backward().unwrap();
        sample.gradients_to_posterior(&model, &mut g).unwrap();
        opt_leaf.step(&g, 0.05).unwrap();
        let graph_net = Net::build(true, twin.var_builder(5, step).unwrap());
        let lt = loss_of(&graph_net, &twin, &x, &y, &obj);
        opt_graph.step(&lt.backward().unwrap(), 0.05).unwrap();
        let (a, b) = (
            l.to_scalar::<f64>().unwrap(),
            lt.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() <= 1e-5 * b.abs(), "step {step}: {a} vs {b}");
        first.get_or_insert(a);
        last = a;
    }
    assert!(last < 0.7 * first.unwrap(), "loss {first:?} -> {last}");
    assert!((model.sigma().unwrap() / twin.sigma().unwrap() - 1.0).abs() < 1e-6);
    // The batch-norm statistics the net built once updates are the model's own buffers.
    let ours: Vec<f32> = model.buffer("bn1.running_mean").unwrap().to_vec1().unwrap();
    let theirs: Vec<f32> = twin.buffer("bn1.running_mean").unwrap().to_vec1().unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-3), "{a} vs {b}");
    }
}

#[test]
fn misuse_is_a_typed_error() {
    let (_varmap, model, x, y, obj) = setup(false, true);
    let sample = LeafSample::new(&model).unwrap();
    let net = Net::build(false, sample.var_builder());
    let mut g = loss_of(&net, &model, &x, &y, &obj).backward().unwrap();
    assert!(matches!(
        sample.gradients_to_posterior(&model, &mut g),
        Err(AdapterError::LeafSample { .. })
    ));
    let (_v, other, ..) = setup(true, true);
    let mut sample = LeafSample::new(&model).unwrap();
    assert!(matches!(
        sample.resample(&other, 1, 0),
        Err(AdapterError::LeafSample { .. })
    ));
    assert!(sample.var_builder().get((16, 10), "nope.weight").is_err());
    assert!(sample.var_builder().get((3, 3), "hidden0.weight").is_err());
}
