//! A few DE-ELBO steps of one GPU block with a toy quadratic likelihood whose gradient is
//! computed on the host: fused forward (sample + M), v* and the KL gradients from the core, then
//! the fused backward with the momentum-SGD update of the means. Prints "skipped: no CUDA
//! driver" on machines without CUDA.
//!
//! Run: `cargo run --release -p deelbo-cuda --example 02_training_steps`

use deelbo_core::fused::{KlGradScales, SgdMomentum};
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective, PriorVariance};
use deelbo_cuda::{DeviceParamBlock, DeviceScale, device_or_skip};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dev) = device_or_skip("02_training_steps")? else {
        return Ok(());
    };
    let (d, n) = (1_000_000usize, 500usize);
    let pretrained = vec![0.0f32; d];
    let target: Vec<f32> = (0..d)
        .map(|i| if i % 10 == 0 { 0.5 } else { 0.0 })
        .collect();
    let objective = Objective::new(KappaRule::DataEmphasized, d, n)?;
    let mut q = IsotropicPosterior::from_sigma(1e-3)?;
    let mut block = DeviceParamBlock::new(&dev, &pretrained, Some(&pretrained), 0)?;
    let sgd = SgdMomentum {
        lr: 0.5,
        momentum: 0.9,
    };
    for step in 0..20u32 {
        let key = NoiseKey::for_block_step(1, 0, step);
        let sigma = q.sigma() as f32;
        let stats = block.forward(DeviceScale::Isotropic(sigma), key)?;
        // Toy likelihood: mean NLL = 1/2 ||w - target||^2 / D, gradient (w - target)/D.
        let w = dev.download(block.sample())?;
        let nll: f64 = w
            .iter()
            .zip(&target)
            .map(|(&w, &t)| 0.5 * f64::from(w - t).powi(2))
            .sum::<f64>()
            / d as f64;
        let g: Vec<f32> = w
            .iter()
            .zip(&target)
            .map(|(&w, &t)| (w - t) / d as f32)
            .collect();
        let eval = objective.evaluate(nll, &[(stats.kl_terms()?, PriorVariance::Learned)])?;
        let kl = KlGradScales::from_evaluation(&objective, &eval.blocks[0]);
        let g_dev = dev.upload(&g)?;
        let back = block.backward_sgd(DeviceScale::Isotropic(sigma), key, &g_dev, kl, sgd, None)?;
        let g_rho = back.grad_sigma.unwrap_or(0.0) * q.dsigma_drho();
        q.set_rho(q.rho() - 1e-3 * g_rho)?;
        if step % 5 == 0 || step == 19 {
            println!(
                "step {step:2}  loss {:.6e}  v* {:.3e}  sigma {:.3e}",
                eval.loss, eval.blocks[0].variance, sigma
            );
        }
    }
    Ok(())
}
