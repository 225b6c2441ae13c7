//! The two source/target architectures, written as ordinary candle-nn models: nothing in this
//! module knows about deelbo. The experiment builds them from a `VarMap` for pretraining and
//! MAP runs, and from the variational VarBuilder for the ELBO runs, with no change to this
//! code.
//!
//! - [`MlpNet`]: `64 -> 256 -> 256 -> C`, ReLU (widths configurable), `candle_nn::linear`.
//! - [`ConvNet`]: the 8x8 image as `1 x 8 x 8`; `conv2d(1 -> 8, 3x3, pad 1)`, `batch_norm`,
//!   ReLU, 2x2 max-pool (`8 x 4 x 4`); `conv2d(8 -> 16, 3x3, pad 1)`, `batch_norm`, ReLU, 2x2
//!   max-pool (`16 x 2 x 2`); `linear(64 -> 64)`, ReLU; `linear(64 -> C)` (5,845 weights for
//!   C = 5; small because candle's CPU convolutions cost far more per weight than its matmuls).
//!
//! In both, the classifier is `head.*` (replaced per task) and everything else is the
//! transferred backbone.

use std::fmt;
use std::str::FromStr;

use candle_core::{ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TransferError};

/// A ReLU MLP of `candle_nn::linear` layers: `hidden{k}.*`, then `head.*`.
#[derive(Debug, Clone)]
pub struct MlpNet {
    hidden: Vec<Linear>,
    head: Linear,
}

impl MlpNet {
    /// `input -> hidden[0] -> ... -> classes`.
    pub fn new(
        vb: VarBuilder,
        input: usize,
        hidden: &[usize],
        classes: usize,
    ) -> candle_core::Result<Self> {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut fan_in = input;
        for (k, &h) in hidden.iter().enumerate() {
            layers.push(candle_nn::linear(fan_in, h, vb.pp(format!("hidden{k}")))?);
            fan_in = h;
        }
        Ok(Self {
            hidden: layers,
            head: candle_nn::linear(fan_in, classes, vb.pp("head"))?,
        })
    }
}

impl ModuleT for MlpNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.forward(&h)?.relu()?;
        }
        self.head.forward(&h)
    }
}

/// A small conv net with batch norm for 8x8 single-channel images given as `(n, 64)` rows.
#[derive(Debug, Clone)]
pub struct ConvNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    fc: Linear,
    head: Linear,
}

impl ConvNet {
    /// The network with `classes` outputs (batch-norm momentum 0.1, candle's default).
    pub fn new(vb: VarBuilder, classes: usize) -> candle_core::Result<Self> {
        Self::with_batch_norm_momentum(vb, classes, 0.1)
    }

    /// The network with batch-norm running statistics updated as
    /// `running <- (1 - momentum) running + momentum batch` in every train-mode forward pass.
    /// `momentum = 1` makes one train-mode pass set them to that batch's statistics exactly
    /// (what [`Architecture::calibrated`] uses).
    pub fn with_batch_norm_momentum(
        vb: VarBuilder,
        classes: usize,
        momentum: f64,
    ) -> candle_core::Result<Self> {
        let same = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let bn = candle_nn::BatchNormConfig {
            eps: 1e-5,
            momentum,
            ..Default::default()
        };
        Ok(Self {
            conv1: candle_nn::conv2d(1, 8, 3, same, vb.pp("conv1"))?,
            bn1: candle_nn::batch_norm(8, bn, vb.pp("bn1"))?,
            conv2: candle_nn::conv2d(8, 16, 3, same, vb.pp("conv2"))?,
            bn2: candle_nn::batch_norm(16, bn, vb.pp("bn2"))?,
            fc: candle_nn::linear(16 * 2 * 2, 64, vb.pp("fc"))?,
            head: candle_nn::linear(64, classes, vb.pp("head"))?,
        })
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        let h = x.reshape((n, 1, 8, 8))?;
        let h = self.bn1.forward_t(&self.conv1.forward(&h)?, train)?;
        let h = h.relu()?.max_pool2d(2)?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let h = h.relu()?.max_pool2d(2)?;
        let h = self.fc.forward(&h.flatten_from(1)?)?.relu()?;
        self.head.forward(&h)
    }
}

/// Which network the experiment fine-tunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Architecture {
    /// [`MlpNet`] with the pretraining settings' hidden widths.
    #[serde(rename = "mlp")]
    Mlp,
    /// [`ConvNet`].
    #[serde(rename = "conv")]
    Conv,
}

/// A built network of either architecture.
pub type Net = Box<dyn ModuleT>;

impl Architecture {
    /// Both architectures, in table order.
    pub const ALL: [Architecture; 2] = [Architecture::Mlp, Architecture::Conv];

    /// `mlp` or `conv`.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::Conv => "conv",
        }
    }

    /// Build the network from `vb` (MLP widths from `hidden`).
    pub fn build(
        &self,
        vb: VarBuilder,
        hidden: &[usize],
        classes: usize,
    ) -> candle_core::Result<Net> {
        Ok(match self {
            Architecture::Mlp => Box::new(MlpNet::new(vb, crate::data::FEATURES, hidden, classes)?),
            Architecture::Conv => Box::new(ConvNet::new(vb, classes)?),
        })
    }

    /// The network on `vb`'s weights with its batch-norm running statistics recomputed for
    /// exactly those weights: one train-mode forward pass over `calibration` (all rows in one
    /// batch) sets every running mean and variance to that batch's statistics (momentum 1), so
    /// an eval-mode forward afterwards normalizes as the weights require. Without this, the
    /// running statistics of a variational run are an average over the *sampled* networks of
    /// the last training steps and fit neither the posterior mean nor any one predictive
    /// sample (SWAG's `bn_update` does the same recomputation). The running statistics are the
    /// builder's buffers: a builder of a `VariationalModel` shares them, so they are
    /// overwritten. The MLP has none and is returned as built.
    pub fn calibrated(
        &self,
        vb: VarBuilder,
        hidden: &[usize],
        classes: usize,
        calibration: &Tensor,
    ) -> candle_core::Result<Net> {
        match self {
            Architecture::Mlp => self.build(vb, hidden, classes),
            Architecture::Conv => {
                let net = ConvNet::with_batch_norm_momentum(vb, classes, 1.0)?;
                net.forward_t(calibration, true)?;
                Ok(Box::new(net))
            }
        }
    }

    /// Name prefixes of the transferred backbone (everything but `head`).
    pub fn backbone_prefixes(&self, hidden: &[usize]) -> Vec<String> {
        match self {
            Architecture::Mlp => (0..hidden.len()).map(|k| format!("hidden{k}")).collect(),
            Architecture::Conv => ["conv1", "bn1", "conv2", "bn2", "fc"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = TransferError;

    fn from_str(s: &str) -> Result<Self> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| TransferError::InvalidConfig {
                name: "arch".to_string(),
                value: s.to_string(),
                reason: "expected mlp or conv".to_string(),
            })
    }
}
