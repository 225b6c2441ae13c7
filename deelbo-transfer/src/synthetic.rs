//! A synthetic fine-tuning setup for the step bench, the tests and the timing example: a seeded
//! "pretrained" network (the architecture's initialization, SWAG statistics of unit variance
//! and no deviations) and a batch of random inputs with balanced labels. No data set and no
//! pretraining: it exercises the training step, not what the step learns.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use deelbo_candle::{SwagStatistics, seeded_var_builder};
use deelbo_core::{NoiseKey, normal_at};
use ndarray::Array2;

use crate::data::{Batch, CLASSES};
use crate::error::Result;
use crate::models::Architecture;
use crate::pretrain::{
    PretrainRecord, PretrainSettings, Pretrained, claimed, is_buffer, sorted_vars,
};
use crate::train::RunInputs;

/// The network `arch` (default [`PretrainSettings`]) at its seeded initialization (`seed`) as a
/// [`Pretrained`] on the CPU, with SWAG mean 0, variance 1 and `swag_rank` zero deviation
/// columns for the backbone's trainable tensors (the layout a real pretraining records) (so a [`BackbonePrior::Ptyl`](crate::train::BackbonePrior::Ptyl) prior is well defined).
pub fn pretrained(arch: Architecture, seed: u64) -> Result<Pretrained> {
    let dev = Device::Cpu;
    let settings = PretrainSettings::default();
    let varmap = VarMap::new();
    arch.build(
        seeded_var_builder(&varmap, seed, DType::F32, &dev),
        &settings.hidden,
        CLASSES,
    )?;
    let tensors: Vec<(String, Tensor)> = sorted_vars(&varmap)?
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let prefixes = arch.backbone_prefixes(&settings.hidden);
    let layout: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .filter(|(k, _)| claimed(k, &prefixes) && !is_buffer(k))
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let d: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let rank = settings.swag_rank;
    Ok(Pretrained {
        tensors,
        swag: SwagStatistics {
            layout,
            mean: vec![0.0; d],
            variance: vec![1.0; d],
            deviations: Array2::zeros((d, rank)),
            snapshots: rank,
        },
        record: PretrainRecord {
            arch,
            settings,
            source_accuracy: 1.0,
            source_nll: 0.0,
            swag_snapshots: rank,
            seconds: 0.0,
        },
    })
}

/// `n` rows of 8x8 inputs `min(|eps|, 1)` (`eps` the normals of `key`, row-major) with labels
/// `0, 1, ..., CLASSES - 1, 0, ...`, on the CPU.
pub fn batch(n: usize, key: NoiseKey) -> Result<Batch> {
    let dev = Device::Cpu;
    let x: Vec<f32> = (0..n * 64)
        .map(|i| normal_at(key, i as u64).abs().min(1.0))
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % CLASSES) as u32).collect();
    Ok(Batch {
        x: Tensor::from_vec(x, (n, 64), &dev)?,
        y: Tensor::from_vec(labels.clone(), n, &dev)?,
        labels,
    })
}

/// [`RunInputs`] that train and test on `batch`: no validation split, no PTYL prior, one
/// predictive sample.
pub fn run_inputs<'a>(
    arch: Architecture,
    pretrained: &'a Pretrained,
    batch: &'a Batch,
) -> RunInputs<'a> {
    RunInputs {
        arch,
        pretrained,
        ptyl: None,
        train: batch,
        validation: None,
        test: batch,
        predictive_samples: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_matches_the_network_it_describes() {
        let p = pretrained(Architecture::Mlp, 1).unwrap();
        let d: usize = p
            .backbone()
            .iter()
            .filter(|(k, _)| !is_buffer(k))
            .map(|(_, t)| t.elem_count())
            .sum();
        // 64 -> 256 -> 256 weights and biases.
        assert_eq!(d, 64 * 256 + 256 + 256 * 256 + 256);
        assert_eq!(p.swag.mean.len(), d);
        assert_eq!(p.swag.deviations.dim(), (d, 5));
        // Every architecture: the SWAG layout is every trainable tensor but the head's (the
        // classifier is `head.*`, everything else the backbone).
        for arch in Architecture::ALL {
            let p = pretrained(arch, 1).unwrap();
            let layout: Vec<&str> = p.swag.layout.iter().map(|(k, _)| k.as_str()).collect();
            let expected: Vec<&str> = p
                .tensors
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !k.starts_with("head.") && !is_buffer(k))
                .collect();
            assert_eq!(layout, expected, "{arch}");
        }
        let b = batch(12, NoiseKey::new(9, 9)).unwrap();
        assert_eq!(b.x.dims(), &[12, 64]);
        assert_eq!(&b.labels[..6], &[0, 1, 2, 3, 4, 0]);
        let x: Vec<f32> = b.x.flatten_all().unwrap().to_vec1().unwrap();
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
