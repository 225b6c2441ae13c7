//! The bit-exact internals that the CUDA kernels (`deelbo-cuda`) mirror operation for
//! operation: the Philox key and counter layout, the exact-operation `ln`, `sincos` and
//! Box–Muller transform with its constants, and the fused step's element-wise formulas.
//!
//! Not part of the stable API: only code generators and mirror tests need these. Everything a
//! user calls is at the crate root or in [`crate::fused`].

use crate::noise::NoiseKey;

pub use crate::fused::element::{
    mean_grad_element, sample_element, sgd_element, sigma_grad_element,
};
pub use crate::noise::{
    TRANSFORM_CONSTANTS, box_muller, ln_f32, normals_from_words, sincos_quadrant_f32,
};

/// The two Philox key words of `key`: SplitMix64(seed) as `[low, high]`.
pub fn philox_key(key: &NoiseKey) -> [u32; 2] {
    key.philox_key()
}

/// The four Philox counter words of block `j` (elements `4j .. 4j+3`) of `key`:
/// `[j_lo, j_hi, stream_lo, stream_hi]`.
pub fn counter_words(key: &NoiseKey, block: u64) -> [u32; 4] {
    key.counter_words(block)
}

/// The four raw Philox4x32-10 words of block `j` of `key`.
pub fn block_words(key: &NoiseKey, block: u64) -> [u32; 4] {
    key.block_words(block)
}
