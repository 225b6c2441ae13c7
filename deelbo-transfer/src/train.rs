//! One fine-tuning run: a pretrained backbone plus a new head, trained with MAP + L2-SP or with a
//! (data-emphasized) ELBO, by the shared optimizer (SGD + Nesterov momentum, cosine schedule,
//! gradient clipping) for a fixed step budget. The network is the architecture's plain
//! candle-nn model ([`crate::models`]); the variational runs build it every step from the
//! variational VarBuilder.
//!
//! - MAP + L2-SP: `loss = mean_batch NLL(m) + (alpha/2) ||m_backbone - w_pre||^2 +
//!   (beta/2) ||m_head||^2`.
//! - (DE-)ELBO: `loss = mean_batch NLL(m + sigma eps) + (KL*_backbone + KL*_head)/(kappa N)` with
//!   learned `lambda = v*_backbone` and `tau = v*_head`, one shared `sigma = softplus(rho)` started
//!   at `1e-4`; kappa = 1 (plain ELBO) or D/N (DE-ELBO). The backbone prior is L2-SP
//!   `N(w_pre, lambda I)` or PTYL `N(theta_swag, lambda Sigma_swag)`.
//!
//! Test metrics come from the posterior mean `m` (for MAP, the trained weights) and, for the
//! ELBOs, also from the S-sample predictive. Every network a variational run evaluates (the
//! posterior mean, each predictive sample, each sample of the final training loss) first gets
//! batch-norm statistics recomputed on the training set for its own weights
//! ([`Architecture::calibrated`]).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::loss::cross_entropy;
use deelbo_candle::{
    BlockPlan, BlockSpec, ClassificationMetrics, CosineSchedule, LeafSample, NesterovSgd,
    ParamGroup, VariationalModel, elbo_loss, metrics_from_log_probs, predictive_log_probs_of,
    seeded_var_builder,
};
use deelbo_core::{IsotropicPosterior, KappaRule, LowRankPrior, Objective, check};
use serde::{Deserialize, Serialize};

use crate::cputime::Stopwatch;
use crate::data::{Batch, BatchPlan, CLASSES};
use crate::error::{Result, TransferError};
use crate::models::{Architecture, Net};
use crate::pretrain::Pretrained;

/// Optimizer and budget shared by every run of the experiment.
///
/// # Parameters
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `steps` | 300 | `1..=2^32-1` | optimizer steps per run |
/// | `batch_size` | 128 | `>= 1` | minibatch size (smaller sets use all rows every step) |
/// | `momentum` | 0.9 | `[0, 1)` | Nesterov momentum |
/// | `clip_norm` | 1.0 | `> 0` | gradient-norm clip, for the means and (apart) for `rho` |
/// | `final_loss_samples` | 4 | `>= 1` | Monte Carlo samples of the ELBO's final training loss |
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

impl TrainSettings {
    /// Check every value.
    pub fn validate(&self) -> Result<()> {
        check::in_range("steps", self.steps as f64, 1.0..=f64::from(u32::MAX))?;
        check::in_range("batch-size", self.batch_size as f64, 1.0..)?;
        check::in_range("momentum", self.momentum, 0.0..1.0)?;
        check::positive("clip-norm", self.clip_norm)?;
        check::in_range("final-loss-samples", self.final_loss_samples as f64, 1.0..)?;
        Ok(())
    }
}

/// The backbone prior of a variational run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackbonePrior {
    /// `N(w_pre, lambda I)` around the pretrained weights.
    L2sp,
    /// `N(theta_swag, lambda Sigma_swag)`, the SWAG mean and low-rank-plus-diagonal covariance.
    Ptyl,
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
        /// The backbone prior.
        prior: BackbonePrior,
    },
}

/// What was learned for one prior block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockReport {
    /// `backbone` or `head`.
    pub name: String,
    /// `D_b`.
    pub len: usize,
    /// The learned prior variance `v*_b` (lambda for the backbone, tau for the head).
    pub variance: f64,
    /// `M_b/D_b` (for the PTYL backbone `Q_b/D_b`, the Mahalanobis distance per weight): how far
    /// the means moved from the prior mean; `v*_b - M_b/D_b` is the posterior's share.
    pub distance_per_weight: f64,
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Final training loss on the whole training set (the run's own objective, per example).
    pub final_train_loss: f64,
    /// Metrics on the validation rows, when given.
    pub validation: Option<Metrics>,
    /// Metrics on the test rows from the posterior mean (MAP: the trained weights).
    pub test: Metrics,
    /// Metrics on the test rows from the S-sample predictive (ELBOs).
    pub test_predictive: Option<Metrics>,
    /// Per-block learned variance and distance (ELBOs).
    pub blocks: Vec<BlockReport>,
    /// Final posterior standard deviation (ELBOs).
    pub sigma: Option<f64>,
    /// Kappa used (ELBOs).
    pub kappa: Option<f64>,
    /// Wall seconds of training and of the model-selection criterion (validation metrics for
    /// MAP, final training loss for the ELBOs); test evaluation excluded.
    pub seconds: f64,
    /// Process CPU seconds of the same (`None` where unavailable).
    pub cpu_seconds: Option<f64>,
    /// Wall seconds of the test evaluation (posterior mean and predictive).
    pub eval_seconds: f64,
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
    /// The network.
    pub arch: Architecture,
    /// The pretrained source network (backbone tensors and SWAG statistics).
    pub pretrained: &'a Pretrained,
    /// The PTYL prior built from `pretrained.swag` (needed by [`BackbonePrior::Ptyl`] runs).
    pub ptyl: Option<&'a Arc<LowRankPrior>>,
    /// The training examples.
    pub train: &'a Batch,
    /// Validation examples (grid search), if any.
    pub validation: Option<&'a Batch>,
    /// Test examples.
    pub test: &'a Batch,
    /// `S` of the predictive test metrics.
    pub predictive_samples: usize,
}

/// The block plan of an architecture: backbone (L2-SP) and `head` (zero mean), batch-norm
/// running statistics as buffers.
pub fn plan_of(arch: Architecture, hidden: &[usize]) -> BlockPlan {
    BlockPlan::transfer(&arch.backbone_prefixes(hidden), &["head".to_string()])
}

/// The variational model of a run: the pretrained backbone (L2-SP block, or for PTYL a
/// low-rank block starting at and centred on the SWAG mean) and a new head initialized from
/// `seed` (zero-mean block).
pub fn build_model(
    inputs: &RunInputs<'_>,
    prior: BackbonePrior,
    seed: u64,
    device: &Device,
) -> Result<VariationalModel> {
    let hidden = &inputs.pretrained.record.settings.hidden;
    let fresh = candle_nn::VarMap::new();
    inputs.arch.build(
        seeded_var_builder(&fresh, seed ^ 0x4ead, DType::F32, device),
        hidden,
        CLASSES,
    )?;
    let mut tensors = inputs.pretrained.backbone();
    {
        let data = fresh.data().lock().map_err(|_| TransferError::Data {
            name: "varmap".to_string(),
            reason: "the VarMap's lock is poisoned".to_string(),
        })?;
        for (n, v) in data.iter().filter(|(n, _)| n.starts_with("head.")) {
            tensors.push((n.clone(), v.as_tensor().copy()?));
        }
    }
    let (mut specs, buffers) = plan_of(inputs.arch, hidden).specs(tensors)?;
    if prior == BackbonePrior::Ptyl {
        let low_rank = inputs.ptyl.ok_or_else(|| TransferError::Data {
            name: "PTYL prior".to_string(),
            reason: "a PTYL run needs the SWAG prior".to_string(),
        })?;
        let mean = inputs.pretrained.swag.mean_tensors(DType::F32, device)?;
        let names: Vec<&str> = specs[0].init.iter().map(|(n, _)| n.as_str()).collect();
        let swag_names: Vec<&str> = mean.iter().map(|(n, _)| n.as_str()).collect();
        if names != swag_names {
            return Err(TransferError::Data {
                name: "PTYL prior".to_string(),
                reason: format!("SWAG layout {swag_names:?} differs from the backbone {names:?}"),
            });
        }
        let mu = mean.iter().map(|(_, t)| t.clone()).collect();
        specs[0] = BlockSpec::low_rank("backbone", mean, mu, low_rank.clone());
    }
    Ok(VariationalModel::with_buffers(
        specs,
        buffers,
        IsotropicPosterior::default(),
    )?)
}

/// A run in progress: the model, its optimizer and schedule, and the objective. [`Trainer::step`]
/// is one training step (the unit the `step` bench times).
pub struct Trainer {
    arch: Architecture,
    hidden: Vec<usize>,
    model: VariationalModel,
    /// The network, built once: MAP on the means, ELBOs on the leaves of `sample`.
    net: Net,
    /// ELBOs: the training sample the network computes with, redrawn every step.
    sample: Option<LeafSample>,
    mode: Mode,
    opt: NesterovSgd,
    schedule: CosineSchedule,
    seed: u64,
}

/// The resolved objective of a run.
enum Mode {
    Map { alpha: f64, beta: f64 },
    Elbo(Objective),
}

impl Trainer {
    /// A run of `objective` with learning rate `lr` on `n` training examples.
    pub fn new(
        inputs: &RunInputs<'_>,
        objective: RunObjective,
        lr: f64,
        seed: u64,
        settings: &TrainSettings,
    ) -> Result<Self> {
        let device = inputs.train.x.device().clone();
        let prior = match objective {
            RunObjective::Variational { prior, .. } => prior,
            RunObjective::Map { .. } => BackbonePrior::L2sp,
        };
        let model = build_model(inputs, prior, seed, &device)?;
        let n = inputs.train.len();
        let hidden = inputs.pretrained.record.settings.hidden.clone();
        let mode = match objective {
            RunObjective::Map { alpha, beta } => Mode::Map { alpha, beta },
            RunObjective::Variational { rule, .. } => {
                Mode::Elbo(Objective::new(rule, model.num_params(), n)?)
            }
        };
        let mut groups = vec![ParamGroup {
            vars: model.mean_vars(),
            clip_norm: Some(settings.clip_norm),
        }];
        let (net, sample) = match mode {
            Mode::Elbo(_) => {
                groups.push(ParamGroup {
                    vars: vec![model.rho().clone()],
                    clip_norm: Some(settings.clip_norm),
                });
                let sample = LeafSample::new(&model)?;
                let net = inputs.arch.build(sample.var_builder(), &hidden, CLASSES)?;
                (net, Some(sample))
            }
            Mode::Map { .. } => (
                inputs
                    .arch
                    .build(model.mean_var_builder(), &hidden, CLASSES)?,
                None,
            ),
        };
        Ok(Self {
            arch: inputs.arch,
            opt: NesterovSgd::new(groups, settings.momentum)?,
            schedule: CosineSchedule::new(lr, settings.steps)?,
            hidden,
            model,
            net,
            sample,
            mode,
            seed,
        })
    }

    /// The variational model (means, `rho`, buffers).
    pub fn model(&self) -> &VariationalModel {
        &self.model
    }

    /// One optimizer step on the minibatch `(x, y)`; returns the loss.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, step: usize) -> Result<f64> {
        if let Some(sample) = &mut self.sample {
            sample.resample(&self.model, self.seed, step as u32)?;
        }
        let nll = cross_entropy(&self.net.forward_t(x, true)?, y)?;
        let loss = match &self.mode {
            Mode::Map { alpha, beta } => nll
                .to_dtype(DType::F64)?
                .add(&self.model.l2sp_penalty(&[*alpha, *beta])?)?,
            Mode::Elbo(obj) => elbo_loss(&nll, &self.model.kl(obj)?)?,
        };
        let mut grads = loss.backward()?;
        if let Some(sample) = &self.sample {
            sample.gradients_to_posterior(&self.model, &mut grads)?;
        }
        let value = loss.to_scalar::<f64>()?;
        self.opt.step(&grads, self.schedule.lr(step))?;
        Ok(value)
    }

    /// The network on the builder's weights for evaluation (eval mode). For the ELBOs its
    /// batch-norm statistics are first recomputed on `train` for exactly these weights
    /// ([`Architecture::calibrated`]): the running averages collected during training belong
    /// to the sampled networks of the last steps. A MAP run trains on its means, so its running
    /// statistics already belong to them and are used as they are.
    fn eval_net(&self, vb: candle_nn::VarBuilder<'_>, train: &Tensor) -> Result<Net> {
        Ok(match self.mode {
            Mode::Map { .. } => self.arch.build(vb, &self.hidden, CLASSES)?,
            Mode::Elbo(_) => self.arch.calibrated(vb, &self.hidden, CLASSES, train)?,
        })
    }

    /// Log-probabilities of the posterior-mean network (eval mode) on `x`.
    fn mean_log_probs(&self, x: &Tensor, train: &Tensor) -> Result<Tensor> {
        let net = self.eval_net(self.model.mean_var_builder(), train)?;
        Ok(candle_nn::ops::log_softmax(&net.forward_t(x, false)?, 1)?)
    }

    fn mean_metrics(&self, batch: &Batch, train: &Tensor) -> Result<ClassificationMetrics> {
        Ok(metrics_from_log_probs(
            &self.mean_log_probs(&batch.x, train)?,
            &batch.labels,
        )?)
    }
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
    let n = inputs.train.len();
    let context = |step: usize| match objective {
        RunObjective::Map { alpha, beta } => format!(
            "{} map alpha={alpha:e} beta={beta:e} lr={lr:e} n={n} seed={seed} step={step}",
            inputs.arch
        ),
        RunObjective::Variational { rule, prior } => format!(
            "{} {}{} lr={lr:e} n={n} seed={seed} step={step}",
            inputs.arch,
            rule.name(),
            if prior == BackbonePrior::Ptyl {
                " ptyl"
            } else {
                ""
            }
        ),
    };
    let mut trainer = Trainer::new(&inputs, objective, lr, seed, settings)?;
    let device = inputs.train.x.device().clone();
    let mut plan = BatchPlan::new(n, settings.batch_size, seed);
    for step in 0..settings.steps {
        let (x, y) = if plan.full() {
            (inputs.train.x.clone(), inputs.train.y.clone())
        } else {
            let idx = Tensor::from_vec(plan.next(), settings.batch_size, &device)?;
            (
                inputs.train.x.index_select(&idx, 0)?,
                inputs.train.y.index_select(&idx, 0)?,
            )
        };
        trainer.step(&x, &y, step).map_err(|e| match e {
            TransferError::Adapter(source @ deelbo_candle::AdapterError::Diverged { .. }) => {
                TransferError::Training {
                    name: context(step),
                    source,
                }
            }
            other => other,
        })?;
    }
    let model = &trainer.model;
    let validation = match inputs.validation {
        Some(v) => Some(trainer.mean_metrics(v, &inputs.train.x)?.into()),
        None => None,
    };
    let (final_train_loss, blocks, sigma, kappa) = match &trainer.mode {
        Mode::Map { alpha, beta } => {
            let nll = trainer.mean_metrics(inputs.train, &inputs.train.x)?.nll;
            let pen = model.l2sp_penalty(&[*alpha, *beta])?.to_scalar::<f64>()?;
            (nll + pen, Vec::new(), None, None)
        }
        Mode::Elbo(obj) => {
            let s = settings.final_loss_samples;
            let mut nll = 0.0;
            for k in 0..s {
                let net = trainer.eval_net(
                    model.predictive_var_builder(seed, k as u32)?,
                    &inputs.train.x,
                )?;
                let lp = candle_nn::ops::log_softmax(&net.forward_t(&inputs.train.x, false)?, 1)?;
                nll += metrics_from_log_probs(&lp, &inputs.train.labels)?.nll;
            }
            let kl = model.kl(obj)?;
            let mut blocks = Vec::with_capacity(kl.blocks.len());
            for b in &kl.blocks {
                blocks.push(BlockReport {
                    name: b.name.clone(),
                    len: b.len,
                    variance: b.variance.to_scalar::<f64>()?,
                    distance_per_weight: b.squared_distance.to_scalar::<f64>()? / b.len as f64,
                });
            }
            let loss = nll / s as f64 + kl.loss.to_scalar::<f64>()?;
            (loss, blocks, Some(model.sigma()?), Some(obj.kappa()))
        }
    };
    if !final_train_loss.is_finite() {
        return Err(TransferError::Training {
            name: context(settings.steps),
            source: deelbo_candle::AdapterError::Diverged {
                name: "final training loss".to_string(),
                value: final_train_loss,
            },
        });
    }
    let seconds = start.wall_seconds();
    let cpu_seconds = start.cpu_seconds();
    let eval = Stopwatch::start();
    let test = trainer.mean_metrics(inputs.test, &inputs.train.x)?.into();
    let test_predictive = match trainer.mode {
        Mode::Map { .. } => None,
        Mode::Elbo(_) => {
            let lp = predictive_log_probs_of(
                model,
                |vb| {
                    let net =
                        inputs
                            .arch
                            .calibrated(vb, &trainer.hidden, CLASSES, &inputs.train.x)?;
                    Ok(net.forward_t(&inputs.test.x, false)?)
                },
                inputs.predictive_samples,
                seed ^ 0x7e57,
            )?;
            Some(metrics_from_log_probs(&lp, &inputs.test.labels)?.into())
        }
    };
    Ok(RunOutcome {
        final_train_loss,
        validation,
        test,
        test_predictive,
        blocks,
        sigma,
        kappa,
        seconds,
        cpu_seconds,
        eval_seconds: eval.wall_seconds(),
    })
}
