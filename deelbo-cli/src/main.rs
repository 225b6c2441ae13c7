//! `deelbo`: learn regularization hyperparameters with the data-emphasized ELBO.
//!
//! A thin dispatcher: one module per command. Exit codes: 0 success, 1 runtime error (bad file,
//! bad data, failed fit), 2 usage error (clap).

mod allocator;
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
        Command::Demo(args) => {
            allocator::keep_freed_blocks();
            demo::run(&args)
        }
        Command::Rff(args) => {
            allocator::keep_freed_blocks();
            rff::run(&args)
        }
        Command::Kappa(args) => kappa::run(&args),
        Command::Finetune(args) => transfer::run_finetune_command(&args),
        Command::Experiment(args) => transfer::run_experiment_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its context chain on one line, no backtrace. A cause whose text its parent's
/// message already ends with (a library error that prints its `source`) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod error_line {
    use super::one_line;

    #[test]
    fn a_cause_printed_by_its_parent_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("creating directory /x: {source}")]
        struct Io {
            source: std::io::Error,
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotADirectory, "Not a directory");
        let e = anyhow::Error::new(Io { source: io }).context("fine-tuning mlp");
        assert_eq!(
            one_line(&e),
            "fine-tuning mlp: creating directory /x: Not a directory"
        );
        // Causes that add something are all kept, in order, on one line.
        let e = anyhow::anyhow!("bad row\n 3")
            .context("reading a.csv")
            .context("fit");
        assert_eq!(one_line(&e), "fit: reading a.csv: bad row  3");
    }
}

#[cfg(test)]
mod reader_fuzz {
    //! 100 000 arbitrary and mutated inputs through the CSV and model-file readers (and, for
    //! files they accept, through a fit or a prediction): no panic, every rejection an error
    //! that names the file.

    use std::path::Path;

    use deelbo_rff::data::RowSource;

    use crate::csv_data::{CsvSource, read_inputs, read_training};
    use crate::model_file::ModelFile;

    /// xorshift64*: a fixed, dependency-free stream for reproducible cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const PIECES: [&str; 22] = [
        ",", "\n", "\r\n", "y", "a", "b", "1", "-2.5", "0", "1e308", "-1e308", "1e999", "NaN",
        "inf", "\"", " ", "", "x,y", "\u{fffd}", "\t", "3.", ".e",
    ];

    fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(v.len() + 1);
            match rng.below(4) {
                0 if !v.is_empty() => {
                    v.remove(pos.min(v.len() - 1));
                }
                1 => {
                    let p = PIECES[rng.below(PIECES.len())].as_bytes();
                    v.splice(pos..pos, p.iter().copied());
                }
                2 if !v.is_empty() => {
                    let i = pos.min(v.len() - 1);
                    v[i] = (rng.next() & 0xff) as u8;
                }
                _ => {
                    let end = (pos + rng.below(8)).min(v.len());
                    v.drain(pos..end);
                }
            }
        }
        v
    }

    fn check_error(e: &anyhow::Error, path: &Path) {
        let text = format!("{e:#}");
        assert!(
            text.contains(&path.display().to_string()),
            "error does not name the file: {text}"
        );
    }

    #[test]
    fn arbitrary_and_mutated_inputs_never_panic() {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("case.csv");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let valid = "a,b,y\n1,2,3\n4,5,6.5\n-1,0.5,2\n7,8,1\n";
        let mut accepted = 0usize;
        for case in 0..60_000 {
            let bytes: Vec<u8> = if case % 3 == 0 {
                (0..rng.below(60))
                    .flat_map(|_| PIECES[rng.below(PIECES.len())].bytes().collect::<Vec<_>>())
                    .collect()
            } else {
                mutate(&mut rng, valid.as_bytes())
            };
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write: {e}"));
            let training = read_training(&path, "y");
            match CsvSource::open(&path, "y") {
                Ok(mut source) => {
                    assert!(training.is_ok(), "the readers disagree on {bytes:?}");
                    accepted += 1;
                    let mut rows = 0;
                    source
                        .visit(&mut |x, _| {
                            rows += x.nrows();
                            Ok(())
                        })
                        .unwrap_or_else(|e| panic!("visit of an accepted file failed: {e}"));
                    assert_eq!(rows, source.rows());
                }
                Err(e) => {
                    assert!(training.is_err(), "the readers disagree on {bytes:?}");
                    check_error(&anyhow::Error::new(e), &path);
                }
            }
            if let Err(e) = read_inputs(&path, &["a".to_string(), "b".to_string()]) {
                check_error(&anyhow::Error::new(e), &path);
            }
        }
        assert!(
            accepted > 1000,
            "too few valid cases to exercise the fit path: {accepted}"
        );

        // Model files: mutations of a real one.
        let train = dir.path().join("train.csv");
        std::fs::write(&train, valid).unwrap_or_else(|e| panic!("write: {e}"));
        let table = read_training(&train, "y").unwrap_or_else(|e| panic!("{e}"));
        let data = deelbo_rff::Dataset::new(table.x.clone(), table.y.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let config = deelbo_rff::RffConfig::new(deelbo_rff::Method::Evidence)
            .with_features(4)
            .with_lengthscale_search(deelbo_rff::search::GridSearch {
                grid_points: 4,
                ..deelbo_rff::fit::DEFAULT_LENGTHSCALE_SEARCH
            });
        let model = deelbo_rff::fit(&data, &config)
            .unwrap_or_else(|e| panic!("{e}"))
            .model;
        let good = dir.path().join("good.json");
        ModelFile::new("y".into(), table.inputs.clone(), model)
            .save(&good)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read(&good).unwrap_or_else(|e| panic!("{e}"));
        let mpath = dir.path().join("case.json");
        let mut loaded = 0usize;
        for _ in 0..40_000 {
            let bytes = mutate(&mut rng, &text);
            std::fs::write(&mpath, &bytes).unwrap_or_else(|e| panic!("write: {e}"));
            match ModelFile::load(&mpath) {
                Ok(file) => {
                    loaded += 1;
                    // An accepted model predicts (or says why not) without panicking.
                    let _ = file.model.predict(table.x.view());
                }
                Err(e) => check_error(&e, &mpath),
            }
        }
        assert!(loaded > 100, "too few accepted model files: {loaded}");
    }
}
