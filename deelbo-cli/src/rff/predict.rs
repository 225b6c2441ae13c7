//! `deelbo rff predict`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::csv_data::read_inputs;
use crate::model_file::ModelFile;

/// Arguments of `deelbo rff predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model written by `deelbo rff fit`.
    #[arg(long, value_name = "MODEL.json")]
    pub model: PathBuf,
    /// Inputs: CSV with a header row holding the model's input columns (others are ignored).
    #[arg(long, value_name = "FILE.csv")]
    pub data: PathBuf,
    /// Where to write the predictions: CSV with columns mean,std, one row per input row.
    #[arg(long, value_name = "PRED.csv")]
    pub out: PathBuf,
}

/// Run `deelbo rff predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    let file = ModelFile::load(&args.model)?;
    let x = read_inputs(&args.data, &file.inputs)?;
    let pred = file
        .model
        .predict(x.view())
        .with_context(|| format!("predicting {}", args.data.display()))?;
    let mut out = String::with_capacity(32 * pred.mean.len() + 9);
    out.push_str("mean,std\n");
    for (m, s) in pred.mean.iter().zip(&pred.std) {
        out.push_str(&format!("{m},{s}\n"));
    }
    std::fs::write(&args.out, out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} predictions to {}",
        pred.mean.len(),
        args.out.display()
    );
    Ok(())
}
