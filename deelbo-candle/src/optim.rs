//! SGD with Nesterov momentum, a cosine learning-rate schedule and gradient-norm clipping per
//! parameter group: the one optimizer every fine-tuning run of the experiment uses.
//!
//! Update for each parameter `p` with gradient `g` (after clipping), momentum `mu` and learning
//! rate `lr_t` (PyTorch's Nesterov form):
//!
//! `b <- mu b + g` (`b = g` on the first step), `p <- p - lr_t (g + mu b)`.
//!
//! Clipping: the gradients of a group are scaled by `min(1, c / ||g_group||_2)`, where the norm is
//! taken over all the group's tensors. Groups keep unrelated gradients apart (e.g. the network
//! means and the scalar `rho`, whose KL gradient is `O(D/(kappa N))` and would otherwise shrink
//! every mean update through a shared norm).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use deelbo_core::check;

use crate::error::{AdapterError, Result};
use crate::fused::sum_squares_f64;

/// `lr_t = lr_0 (1 + cos(pi t / T))/2` for steps `t = 0 .. T-1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    base: f64,
    total_steps: usize,
}

impl CosineSchedule {
    /// A schedule from `base` (> 0, finite) over `total_steps` (>= 1) steps.
    pub fn new(base: f64, total_steps: usize) -> Result<Self> {
        check::positive("learning rate", base)?;
        check::in_range("number of steps", total_steps as f64, 1.0..)?;
        Ok(Self { base, total_steps })
    }

    /// The learning rate at step `t`.
    ///
    /// # Formula
    /// ```text
    /// lr_t = lr_0 (1 + cos(pi t / T)) / 2
    /// ```
    pub fn lr(&self, step: usize) -> f64 {
        let frac = step as f64 / self.total_steps as f64;
        self.base * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
    }

    /// `T`.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }
}

/// A set of parameters clipped together.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters.
    pub vars: Vec<Var>,
    /// Maximum global gradient norm of the group (`None`: no clipping).
    pub clip_norm: Option<f64>,
}

/// What one optimizer step did, per group.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// `||g_group||_2` before clipping, per group.
    pub grad_norms: Vec<f64>,
    /// The factor the group's gradient was scaled by (1 when not clipped), per group.
    pub clip_scales: Vec<f64>,
}

/// SGD with Nesterov momentum over parameter groups.
#[derive(Debug)]
pub struct NesterovSgd {
    groups: Vec<ParamGroup>,
    buffers: Vec<Vec<Option<Tensor>>>,
    momentum: f64,
}

impl NesterovSgd {
    /// An optimizer for `groups` with momentum `mu` in `[0, 1)`; clip norms must be > 0.
    pub fn new(groups: Vec<ParamGroup>, momentum: f64) -> Result<Self> {
        check::in_range("momentum", momentum, 0.0..1.0)?;
        for g in &groups {
            if let Some(c) = g.clip_norm {
                check::positive("gradient clip norm", c)?;
            }
        }
        let buffers = groups.iter().map(|g| vec![None; g.vars.len()]).collect();
        Ok(Self {
            groups,
            buffers,
            momentum,
        })
    }

    /// One update with learning rate `lr` from the gradients in `grads`. Parameters without a
    /// gradient (not reached by the loss) are left alone. Errors on a non-finite gradient norm
    /// ([`AdapterError::Diverged`]). The squared norm of a group is summed in `f64` (the core's
    /// deterministic compensated sum on the CPU).
    ///
    /// # Formula
    /// ```text
    /// g <- g min(1, c/||g_group||),  b <- mu b + g,  p <- p - lr (g + mu b)
    /// ```
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepReport> {
        let mut report = StepReport {
            grad_norms: Vec::with_capacity(self.groups.len()),
            clip_scales: Vec::with_capacity(self.groups.len()),
        };
        for (group, buffers) in self.groups.iter().zip(self.buffers.iter_mut()) {
            let mut sq = 0.0f64;
            for var in &group.vars {
                if let Some(g) = grads.get(var.as_tensor()) {
                    sq += sum_squares_f64(g)?;
                }
            }
            let norm = sq.sqrt();
            if !norm.is_finite() {
                return Err(AdapterError::Diverged {
                    name: "gradient norm".to_string(),
                    value: norm,
                });
            }
            let scale = match group.clip_norm {
                Some(c) if norm > c => c / norm,
                _ => 1.0,
            };
            for (var, buf) in group.vars.iter().zip(buffers.iter_mut()) {
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                // Detached: a leaf's gradient can carry candle ops on tracked tensors (e.g.
                // `h^T grad` of a layer's weight, with `h` computed from the weights), and a
                // momentum buffer built on it would keep that step's whole graph alive, and
                // through `b <- mu b + g` every earlier step's: ~2.5 MB per step for the
                // transfer MLP, all faulted in as fresh pages.
                let g = g.detach();
                let g = if scale == 1.0 {
                    g
                } else {
                    g.affine(scale, 0.0)?
                };
                let b = match buf.take() {
                    Some(b) => b.affine(self.momentum, 0.0)?.add(&g)?,
                    None => g.clone(),
                };
                let update = g.add(&b.affine(self.momentum, 0.0)?)?;
                var.set(&var.as_tensor().sub(&update.affine(lr, 0.0)?)?)?;
                *buf = Some(b);
            }
            report.grad_norms.push(norm);
            report.clip_scales.push(scale);
        }
        Ok(report)
    }
}
