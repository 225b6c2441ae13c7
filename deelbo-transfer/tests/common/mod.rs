//! Shared by the integration tests: the `step` bench's synthetic setup.

#![allow(clippy::unwrap_used, dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use deelbo_candle::{SwagStatistics, seeded_var_builder};
use deelbo_core::{NoiseKey, normal_at};
use deelbo_transfer::data::{Batch, CLASSES};
use deelbo_transfer::pretrain::{PretrainRecord, Pretrained, is_buffer};
use deelbo_transfer::{Architecture, PretrainSettings};
use ndarray::Array2;

/// `n` standard normals of stream `key` as an f32 tensor of `shape`.
pub fn normals(key: u64, n: usize, shape: &[usize]) -> Tensor {
    let v: Vec<f32> = (0..n)
        .map(|i| normal_at(NoiseKey::new(key, 3), i as u64))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A seeded "pretrained" network and `n` random inputs (the `step` bench's setup).
pub fn setup(arch: Architecture, n: usize) -> (Pretrained, Batch) {
    let dev = Device::Cpu;
    let settings = PretrainSettings::default();
    let varmap = VarMap::new();
    arch.build(
        seeded_var_builder(&varmap, 1, DType::F32, &dev),
        &settings.hidden,
        CLASSES,
    )
    .unwrap();
    let mut tensors: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let layout: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("head.") && !is_buffer(k))
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let d: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let pretrained = Pretrained {
        tensors,
        swag: SwagStatistics {
            layout,
            mean: vec![0.0; d],
            variance: vec![1.0; d],
            deviations: Array2::zeros((d, 5)),
            snapshots: 5,
        },
        record: PretrainRecord {
            arch,
            settings,
            source_accuracy: 1.0,
            source_nll: 0.0,
            swag_snapshots: 5,
            seconds: 0.0,
        },
    };
    let x = normals(9, n * 64, &[n, 64])
        .abs()
        .unwrap()
        .clamp(0f32, 1f32);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % CLASSES as u32).collect();
    let batch = Batch {
        x: x.unwrap(),
        y: Tensor::from_vec(labels.clone(), n, &dev).unwrap(),
        labels,
    };
    (pretrained, batch)
}
