//! Typed, validated configuration of the experiment ([`TransferConfig`]) and of one fine-tuning
//! configuration ([`FinetuneConfig`]). Fields are public and plain (numbers, vectors, paths) so a
//! command-line layer can fill them from flags; [`TransferConfig::validate`] /
//! [`FinetuneConfig::validate`] check every value before any work starts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use deelbo_core::check;

use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::pretrain::PretrainSettings;
use crate::train::TrainSettings;

/// A fine-tuning method (protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    /// MAP with the L2-SP penalty, (alpha, beta, lr) grid search on an 80/20 split selected by
    /// validation NLL, then retrained on all N.
    #[serde(rename = "map-grid")]
    MapGrid,
    /// The plain ELBO (kappa = 1), lr grid selected by final training loss.
    #[serde(rename = "elbo")]
    Elbo,
    /// The data-emphasized ELBO (kappa = D/N), lr grid selected by final training loss.
    #[serde(rename = "de-elbo")]
    DeElbo,
    /// The DE-ELBO with the PTYL backbone prior: `N(theta_swag, lambda Sigma_swag)`, the SWAG
    /// mean and low-rank-plus-diagonal covariance of the source task, lambda learned; same lr
    /// grid and selection.
    #[serde(rename = "de-elbo-ptyl")]
    DeElboPtyl,
}

impl Method {
    /// All methods, in table order.
    pub const ALL: [Method; 4] = [
        Method::MapGrid,
        Method::Elbo,
        Method::DeElbo,
        Method::DeElboPtyl,
    ];

    /// The name used in files and tables: `map-grid`, `elbo`, `de-elbo`, `de-elbo-ptyl`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::MapGrid => "map-grid",
            Method::Elbo => "elbo",
            Method::DeElbo => "de-elbo",
            Method::DeElboPtyl => "de-elbo-ptyl",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = TransferError;

    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| TransferError::InvalidConfig {
                name: "method".to_string(),
                value: s.to_string(),
                reason: "expected one of map-grid, elbo, de-elbo, de-elbo-ptyl".to_string(),
            })
    }
}

/// The settings every protocol shares: grids, split, optimizer and budget, pretraining.
///
/// # Parameters
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `alphas` | `1e-2 .. 1e-6, 0` | each `>= 0` | L2-SP backbone strengths of the MAP grid |
/// | `betas` | `1e-2 .. 1e-6, 0` | each `>= 0` | L2-SP head strengths of the MAP grid |
/// | `grid_lrs` | `1e-1 .. 1e-4` | each `> 0` | learning rates of the MAP grid |
/// | `elbo_lrs` | `1e-1 .. 1e-4` | each `> 0` | learning rates each ELBO tries |
/// | `validation_fraction` | 0.2 | `(0, 1)` | share of N held out by the grid search |
/// | `predictive_samples` | 10 | `>= 1` | `S` of the S-sample predictive test metrics |
/// | `train` | [`TrainSettings::default`] | | optimizer and budget of every run |
/// | `pretrain` | [`PretrainSettings::default`] | | the source network and its SWAG phase |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolSettings {
    /// L2-SP backbone strengths alpha of the MAP grid.
    pub alphas: Vec<f64>,
    /// L2-SP head strengths beta of the MAP grid.
    pub betas: Vec<f64>,
    /// Learning rates of the MAP grid.
    pub grid_lrs: Vec<f64>,
    /// Learning rates tried by each ELBO (selected by final training loss).
    pub elbo_lrs: Vec<f64>,
    /// Fraction of the N training examples held out for validation by the grid search.
    pub validation_fraction: f64,
    /// Samples `S` of the predictive test metrics of the ELBO runs.
    pub predictive_samples: usize,
    /// Optimizer and step budget of every fine-tuning run.
    pub train: TrainSettings,
    /// How the source network is pretrained.
    pub pretrain: PretrainSettings,
}

impl Default for ProtocolSettings {
    /// The full protocol: alpha, beta in {1e-2, ..., 1e-6, 0}, lr in {1e-1, ..., 1e-4} (144 grid
    /// runs + 1 retrain), the same 4 learning rates for the ELBOs, 80/20 split.
    fn default() -> Self {
        let strengths = vec![1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 0.0];
        let lrs = vec![1e-1, 1e-2, 1e-3, 1e-4];
        Self {
            alphas: strengths.clone(),
            betas: strengths,
            grid_lrs: lrs.clone(),
            elbo_lrs: lrs,
            validation_fraction: 0.2,
            predictive_samples: 10,
            train: TrainSettings::default(),
            pretrain: PretrainSettings::default(),
        }
    }
}

fn invalid(name: &str, value: impl fmt::Debug, reason: &str) -> TransferError {
    TransferError::InvalidConfig {
        name: name.to_string(),
        value: format!("{value:?}"),
        reason: reason.to_string(),
    }
}

fn check_list(name: &str, v: &[f64], allow_zero: bool) -> Result<()> {
    if v.is_empty() {
        return Err(invalid(name, v, "must not be empty"));
    }
    for (i, &x) in v.iter().enumerate() {
        let item = format!("{name}[{i}]");
        if allow_zero {
            check::in_range(&item, x, 0.0..)?;
        } else {
            check::positive(&item, x)?;
        }
    }
    Ok(())
}

fn at_least(name: &str, value: usize, min: usize) -> Result<()> {
    check::in_range(name, value as f64, min as f64..)?;
    Ok(())
}

impl ProtocolSettings {
    /// Check every value.
    pub fn validate(&self) -> Result<()> {
        check_list("alphas", &self.alphas, true)?;
        check_list("betas", &self.betas, true)?;
        check_list("grid-lrs", &self.grid_lrs, false)?;
        check_list("elbo-lrs", &self.elbo_lrs, false)?;
        check::in_range("validation-fraction", self.validation_fraction, 0.0..1.0)?;
        if self.validation_fraction == 0.0 {
            return Err(invalid("validation-fraction", 0.0, "must be in (0, 1)"));
        }
        at_least("predictive-samples", self.predictive_samples, 1)?;
        self.train.validate()?;
        self.pretrain.validate()
    }

    /// Number of grid-search runs (alphas x betas x lrs), without the retrain.
    pub fn grid_runs(&self) -> usize {
        self.alphas.len() * self.betas.len() * self.grid_lrs.len()
    }

    /// Number of training runs a method's protocol takes for one (N, seed).
    pub fn runs_of(&self, method: Method) -> usize {
        match method {
            Method::MapGrid => self.grid_runs() + 1,
            Method::Elbo | Method::DeElbo | Method::DeElboPtyl => self.elbo_lrs.len(),
        }
    }
}

/// Training-set sizes must leave every class at least one test example and, for the grid
/// search, two training examples (one to fit, one to validate) per class.
fn check_size(n: usize, with_grid: bool) -> Result<()> {
    let min = if with_grid { 10 } else { 5 };
    if n < min {
        return Err(invalid(
            "n",
            n,
            if with_grid {
                "must be >= 10 (2 examples per class for the grid search's validation split)"
            } else {
                "must be >= 5 (one example per class)"
            },
        ));
    }
    if n > 800 {
        return Err(invalid(
            "n",
            n,
            "must be <= 800 (the target task has ~180 examples per class; some must stay for testing)",
        ));
    }
    Ok(())
}

/// The whole experiment: every (architecture, N, seed, method) protocol.
///
/// # Parameters
/// | name | default ([`TransferConfig::full`]) | range | meaning |
/// |---|---|---|---|
/// | `architectures` | `mlp, conv` | non-empty, no duplicates | networks fine-tuned |
/// | `sizes` | `50, 100, 500` | each `5..=800` (`10..` with map-grid) | training-set sizes N |
/// | `seeds` | `0, 1, 2` | non-empty, no duplicates | subset, head init, batches, noise |
/// | `methods` | all four | non-empty, no duplicates | protocols |
/// | `protocol` | [`ProtocolSettings::default`] | | grids, optimizer, budget, pretraining |
/// | `out_dir` | `deelbo-transfer-out` | | pretrained networks, checkpoints, results |
/// | `resume` | `false` | | continue the checkpointed runs in `out_dir` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    /// Networks to fine-tune.
    pub architectures: Vec<Architecture>,
    /// Training-set sizes N.
    pub sizes: Vec<usize>,
    /// Seeds (each fixes the training subset, the head initialization, minibatches and noise).
    pub seeds: Vec<u64>,
    /// Methods to run.
    pub methods: Vec<Method>,
    /// Grids, optimizer, budget, pretraining.
    pub protocol: ProtocolSettings,
    /// Output directory (created if missing): pretrained network, checkpoints, results.
    pub out_dir: PathBuf,
    /// Continue the checkpointed runs found in `out_dir` instead of refusing to overwrite them.
    pub resume: bool,
}

impl TransferConfig {
    /// The full experiment: N in {50, 100, 500}, seeds {0, 1, 2}, all methods, full grids.
    pub fn full(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            architectures: Architecture::ALL.to_vec(),
            sizes: vec![50, 100, 500],
            seeds: vec![0, 1, 2],
            methods: Method::ALL.to_vec(),
            protocol: ProtocolSettings::default(),
            out_dir: out_dir.into(),
            resume: false,
        }
    }

    /// A quick configuration: the MLP, N = 50, seed 0, all methods, a reduced MAP grid
    /// (alpha, beta in {1e-3, 0} x lr in {1e-1, 1e-2}: 8 runs + retrain) and ELBO lrs
    /// {1e-1, 1e-2}; same optimizer, budget and pretraining as the full experiment.
    pub fn quick(out_dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::full(out_dir);
        c.architectures = vec![Architecture::Mlp];
        c.sizes = vec![50];
        c.seeds = vec![0];
        c.protocol.alphas = vec![1e-3, 0.0];
        c.protocol.betas = vec![1e-3, 0.0];
        c.protocol.grid_lrs = vec![1e-1, 1e-2];
        c.protocol.elbo_lrs = vec![1e-1, 1e-2];
        c
    }

    /// Check every value (sizes, seeds, methods without duplicates, protocol settings).
    pub fn validate(&self) -> Result<()> {
        if self.architectures.is_empty() {
            return Err(invalid("arch", &self.architectures, "must not be empty"));
        }
        if self.sizes.is_empty() {
            return Err(invalid("sizes", &self.sizes, "must not be empty"));
        }
        let grid = self.methods.contains(&Method::MapGrid);
        for &n in &self.sizes {
            check_size(n, grid)?;
        }
        if self.seeds.is_empty() {
            return Err(invalid("seeds", &self.seeds, "must not be empty"));
        }
        if self.methods.is_empty() {
            return Err(invalid("methods", &self.methods, "must not be empty"));
        }
        for (what, dup) in [
            ("arch", has_duplicates(&self.architectures)),
            ("sizes", has_duplicates(&self.sizes)),
            ("seeds", has_duplicates(&self.seeds)),
            ("methods", has_duplicates(&self.methods)),
        ] {
            if dup {
                return Err(invalid(what, "(list)", "must not contain duplicates"));
            }
        }
        self.protocol.validate()
    }

    /// Total number of training runs of the experiment.
    pub fn total_runs(&self) -> usize {
        self.architectures.len()
            * self.sizes.len()
            * self.seeds.len()
            * self
                .methods
                .iter()
                .map(|&m| self.protocol.runs_of(m))
                .sum::<usize>()
    }
}

fn has_duplicates<T: PartialEq>(v: &[T]) -> bool {
    v.iter()
        .enumerate()
        .any(|(i, a)| v[..i].iter().any(|b| b == a))
}

impl Default for TransferConfig {
    /// [`TransferConfig::full`] into `deelbo-transfer-out`.
    fn default() -> Self {
        Self::full("deelbo-transfer-out")
    }
}

/// One fine-tuning configuration: one method's whole protocol for one (architecture, N, seed).
///
/// # Parameters
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `arch` | `mlp` | `mlp`, `conv` | the network |
/// | `n` | 100 | `5..=800` (`10..` for map-grid) | training-set size |
/// | `seed` | 0 | any | subset, head init, batches, noise |
/// | `method` | `de-elbo` | the four methods | the protocol |
/// | `protocol` | [`ProtocolSettings::default`] | | grids, optimizer, budget, pretraining |
/// | `out_dir` | `deelbo-transfer-out` | | the cached pretrained network |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// The network.
    pub arch: Architecture,
    /// Training-set size N.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Method.
    pub method: Method,
    /// Grids, optimizer, budget, pretraining (for a single learning rate, set `elbo_lrs` /
    /// `grid_lrs` to one value).
    pub protocol: ProtocolSettings,
    /// Output directory holding (or receiving) the cached pretrained network.
    pub out_dir: PathBuf,
}

impl FinetuneConfig {
    /// A configuration with the full protocol settings.
    pub fn new(n: usize, seed: u64, method: Method, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            arch: Architecture::Mlp,
            n,
            seed,
            method,
            protocol: ProtocolSettings::default(),
            out_dir: out_dir.into(),
        }
    }

    /// Check every value.
    pub fn validate(&self) -> Result<()> {
        check_size(self.n, self.method == Method::MapGrid)?;
        self.protocol.validate()
    }
}

impl Default for FinetuneConfig {
    /// DE-ELBO on the MLP, N = 100, seed 0, into `deelbo-transfer-out`.
    fn default() -> Self {
        Self::new(100, 0, Method::DeElbo, "deelbo-transfer-out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        TransferConfig::full("x").validate().unwrap();
        TransferConfig::quick("x").validate().unwrap();
        assert_eq!(TransferConfig::full("x").protocol.grid_runs(), 144);
        assert_eq!(
            TransferConfig::full("x").total_runs(),
            2 * 9 * (145 + 4 + 4 + 4)
        );
        let mut c = TransferConfig::full("x");
        c.protocol.grid_lrs = vec![0.1, 0.0];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("grid-lrs"), "{e}");
        let mut c = TransferConfig::full("x");
        c.sizes = vec![5];
        assert!(c.validate().unwrap_err().to_string().contains("n = 5"));
        c.methods = vec![Method::DeElbo];
        c.validate().unwrap();
        c.sizes = vec![50, 50];
        assert!(c.validate().is_err());
        let mut c = TransferConfig::quick("x");
        c.protocol.train.clip_norm = f64::NAN;
        assert!(c.validate().is_err());
        assert_eq!("de-elbo".parse::<Method>().unwrap(), Method::DeElbo);
        assert!("grid".parse::<Method>().is_err());
        let j = serde_json::to_string(&Method::MapGrid).unwrap();
        assert_eq!(j, "\"map-grid\"");
    }
}
