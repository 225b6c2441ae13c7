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

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};
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

/// A parameter's momentum buffer `b`.
#[derive(Debug)]
enum Momentum {
    /// Before the first update.
    Empty,
    /// Host memory, updated with the parameter in one pass ([`NesterovUpdate`]).
    Host(HostBuffer),
    /// A tensor, updated by candle ops (other devices, dtypes or layouts).
    Tensor(Tensor),
}

#[derive(Debug)]
enum HostBuffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// SGD with Nesterov momentum over parameter groups.
///
/// On the CPU, for contiguous `f32`/`f64` parameters, each update is one in-place pass over the
/// parameter, its gradient and a host momentum buffer; elsewhere it is the same formula as
/// candle ops. Both perform the same IEEE operations in the same order (candle's `affine(a, 0)`
/// is `x a + 0`), so they give the same bits ([`NesterovSgd::with_fused`] picks one; tested).
#[derive(Debug)]
pub struct NesterovSgd {
    groups: Vec<ParamGroup>,
    buffers: Vec<Vec<Momentum>>,
    momentum: f64,
    fused: bool,
}

/// `g_s = s g` (when clipped), `b <- mu b + g_s` (`b = g_s` first), `p <- p - lr (g_s + mu b)`,
/// in place on the parameter's storage, each product and sum rounded in the parameter's dtype
/// in the order of the candle ops it replaces.
struct NesterovUpdate<'a> {
    scale: f64,
    momentum: f64,
    lr: f64,
    buffer: RefCell<&'a mut Momentum>,
}

/// The update of one element type; `b` empty means the first step (it is then filled).
fn nesterov_pass<T: deelbo_core::Real>(
    p: &mut [T],
    g: &[T],
    b: &mut Vec<T>,
    scale: f64,
    momentum: f64,
    lr: f64,
) {
    let zero = T::zero();
    let s = T::from_f64_rounded(scale);
    let mu = T::from_f64_rounded(momentum);
    let lr = T::from_f64_rounded(lr);
    let scaled = scale != 1.0;
    let first = b.is_empty();
    if first {
        b.resize(p.len(), zero);
    }
    for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
        let g = if scaled { g * s + zero } else { g };
        let b_new = if first { g } else { (*b * mu + zero) + g };
        let update = g + (b_new * mu + zero);
        *p = *p - (update * lr + zero);
        *b = b_new;
    }
}

fn contiguous_range(l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("the fused update needs contiguous tensors".into()))
}

/// Whether a parameter takes the one-pass update: CPU, `f32`/`f64`, contiguous.
fn fusable(p: &Tensor) -> bool {
    p.device().is_cpu()
        && matches!(p.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && p.is_contiguous()
}

impl InplaceOp2 for NesterovUpdate<'_> {
    fn name(&self) -> &'static str {
        "deelbo-nesterov-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a1, b1) = contiguous_range(l1)?;
        let (a2, b2) = contiguous_range(l2)?;
        if b1 - a1 != b2 - a2 {
            return Err(candle_core::Error::Msg(
                "gradient and parameter differ in length".into(),
            ));
        }
        let mut buffer = self.buffer.borrow_mut();
        let buffer = &mut **buffer;
        // The host buffer is created here, by the first pass, which then fills it.
        let fresh = match (&*s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Some(HostBuffer::F32(Vec::new())),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => Some(HostBuffer::F64(Vec::new())),
            _ => None,
        };
        if let (Momentum::Empty, Some(h)) = (&*buffer, fresh) {
            *buffer = Momentum::Host(h);
        }
        let (scale, momentum, lr) = (self.scale, self.momentum, self.lr);
        match (s1, s2, buffer) {
            (CpuStorage::F32(p), CpuStorage::F32(g), Momentum::Host(HostBuffer::F32(b))) => {
                nesterov_pass(&mut p[a1..b1], &g[a2..b2], b, scale, momentum, lr)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), Momentum::Host(HostBuffer::F64(b))) => {
                nesterov_pass(&mut p[a1..b1], &g[a2..b2], b, scale, momentum, lr)
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "the fused update needs f32 or f64 parameters, gradients and buffer".into(),
                ));
            }
        }
        Ok(())
    }
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
        let buffers = groups
            .iter()
            .map(|g| g.vars.iter().map(|_| Momentum::Empty).collect())
            .collect();
        Ok(Self {
            groups,
            buffers,
            momentum,
            fused: true,
        })
    }

    /// Use the one-pass CPU update where it applies (`true`, the default) or candle ops
    /// everywhere (`false`); the results have the same bits.
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
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
                let p = var.as_tensor();
                if self.fused && fusable(p) && !matches!(buf, Momentum::Tensor(_)) {
                    let g = g.to_dtype(p.dtype())?.contiguous()?;
                    let op = NesterovUpdate {
                        scale,
                        momentum: self.momentum,
                        lr,
                        buffer: RefCell::new(&mut *buf),
                    };
                    // Refused before anything is written when it cannot run in place (e.g. a
                    // gradient sharing the parameter's storage, as `p.detach()` does); the
                    // candle ops below then update this parameter from now on.
                    if p.inplace_op2(&g, &op).is_ok() {
                        continue;
                    }
                }
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
                let b = match std::mem::replace(buf, Momentum::Empty) {
                    Momentum::Tensor(b) => b.affine(self.momentum, 0.0)?.add(&g)?,
                    Momentum::Empty => g.clone(),
                    // Fused until now (`with_fused(false)` mid-run, or an in-place update refused
                    // above): the same values as a tensor.
                    Momentum::Host(h) => {
                        let b = match h {
                            HostBuffer::F32(v) => Tensor::from_vec(v, p.shape(), p.device())?,
                            HostBuffer::F64(v) => Tensor::from_vec(v, p.shape(), p.device())?,
                        };
                        b.to_dtype(p.dtype())?.affine(self.momentum, 0.0)?.add(&g)?
                    }
                };
                let update = g.add(&b.affine(self.momentum, 0.0)?)?;
                var.set(&p.sub(&update.affine(lr, 0.0)?)?)?;
                *buf = Momentum::Tensor(b);
            }
            report.grad_norms.push(norm);
            report.clip_scales.push(scale);
        }
        Ok(report)
    }
}
