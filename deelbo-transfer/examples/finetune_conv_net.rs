//! Fine-tune a candle-nn conv net (conv2d, batch_norm, linear; `deelbo_transfer::ConvNet`, plain
//! candle-nn code) with the DE-ELBO, the model built unchanged from the variational VarBuilder:
//! pretrain on the 8x8 digits 0–4, fine-tune on 100 examples of digits 5–9 with an L2-SP
//! backbone prior and a zero-mean head prior (both variances learned), then report the
//! posterior-mean and 10-sample predictive test metrics (batch-norm statistics recomputed on the
//! training set for each network evaluated).
//!
//! ```text
//! cargo run --release -p deelbo-transfer --example finetune_conv_net
//! ```

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::loss::cross_entropy;
use candle_nn::{VarBuilder, VarMap};
use deelbo_candle::{
    BlockPlan, CosineSchedule, NesterovSgd, ParamGroup, VariationalModel, elbo_loss,
    metrics_from_log_probs, predictive_log_probs_of, seeded_var_builder,
};
use deelbo_core::{IsotropicPosterior, KappaRule, Objective};
use deelbo_transfer::ConvNet;
use deelbo_transfer::data::{load_digits, stratified_subset};

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let digits = load_digits()?;
    // Pretraining on digits 0-4: an ordinary candle loop on a VarMap.
    let source = VarMap::new();
    let net = ConvNet::new(seeded_var_builder(&source, 0, DType::F32, &dev), 5)?;
    let rows: Vec<usize> = (0..digits.source.rows()).collect();
    let src = digits.source.tensors(&rows, &dev)?;
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: source.all_vars(),
            clip_norm: Some(1.0),
        }],
        0.9,
    )?;
    for step in 0..300 {
        let loss = cross_entropy(&net.forward_t(&src.x, true)?, &src.y)?;
        opt.step(&loss.backward()?, CosineSchedule::new(0.05, 300)?.lr(step))?;
    }
    // The target network: the pretrained backbone, a new head (seeded initialization).
    let mut target = VarMap::new();
    ConvNet::new(seeded_var_builder(&target, 1, DType::F32, &dev), 5)?;
    for (name, var) in source
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
    {
        if !name.starts_with("head.") {
            target.set_one(name, var.as_tensor())?;
        }
    }
    let plan = BlockPlan::transfer(&["conv1", "bn1", "conv2", "bn2", "fc"], &["head"]);
    let model = VariationalModel::from_varmap(&target, &plan, IsotropicPosterior::default())?;
    let split = stratified_subset(&digits.target, 100, 0)?;
    let train = digits.target.tensors(&split.train, &dev)?;
    let test = digits.target.tensors(&split.rest, &dev)?;
    let (x, y, n, seed, steps) = (&train.x, &train.y, train.len(), 0u64, 300);
    let schedule = CosineSchedule::new(0.01, steps)?;
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
    )?;
    // README-BEGIN
    let objective = Objective::new(KappaRule::DataEmphasized, model.num_params(), n)?; // kappa = D/N
    for step in 0..steps {
        // the user's candle-nn model, unchanged, on w = m + sigma eps (the core's Philox noise)
        let net = ConvNet::new(model.var_builder(seed, step as u32)?, 5)?;
        let nll = cross_entropy(&net.forward_t(x, true)?, y)?;
        // + KL/(kappa N) at the closed-form prior variances v*_b = M_b/D_b + sigma^2
        let loss = elbo_loss(&nll, &model.kl(&objective)?)?;
        opt.step(&loss.backward()?, schedule.lr(step))?;
    }
    // README-END
    let kl = model.kl(&objective)?;
    let v = kl.variances()?;
    println!(
        "D = {}, N = {n}, kappa = {:.1}: lambda {:.2e}, tau {:.2e}, sigma {:.2e}",
        model.num_params(),
        objective.kappa(),
        v[0],
        v[1],
        model.sigma()?
    );
    // Batch-norm statistics for the weights evaluated: one train-mode pass over the training
    // set with momentum 1 sets them (the running averages of training belong to the sampled
    // networks), then the eval-mode pass on the test set.
    let logits = |vb: VarBuilder| -> deelbo_candle::Result<Tensor> {
        let net = ConvNet::with_batch_norm_momentum(vb, 5, 1.0)?;
        net.forward_t(x, true)?;
        Ok(net.forward_t(&test.x, false)?)
    };
    let mean = metrics_from_log_probs(
        &candle_nn::ops::log_softmax(&logits(model.mean_var_builder())?, 1)?,
        &test.labels,
    )?;
    let pred = metrics_from_log_probs(
        &predictive_log_probs_of(&model, logits, 10, 99)?,
        &test.labels,
    )?;
    println!(
        "test ({} examples): posterior mean acc {:.3} NLL {:.3}; 10-sample predictive acc {:.3} NLL {:.3}",
        test.len(),
        mean.accuracy,
        mean.nll,
        pred.accuracy,
        pred.nll
    );
    Ok(())
}
