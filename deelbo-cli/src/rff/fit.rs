//! `deelbo rff fit`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use deelbo_core::KappaRule;
use deelbo_rff::data::RowSource;
use deelbo_rff::fit::{Stage, fit_source};
use deelbo_rff::{Dataset, Method, RffConfig, fit, metrics::rmse};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::csv_data::{CsvSource, read_training};
use crate::model_file::ModelFile;
use crate::table::format_lengthscale;

/// The fitting methods offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Exact evidence maximization (type-II maximum likelihood) on the features: the default,
    /// the most accurate on the real-data table (deelbo-rff/results/real_data.md).
    Evidence,
    /// Data-emphasized ELBO (kappa = D/(2N) unless --kappa says otherwise).
    DeElbo,
    /// Plain ELBO (kappa = 1).
    Elbo,
    /// MAP weights, hyperparameters by grid search on an 80/20 split.
    MapGrid,
}

/// A kappa given on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KappaArg {
    /// D/N.
    DataEmphasized,
    /// D/(2N).
    Half,
    /// A number >= 1.
    Fixed(f64),
}

fn parse_kappa(s: &str) -> Result<KappaArg, String> {
    match s.to_ascii_lowercase().as_str() {
        "d/n" | "dn" => Ok(KappaArg::DataEmphasized),
        "d/2n" | "d/(2n)" | "half" => Ok(KappaArg::Half),
        other => match other.parse::<f64>() {
            Ok(k) if k.is_finite() && k >= 1.0 => Ok(KappaArg::Fixed(k)),
            Ok(k) => Err(format!("kappa must be a finite number >= 1, got {k}")),
            Err(_) => Err(format!(
                "expected a number >= 1, 'd/n' or 'd/2n', got '{s}'"
            )),
        },
    }
}

/// Arguments of `deelbo rff fit`.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Training data: CSV with a header row; every column except the target is an input.
    #[arg(long, value_name = "FILE.csv")]
    pub data: PathBuf,
    /// Name of the target column.
    #[arg(long, value_name = "COLUMN")]
    pub target: String,
    /// How to learn the hyperparameters.
    #[arg(long, value_enum, default_value_t = MethodArg::Evidence)]
    pub method: MethodArg,
    /// Likelihood weight for de-elbo: a number >= 1, 'd/n' or 'd/2n' (default); D = --features.
    /// With a learned noise and N <= R rows, kappa = D/N is exactly where the objective stops
    /// being bounded as the noise shrinks (it then interpolates the data), hence D/(2N) by
    /// default; values below 1 are raised to 1.
    #[arg(long, value_name = "K", value_parser = parse_kappa)]
    pub kappa: Option<KappaArg>,
    /// Number of random Fourier features R.
    #[arg(long, value_name = "R", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub features: u32,
    /// One lengthscale per input column (the default when there are 2 or more inputs; kept for
    /// compatibility).
    #[arg(long, conflicts_with = "iso")]
    pub ard: bool,
    /// One lengthscale shared by every input column (instead of ARD).
    #[arg(long)]
    pub iso: bool,
    /// Points of the global isotropic lengthscale grid (l/sqrt(d) log-spaced in [0.01, 10] on
    /// standardized inputs, then Brent's method); ARD starts from its optimum. Each point costs
    /// one eigendecomposition of size min(rows, R).
    #[arg(long, value_name = "G", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=10000))]
    pub grid_points: u32,
    /// Refuse fits whose memory estimate exceeds this (8G, 512M, bytes). Rows are streamed from
    /// the file, so the estimate grows with R^2, not with the number of rows.
    #[arg(long, value_name = "SIZE", default_value = "8G", value_parser = parse_memory)]
    pub max_memory: u64,
    /// Seed of the random features (and of the map-grid split).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Where to write the fitted model (JSON).
    #[arg(long, value_name = "MODEL.json")]
    pub model: PathBuf,
    /// Print the learned hyperparameters as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output: the results.json field names (test metrics are null: no test data).
#[derive(Debug, Serialize)]
struct FitJson {
    #[serde(flatten)]
    summary: deelbo_rff::FitSummary,
    test_rmse: Option<f64>,
    test_nll: Option<f64>,
    seconds: f64,
    /// The kappa rule asked for (ELBO methods).
    kappa_rule: Option<String>,
    /// Whether the rule's kappa was raised to 1.
    kappa_clamped: Option<bool>,
    /// Why it was clamped.
    kappa_reason: Option<String>,
    /// Values that ended at a search bound, a clamped kappa.
    warnings: Vec<String>,
}

/// A usage error found after parsing: one line on stderr, exit code 2 (like clap's own).
fn usage_error(message: String) -> ! {
    eprintln!("error: {message} (see 'deelbo rff fit --help')");
    std::process::exit(2)
}

/// The library configuration of the arguments for data with `dim` inputs.
fn config_for(args: &FitArgs, method: Method, dim: usize) -> Result<RffConfig> {
    // ARD by default when there are several inputs (not for map-grid, whose grid is isotropic).
    let ard = !args.iso && !matches!(args.method, MethodArg::MapGrid) && dim > 1;
    Ok(RffConfig::new(method)
        .with_features(args.features as usize)
        .with_seed(args.seed)
        .with_ard(ard)
        .with_max_memory(args.max_memory)
        .with_lengthscale_search(deelbo_rff::search::GridSearch {
            grid_points: args.grid_points as usize,
            ..deelbo_rff::fit::DEFAULT_LENGTHSCALE_SEARCH
        }))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(rows: u64) -> ProgressBar {
    let bar = ProgressBar::new(rows);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} rows ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The training RMSE of `model`'s mean, streaming over the rows once more.
fn streamed_rmse(source: &mut CsvSource, model: &deelbo_rff::RffModel) -> Result<f64> {
    let (mut sum, mut n) = (0.0f64, 0usize);
    let result = source.visit(&mut |x, y| {
        let p = model.predict(x)?;
        sum += p
            .mean
            .iter()
            .zip(y)
            .map(|(m, t)| (m - t) * (m - t))
            .sum::<f64>();
        n += y.len();
        Ok(())
    });
    if let Err(e) = result {
        if let Some(csv) = source.take_error() {
            return Err(csv.into());
        }
        return Err(e.into());
    }
    Ok((sum / n.max(1) as f64).sqrt())
}

/// `8G`, `512M`, `100k` or a number of bytes.
fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a size such as 8G, 512M or 1000000, got '{s}'"))?;
    if !(v.is_finite() && v >= 1.0) {
        return Err(format!("expected a positive size, got '{s}'"));
    }
    Ok((v * mult as f64).min(u64::MAX as f64) as u64)
}

/// Run `deelbo rff fit`.
pub fn run(args: &FitArgs) -> Result<()> {
    let method = match (args.method, args.kappa) {
        (MethodArg::DeElbo, Some(KappaArg::DataEmphasized)) => {
            Method::Elbo(KappaRule::DataEmphasized)
        }
        (MethodArg::DeElbo, None | Some(KappaArg::Half)) => {
            Method::Elbo(KappaRule::HalfDataEmphasized)
        }
        (MethodArg::DeElbo, Some(KappaArg::Fixed(k))) => Method::Elbo(KappaRule::Fixed(k)),
        (MethodArg::Elbo, None) => Method::Elbo(KappaRule::Standard),
        (MethodArg::Evidence, None) => Method::Evidence,
        (MethodArg::MapGrid, None) => Method::MapGrid,
        (m, Some(_)) => usage_error(format!(
            "--kappa applies to --method de-elbo only, not {}",
            m.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string())
        )),
    };
    if args.ard && matches!(args.method, MethodArg::MapGrid) {
        usage_error("--ard is supported by --method evidence, de-elbo and elbo".to_string());
    }
    let start = Instant::now();
    let streaming = !matches!(args.method, MethodArg::MapGrid);
    let (report, inputs, rows, dim, train_rmse) = if streaming {
        // Streamed: the file is read block by block, never held in memory, in three passes
        // (validation, standardization + search subsample, final sums; the training RMSE
        // comes from the sums).
        let mut source = CsvSource::open(&args.data, &args.target)?;
        let (rows, dim) = (source.rows(), source.inputs().len());
        let config = config_for(args, method, dim)?;
        let bar = progress_bar(rows as u64);
        let result = fit_source(&mut source, &config, &mut |stage, n| {
            bar.set_message(match stage {
                Stage::Reading => "reading (standardization, search subsample)",
                Stage::Searching => "searching hyperparameters",
                Stage::Summing => "summing Phi^T Phi over every row",
            });
            bar.set_position(if stage == Stage::Searching {
                0
            } else {
                n as u64
            });
        });
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                if let Some(csv) = source.take_error() {
                    return Err(csv.into());
                }
                return Err(
                    anyhow::Error::new(e).context(format!("fitting {}", args.data.display()))
                );
            }
        };
        // The training RMSE comes from the final sums (no pass over the rows) when the method
        // fits through them; otherwise one more streamed pass.
        let train_rmse = match report.train_rmse {
            Some(r) => r,
            None => {
                bar.set_message("training RMSE");
                streamed_rmse(&mut source, &report.model)?
            }
        };
        bar.finish_and_clear();
        (report, source.inputs(), rows, dim, train_rmse)
    } else {
        let table = read_training(&args.data, &args.target)?;
        let data =
            Dataset::new(table.x, table.y).with_context(|| format!("{}", args.data.display()))?;
        let config = config_for(args, method, data.dim())?;
        let report =
            fit(&data, &config).with_context(|| format!("fitting {}", args.data.display()))?;
        let train = report.model.predict(data.x())?;
        let train_rmse = rmse(&data.y().to_vec(), &train.mean.to_vec())?;
        (report, table.inputs, data.len(), data.dim(), train_rmse)
    };
    let seconds = start.elapsed().as_secs_f64();
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let kappa_report = report.kappa.clone();
    let warnings = report.warnings.clone();
    let model = report.model;
    let summary = model.summary(train_rmse);
    ModelFile::new(args.target.clone(), inputs.clone(), model).save(&args.model)?;
    if args.json {
        let out = FitJson {
            summary,
            test_rmse: None,
            test_nll: None,
            seconds,
            kappa_rule: kappa_report.as_ref().map(|k| k.rule.clone()),
            kappa_clamped: kappa_report.as_ref().map(|k| k.clamped),
            kappa_reason: kappa_report.as_ref().and_then(|k| k.reason.clone()),
            warnings,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "data            {} ({} rows, {} inputs: {})",
            args.data.display(),
            rows,
            dim,
            inputs.join(", ")
        );
        println!("method          {}", summary.method);
        if let Some(k) = &kappa_report {
            println!("kappa rule      {}", k.rule);
            match &k.reason {
                Some(why) => println!("kappa           {} (clamped: {why})", k.value),
                None => println!("kappa           {}", k.value),
            }
        }
        println!(
            "lengthscale     {}",
            format_lengthscale(&summary.lengthscale)
        );
        println!("noise std       {:.6}", summary.noise_std);
        println!("prior variance  {:.6}", summary.prior_variance);
        if let Some(s) = summary.sigma {
            println!("posterior sigma {s:.6}");
        }
        println!("objective       {:.4} nats", summary.objective);
        println!("train RMSE      {:.6}", summary.train_rmse);
        println!("seconds         {seconds:.3}");
        if !warnings.is_empty() {
            println!("warnings        {} (see stderr)", warnings.len());
        }
        println!("model           {}", args.model.display());
    }
    Ok(())
}
