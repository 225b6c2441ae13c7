//! # deelbo-transfer
//!
//! Transfer learning in miniature (the protocol of `docs/DESIGN.md §10`): two networks written in plain
//! candle-nn ([`models`]: an MLP 64-256-256-5 and a small conv net with batch norm), each
//! pretrained once on the 8x8 digits 0–4, fine-tuned on digits 5–9 with a new head from N in
//! {50, 100, 500} stratified examples (3 seeds; the remaining target examples are the test set),
//! by four protocols with the same optimizer and step budget per run:
//!
//! - `map-grid`: MAP + L2-SP, alpha x beta x lr grid (6 x 6 x 4) on an 80/20 split, selected by
//!   validation NLL, retrained on all N (145 runs);
//! - `elbo`: the plain ELBO (kappa = 1) with learned lambda, tau; 4 learning rates, selected by
//!   final training loss;
//! - `de-elbo`: the data-emphasized ELBO (kappa = D/N); same 4 runs;
//! - `de-elbo-ptyl`: the DE-ELBO with the PTYL backbone prior (SWAG mean and low-rank-plus-
//!   diagonal covariance from the source task); same 4 runs.
//!
//! The variational runs build the unchanged candle-nn model every step from
//! `deelbo_candle::VariationalModel::var_builder`.
//!
//! The library API is what a command-line layer wires up:
//! [`TransferConfig`] / [`FinetuneConfig`] (plain public fields, `validate()`),
//! [`run_experiment`] (checkpointed, resumable, writes `transfer.json`, `table.txt` and the
//! figure), [`run_finetune`] (one protocol), and the report functions ([`format_table`],
//! [`write_rows_json`], [`write_figure`], [`write_outputs`]).
//!
//! | module | concept |
//! |---|---|
//! | [`config`] | methods, protocol settings, validated experiment / fine-tune configurations |
//! | [`cputime`] | process CPU seconds beside wall seconds |
//! | [`data`] | the digits, source/target tasks, seeded stratified splits |
//! | [`models`] | the two candle-nn networks |
//! | [`pretrain`] | the source networks and their SWAG statistics, cached as safetensors |
//! | [`train`] | one fine-tuning run (MAP + L2-SP or (DE-)ELBO with L2-SP or PTYL) |
//! | [`experiment`] | the protocols and the runner |
//! | [`checkpoint`] | the append-only run log and resume |
//! | [`progress`] | progress callbacks and the indicatif bar |
//! | [`results`] | result rows, summaries, `transfer.json` |
//! | [`report`] | table, figure |

pub mod checkpoint;
pub mod config;
pub mod cputime;
pub mod data;
pub mod error;
pub mod experiment;
pub mod models;
pub mod pretrain;
pub mod progress;
pub mod report;
pub mod results;
pub mod synthetic;
pub mod train;

pub use checkpoint::{Checkpoint, RunRecord, Stage};
pub use config::{FinetuneConfig, Method, ProtocolSettings, TransferConfig};
pub use error::{Result, TransferError};
pub use experiment::{ExperimentReport, FinetuneReport, Workbench, run_experiment, run_finetune};
pub use models::{Architecture, ConvNet, MlpNet};
pub use pretrain::{PretrainRecord, PretrainSettings};
pub use progress::{BarProgress, NoProgress, Progress};
pub use report::{OutputFiles, format_table, write_figure, write_outputs};
pub use results::{ResultRow, Summary, read_rows_json, summarize, write_rows_json};
pub use train::{RunOutcome, TrainSettings};
