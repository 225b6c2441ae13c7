//! A ReLU multilayer perceptron whose weights come from a [`Weights`] set, so the same forward
//! pass runs on MAP weights, on posterior means or on a reparameterized sample.
//!
//! Layout (names the forward pass looks up): `candle_nn::linear`'s, weight matrices stored
//! `(fan_out, fan_in)` and a layer computed as `x W^T + b` by the same candle ops as
//! `candle_nn::Linear::forward`, so an MLP written with `candle_nn::linear` and built from
//! [`crate::VariationalModel::var_builder`] computes the same bits as this forward pass on
//! [`crate::VariationalModel::sample`]:
//!
//! - hidden layer `k`: `hidden{k}.weight` `(d_{k+1}, d_k)`, `hidden{k}.bias` `(d_{k+1})`, then ReLU;
//! - classifier: `head.weight` `(C, d_last)`, `head.bias` `(C)`, giving logits `(n, C)`.
//!
//! The hidden layers are the *backbone* (transferred, L2-SP prior), the classifier the *head*
//! (replaced per task, zero-mean prior).

use candle_core::{DType, Device, Tensor};
use deelbo_core::{NoiseKey, fill_normals};

use crate::error::{AdapterError, Result};
use crate::weights::Weights;

/// Noise keys used for initialization have `block = INIT_BLOCK_BASE + layer`, disjoint from the
/// training (`< 2^30`) and predictive (`>= 2^31`) keys of [`crate::VariationalModel`].
pub const INIT_BLOCK_BASE: u32 = 1 << 30;

/// The architecture: input size, hidden widths, number of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mlp {
    input: usize,
    hidden: Vec<usize>,
    classes: usize,
}

impl Mlp {
    /// An MLP `input -> hidden[0] -> ... -> classes`. Every size must be >= 1 and there must be at
    /// least one hidden layer.
    pub fn new(input: usize, hidden: Vec<usize>, classes: usize) -> Result<Self> {
        if input == 0 || classes == 0 || hidden.is_empty() || hidden.contains(&0) {
            return Err(AdapterError::InvalidBlock {
                name: "mlp".to_string(),
                reason: format!(
                    "sizes must be >= 1 with at least one hidden layer (input {input}, hidden {hidden:?}, classes {classes})"
                ),
            });
        }
        Ok(Self {
            input,
            hidden,
            classes,
        })
    }

    /// Input size.
    pub fn input(&self) -> usize {
        self.input
    }

    /// Hidden widths.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// Number of classes (logits).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The same backbone with a different number of classes (a new head).
    pub fn with_classes(&self, classes: usize) -> Result<Self> {
        Self::new(self.input, self.hidden.clone(), classes)
    }

    /// `(name, shape)` of every backbone tensor, in block order.
    pub fn backbone_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let mut fan_in = self.input;
        for (k, &h) in self.hidden.iter().enumerate() {
            out.push((format!("hidden{k}.weight"), vec![h, fan_in]));
            out.push((format!("hidden{k}.bias"), vec![h]));
            fan_in = h;
        }
        out
    }

    /// `(name, shape)` of the head tensors.
    pub fn head_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let last = self.hidden.last().copied().unwrap_or(self.input);
        vec![
            ("head.weight".to_string(), vec![self.classes, last]),
            ("head.bias".to_string(), vec![self.classes]),
        ]
    }

    /// Number of backbone weights.
    pub fn backbone_len(&self) -> usize {
        self.backbone_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Number of head weights.
    pub fn head_len(&self) -> usize {
        self.head_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    fn init(
        shapes: Vec<(String, Vec<usize>)>,
        gain: f64,
        seed: u64,
        block: u32,
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<(String, Tensor)>> {
        let key = NoiseKey::for_block_step(seed, INIT_BLOCK_BASE + block, 0);
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(shapes.len());
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let t = if shape.len() == 2 {
                let std = (gain / shape[1] as f64).sqrt();
                let mut eps = vec![0.0f32; n];
                fill_normals(key, offset, &mut eps);
                Tensor::from_vec(eps, shape.as_slice(), device)?
                    .to_dtype(dtype)?
                    .affine(std, 0.0)?
            } else {
                Tensor::zeros(shape.as_slice(), dtype, device)?
            };
            offset += n as u64;
            out.push((name, t));
        }
        Ok(out)
    }

    /// He-normal initialization of the backbone (`N(0, 2/fan_in)` weights, zero biases), from the
    /// core's noise with key `for_block_step(seed, INIT_BLOCK_BASE, 0)`.
    pub fn init_backbone(
        &self,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<(String, Tensor)>> {
        Self::init(self.backbone_shapes(), 2.0, seed, 0, dtype, device)
    }

    /// LeCun-normal initialization of the head (`N(0, 1/fan_in)` weights, zero biases), from the
    /// key `for_block_step(seed, INIT_BLOCK_BASE + 1, 0)`.
    pub fn init_head(
        &self,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<(String, Tensor)>> {
        Self::init(self.head_shapes(), 1.0, seed, 1, dtype, device)
    }

    /// Logits `(n, C)` for inputs `x` `(n, input)`.
    ///
    /// # Formula
    /// ```text
    /// h_0 = x,  h_{k+1} = relu(h_k W_k^T + b_k),  logits = h_K W_head^T + b_head
    /// ```
    pub fn forward(&self, weights: &Weights, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for k in 0..self.hidden.len() {
            let w = weights.get(&format!("hidden{k}.weight"))?;
            let b = weights.get(&format!("hidden{k}.bias"))?;
            h = h.matmul(&w.t()?)?.broadcast_add(b)?.relu()?;
        }
        let w = weights.get("head.weight")?;
        let b = weights.get("head.bias")?;
        Ok(h.matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// Check that `weights` holds every tensor of this architecture with the right shape.
    pub fn check_weights(&self, weights: &Weights) -> Result<()> {
        for (name, shape) in self.backbone_shapes().into_iter().chain(self.head_shapes()) {
            let t = weights.get(&name)?;
            if t.dims() != shape.as_slice() {
                return Err(AdapterError::ShapeMismatch {
                    name,
                    expected: shape,
                    found: t.dims().to_vec(),
                });
            }
        }
        Ok(())
    }
}
