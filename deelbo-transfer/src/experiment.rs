//! The protocols and the experiment runner.
//!
//! For one (N, seed):
//!
//! - `map-grid`: a stratified 80/20 split of the N examples; one MAP + L2-SP run per
//!   (lr, alpha, beta) on the 80%, scored by validation NLL; the best cell is retrained on all N
//!   and evaluated on the test set. `runs = |grid| + 1`.
//! - `elbo` / `de-elbo`: one run per learning rate on all N (kappa = 1 or D/N, learned lambda and
//!   tau), the run with the lowest final training loss is kept. No validation split.
//!
//! The protocol's wall time is the sum of its runs' wall times (pretraining, shared by all, is
//! excluded); its CPU time likewise (robust to other processes competing for the cores). Test sets are all target-task examples outside the N.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deelbo_candle::Mlp;
use deelbo_core::KappaRule;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, RunRecord, Stage};
use crate::config::{FinetuneConfig, Method, ProtocolSettings, TransferConfig};
use crate::data::{Batch, CLASSES, DigitTasks, load_digits, stratified_holdout, stratified_subset};
use crate::error::{Result, TransferError};
use crate::pretrain::{PretrainRecord, load_or_pretrain};
use crate::progress::Progress;
use crate::report::{OutputFiles, write_outputs, write_rows_json};
use crate::train::{RunInputs, RunObjective, RunOutcome, train_run};

/// File name of the cached pretrained network inside the output directory.
pub const PRETRAINED_FILE: &str = "pretrained.safetensors";

/// One row of `transfer.json`: a method's protocol result for one (N, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Training-set size N.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Method.
    pub method: Method,
    /// Kappa of the ELBOs (`null` for map-grid).
    pub kappa: Option<f64>,
    /// Test accuracy in `[0, 1]` (posterior mean / MAP weights).
    pub test_accuracy: f64,
    /// Test NLL, nats per example.
    pub test_nll: f64,
    /// Learned backbone prior variance (ELBOs).
    pub lambda: Option<f64>,
    /// Learned head prior variance (ELBOs).
    pub tau: Option<f64>,
    /// Training runs the protocol took.
    pub runs: usize,
    /// Wall seconds of the whole protocol.
    pub seconds: f64,
    /// Process CPU seconds of the whole protocol (`None` where unavailable).
    pub cpu_seconds: Option<f64>,
    /// Selected learning rate.
    pub lr: f64,
    /// Selected alpha (map-grid).
    pub alpha: Option<f64>,
    /// Selected beta (map-grid).
    pub beta: Option<f64>,
    /// Final posterior standard deviation (ELBOs).
    pub sigma: Option<f64>,
}

/// Data, pretrained backbone and target architecture shared by every protocol.
#[derive(Debug, Clone)]
pub struct Workbench {
    /// Source and target tasks.
    pub tasks: DigitTasks,
    /// The target architecture (pretrained backbone + new 5-class head).
    pub mlp: Mlp,
    /// The pretrained backbone tensors.
    pub backbone: Vec<(String, Tensor)>,
    /// How the backbone was pretrained.
    pub pretrain: PretrainRecord,
    /// Whether the cached network was reused.
    pub reused: bool,
    device: Device,
}

impl Workbench {
    /// Load the digits and the pretrained network cached in `out_dir` (pretraining and caching
    /// it first when absent).
    pub fn prepare(out_dir: &Path, protocol: &ProtocolSettings) -> Result<Self> {
        let device = Device::Cpu;
        std::fs::create_dir_all(out_dir).map_err(|source| TransferError::Io {
            action: "creating directory",
            path: out_dir.to_path_buf(),
            source,
        })?;
        let tasks = load_digits()?;
        let (p, reused) = load_or_pretrain(
            &out_dir.join(PRETRAINED_FILE),
            &tasks.source,
            &protocol.pretrain,
            &device,
        )?;
        Ok(Self {
            mlp: p.mlp.with_classes(CLASSES)?,
            backbone: p.backbone()?,
            pretrain: p.record,
            reused,
            tasks,
            device,
        })
    }
}

/// Where finished runs go: memory only, or memory plus the on-disk checkpoint.
enum RunLog<'a> {
    Memory(Vec<RunRecord>),
    File(&'a mut Checkpoint),
}

impl RunLog<'_> {
    fn find(&self, n: usize, seed: u64, method: Method, index: usize) -> Option<RunRecord> {
        match self {
            RunLog::Memory(v) => v
                .iter()
                .find(|r| r.key() == (n, seed, method, index))
                .cloned(),
            RunLog::File(c) => c.find(n, seed, method, index).cloned(),
        }
    }

    fn append(&mut self, r: RunRecord) -> Result<()> {
        match self {
            RunLog::Memory(v) => {
                v.push(r);
                Ok(())
            }
            RunLog::File(c) => c.append(r),
        }
    }
}

struct ProtocolData {
    train: Batch,
    fit: Option<(Batch, Batch)>,
    test: Batch,
}

fn protocol_data(
    bench: &Workbench,
    protocol: &ProtocolSettings,
    n: usize,
    seed: u64,
    method: Method,
) -> Result<ProtocolData> {
    let target = &bench.tasks.target;
    let split = stratified_subset(target, n, seed)?;
    let fit = if method == Method::MapGrid {
        let (fit, val) =
            stratified_holdout(target, &split.train, protocol.validation_fraction, seed)?;
        Some((
            target.tensors(&fit, &bench.device)?,
            target.tensors(&val, &bench.device)?,
        ))
    } else {
        None
    };
    Ok(ProtocolData {
        train: target.tensors(&split.train, &bench.device)?,
        fit,
        test: target.tensors(&split.rest, &bench.device)?,
    })
}

/// Run (or restore) one training run and log it.
#[allow(clippy::too_many_arguments)]
fn run_or_restore(
    log: &mut RunLog<'_>,
    progress: &mut dyn Progress,
    key: (usize, u64, Method, usize),
    stage: Stage,
    inputs: RunInputs<'_>,
    objective: RunObjective,
    settings: &ProtocolSettings,
) -> Result<RunRecord> {
    let (n, seed, method, index) = key;
    if let Some(r) = log.find(n, seed, method, index) {
        if r.stage != stage {
            return Err(TransferError::Checkpoint {
                path: PathBuf::from(crate::checkpoint::RUNS_FILE),
                line: 0,
                reason: format!(
                    "run {index} of {method} N={n} seed={seed} was recorded as {:?}, the configuration now makes it {stage:?}",
                    r.stage
                ),
            });
        }
        return Ok(r);
    }
    let start = crate::cputime::Stopwatch::start();
    let (outcome, failure) = match train_run(inputs, objective, stage.lr(), seed, &settings.train) {
        Ok(o) => (Some(o), None),
        Err(TransferError::Training { context, source }) => {
            (None, Some(format!("{context}: {source}")))
        }
        Err(e) => return Err(e),
    };
    let record = RunRecord {
        n,
        seed,
        method,
        index,
        stage,
        outcome,
        failure,
        seconds: start.wall_seconds(),
        cpu_seconds: start.cpu_seconds(),
    };
    log.append(record.clone())?;
    progress.run_finished(&record);
    Ok(record)
}

fn best_by(records: &[RunRecord], score: impl Fn(&RunOutcome) -> Option<f64>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, r) in records.iter().enumerate() {
        let Some(s) = r.outcome.as_ref().and_then(&score) else {
            continue;
        };
        if !s.is_finite() {
            continue;
        }
        if best.is_none_or(|(_, b)| s < b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

fn run_protocol(
    bench: &Workbench,
    settings: &ProtocolSettings,
    n: usize,
    seed: u64,
    method: Method,
    log: &mut RunLog<'_>,
    progress: &mut dyn Progress,
) -> Result<(ResultRow, Vec<RunRecord>)> {
    progress.protocol_started(n, seed, method);
    let data = protocol_data(bench, settings, n, seed, method)?;
    let all_failed = || TransferError::Training {
        context: format!("{method} N={n} seed={seed}"),
        source: deelbo_candle::AdapterError::InvalidSetting {
            name: "runs".to_string(),
            value: 0.0,
            reason: "every run of the protocol diverged".to_string(),
        },
    };
    let mut records = Vec::new();
    match method {
        Method::MapGrid => {
            let (fit, val) = data.fit.as_ref().ok_or_else(|| TransferError::Data {
                reason: "no validation split".to_string(),
            })?;
            let inputs = RunInputs {
                mlp: &bench.mlp,
                pretrained: &bench.backbone,
                train: fit,
                validation: Some(val),
                test: &data.test,
            };
            let mut index = 0;
            for &lr in &settings.grid_lrs {
                for &alpha in &settings.alphas {
                    for &beta in &settings.betas {
                        let r = run_or_restore(
                            log,
                            progress,
                            (n, seed, method, index),
                            Stage::Grid { alpha, beta, lr },
                            inputs,
                            RunObjective::Map { alpha, beta },
                            settings,
                        )?;
                        records.push(r);
                        index += 1;
                    }
                }
            }
            let best = best_by(&records, |o| o.validation.map(|v| v.nll)).ok_or_else(all_failed)?;
            let Stage::Grid { alpha, beta, lr } = records[best].stage else {
                return Err(all_failed());
            };
            let retrain = run_or_restore(
                log,
                progress,
                (n, seed, method, index),
                Stage::Retrain { alpha, beta, lr },
                RunInputs {
                    train: &data.train,
                    validation: None,
                    ..inputs
                },
                RunObjective::Map { alpha, beta },
                settings,
            )?;
            records.push(retrain.clone());
            let o = retrain.outcome.as_ref().ok_or_else(all_failed)?;
            let row = ResultRow {
                n,
                seed,
                method,
                kappa: None,
                test_accuracy: o.test.accuracy,
                test_nll: o.test.nll,
                lambda: None,
                tau: None,
                runs: records.len(),
                seconds: records.iter().map(|r| r.seconds).sum(),
                cpu_seconds: records.iter().map(|r| r.cpu_seconds).sum(),
                lr,
                alpha: Some(alpha),
                beta: Some(beta),
                sigma: None,
            };
            Ok((row, records))
        }
        Method::Elbo | Method::DeElbo => {
            let rule = if method == Method::Elbo {
                KappaRule::Standard
            } else {
                KappaRule::DataEmphasized
            };
            let inputs = RunInputs {
                mlp: &bench.mlp,
                pretrained: &bench.backbone,
                train: &data.train,
                validation: None,
                test: &data.test,
            };
            for (index, &lr) in settings.elbo_lrs.iter().enumerate() {
                let r = run_or_restore(
                    log,
                    progress,
                    (n, seed, method, index),
                    Stage::Lr { lr },
                    inputs,
                    RunObjective::Variational { rule },
                    settings,
                )?;
                records.push(r);
            }
            let best = best_by(&records, |o| Some(o.final_train_loss)).ok_or_else(all_failed)?;
            let o = records[best].outcome.as_ref().ok_or_else(all_failed)?;
            let row = ResultRow {
                n,
                seed,
                method,
                kappa: o.kappa,
                test_accuracy: o.test.accuracy,
                test_nll: o.test.nll,
                lambda: o.lambda,
                tau: o.tau,
                runs: records.len(),
                seconds: records.iter().map(|r| r.seconds).sum(),
                cpu_seconds: records.iter().map(|r| r.cpu_seconds).sum(),
                lr: records[best].stage.lr(),
                alpha: None,
                beta: None,
                sigma: o.sigma,
            };
            Ok((row, records))
        }
    }
}

/// What [`run_finetune`] returns.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    /// The protocol's result.
    pub row: ResultRow,
    /// Its training runs, in protocol order.
    pub records: Vec<RunRecord>,
    /// How the backbone was pretrained (and whether the cache was reused).
    pub pretrain: PretrainRecord,
    /// Whether the cached pretrained network was reused.
    pub pretrained_reused: bool,
}

/// Run one configuration (one method's protocol for one N and seed). The pretrained network is
/// cached in (or reused from) `config.out_dir`; nothing else is written.
pub fn run_finetune(
    config: &FinetuneConfig,
    progress: &mut dyn Progress,
) -> Result<FinetuneReport> {
    config.validate()?;
    let bench = Workbench::prepare(&config.out_dir, &config.protocol)?;
    progress.begin(config.protocol.runs_of(config.method), 0);
    let mut log = RunLog::Memory(Vec::new());
    let (row, records) = run_protocol(
        &bench,
        &config.protocol,
        config.n,
        config.seed,
        config.method,
        &mut log,
        progress,
    )?;
    progress.finish();
    Ok(FinetuneReport {
        row,
        records,
        pretrain: bench.pretrain,
        pretrained_reused: bench.reused,
    })
}

/// What [`run_experiment`] returns.
#[derive(Debug, Clone)]
pub struct ExperimentReport {
    /// One row per (N, seed, method), in run order.
    pub rows: Vec<ResultRow>,
    /// Every training run (restored and new), in run order.
    pub records: Vec<RunRecord>,
    /// How the backbone was pretrained.
    pub pretrain: PretrainRecord,
    /// Whether the cached pretrained network was reused.
    pub pretrained_reused: bool,
    /// Training runs restored from checkpoints instead of run.
    pub restored_runs: usize,
    /// The files written.
    pub files: OutputFiles,
}

/// Run the whole experiment: every (N, seed, method) of `config`, checkpointing each finished
/// training run to `<out>/runs.jsonl` and rewriting `<out>/transfer.json` after each protocol;
/// at the end the table (`table.txt`), `transfer.json` and the figure (`transfer.svg`,
/// `transfer.png`) are written to the output directory. With `config.resume`, runs already in
/// the checkpoint are restored, not redone.
pub fn run_experiment(
    config: &TransferConfig,
    progress: &mut dyn Progress,
) -> Result<ExperimentReport> {
    config.validate()?;
    let out = &config.out_dir;
    let mut checkpoint = Checkpoint::open(out, &config.protocol, config.resume)?;
    let bench = Workbench::prepare(out, &config.protocol)?;
    progress.message(&format!(
        "pretrained network: {} (source accuracy {:.3}, {:.1} s)",
        if bench.reused { "reused" } else { "trained" },
        bench.pretrain.source_accuracy,
        bench.pretrain.seconds
    ));
    let mut planned = 0usize;
    let mut restored = 0usize;
    for &n in &config.sizes {
        for &seed in &config.seeds {
            for &method in &config.methods {
                let runs = config.protocol.runs_of(method);
                planned += runs;
                restored += (0..runs)
                    .filter(|&i| checkpoint.find(n, seed, method, i).is_some())
                    .count();
            }
        }
    }
    progress.begin(planned, restored);
    let mut rows = Vec::new();
    let mut records = Vec::new();
    for &n in &config.sizes {
        for &seed in &config.seeds {
            for &method in &config.methods {
                let mut log = RunLog::File(&mut checkpoint);
                let (row, recs) = run_protocol(
                    &bench,
                    &config.protocol,
                    n,
                    seed,
                    method,
                    &mut log,
                    progress,
                )?;
                rows.push(row);
                records.extend(recs);
                write_rows_json(&out.join(crate::report::JSON_FILE), &rows)?;
            }
        }
    }
    let files = write_outputs(out, &rows, &records)?;
    progress.finish();
    Ok(ExperimentReport {
        rows,
        records,
        pretrain: bench.pretrain,
        pretrained_reused: bench.reused,
        restored_runs: restored,
        files,
    })
}
