//! Shared by the integration tests: the `step` bench's synthetic setup.

#![allow(clippy::unwrap_used, dead_code)]

use candle_core::{Device, Tensor};
use deelbo_core::{NoiseKey, normal_at};
use deelbo_transfer::Architecture;
use deelbo_transfer::data::Batch;
use deelbo_transfer::pretrain::Pretrained;
use deelbo_transfer::synthetic;

/// `n` standard normals of stream `key` as an f32 tensor of `shape`.
pub fn normals(key: u64, n: usize, shape: &[usize]) -> Tensor {
    let v: Vec<f32> = (0..n)
        .map(|i| normal_at(NoiseKey::new(key, 3), i as u64))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A seeded "pretrained" network and `n` random inputs (the `step` bench's setup).
pub fn setup(arch: Architecture, n: usize) -> (Pretrained, Batch) {
    (
        synthetic::pretrained(arch, 1).unwrap(),
        synthetic::batch(n, NoiseKey::new(9, 9)).unwrap(),
    )
}
