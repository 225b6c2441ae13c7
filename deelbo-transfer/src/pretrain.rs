//! The source-task network: an MLP trained once on digits 0–4 with plain cross-entropy, cached
//! as safetensors in the output directory (with a JSON sidecar recording how it was trained) and
//! reused when present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::loss::cross_entropy;
use deelbo_candle::{CosineSchedule, Mlp, NesterovSgd, ParamGroup, Weights};
use deelbo_core::NoiseKey;
use serde::{Deserialize, Serialize};

use crate::data::{CLASSES, FEATURES, STREAM_BATCH, Task, permutation};
use crate::error::{Result, TransferError};
use crate::train::metrics_of;

/// How the source network is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    /// Hidden widths of the MLP (`64 -> hidden... -> 5`).
    pub hidden: Vec<usize>,
    /// SGD steps.
    pub steps: usize,
    /// Peak learning rate of the cosine schedule.
    pub lr: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Seed of the initialization and minibatch order.
    pub seed: u64,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            steps: 1500,
            lr: 0.05,
            batch_size: 128,
            seed: 0,
        }
    }
}

/// The sidecar written next to the safetensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    /// The settings it was trained with.
    pub settings: PretrainSettings,
    /// Accuracy on the (whole) source training set.
    pub source_accuracy: f64,
    /// Mean cross-entropy on the source training set.
    pub source_nll: f64,
    /// Wall seconds of the pretraining.
    pub seconds: f64,
}

/// A pretrained source network.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// The source architecture (5 classes).
    pub mlp: Mlp,
    /// Backbone tensors (hidden layers) and the source head.
    pub weights: Weights,
    /// How it was trained and how well.
    pub record: PretrainRecord,
}

impl Pretrained {
    /// The backbone tensors, in block order.
    pub fn backbone(&self) -> Result<Vec<(String, Tensor)>> {
        self.mlp
            .backbone_shapes()
            .into_iter()
            .map(|(name, _)| Ok((name.clone(), self.weights.get(&name)?.clone())))
            .collect()
    }
}

/// Train the source network on `source` (all rows) with plain cross-entropy.
pub fn pretrain(source: &Task, settings: &PretrainSettings, device: &Device) -> Result<Pretrained> {
    let start = Instant::now();
    let mlp = Mlp::new(FEATURES, settings.hidden.clone(), CLASSES)?;
    let mut init = mlp.init_backbone(settings.seed, DType::F32, device)?;
    init.extend(mlp.init_head(settings.seed, DType::F32, device)?);
    let vars = init
        .iter()
        .map(|(_, t)| Ok(candle_core::Var::from_tensor(t)?))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = init.iter().map(|(n, _)| n.clone()).collect();
    let rows: Vec<usize> = (0..source.rows()).collect();
    let all = source.tensors(&rows, device)?;
    let schedule = CosineSchedule::new(settings.lr, settings.steps)?;
    let mut opt = NesterovSgd::new(
        vec![ParamGroup {
            vars: vars.clone(),
            clip_norm: Some(1.0),
        }],
        0.9,
    )?;
    let n = source.rows();
    let b = settings.batch_size.min(n);
    let mut order: Vec<u32> = Vec::new();
    let mut epoch = 0u64;
    let mut pos = 0usize;
    for step in 0..settings.steps {
        let mut idx = Vec::with_capacity(b);
        while idx.len() < b {
            if pos == order.len() {
                order = permutation(n, NoiseKey::new(settings.seed, STREAM_BATCH + epoch))
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                epoch += 1;
                pos = 0;
            }
            let take = (b - idx.len()).min(order.len() - pos);
            idx.extend_from_slice(&order[pos..pos + take]);
            pos += take;
        }
        let idx = Tensor::from_vec(idx, b, device)?;
        let x = all.x.index_select(&idx, 0)?;
        let y = all.y.index_select(&idx, 0)?;
        let w: Weights = names
            .iter()
            .cloned()
            .zip(vars.iter().map(|v| v.as_tensor().clone()))
            .collect();
        let loss = cross_entropy(&mlp.forward(&w, &x)?, &y)?;
        opt.step(&loss.backward()?, schedule.lr(step))
            .map_err(|source| TransferError::Training {
                context: format!("pretraining step {step}"),
                source,
            })?;
    }
    let weights: Weights = names
        .into_iter()
        .zip(vars.iter().map(|v| v.as_detached_tensor()))
        .collect();
    let m = metrics_of(&mlp, &weights, &all)?;
    Ok(Pretrained {
        mlp,
        weights,
        record: PretrainRecord {
            settings: settings.clone(),
            source_accuracy: m.accuracy,
            source_nll: m.nll,
            seconds: start.elapsed().as_secs_f64(),
        },
    })
}

/// The sidecar path of a safetensors file: `<file>.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Write the network to `path` (safetensors) and its record to the sidecar.
pub fn save_pretrained(p: &Pretrained, path: &Path) -> Result<()> {
    let map: HashMap<String, Tensor> = p
        .weights
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).map_err(|e| TransferError::Pretrained {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    })?;
    let side = sidecar_path(path);
    let json = serde_json::to_string_pretty(&p.record).map_err(|source| TransferError::Json {
        path: side.clone(),
        source,
    })?;
    std::fs::write(&side, json).map_err(|source| TransferError::Io {
        action: "writing",
        path: side,
        source,
    })
}

/// Load a network saved by [`save_pretrained`], checking that it was trained with `settings`
/// and has every tensor of the architecture with the right shape.
pub fn load_pretrained(
    path: &Path,
    settings: &PretrainSettings,
    device: &Device,
) -> Result<Pretrained> {
    let side = sidecar_path(path);
    let text = std::fs::read_to_string(&side).map_err(|source| TransferError::Io {
        action: "reading",
        path: side.clone(),
        source,
    })?;
    let record: PretrainRecord =
        serde_json::from_str(&text).map_err(|source| TransferError::Json {
            path: side.clone(),
            source,
        })?;
    if record.settings != *settings {
        return Err(TransferError::Pretrained {
            path: path.to_path_buf(),
            reason: format!(
                "it was trained with {:?}, the configuration asks for {:?}; delete it or use another output directory",
                record.settings, settings
            ),
        });
    }
    let map =
        candle_core::safetensors::load(path, device).map_err(|e| TransferError::Pretrained {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
    let mlp = Mlp::new(FEATURES, settings.hidden.clone(), CLASSES)?;
    let mut weights = Weights::new();
    for (name, shape) in mlp.backbone_shapes().into_iter().chain(mlp.head_shapes()) {
        let t = map.get(&name).ok_or_else(|| TransferError::Pretrained {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}` is missing"),
        })?;
        if t.dims() != shape.as_slice() || t.dtype() != DType::F32 {
            return Err(TransferError::Pretrained {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `{name}` has shape {:?} / {:?}, expected {shape:?} / F32",
                    t.dims(),
                    t.dtype()
                ),
            });
        }
        weights.push(name, t.clone());
    }
    Ok(Pretrained {
        mlp,
        weights,
        record,
    })
}

/// Reuse `path` when it exists (checked against `settings`), otherwise pretrain and save it.
/// Returns the network and whether it was reused.
pub fn load_or_pretrain(
    path: &Path,
    source: &Task,
    settings: &PretrainSettings,
    device: &Device,
) -> Result<(Pretrained, bool)> {
    if path.exists() {
        return Ok((load_pretrained(path, settings, device)?, true));
    }
    let p = pretrain(source, settings, device)?;
    save_pretrained(&p, path)?;
    Ok((p, false))
}
