//! `deelbo rff fit` and `deelbo rff predict`.

mod fit;
mod predict;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Random-Fourier-feature regression on CSV files.
#[derive(Debug, Args)]
pub struct RffArgs {
    /// fit or predict.
    #[command(subcommand)]
    pub command: RffCommand,
}

/// The RFF subcommands.
#[derive(Debug, Subcommand)]
pub enum RffCommand {
    /// Learn lengthscale, noise and prior variance on a CSV file and save the model.
    Fit(fit::FitArgs),
    /// Predict mean and standard deviation for the rows of a CSV file.
    Predict(predict::PredictArgs),
}

/// Run an RFF subcommand.
pub fn run(args: &RffArgs) -> Result<()> {
    match &args.command {
        RffCommand::Fit(a) => fit::run(a),
        RffCommand::Predict(a) => predict::run(a),
    }
}
