//! One fine-tuning run: a pretrained backbone plus a new head, trained with MAP + L2-SP or with a
//! (data-emphasized) ELBO, by the shared optimizer (SGD + Nesterov momentum, cosine schedule,
//! gradient clipping) for a fixed step budget.
//!
//! - MAP + L2-SP: `loss = mean_batch NLL(m) + (alpha/2) ||m_backbone - w_pre||^2 +
//!   (beta/2) ||m_head||^2`.
//! - (DE-)ELBO: `loss = mean_batch NLL(m + sigma eps) + (KL*_backbone + KL*_head)/(kappa N)` with
//!   learned `lambda = v*_backbone` and `tau = v*_head`, one shared `sigma = softplus(rho)` started
//!   at `1e-4`; kappa = 1 (plain ELBO) or D/N (DE-ELBO).
//!
//! Test metrics use the posterior mean `m` (for MAP, the trained weights).

use candle_core::{DType, Device, Tensor};
use candle_nn::loss::cross_entropy;
use deelbo_candle::{
    BlockSpec, ClassificationMetrics, CosineSchedule, Mlp, NesterovSgd, ParamGroup,
    VariationalModel, Weights, elbo_loss, metrics_from_log_probs,
};
use deelbo_core::{IsotropicPosterior, KappaRule, NoiseKey, Objective};
use serde::{Deserialize, Serialize};

use crate::cputime::Stopwatch;
use crate::data::{Batch, STREAM_BATCH, permutation};
use crate::error::{Result, TransferError};

/// Optimizer and budget shared by every run of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Optimizer steps per run.
    pub steps: usize,
    /// Minibatch size (runs with at most this many examples use the full set every step).
    pub batch_size: usize,
    /// Nesterov momentum.
    pub momentum: f64,
    /// Maximum gradient norm, applied to the network means and (separately) to `rho`.
    pub clip_norm: f64,
    /// Monte Carlo samples of the final training loss (ELBO learning-rate selection).
    pub final_loss_samples: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 128,
            momentum: 0.9,
            clip_norm: 1.0,
            final_loss_samples: 4,
        }
    }
}

/// The training objective of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunObjective {
    /// MAP with the L2-SP penalty `(alpha/2)||m_bb - w_pre||^2 + (beta/2)||m_head||^2`.
    Map {
        /// Backbone strength.
        alpha: f64,
        /// Head strength.
        beta: f64,
    },
    /// The ELBO with likelihood weight from `rule` (Standard = plain ELBO, DataEmphasized =
    /// DE-ELBO) and learned prior variances.
    Variational {
        /// The kappa rule.
        rule: KappaRule,
    },
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Final training loss on the whole training set (the run's own objective, per example).
    pub final_train_loss: f64,
    /// Metrics on the validation rows, when given.
    pub validation: Option<Metrics>,
    /// Metrics on the test rows (posterior mean).
    pub test: Metrics,
    /// Learned backbone prior variance `lambda = v*` (ELBOs).
    pub lambda: Option<f64>,
    /// Learned head prior variance `tau = v*` (ELBOs).
    pub tau: Option<f64>,
    /// Final posterior standard deviation (ELBOs).
    pub sigma: Option<f64>,
    /// Kappa used (ELBOs).
    pub kappa: Option<f64>,
    /// Wall seconds of the run (training and its evaluations).
    pub seconds: f64,
    /// Process CPU seconds of the run (`None` where unavailable).
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// Accuracy and NLL (serializable copy of [`ClassificationMetrics`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Mean NLL, nats.
    pub nll: f64,
}

impl From<ClassificationMetrics> for Metrics {
    fn from(m: ClassificationMetrics) -> Self {
        Self {
            accuracy: m.accuracy,
            nll: m.nll,
        }
    }
}

/// Everything a run reads.
#[derive(Debug, Clone, Copy)]
pub struct RunInputs<'a> {
    /// The target-task architecture (backbone + new head).
    pub mlp: &'a Mlp,
    /// The pretrained backbone tensors (names as in [`Mlp::backbone_shapes`]).
    pub pretrained: &'a [(String, Tensor)],
    /// The training examples.
    pub train: &'a Batch,
    /// Validation examples (grid search), if any.
    pub validation: Option<&'a Batch>,
    /// Test examples.
    pub test: &'a Batch,
}

/// The resolved objective of a run.
enum Mode {
    Map { alpha: f64, beta: f64 },
    Elbo(Objective),
}

/// Which rows form the minibatch of each step: consecutive slices of a concatenation of seeded
/// permutations (one per epoch); the full set when `batch_size >= n`.
struct BatchPlan {
    n: usize,
    size: usize,
    seed: u64,
    order: Vec<u32>,
    epoch: u64,
    pos: usize,
}

impl BatchPlan {
    fn new(n: usize, size: usize, seed: u64) -> Self {
        Self {
            n,
            size,
            seed,
            order: Vec::new(),
            epoch: 0,
            pos: 0,
        }
    }

    fn full(&self) -> bool {
        self.size >= self.n
    }

    fn next(&mut self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.size);
        while out.len() < self.size {
            if self.pos == self.order.len() {
                let key = NoiseKey::new(self.seed, STREAM_BATCH + self.epoch);
                self.order = permutation(self.n, key)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                self.epoch += 1;
                self.pos = 0;
            }
            let take = (self.size - out.len()).min(self.order.len() - self.pos);
            out.extend_from_slice(&self.order[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }
}

/// Accuracy and mean NLL of `mlp` with `weights` on `batch`.
pub fn metrics_of(mlp: &Mlp, weights: &Weights, batch: &Batch) -> Result<ClassificationMetrics> {
    let logits = mlp.forward(weights, &batch.x)?;
    let lp = candle_nn::ops::log_softmax(&logits, 1)?;
    Ok(metrics_from_log_probs(&lp, &batch.labels)?)
}

/// The variational model of a run: backbone block (L2-SP prior around the pretrained weights)
/// and head block (zero-mean prior), head initialized from `seed`.
pub fn build_model(
    mlp: &Mlp,
    pretrained: &[(String, Tensor)],
    seed: u64,
    device: &Device,
) -> Result<VariationalModel> {
    let head = mlp.init_head(seed, DType::F32, device)?;
    Ok(VariationalModel::new(
        vec![
            BlockSpec::l2sp("backbone", pretrained.to_vec()),
            BlockSpec::zero_mean("head", head),
        ],
        IsotropicPosterior::default(),
    )?)
}

/// Train one run with learning rate `lr` and return its outcome. `seed` fixes the head
/// initialization, the minibatch order and the weight noise.
pub fn train_run(
    inputs: RunInputs<'_>,
    objective: RunObjective,
    lr: f64,
    seed: u64,
    settings: &TrainSettings,
) -> Result<RunOutcome> {
    let start = Stopwatch::start();
    let device = inputs.train.x.device().clone();
    let model = build_model(inputs.mlp, inputs.pretrained, seed, &device)?;
    let n = inputs.train.len();
    let schedule = CosineSchedule::new(lr, settings.steps)?;
    let means = ParamGroup {
        vars: model.mean_vars(),
        clip_norm: Some(settings.clip_norm),
    };
    let mode = match objective {
        RunObjective::Map { alpha, beta } => Mode::Map { alpha, beta },
        RunObjective::Variational { rule } => {
            Mode::Elbo(Objective::new(rule, model.num_params(), n)?)
        }
    };
    let mut groups = vec![means];
    if let Mode::Elbo(_) = mode {
        groups.push(ParamGroup {
            vars: vec![model.rho().clone()],
            clip_norm: Some(settings.clip_norm),
        });
    }
    let mut opt = NesterovSgd::new(groups, settings.momentum)?;
    let mut plan = BatchPlan::new(n, settings.batch_size, seed);
    let context = |step: usize| match objective {
        RunObjective::Map { alpha, beta } => {
            format!("map alpha={alpha:e} beta={beta:e} lr={lr:e} n={n} seed={seed} step={step}")
        }
        RunObjective::Variational { rule } => {
            format!("{} lr={lr:e} n={n} seed={seed} step={step}", rule.name())
        }
    };
    for step in 0..settings.steps {
        let (x, y) = if plan.full() {
            (inputs.train.x.clone(), inputs.train.y.clone())
        } else {
            let idx = plan.next();
            let idx = Tensor::from_vec(idx, settings.batch_size, &device)?;
            (
                inputs.train.x.index_select(&idx, 0)?,
                inputs.train.y.index_select(&idx, 0)?,
            )
        };
        let loss = match &mode {
            Mode::Map { alpha, beta } => {
                let w = model.mean_weights();
                let nll = cross_entropy(&inputs.mlp.forward(&w, &x)?, &y)?;
                nll.to_dtype(DType::F64)?
                    .add(&model.l2sp_penalty(&[*alpha, *beta])?)?
            }
            Mode::Elbo(obj) => {
                let w = model.sample(seed, step as u32)?;
                let nll = cross_entropy(&inputs.mlp.forward(&w, &x)?, &y)?;
                elbo_loss(&nll, &model.kl(obj)?)?
            }
        };
        let grads = loss.backward()?;
        opt.step(&grads, schedule.lr(step))
            .map_err(|source| TransferError::Training {
                context: context(step),
                source,
            })?;
    }
    let mean = model.mean_weights().detached();
    let test = metrics_of(inputs.mlp, &mean, inputs.test)?;
    let validation = match inputs.validation {
        Some(v) => Some(metrics_of(inputs.mlp, &mean, v)?.into()),
        None => None,
    };
    let (final_train_loss, lambda, tau, sigma, kappa) = match &mode {
        Mode::Map { alpha, beta } => {
            let nll = metrics_of(inputs.mlp, &mean, inputs.train)?.nll;
            let pen = model.l2sp_penalty(&[*alpha, *beta])?.to_scalar::<f64>()?;
            (nll + pen, None, None, None, None)
        }
        Mode::Elbo(obj) => {
            let s = settings.final_loss_samples.max(1);
            let mut nll = 0.0;
            for k in 0..s {
                let w = model.sample_predictive(seed, k as u32)?;
                nll += metrics_of(inputs.mlp, &w, inputs.train)?.nll;
            }
            let kl = model.kl(obj)?;
            let v = kl.variances()?;
            let loss = nll / s as f64 + kl.loss.to_scalar::<f64>()?;
            (
                loss,
                v.first().copied(),
                v.get(1).copied(),
                Some(model.sigma()?),
                Some(obj.kappa()),
            )
        }
    };
    if !final_train_loss.is_finite() {
        return Err(TransferError::Training {
            context: context(settings.steps),
            source: deelbo_candle::AdapterError::InvalidSetting {
                name: "final training loss".to_string(),
                value: final_train_loss,
                reason: "must be finite".to_string(),
            },
        });
    }
    Ok(RunOutcome {
        final_train_loss,
        validation,
        test: test.into(),
        lambda,
        tau,
        sigma,
        kappa,
        seconds: start.wall_seconds(),
        cpu_seconds: start.cpu_seconds(),
    })
}
