//! `deelbo`: learn regularization hyperparameters with the data-emphasized ELBO.
//!
//! A thin dispatcher: one module per command. Exit codes: 0 success, 1 runtime error (bad file,
//! bad data, failed fit), 2 usage error (clap).

mod csv_data;
mod demo;
mod kappa;
mod model_file;
mod rff;
mod table;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Learn regularization hyperparameters (prior variances, lengthscales, noise) on all the
/// training data with the data-emphasized ELBO, instead of a grid search on a validation split.
#[derive(Debug, Parser)]
#[command(name = "deelbo", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The paper's RFF/GP experiment: every method, the kappa sweep, a table, results.json and
    /// figures (seconds).
    Demo(demo::DemoArgs),
    /// Random-Fourier-feature regression on your CSV data: `fit` and `predict`.
    Rff(rff::RffArgs),
    /// Show the kappa rules and what they give for D parameters and N examples.
    Kappa(kappa::KappaArgs),
    /// Fine-tune the pretrained digits network with one protocol (map-grid, elbo, de-elbo) for
    /// one training-set size and seed.
    Finetune(transfer::FinetuneArgs),
    /// Whole experiments: `deelbo experiment transfer [--quick] [--out DIR] [--resume]`.
    Experiment(transfer::ExperimentArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0, usage errors exit 2 (clap's convention).
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Rff(args) => rff::run(&args),
        Command::Kappa(args) => kappa::run(&args),
        Command::Finetune(args) => transfer::run_finetune_command(&args),
        Command::Experiment(args) => transfer::run_experiment_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its context chain, no backtrace.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
