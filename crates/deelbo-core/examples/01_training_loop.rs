//! Embed deelbo-core in a hand-written training loop: a linear model with a Gaussian likelihood,
//! one reparameterized sample per step, learned prior variance, kappa = D/N.
//!
//! Run: `cargo run --release -p deelbo-core --example 01_training_loop`

use deelbo_core::{
    IsotropicPosterior, KappaRule, NoiseKey, Objective, ParamBlockMut, PriorVariance,
    isotropic_block,
};

fn main() -> Result<(), deelbo_core::CoreError> {
    // Data: N = 20 examples, D = 200 features, 5 of them informative.
    let (n, d) = (20usize, 200usize);
    let x: Vec<f64> = (0..n * d)
        .map(|i| deelbo_core::normal_at(NoiseKey::new(1, 0), i as u64).into())
        .collect();
    let y: Vec<f64> = (0..n)
        .map(|r| x[r * d..r * d + 5].iter().sum::<f64>())
        .collect();
    let noise_var = 0.1;

    let objective = Objective::new(KappaRule::DataEmphasized, d, n)?; // kappa = D/N = 10
    let mut m = vec![0.0f64; d];
    let mut q = IsotropicPosterior::from_sigma(1e-2)?;
    let (mut w, mut grad) = (vec![0.0f64; d], vec![0.0f64; d]);
    for step in 0..2000u32 {
        // Sample w = m + sigma eps with the counter-based noise of this step.
        w.reparameterize(&m, q.sigma(), NoiseKey::for_block_step(7, 0, step), 0)?;
        // Likelihood gradient by hand: mean NLL = 1/N sum (y - x.w)^2 / (2 s^2) + const.
        grad.fill(0.0);
        let (mut nll, mut g_sigma) = (0.0, 0.0);
        for r in 0..n {
            let row = &x[r * d..(r + 1) * d];
            let resid = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() - y[r];
            nll += resid * resid / (2.0 * noise_var * n as f64);
            for (j, a) in row.iter().enumerate() {
                grad[j] += resid * a / (noise_var * n as f64);
                // dw_j/dsigma = eps_j = (w_j - m_j)/sigma
                g_sigma += resid * a / (noise_var * n as f64) * (w[j] - m[j]) / q.sigma();
            }
        }
        // KL part: closed-form prior variance v*, its gradients, then one SGD step.
        let eval = objective.evaluate(
            nll,
            &[isotropic_block(&m[..], None, &q, PriorVariance::Learned)?],
        )?;
        Objective::add_kl_mean_gradient(&mut grad[..], &m[..], None, &eval.blocks[0])?;
        let g_rho = g_sigma * q.dsigma_drho() + eval.loss_grad_rho(&q).unwrap_or(0.0);
        m.axpy(-0.005, &grad)?;
        q.set_rho(q.rho() - 0.005 * g_rho)?;
        if step % 500 == 0 || step == 1999 {
            println!(
                "step {step:4}  loss {:9.4}  v* {:.4}  sigma {:.4}",
                eval.loss,
                eval.blocks[0].variance,
                q.sigma()
            );
        }
    }
    println!(
        "learned weights 0..6: {:?}",
        &m[..6]
            .iter()
            .map(|v| (v * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    Ok(())
}
