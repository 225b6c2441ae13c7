//! Shared test fixtures: models written with plain candle-nn (no deelbo code inside) and inputs.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves
#![allow(dead_code)] // each test file uses a part

use candle_core::{Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, Linear, VarBuilder};
use deelbo_core::{NoiseKey, normal_at};

/// A user's MLP, written with candle-nn only.
pub struct UserMlp {
    hidden: Vec<Linear>,
    head: Linear,
}

impl UserMlp {
    pub fn new(vb: VarBuilder, sizes: &[usize], classes: usize) -> candle_core::Result<Self> {
        let mut hidden = Vec::new();
        for k in 0..sizes.len() - 1 {
            hidden.push(candle_nn::linear(
                sizes[k],
                sizes[k + 1],
                vb.pp(format!("hidden{k}")),
            )?);
        }
        let head = candle_nn::linear(sizes[sizes.len() - 1], classes, vb.pp("head"))?;
        Ok(Self { hidden, head })
    }
}

impl Module for UserMlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.forward(&h)?.relu()?;
        }
        self.head.forward(&h)
    }
}

/// A user's conv net on 8x8 single-channel images, candle-nn only.
pub struct UserConv {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    fc: Linear,
    head: Linear,
}

impl UserConv {
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv1: candle_nn::conv2d(1, 4, 3, cfg, vb.pp("conv1"))?,
            bn1: candle_nn::batch_norm(4, 1e-5, vb.pp("bn1"))?,
            conv2: candle_nn::conv2d(4, 6, 3, cfg, vb.pp("conv2"))?,
            fc: candle_nn::linear(6 * 4 * 4, 16, vb.pp("fc"))?,
            head: candle_nn::linear(16, 3, vb.pp("head"))?,
        })
    }
}

impl ModuleT for UserConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(x)?;
        let h = self.bn1.forward_t(&h, train)?.relu()?;
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?;
        let h = self.fc.forward(&h.flatten_from(1)?)?.relu()?;
        self.head.forward(&h)
    }
}

pub fn inputs(n: usize, d: usize, seed: u64) -> (Tensor, Tensor) {
    let key = NoiseKey::new(seed, 3);
    let x: Vec<f32> = (0..n * d).map(|i| normal_at(key, i as u64)).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    (
        Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}
