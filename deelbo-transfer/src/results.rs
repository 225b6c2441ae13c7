//! The experiment's results: one [`ResultRow`] per (architecture, N, seed, method) protocol,
//! their [`Summary`] over seeds, and `transfer.json`. Both the runner ([`crate::experiment`])
//! and the report ([`crate::report`]) use this module; neither imports the other.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Method;
use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::train::{BlockReport, Metrics};

/// File name of the result rows.
pub const JSON_FILE: &str = "transfer.json";

/// One row of `transfer.json`: a method's protocol result for one (architecture, N, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The network.
    pub arch: Architecture,
    /// Training-set size N.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Method.
    pub method: Method,
    /// Kappa of the ELBOs (`null` for map-grid).
    pub kappa: Option<f64>,
    /// Test metrics of the posterior mean (MAP: the trained weights).
    pub test: Metrics,
    /// Test metrics of the S-sample predictive (ELBOs).
    pub test_predictive: Option<Metrics>,
    /// Per block: learned variance (lambda, tau) and distance per weight `M_b/D_b` (ELBOs).
    pub blocks: Vec<BlockReport>,
    /// Final posterior standard deviation (ELBOs).
    pub sigma: Option<f64>,
    /// Training runs the protocol took.
    pub runs: usize,
    /// Wall seconds of the whole protocol (training and selection; test evaluation excluded).
    pub seconds: f64,
    /// Process CPU seconds of the same (`None` where unavailable).
    pub cpu_seconds: Option<f64>,
    /// Selected learning rate.
    pub lr: f64,
    /// Selected alpha (map-grid).
    pub alpha: Option<f64>,
    /// Selected beta (map-grid).
    pub beta: Option<f64>,
}

impl ResultRow {
    /// The learned variance of block `name` (`backbone`: lambda, `head`: tau).
    pub fn variance(&self, name: &str) -> Option<f64> {
        self.blocks
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.variance)
    }

    /// `M_b/D_b` of block `name`.
    pub fn distance_per_weight(&self, name: &str) -> Option<f64> {
        self.blocks
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.distance_per_weight)
    }
}

/// Write `rows` as a pretty-printed JSON list to `path`.
pub fn write_rows_json(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let text = serde_json::to_string_pretty(rows).map_err(|source| TransferError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(|source| TransferError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Read rows written by [`write_rows_json`].
pub fn read_rows_json(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(|source| TransferError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TransferError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn opt_mean(v: &[Option<f64>]) -> Option<f64> {
    let xs: Vec<f64> = v.iter().flatten().copied().collect();
    (xs.len() == v.len() && !xs.is_empty()).then(|| mean(&xs))
}

/// Per-(architecture, N, method) summary over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The network.
    pub arch: Architecture,
    /// N.
    pub n: usize,
    /// Method.
    pub method: Method,
    /// Number of seeds.
    pub seeds: usize,
    /// Kappa (the same for every seed).
    pub kappa: Option<f64>,
    /// Mean test accuracy of the posterior mean.
    pub accuracy: f64,
    /// Sample standard deviation of that accuracy over seeds.
    pub accuracy_sd: f64,
    /// Mean test NLL of the posterior mean.
    pub nll: f64,
    /// Mean test accuracy of the S-sample predictive.
    pub predictive_accuracy: Option<f64>,
    /// Mean test NLL of the S-sample predictive.
    pub predictive_nll: Option<f64>,
    /// Mean learned lambda.
    pub lambda: Option<f64>,
    /// Mean learned tau.
    pub tau: Option<f64>,
    /// Mean `M_b/D_b` of the backbone.
    pub backbone_distance: Option<f64>,
    /// Mean `M_b/D_b` of the head.
    pub head_distance: Option<f64>,
    /// Mean final sigma.
    pub sigma: Option<f64>,
    /// Training runs per protocol.
    pub runs: usize,
    /// Mean wall seconds per protocol.
    pub seconds: f64,
    /// Mean process CPU seconds per protocol (when every row has it).
    pub cpu_seconds: Option<f64>,
}

/// Summaries of `rows` per (architecture, N, method), ordered by architecture, N, method.
pub fn summarize(rows: &[ResultRow]) -> Vec<Summary> {
    let mut groups: BTreeMap<(Architecture, usize, Method), Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.arch, r.n, r.method)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((arch, n, method), rs)| {
            let acc: Vec<f64> = rs.iter().map(|r| r.test.accuracy).collect();
            let of = |f: &dyn Fn(&ResultRow) -> Option<f64>| {
                opt_mean(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            Summary {
                arch,
                n,
                method,
                seeds: rs.len(),
                kappa: of(&|r| r.kappa),
                accuracy: mean(&acc),
                accuracy_sd: sd(&acc),
                nll: mean(&rs.iter().map(|r| r.test.nll).collect::<Vec<_>>()),
                predictive_accuracy: of(&|r| r.test_predictive.map(|m| m.accuracy)),
                predictive_nll: of(&|r| r.test_predictive.map(|m| m.nll)),
                lambda: of(&|r| r.variance("backbone")),
                tau: of(&|r| r.variance("head")),
                backbone_distance: of(&|r| r.distance_per_weight("backbone")),
                head_distance: of(&|r| r.distance_per_weight("head")),
                sigma: of(&|r| r.sigma),
                runs: rs.iter().map(|r| r.runs).max().unwrap_or(0),
                seconds: mean(&rs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
                cpu_seconds: of(&|r| r.cpu_seconds),
            }
        })
        .collect()
}
