//! The source-task networks: each architecture trained once on digits 0–4 with plain
//! cross-entropy, then a short SWAG phase at a constant learning rate that collects the
//! statistics of the PTYL prior; cached as safetensors in the output directory (with a JSON
//! sidecar recording how it was trained) and reused when present.
//!
//! The L2-SP prior mean is the network at the end of the main phase; the SWAG phase continues
//! from it (on a copy) and yields the SWAG mean, diagonal variance and `K` deviation columns of
//! the backbone's trainable tensors ([`deelbo_candle::SwagStatistics`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use candle_nn::loss::cross_entropy;
use deelbo_candle::{
    BATCH_NORM_BUFFERS, CosineSchedule, NesterovSgd, ParamGroup, SwagCollector, SwagSettings,
    SwagStatistics, metrics_from_log_probs, seeded_var_builder,
};
use deelbo_core::check;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::{BatchPlan, CLASSES, Task};
use crate::error::{Result, TransferError};
use crate::models::Architecture;

/// How the source networks are trained.
///
/// # Parameters
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `hidden` | `256, 256` | non-empty, each `>= 1` | MLP hidden widths |
/// | `steps` | 1500 | `>= 1` | SGD steps of the main phase (cosine schedule) |
/// | `lr` | 0.05 | `> 0` | peak learning rate of the main phase |
/// | `batch_size` | 128 | `>= 1` | minibatch size |
/// | `seed` | 0 | any | initialization and minibatch order |
/// | `swag_steps` | 250 | `>= swag_every * swag_rank` | steps of the SWAG phase |
/// | `swag_lr` | 0.01 | `> 0` | its constant learning rate |
/// | `swag_every` | 25 | `>= 1` | steps between SWAG snapshots |
/// | `swag_rank` | 5 | `>= 2` | `K`, deviation columns of the PTYL prior |
/// | `swag_variance_floor` | `1e-3` | `> 0` | relative floor of the SWAG diagonal variance |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    /// Hidden widths of the MLP (`64 -> hidden... -> 5`).
    pub hidden: Vec<usize>,
    /// SGD steps of the main phase.
    pub steps: usize,
    /// Peak learning rate of the cosine schedule.
    pub lr: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Seed of the initialization and minibatch order.
    pub seed: u64,
    /// Steps of the SWAG phase (after the main phase, constant learning rate).
    pub swag_steps: usize,
    /// Learning rate of the SWAG phase.
    pub swag_lr: f64,
    /// Steps between SWAG snapshots.
    pub swag_every: usize,
    /// `K`, deviation columns kept (the last `K` snapshots).
    pub swag_rank: usize,
    /// Relative floor of the SWAG diagonal variance.
    pub swag_variance_floor: f64,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            steps: 1500,
            lr: 0.05,
            batch_size: 128,
            seed: 0,
            swag_steps: 250,
            swag_lr: 0.01,
            swag_every: 25,
            swag_rank: 5,
            swag_variance_floor: 1e-3,
        }
    }
}

impl PretrainSettings {
    /// Check every value.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(TransferError::InvalidConfig {
                name: "hidden".to_string(),
                value: format!("{:?}", self.hidden),
                reason: "needs at least one hidden layer, all widths >= 1".to_string(),
            });
        }
        check::in_range("pretrain-steps", self.steps as f64, 1.0..)?;
        check::positive("pretrain-lr", self.lr)?;
        check::in_range("pretrain-batch-size", self.batch_size as f64, 1.0..)?;
        self.swag().validate()?;
        check::in_range("swag-every", self.swag_every as f64, 1.0..)?;
        check::positive("swag-lr", self.swag_lr)?;
        check::in_range(
            "swag-steps (at least swag-every x swag-rank)",
            self.swag_steps as f64,
            (self.swag_every * self.swag_rank) as f64..,
        )?;
        Ok(())
    }

    /// The SWAG part as the adapter's settings.
    pub fn swag(&self) -> SwagSettings {
        SwagSettings {
            rank: self.swag_rank,
            variance_floor: self.swag_variance_floor,
        }
    }
}

/// The sidecar written next to the safetensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    /// The architecture.
    pub arch: Architecture,
    /// The settings it was trained with.
    pub settings: PretrainSettings,
    /// Accuracy on the (whole) source training set at the end of the main phase.
    pub source_accuracy: f64,
    /// Mean cross-entropy on the source training set at the end of the main phase.
    pub source_nll: f64,
    /// SWAG snapshots collected.
    pub swag_snapshots: usize,
    /// Wall seconds of the pretraining (both phases).
    pub seconds: f64,
}

/// A pretrained source network.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// Every tensor at the end of the main phase (backbone, batch-norm buffers, source head),
    /// sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// SWAG statistics of the backbone's trainable tensors.
    pub swag: SwagStatistics,
    /// How it was trained and how well.
    pub record: PretrainRecord,
}

/// `true` for the batch-norm running statistics.
pub fn is_buffer(name: &str) -> bool {
    BATCH_NORM_BUFFERS
        .iter()
        .any(|s| name.ends_with(&format!(".{s}")))
}

pub(crate) fn claimed(name: &str, prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .any(|p| name == p || name.starts_with(&format!("{p}.")))
}

impl Pretrained {
    /// The backbone's tensors (trainable and buffers), sorted by name.
    pub fn backbone(&self) -> Vec<(String, Tensor)> {
        let prefixes = self
            .record
            .arch
            .backbone_prefixes(&self.record.settings.hidden);
        self.tensors
            .iter()
            .filter(|(n, _)| claimed(n, &prefixes))
            .cloned()
            .collect()
    }
}

pub(crate) fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap.data().lock().map_err(|_| TransferError::Data {
        name: "varmap".to_string(),
        reason: "the VarMap's lock is poisoned".to_string(),
    })?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Train the source network of `arch` on `source` (all rows) with plain cross-entropy, then run
/// the SWAG phase.
pub fn pretrain(
    arch: Architecture,
    source: &Task,
    settings: &PretrainSettings,
    device: &Device,
) -> Result<Pretrained> {
    settings.validate()?;
    let start = std::time::Instant::now();
    let varmap = VarMap::new();
    let net = arch.build(
        seeded_var_builder(&varmap, settings.seed, DType::F32, device),
        &settings.hidden,
        CLASSES,
    )?;
    let all_vars = sorted_vars(&varmap)?;
    let trainable: Vec<(String, Var)> = all_vars
        .iter()
        .filter(|(n, _)| !is_buffer(n))
        .cloned()
        .collect();
    let rows: Vec<usize> = (0..source.rows()).collect();
    let all = source.tensors(&rows, device)?;
    let n = source.rows();
    let b = settings.batch_size.min(n);
    let mut plan = BatchPlan::new(n, b, settings.seed);
    let mut step_with = |opt: &mut NesterovSgd, lr: f64, step: usize| -> Result<()> {
        let idx = Tensor::from_vec(plan.next(), b, device)?;
        let x = all.x.index_select(&idx, 0)?;
        let y = all.y.index_select(&idx, 0)?;
        let loss = cross_entropy(&net.forward_t(&x, true)?, &y)?;
        opt.step(&loss.backward()?, lr)
            .map_err(|source| TransferError::Training {
                name: format!("pretraining {arch} step {step}"),
                source,
            })?;
        Ok(())
    };
    let group = || ParamGroup {
        vars: trainable.iter().map(|(_, v)| v.clone()).collect(),
        clip_norm: Some(1.0),
    };
    let schedule = CosineSchedule::new(settings.lr, settings.steps)?;
    let mut opt = NesterovSgd::new(vec![group()], 0.9)?;
    for step in 0..settings.steps {
        step_with(&mut opt, schedule.lr(step), step)?;
    }
    let tensors: Vec<(String, Tensor)> = all_vars
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    let lp = candle_nn::ops::log_softmax(&net.forward_t(&all.x, false)?, 1)?;
    let m = metrics_from_log_probs(&lp, &all.labels)?;
    // SWAG phase: continue at a constant learning rate, snapshot the backbone every few steps.
    let prefixes = arch.backbone_prefixes(&settings.hidden);
    let backbone: Vec<(String, Var)> = trainable
        .iter()
        .filter(|(n, _)| claimed(n, &prefixes))
        .cloned()
        .collect();
    let mut collector = SwagCollector::new(backbone, settings.swag_rank)?;
    let mut opt = NesterovSgd::new(vec![group()], 0.9)?;
    for step in 0..settings.swag_steps {
        step_with(&mut opt, settings.swag_lr, settings.steps + step)?;
        if (step + 1) % settings.swag_every == 0 {
            collector.collect()?;
        }
    }
    let swag = collector.statistics()?;
    Ok(Pretrained {
        tensors,
        record: PretrainRecord {
            arch,
            settings: settings.clone(),
            source_accuracy: m.accuracy,
            source_nll: m.nll,
            swag_snapshots: swag.snapshots,
            seconds: start.elapsed().as_secs_f64(),
        },
        swag,
    })
}

/// The sidecar path of a safetensors file: `<file>.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

const SWAG_MEAN: &str = "swag.mean";
const SWAG_VARIANCE: &str = "swag.variance";
const SWAG_DEVIATIONS: &str = "swag.deviations";

/// Write the network and its SWAG statistics to `path` (safetensors) and its record to the
/// sidecar.
pub fn save_pretrained(p: &Pretrained, path: &Path) -> Result<()> {
    let dev = Device::Cpu;
    let mut map: HashMap<String, Tensor> = p.tensors.iter().cloned().collect();
    let d = p.swag.len();
    map.insert(
        SWAG_MEAN.into(),
        Tensor::from_vec(p.swag.mean.clone(), d, &dev)?,
    );
    map.insert(
        SWAG_VARIANCE.into(),
        Tensor::from_vec(p.swag.variance.clone(), d, &dev)?,
    );
    let k = p.swag.deviations.ncols();
    map.insert(
        SWAG_DEVIATIONS.into(),
        Tensor::from_vec(p.swag.deviations.iter().copied().collect(), (d, k), &dev)?,
    );
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

/// Load a network saved by [`save_pretrained`], checking that it was trained for `arch` with
/// `settings` and has every tensor of the architecture with the right shape.
pub fn load_pretrained(
    path: &Path,
    arch: Architecture,
    settings: &PretrainSettings,
    device: &Device,
) -> Result<Pretrained> {
    let bad = |reason: String| TransferError::Pretrained {
        path: path.to_path_buf(),
        reason,
    };
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
    if record.settings != *settings || record.arch != arch {
        return Err(bad(format!(
            "it was trained for {} with {:?}, the configuration asks for {arch} with {:?}; delete it or use another output directory",
            record.arch, record.settings, settings
        )));
    }
    let mut map = candle_core::safetensors::load(path, device)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut take = |name: &str| {
        map.remove(name)
            .ok_or_else(|| bad(format!("tensor `{name}` is missing")))
    };
    let mean: Vec<f64> = take(SWAG_MEAN)?.to_vec1()?;
    let variance: Vec<f64> = take(SWAG_VARIANCE)?.to_vec1()?;
    let dev_t = take(SWAG_DEVIATIONS)?;
    let (d, k) = dev_t.dims2()?;
    let deviations = Array2::from_shape_vec((d, k), dev_t.flatten_all()?.to_vec1::<f64>()?)
        .map_err(|e| bad(format!("SWAG deviations: {e}")))?;
    // The architecture's own tensors, checked against a fresh build.
    let shapes = VarMap::new();
    arch.build(
        seeded_var_builder(&shapes, 0, DType::F32, device),
        &settings.hidden,
        CLASSES,
    )?;
    let mut tensors = Vec::new();
    let prefixes = arch.backbone_prefixes(&settings.hidden);
    let mut layout = Vec::new();
    for (name, v) in sorted_vars(&shapes)? {
        let t = map
            .remove(&name)
            .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        if t.dims() != v.dims() || t.dtype() != DType::F32 {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?} / {:?}, expected {:?} / F32",
                t.dims(),
                t.dtype(),
                v.dims()
            )));
        }
        if claimed(&name, &prefixes) && !is_buffer(&name) {
            layout.push((name.clone(), t.dims().to_vec()));
        }
        tensors.push((name, t));
    }
    let swag = SwagStatistics {
        layout,
        mean,
        variance,
        deviations,
        snapshots: record.swag_snapshots,
    };
    let d_layout: usize = swag
        .layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    if d_layout != swag.len() || swag.variance.len() != d || swag.len() != d {
        return Err(bad(format!(
            "SWAG statistics cover {} weights, the backbone has {d_layout}",
            swag.len()
        )));
    }
    Ok(Pretrained {
        tensors,
        swag,
        record,
    })
}

/// Reuse `path` when it exists (checked against `arch` and `settings`), otherwise pretrain and
/// save it. Returns the network and whether it was reused.
pub fn load_or_pretrain(
    path: &Path,
    arch: Architecture,
    source: &Task,
    settings: &PretrainSettings,
    device: &Device,
) -> Result<(Pretrained, bool)> {
    if path.exists() {
        return Ok((load_pretrained(path, arch, settings, device)?, true));
    }
    let p = pretrain(arch, source, settings, device)?;
    save_pretrained(&p, path)?;
    Ok((p, false))
}
