//! The typed error of the transfer-learning experiment.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while configuring or running the experiment. Variants say which
/// parameter, file or line was at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A configuration value outside its valid range.
    #[error("invalid configuration: {name} = {value}: {reason}")]
    InvalidConfig {
        /// The parameter's name (as on the command line where there is one).
        name: String,
        /// The rejected value, printed.
        value: String,
        /// The valid range or the conflict.
        reason: String,
    },
    /// The data set cannot support the requested split.
    #[error("data ({name}): {reason}")]
    Data {
        /// Which data (`digits`, `split`).
        name: String,
        /// What is missing.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, `creating directory`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file that cannot be parsed or written.
    #[error("JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A checkpoint line that is not a valid record.
    #[error("checkpoint {path}, line {line}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// `--resume` on an output directory written by a different configuration.
    #[error(
        "cannot resume in {dir}: it was written by a different configuration ({difference}); use another --out directory or run without --resume"
    )]
    ConfigMismatch {
        /// The output directory.
        dir: PathBuf,
        /// The first differing setting.
        difference: String,
    },
    /// A fresh (non-resume) run into a directory that already holds results.
    #[error(
        "{dir} already holds checkpointed runs; pass --resume to continue them or choose another --out directory"
    )]
    OutputExists {
        /// The output directory.
        dir: PathBuf,
    },
    /// A cached pretrained network that does not match the requested architecture.
    #[error("pretrained network {path}: {reason}")]
    Pretrained {
        /// The safetensors file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A training run whose loss became non-finite.
    #[error("training diverged ({name}): {source}")]
    Training {
        /// Which run (method, n, seed, learning rate).
        name: String,
        /// The underlying adapter error.
        source: deelbo_candle::AdapterError,
    },
    /// Every training run of a protocol diverged, so it has no result to select.
    #[error("every run of {method} ({arch}, N = {n}, seed {seed}) diverged")]
    AllRunsDiverged {
        /// The architecture's name (`Architecture::name`).
        arch: &'static str,
        /// The protocol's name (`Method::name`).
        method: &'static str,
        /// Training-set size.
        n: usize,
        /// Seed.
        seed: u64,
    },
    /// An error from the candle adapter.
    #[error(transparent)]
    Adapter(#[from] deelbo_candle::AdapterError),
    /// An error from candle itself.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error from `deelbo-core`.
    #[error(transparent)]
    Core(#[from] deelbo_core::CoreError),
    /// Drawing or writing the figure failed.
    #[error(transparent)]
    Report(#[from] deelbo_report::ReportError),
}

/// Shorthand for `Result<T, TransferError>`.
pub type Result<T> = std::result::Result<T, TransferError>;
