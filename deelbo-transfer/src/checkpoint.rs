//! Checkpoints: every finished training run is appended, as one JSON line, to
//! `<out>/runs.jsonl` (flushed and synced before the next run starts), next to the configuration
//! that produced it (`<out>/config.json`). Resuming reads both back, checks that the
//! configuration is the same, and skips every run already recorded, so an interrupted
//! experiment continues without redoing or losing a finished run. A last line cut short by an
//! interruption is ignored (that run is simply redone); any other unreadable line is an error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Method, ProtocolSettings};
use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::train::RunOutcome;

/// What identifies a run across resumes: architecture, N, seed, method, index in the protocol.
pub type RunKey = (Architecture, usize, u64, Method, usize);

/// File name of the run log inside the output directory.
pub const RUNS_FILE: &str = "runs.jsonl";
/// File name of the recorded configuration inside the output directory.
pub const CONFIG_FILE: &str = "config.json";

/// Which run of a protocol a record is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Stage {
    /// A MAP grid cell trained on the fit split and scored on the validation split.
    Grid {
        /// Backbone L2-SP strength.
        alpha: f64,
        /// Head L2-SP strength.
        beta: f64,
        /// Learning rate.
        lr: f64,
    },
    /// The MAP retrain on all N with the selected cell.
    Retrain {
        /// Backbone L2-SP strength.
        alpha: f64,
        /// Head L2-SP strength.
        beta: f64,
        /// Learning rate.
        lr: f64,
    },
    /// An ELBO run with one learning rate on all N.
    Lr {
        /// Learning rate.
        lr: f64,
    },
}

impl Stage {
    /// The stage's learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Stage::Grid { lr, .. } | Stage::Retrain { lr, .. } | Stage::Lr { lr } => lr,
        }
    }
}

/// One finished training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The network.
    pub arch: Architecture,
    /// Training-set size N.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Method (protocol) the run belongs to.
    pub method: Method,
    /// Position of the run within its protocol (0-based, protocol order).
    pub index: usize,
    /// What the run was.
    pub stage: Stage,
    /// Its outcome, or `None` when training diverged.
    pub outcome: Option<RunOutcome>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Wall seconds of the whole run (the test evaluation included), or of a failed run
    /// until it failed.
    pub seconds: f64,
    /// Process CPU seconds of the same (`None` where unavailable).
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

impl RunRecord {
    /// The key that identifies the run across resumes.
    pub fn key(&self) -> RunKey {
        (self.arch, self.n, self.seed, self.method, self.index)
    }

    /// What the run costs its protocol, `(wall, cpu)` seconds: training and the protocol's
    /// selection criterion (validation metrics for the grid, the Monte Carlo final training
    /// loss for the ELBOs), i.e. [`RunOutcome::seconds`]. The test metrics every run also
    /// computes for the report (posterior mean, and the S-sample predictive for the ELBOs) are
    /// the experiment's measurement, which a user of either protocol would not run on every
    /// candidate, so they are not counted. A failed run costs its whole time.
    pub fn protocol_seconds(&self) -> (f64, Option<f64>) {
        match &self.outcome {
            Some(o) => (o.seconds, o.cpu_seconds),
            None => (self.seconds, self.cpu_seconds),
        }
    }
}

/// What must match for a resume: everything that changes a run's result or the set of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedConfig {
    /// Protocol settings.
    pub protocol: ProtocolSettings,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io {
        action,
        path,
        source,
    }
}

/// The append-only run log of an output directory.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    file: File,
    records: Vec<RunRecord>,
}

impl Checkpoint {
    /// Open the log in `dir` for a run with `protocol`. Without `resume`, a directory that
    /// already has recorded runs is refused ([`TransferError::OutputExists`]); with `resume`,
    /// the recorded configuration must equal `protocol` ([`TransferError::ConfigMismatch`]) and
    /// the recorded runs are loaded.
    pub fn open(dir: &Path, protocol: &ProtocolSettings, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
        let path = dir.join(RUNS_FILE);
        let config_path = dir.join(CONFIG_FILE);
        let current = RecordedConfig {
            protocol: protocol.clone(),
        };
        let mut records = Vec::new();
        if path.exists() {
            records = read_records(&path)?;
            if !records.is_empty() && !resume {
                return Err(TransferError::OutputExists {
                    dir: dir.to_path_buf(),
                });
            }
        }
        if resume && config_path.exists() {
            let text =
                std::fs::read_to_string(&config_path).map_err(io_err("reading", &config_path))?;
            let recorded: RecordedConfig =
                serde_json::from_str(&text).map_err(|source| TransferError::Json {
                    path: config_path.clone(),
                    source,
                })?;
            if recorded != current {
                return Err(TransferError::ConfigMismatch {
                    dir: dir.to_path_buf(),
                    difference: describe_difference(&recorded.protocol, protocol),
                });
            }
        } else if resume && !records.is_empty() {
            return Err(TransferError::ConfigMismatch {
                dir: dir.to_path_buf(),
                difference: format!("{CONFIG_FILE} is missing"),
            });
        }
        let json =
            serde_json::to_string_pretty(&current).map_err(|source| TransferError::Json {
                path: config_path.clone(),
                source,
            })?;
        std::fs::write(&config_path, json).map_err(io_err("writing", &config_path))?;
        // Rewrite the log without a torn last line before appending to it.
        let mut text = String::new();
        for r in &records {
            text.push_str(&line_of(r, &path)?);
        }
        std::fs::write(&path, text).map_err(io_err("writing", &path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        Ok(Self {
            path,
            file,
            records,
        })
    }

    /// The runs recorded so far (loaded and appended).
    pub fn records(&self) -> &[RunRecord] {
        &self.records
    }

    /// The recorded run with this key, if any.
    pub fn find(&self, key: RunKey) -> Option<&RunRecord> {
        self.records.iter().find(|r| r.key() == key)
    }

    /// Append a finished run and make it durable (flush + fsync) before returning.
    pub fn append(&mut self, record: RunRecord) -> Result<()> {
        let line = line_of(&record, &self.path)?;
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err("writing", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_err("syncing", &self.path))?;
        self.records.push(record);
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn line_of(r: &RunRecord, path: &Path) -> Result<String> {
    let mut s = serde_json::to_string(r).map_err(|source| TransferError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    s.push('\n');
    Ok(s)
}

/// Read a run log. A final line without its newline that does not parse is treated as torn
/// (dropped); any other bad line is a [`TransferError::Checkpoint`].
pub fn read_records(path: &Path) -> Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RunRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => {
                return Err(TransferError::Checkpoint {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn describe_difference(a: &ProtocolSettings, b: &ProtocolSettings) -> String {
    let pairs = [
        (
            "alphas",
            format!("{:?}", a.alphas),
            format!("{:?}", b.alphas),
        ),
        ("betas", format!("{:?}", a.betas), format!("{:?}", b.betas)),
        (
            "grid-lrs",
            format!("{:?}", a.grid_lrs),
            format!("{:?}", b.grid_lrs),
        ),
        (
            "elbo-lrs",
            format!("{:?}", a.elbo_lrs),
            format!("{:?}", b.elbo_lrs),
        ),
        (
            "validation-fraction",
            format!("{:?}", a.validation_fraction),
            format!("{:?}", b.validation_fraction),
        ),
        (
            "predictive-samples",
            format!("{:?}", a.predictive_samples),
            format!("{:?}", b.predictive_samples),
        ),
        (
            "training settings",
            format!("{:?}", a.train),
            format!("{:?}", b.train),
        ),
        (
            "pretraining",
            format!("{:?}", a.pretrain),
            format!("{:?}", b.pretrain),
        ),
    ];
    pairs
        .into_iter()
        .find(|(_, x, y)| x != y)
        .map(|(name, x, y)| format!("{name}: recorded {x}, now {y}"))
        .unwrap_or_else(|| "unknown difference".to_string())
}
