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
//! The experiment runs the protocols of one (architecture, N, seed) side by side: their candidate
//! runs interleaved so that each protocol's are spread evenly over the stretch (`interleaved`),
//! then each protocol's selection (and the grid's retrain). The results do not depend on the
//! order; the times do, on a machine whose speed drifts, and interleaved they drift alike.
//!
//! The protocol's wall time is the sum over its runs of training and of the selection criterion
//! ([`RunRecord::protocol_seconds`]; pretraining, shared by all, and the test metrics each run
//! computes for the report are excluded); its CPU time likewise (robust to other processes
//! competing for the cores). Test sets are all target-task examples outside the N.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use deelbo_core::{KappaRule, LowRankPrior};

use crate::checkpoint::{Checkpoint, RunKey, RunRecord, Stage};
use crate::config::{FinetuneConfig, Method, ProtocolSettings, TransferConfig};
use crate::data::{Batch, DigitTasks, load_digits, stratified_holdout, stratified_subset};
use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::pretrain::{PretrainRecord, Pretrained, load_or_pretrain};
use crate::progress::Progress;
use crate::report::{OutputFiles, write_outputs};
use crate::results::{JSON_FILE, ResultRow, write_rows_json};
use crate::train::{BackbonePrior, RunInputs, RunObjective, RunOutcome, train_run};

/// File name of the cached pretrained network of `arch` inside the output directory.
pub fn pretrained_file(arch: Architecture) -> String {
    format!("pretrained-{arch}.safetensors")
}

/// One architecture's pretrained network and the PTYL prior built from its SWAG statistics.
#[derive(Debug, Clone)]
pub struct Source {
    /// The pretrained network.
    pub pretrained: Pretrained,
    /// `Sigma_swag` as a low-rank-plus-diagonal prior.
    pub ptyl: Arc<LowRankPrior>,
    /// Diagonal entries raised to the SWAG variance floor.
    pub ptyl_floored: usize,
    /// Whether the cached network was reused.
    pub reused: bool,
}

/// Data and pretrained networks shared by every protocol.
#[derive(Debug, Clone)]
pub struct Workbench {
    /// Source and target tasks.
    pub tasks: DigitTasks,
    /// Per architecture, in the order asked for.
    pub sources: Vec<(Architecture, Source)>,
    device: Device,
}

impl Workbench {
    /// Load the digits and the pretrained networks of `archs` cached in `out_dir` (pretraining
    /// and caching them first when absent).
    pub fn prepare(
        out_dir: &Path,
        protocol: &ProtocolSettings,
        archs: &[Architecture],
    ) -> Result<Self> {
        let device = Device::Cpu;
        std::fs::create_dir_all(out_dir).map_err(|source| TransferError::Io {
            action: "creating directory",
            path: out_dir.to_path_buf(),
            source,
        })?;
        let tasks = load_digits()?;
        let mut sources = Vec::with_capacity(archs.len());
        for &arch in archs {
            let (pretrained, reused) = load_or_pretrain(
                &out_dir.join(pretrained_file(arch)),
                arch,
                &tasks.source,
                &protocol.pretrain,
                &device,
            )?;
            let (prior, floored) = pretrained.swag.prior(&protocol.pretrain.swag())?;
            sources.push((
                arch,
                Source {
                    pretrained,
                    ptyl: Arc::new(prior),
                    ptyl_floored: floored,
                    reused,
                },
            ));
        }
        Ok(Self {
            tasks,
            sources,
            device,
        })
    }

    /// The source of `arch`.
    pub fn source(&self, arch: Architecture) -> Result<&Source> {
        self.sources
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, s)| s)
            .ok_or_else(|| TransferError::Data {
                name: "pretrained network".to_string(),
                reason: format!("no network prepared for {arch}"),
            })
    }
}

/// Where finished runs go: memory only, or memory plus the on-disk checkpoint.
enum RunLog<'a> {
    Memory(Vec<RunRecord>),
    File(&'a mut Checkpoint),
}

impl RunLog<'_> {
    fn find(&self, key: RunKey) -> Option<RunRecord> {
        match self {
            RunLog::Memory(v) => v.iter().find(|r| r.key() == key).cloned(),
            RunLog::File(c) => c.find(key).cloned(),
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

/// The training subset of (N, seed), its test rows and, `with_split` (for the grid search), its
/// fit/validation split.
fn protocol_data(
    bench: &Workbench,
    protocol: &ProtocolSettings,
    n: usize,
    seed: u64,
    with_split: bool,
) -> Result<ProtocolData> {
    let target = &bench.tasks.target;
    let split = stratified_subset(target, n, seed)?;
    let fit = if with_split {
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
    key: RunKey,
    stage: Stage,
    inputs: RunInputs<'_>,
    objective: RunObjective,
    settings: &ProtocolSettings,
) -> Result<RunRecord> {
    let (arch, n, seed, method, index) = key;
    if let Some(r) = log.find(key) {
        if r.stage != stage {
            return Err(TransferError::Checkpoint {
                path: PathBuf::from(crate::checkpoint::RUNS_FILE),
                line: 0,
                reason: format!(
                    "run {index} of {method} {arch} N={n} seed={seed} was recorded as {:?}, the configuration now makes it {stage:?}",
                    r.stage
                ),
            });
        }
        return Ok(r);
    }
    let start = crate::cputime::Stopwatch::start();
    let (outcome, failure) = match train_run(inputs, objective, stage.lr(), seed, &settings.train) {
        Ok(o) => (Some(o), None),
        Err(TransferError::Training { name, source }) => (None, Some(format!("{name}: {source}"))),
        Err(e) => return Err(e),
    };
    let record = RunRecord {
        arch,
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

/// One training run a protocol tries before it selects: a grid cell on the 80% split, or one
/// learning rate of an ELBO on all N.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    method: Method,
    index: usize,
    stage: Stage,
    inputs: RunInputs<'a>,
    objective: RunObjective,
}

/// The candidate runs of `method` in protocol order.
fn candidates<'a>(
    method: Method,
    settings: &ProtocolSettings,
    data: &'a ProtocolData,
    base: RunInputs<'a>,
) -> Result<Vec<Candidate<'a>>> {
    Ok(match method {
        Method::MapGrid => {
            let (fit, val) = data.fit.as_ref().ok_or_else(|| TransferError::Data {
                name: "split".to_string(),
                reason: "no validation split".to_string(),
            })?;
            let inputs = RunInputs {
                train: fit,
                validation: Some(val),
                ..base
            };
            let mut out = Vec::with_capacity(settings.grid_runs());
            for &lr in &settings.grid_lrs {
                for &alpha in &settings.alphas {
                    for &beta in &settings.betas {
                        out.push(Candidate {
                            method,
                            index: out.len(),
                            stage: Stage::Grid { alpha, beta, lr },
                            inputs,
                            objective: RunObjective::Map { alpha, beta },
                        });
                    }
                }
            }
            out
        }
        Method::Elbo | Method::DeElbo | Method::DeElboPtyl => {
            let (rule, prior) = match method {
                Method::Elbo => (KappaRule::Standard, BackbonePrior::L2sp),
                Method::DeElbo => (KappaRule::DataEmphasized, BackbonePrior::L2sp),
                _ => (KappaRule::DataEmphasized, BackbonePrior::Ptyl),
            };
            (settings.elbo_lrs.iter().enumerate())
                .map(|(index, &lr)| Candidate {
                    method,
                    index,
                    stage: Stage::Lr { lr },
                    inputs: base,
                    objective: RunObjective::Variational { rule, prior },
                })
                .collect()
        }
    })
}

/// The candidates of several protocols merged into one run order in which each protocol's runs
/// are spread evenly: run `j` of a protocol with `c` candidates sits at `(j + 1/2)/c` of the
/// way (ties in protocol order). A slow stretch of the machine (VMs drift by 20% within
/// minutes) then falls on every protocol in proportion to its runs, instead of on whichever
/// protocol happened to run then: the 4 runs of an ELBO take seconds beside the grid's minutes.
/// Which runs there are, and their results, do not depend on the order. Returns
/// `(protocol position, run)` pairs.
fn interleaved<T>(protocols: Vec<Vec<T>>) -> Vec<(usize, T)> {
    let mut all: Vec<(f64, usize, T)> = protocols
        .into_iter()
        .enumerate()
        .flat_map(|(p, runs)| {
            let c = runs.len() as f64;
            runs.into_iter()
                .enumerate()
                .map(move |(j, run)| ((j as f64 + 0.5) / c, p, run))
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|(_, p, run)| (p, run)).collect()
}

/// The protocols `methods` for one (architecture, N, seed): their candidate runs interleaved
/// ([`interleaved`]), then each protocol's selection (and the grid's retrain on all N). Returns
/// one row per method, in `methods` order, and every run record in run order.
#[allow(clippy::too_many_arguments)]
fn run_protocols(
    bench: &Workbench,
    settings: &ProtocolSettings,
    arch: Architecture,
    n: usize,
    seed: u64,
    methods: &[Method],
    log: &mut RunLog<'_>,
    progress: &mut dyn Progress,
) -> Result<(Vec<ResultRow>, Vec<RunRecord>)> {
    let source = bench.source(arch)?;
    let with_split = methods.contains(&Method::MapGrid);
    let data = protocol_data(bench, settings, n, seed, with_split)?;
    let base = RunInputs {
        arch,
        pretrained: &source.pretrained,
        ptyl: Some(&source.ptyl),
        train: &data.train,
        validation: None,
        test: &data.test,
        predictive_samples: settings.predictive_samples,
    };
    let plans = methods
        .iter()
        .map(|&m| candidates(m, settings, &data, base))
        .collect::<Result<Vec<_>>>()?;
    let mut order = Vec::new();
    let mut tried: Vec<Vec<RunRecord>> = vec![Vec::new(); methods.len()];
    let mut current = None;
    for (slot, c) in interleaved(plans) {
        if current != Some(c.method) {
            progress.protocol_started(arch, n, seed, c.method);
            current = Some(c.method);
        }
        let r = run_or_restore(
            log,
            progress,
            (arch, n, seed, c.method, c.index),
            c.stage,
            c.inputs,
            c.objective,
            settings,
        )?;
        tried[slot].push(r.clone());
        order.push(r);
    }
    let mut rows = Vec::with_capacity(methods.len());
    for (&method, mut records) in methods.iter().zip(tried) {
        let all_failed = || TransferError::AllRunsDiverged {
            arch: arch.name(),
            method: method.name(),
            n,
            seed,
        };
        let best = match method {
            Method::MapGrid => {
                let best =
                    best_by(&records, |o| o.validation.map(|v| v.nll)).ok_or_else(all_failed)?;
                let Stage::Grid { alpha, beta, lr } = records[best].stage else {
                    return Err(all_failed());
                };
                progress.protocol_started(arch, n, seed, method);
                let retrain = run_or_restore(
                    log,
                    progress,
                    (arch, n, seed, method, records.len()),
                    Stage::Retrain { alpha, beta, lr },
                    base,
                    RunObjective::Map { alpha, beta },
                    settings,
                )?;
                records.push(retrain.clone());
                order.push(retrain);
                records.len() - 1
            }
            Method::Elbo | Method::DeElbo | Method::DeElboPtyl => {
                best_by(&records, |o| Some(o.final_train_loss)).ok_or_else(all_failed)?
            }
        };
        let chosen = &records[best];
        let o = chosen.outcome.as_ref().ok_or_else(all_failed)?;
        let (alpha, beta) = match chosen.stage {
            Stage::Grid { alpha, beta, .. } | Stage::Retrain { alpha, beta, .. } => {
                (Some(alpha), Some(beta))
            }
            Stage::Lr { .. } => (None, None),
        };
        rows.push(ResultRow {
            arch,
            n,
            seed,
            method,
            kappa: o.kappa,
            test: o.test,
            test_predictive: o.test_predictive,
            blocks: o.blocks.clone(),
            sigma: o.sigma,
            runs: records.len(),
            seconds: records.iter().map(|r| r.protocol_seconds().0).sum(),
            cpu_seconds: records.iter().map(|r| r.protocol_seconds().1).sum(),
            lr: chosen.stage.lr(),
            alpha,
            beta,
        });
    }
    Ok((rows, order))
}

/// What [`run_finetune`] returns.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    /// The protocol's result.
    pub row: ResultRow,
    /// Its training runs, in protocol order.
    pub records: Vec<RunRecord>,
    /// How the backbone was pretrained.
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
    let bench = Workbench::prepare(&config.out_dir, &config.protocol, &[config.arch])?;
    progress.begin(config.protocol.runs_of(config.method), 0);
    let mut log = RunLog::Memory(Vec::new());
    let (mut rows, records) = run_protocols(
        &bench,
        &config.protocol,
        config.arch,
        config.n,
        config.seed,
        &[config.method],
        &mut log,
        progress,
    )?;
    progress.finish();
    let row = rows.pop().ok_or_else(|| TransferError::Data {
        name: "protocol".to_string(),
        reason: "no result row".to_string(),
    })?;
    let source = bench.source(config.arch)?;
    Ok(FinetuneReport {
        row,
        records,
        pretrain: source.pretrained.record.clone(),
        pretrained_reused: source.reused,
    })
}

/// What [`run_experiment`] returns.
#[derive(Debug, Clone)]
pub struct ExperimentReport {
    /// One row per (N, seed, method), in run order.
    pub rows: Vec<ResultRow>,
    /// Every training run (restored and new), in run order.
    pub records: Vec<RunRecord>,
    /// How each backbone was pretrained.
    pub pretrain: Vec<PretrainRecord>,
    /// Whether each cached pretrained network was reused.
    pub pretrained_reused: Vec<bool>,
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
    let bench = Workbench::prepare(out, &config.protocol, &config.architectures)?;
    for (arch, s) in &bench.sources {
        progress.message(&format!(
            "pretrained {arch}: {} (source accuracy {:.3}, {:.1} s; SWAG {} snapshots, {} of {} variances floored, precision digits lost {:.1})",
            if s.reused { "reused" } else { "trained" },
            s.pretrained.record.source_accuracy,
            s.pretrained.record.seconds,
            s.pretrained.record.swag_snapshots,
            s.ptyl_floored,
            s.ptyl.len(),
            s.ptyl.diagnostics().precision_digits_lost,
        ));
    }
    let mut planned = 0usize;
    let mut restored = 0usize;
    for &arch in &config.architectures {
        for &n in &config.sizes {
            for &seed in &config.seeds {
                for &method in &config.methods {
                    let runs = config.protocol.runs_of(method);
                    planned += runs;
                    restored += (0..runs)
                        .filter(|&i| checkpoint.find((arch, n, seed, method, i)).is_some())
                        .count();
                }
            }
        }
    }
    progress.begin(planned, restored);
    let mut rows = Vec::new();
    let mut records = Vec::new();
    for &arch in &config.architectures {
        for &n in &config.sizes {
            for &seed in &config.seeds {
                let mut log = RunLog::File(&mut checkpoint);
                let (rs, recs) = run_protocols(
                    &bench,
                    &config.protocol,
                    arch,
                    n,
                    seed,
                    &config.methods,
                    &mut log,
                    progress,
                )?;
                rows.extend(rs);
                records.extend(recs);
                write_rows_json(&out.join(JSON_FILE), &rows)?;
            }
        }
    }
    let files = write_outputs(out, &rows, &records)?;
    progress.finish();
    Ok(ExperimentReport {
        rows,
        records,
        pretrain: bench
            .sources
            .iter()
            .map(|(_, s)| s.pretrained.record.clone())
            .collect(),
        pretrained_reused: bench.sources.iter().map(|(_, s)| s.reused).collect(),
        restored_runs: restored,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::interleaved;

    #[test]
    fn interleaving_spreads_each_protocol_evenly_and_keeps_every_run_once_in_order() {
        // The experiment's shape: a 144-cell grid beside three 4-run ELBO protocols.
        let protocols: Vec<Vec<(usize, usize)>> = [144, 4, 4, 4]
            .iter()
            .enumerate()
            .map(|(p, &c)| (0..c).map(|j| (p, j)).collect())
            .collect();
        let order = interleaved(protocols);
        assert_eq!(order.len(), 156);
        for (slot, (p, _)) in &order {
            assert_eq!(slot, p);
        }
        for p in 0..4 {
            let runs: Vec<usize> = order
                .iter()
                .filter(|(s, _)| *s == p)
                .map(|(_, (_, j))| *j)
                .collect();
            let c = runs.len();
            assert_eq!(
                runs,
                (0..c).collect::<Vec<_>>(),
                "protocol {p} in its own order"
            );
        }
        // ELBO run j after (j + 1/2)/4 of the grid: grid runs 0..=17 precede the first ELBO
        // runs, and the three ELBO protocols take their turns together.
        let position = |p: usize, j: usize| order.iter().position(|x| x.1 == (p, j)).unwrap();
        for j in 0..4 {
            let grid_before = (0..144)
                .filter(|&g| position(0, g) < position(1, j))
                .count();
            assert_eq!(grid_before, 18 + 36 * j, "ELBO run {j}");
            assert_eq!(position(2, j), position(1, j) + 1);
            assert_eq!(position(3, j), position(1, j) + 2);
        }
    }
}
