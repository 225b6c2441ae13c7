//! Sampling uses the core's counter-based noise: same seed and step give the same weights, and
//! every sampled weight is `m + sigma * normal_at(for_block_step(seed, block, step), offset + j)`.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use candle_core::{DType, Device, Tensor};
use deelbo_candle::{BlockSpec, PREDICTIVE_BLOCK_BIT, VariationalModel};
use deelbo_core::{IsotropicPosterior, NoiseKey, ParamBlockMut, normal_at};

fn model(dtype: DType, sigma: f64) -> VariationalModel {
    let dev = Device::Cpu;
    let w = Tensor::arange(0u32, 24 * 7, &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .affine(0.01, -0.5)
        .unwrap()
        .reshape((24, 7))
        .unwrap();
    let b = Tensor::ones(7, dtype, &dev).unwrap();
    let h = Tensor::full(0.25f32, (7, 3), &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    VariationalModel::new(
        vec![
            BlockSpec::l2sp("backbone", vec![("w".into(), w), ("b".into(), b)]),
            BlockSpec::zero_mean("head", vec![("h".into(), h)]),
        ],
        IsotropicPosterior::from_sigma(sigma).unwrap(),
    )
    .unwrap()
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn same_seed_same_weights_and_different_steps_differ() {
    let a = model(DType::F32, 0.1);
    let b = model(DType::F32, 0.1);
    for name in ["w", "b", "h"] {
        let x = flat_f32(a.sample(11, 3).unwrap().get(name).unwrap());
        let y = flat_f32(b.sample(11, 3).unwrap().get(name).unwrap());
        let z = flat_f32(a.sample(11, 3).unwrap().get(name).unwrap());
        assert_eq!(x, y, "{name}: two models, same seed");
        assert_eq!(x, z, "{name}: same model, repeated");
        let other_step = flat_f32(a.sample(11, 4).unwrap().get(name).unwrap());
        let other_seed = flat_f32(a.sample(12, 3).unwrap().get(name).unwrap());
        let predictive = flat_f32(a.sample_predictive(11, 3).unwrap().get(name).unwrap());
        assert_ne!(x, other_step);
        assert_ne!(x, other_seed);
        assert_ne!(x, predictive);
    }
}

#[test]
fn sampled_weights_are_mean_plus_sigma_times_the_core_normal() {
    let sigma = 0.37;
    for fused in [true, false] {
        let mut m = model(DType::F32, sigma);
        m.set_fused(fused);
        let w = m.sample(5, 9).unwrap();
        let s32 = sigma as f32;
        // (block, name, offset in block, chosen flat indices within the tensor)
        for (block, name, offset, picks) in [
            (0u32, "w", 0u64, vec![0usize, 1, 2, 3, 4, 97, 24 * 7 - 1]),
            (0, "b", 24 * 7, vec![0, 3, 6]),
            (1, "h", 0, vec![0, 5, 20]),
        ] {
            let mean = flat_f32(
                m.block(if block == 0 { "backbone" } else { "head" })
                    .unwrap()
                    .tensors()
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap()
                    .mean
                    .as_tensor(),
            );
            let got = flat_f32(w.get(name).unwrap());
            let key = NoiseKey::for_block_step(5, block, 9);
            for j in picks {
                let eps = normal_at(key, offset + j as u64);
                let expect = mean[j] + s32 * eps;
                assert_eq!(
                    got[j].to_bits(),
                    expect.to_bits(),
                    "fused={fused} {name}[{j}]"
                );
            }
            // The whole tensor equals the core's own reparameterize over the block's flat layout.
            let mut core = vec![0.0f32; mean.len()];
            core[..]
                .reparameterize(&mean[..], sigma, key, offset)
                .unwrap();
            assert_eq!(got, core, "fused={fused} {name}");
        }
        // Predictive samples use the same mapping with the top block bit set.
        let p = m.sample_predictive(5, 2).unwrap();
        let got = flat_f32(p.get("h").unwrap());
        let key = NoiseKey::for_block_step(5, 1 | PREDICTIVE_BLOCK_BIT, 2);
        assert_eq!(got[4], 0.25f32 + s32 * normal_at(key, 4));
    }
}

#[test]
fn f64_samples_match_the_core_exactly() {
    let m = model(DType::F64, 0.05);
    let w = m.sample(1, 0).unwrap();
    let got: Vec<f64> = w.get("b").unwrap().to_vec1().unwrap();
    let key = NoiseKey::for_block_step(1, 0, 0);
    let sigma = m.sigma().unwrap();
    for (j, g) in got.iter().enumerate() {
        assert_eq!(
            *g,
            1.0 + sigma * f64::from(normal_at(key, 24 * 7 + j as u64))
        );
    }
}

#[test]
fn gradients_flow_to_means_and_rho_through_the_noise() {
    // loss = sum_i c_i w_i  =>  d/dm_i = c_i,  d/drho = sigmoid(rho) sum_i c_i eps_i.
    for fused in [true, false] {
        let mut m = model(DType::F64, 0.2);
        m.set_fused(fused);
        let w = m.sample(3, 1).unwrap();
        let t = w.get("w").unwrap();
        let c = Tensor::arange(0u32, 24 * 7, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .affine(0.003, -0.2)
            .unwrap()
            .reshape((24, 7))
            .unwrap();
        let loss = t.mul(&c).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let mean = &m.blocks()[0].tensors()[0].mean;
        let gm: Vec<f64> = g
            .get(mean.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let cv: Vec<f64> = c.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(gm, cv, "fused={fused}");
        let key = NoiseKey::for_block_step(3, 0, 1);
        let dot: f64 = cv
            .iter()
            .enumerate()
            .map(|(i, ci)| ci * f64::from(normal_at(key, i as u64)))
            .sum();
        let q = m.posterior().unwrap();
        let expect = q.dsigma_drho() * dot;
        let got = g
            .get(m.rho().as_tensor())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (got - expect).abs() < 1e-12 * expect.abs().max(1.0),
            "fused={fused}: {got} vs {expect}"
        );
        // The head was not used: no gradient reaches it.
        assert!(g.get(m.blocks()[1].tensors()[0].mean.as_tensor()).is_none());
    }
}
