//! Embed deelbo-core in a hand-written training loop: a linear model with a Gaussian likelihood,
//! one reparameterized sample per step, a learned prior variance and kappa = D/N.
//!
//! Run: `cargo run --release -p deelbo-core --example 01_training_loop`
//!
//! The loop between the README markers is quoted verbatim in the top-level README (a test checks
//! that the two agree).

use deelbo_core::{
    CoreError, IsotropicPosterior, KappaRule, NoiseKey, Objective, ParamBlockMut, PriorVariance,
    isotropic_block, normal_at,
};

/// Toy data: N = 20 examples, D = 100 features, y = X w_true + noise with w_true_j = sin(j)/2.
struct Data {
    x: Vec<f64>,
    y: Vec<f64>,
    n: usize,
    d: usize,
}

const NOISE_VAR: f64 = 0.1;

impl Data {
    fn new(n: usize, d: usize) -> Self {
        let key = NoiseKey::new(1, 0);
        let x: Vec<f64> = (0..n * d)
            .map(|i| normal_at(key, i as u64).into())
            .collect();
        let y = (0..n)
            .map(|r| {
                let f: f64 = (0..d).map(|j| x[r * d + j] * (j as f64).sin() / 2.0).sum();
                f + NOISE_VAR.sqrt() * f64::from(normal_at(NoiseKey::new(2, 0), r as u64))
            })
            .collect();
        Self { x, y, n, d }
    }

    /// Mean NLL at the sampled weights `w`, its gradient in `w`, and d(mean NLL)/d(sigma) through
    /// `w = m + sigma eps` (`dw_j/dsigma = eps_j = (w_j - m_j)/sigma`).
    fn likelihood_and_gradients(&self, w: &[f64], m: &[f64], sigma: f64) -> (f64, Vec<f64>, f64) {
        let (n, d) = (self.n as f64, self.d);
        let mut grad = vec![0.0; d];
        let mut nll = 0.5 * (2.0 * std::f64::consts::PI * NOISE_VAR).ln();
        for (row, y) in self.x.chunks(d).zip(&self.y) {
            let resid = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() - y;
            nll += resid * resid / (2.0 * NOISE_VAR * n);
            for (g, a) in grad.iter_mut().zip(row) {
                *g += resid * a / (NOISE_VAR * n);
            }
        }
        let g_sigma = grad
            .iter()
            .zip(w.iter().zip(m))
            .map(|(g, (w, m))| g * (w - m) / sigma)
            .sum();
        (nll, grad, g_sigma)
    }
}

fn main() -> Result<(), CoreError> {
    let data = Data::new(20, 100);
    let (d, n, lr) = (data.d, data.n, 0.01);
    let mut m = vec![0.0f64; d];
    let mut w = vec![0.0f64; d];
    // README-BEGIN
    let objective = Objective::new(KappaRule::DataEmphasized, d, n)?; // kappa = D/N
    let mut q = IsotropicPosterior::from_sigma(1e-2)?; // sigma = softplus(rho)
    for step in 0..3000u32 {
        // w = m + sigma eps, eps from the counter-based noise of (seed, block, step)
        w.reparameterize(&m, q.sigma(), NoiseKey::for_block_step(7, 0, step), 0)?;
        let (nll, mut grad, g_sigma) = data.likelihood_and_gradients(&w, &m, q.sigma());
        // the KL at the closed-form prior variance v* = ||m||^2/D + sigma^2, and its gradients
        let block = isotropic_block(&m[..], None, &q, PriorVariance::Learned)?;
        let eval = objective.evaluate(nll, &[block])?;
        Objective::add_kl_mean_gradient(&mut grad[..], &m[..], None, &eval.blocks[0])?;
        let g_rho = g_sigma * q.dsigma_drho() + eval.loss_grad_rho(&q).unwrap_or(0.0);
        m.axpy(-lr, &grad)?;
        q.set_rho(q.rho() - lr * g_rho)?;
        // README-END
        if step % 500 == 0 || step == 2999 {
            println!(
                "step {step:4}  loss {:8.4}  learned prior variance v* {:.4}  sigma {:.4}",
                eval.loss,
                eval.blocks[0].variance,
                q.sigma()
            );
        }
    }
    let truth: f64 = (0..d)
        .map(|j| ((j as f64).sin() / 2.0).powi(2))
        .sum::<f64>()
        / d as f64;
    println!("true weights' mean square ||w_true||^2/D = {truth:.4}");
    Ok(())
}
