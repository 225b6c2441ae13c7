//! Element-wise formulas shared by the fused and naive paths and mirrored, operation for
//! operation, by the CUDA source (re-exported for it in [`crate::mirror`]).

use super::SgdMomentum;

/// `w = m + sigma eps` in `f32`, product then sum.
#[inline(always)]
pub fn sample_element(m: f32, sigma: f32, eps: f32) -> f32 {
    m + sigma * eps
}

/// `d loss/d m = g + c (m - mu)` in `f32`: subtract, multiply, add.
#[inline(always)]
pub fn mean_grad_element(g: f32, m: f32, mu: f32, c: f32) -> f32 {
    g + c * (m - mu)
}

/// Diagonal `d loss/d sigma_j = g eps + k (sigma (1/v) - 1/sigma)` in `f32`, in that order.
#[inline(always)]
pub fn sigma_grad_element(g: f32, eps: f32, sigma: f32, k: f32, inv_v: f32) -> f32 {
    g * eps + k * (sigma * inv_v - 1.0 / sigma)
}

/// One momentum-SGD step on one weight: `u' = beta u + grad`, `m' = m - lr u'`, in `f32`.
#[inline(always)]
pub fn sgd_element(m: f32, u: f32, grad: f32, sgd: SgdMomentum) -> (f32, f32) {
    let u = sgd.momentum * u + grad;
    (m - sgd.lr * u, u)
}
