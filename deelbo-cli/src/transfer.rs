//! `deelbo finetune` (one protocol for one N and seed) and `deelbo experiment transfer` (the whole
//! table): transfer learning in miniature from the `deelbo-transfer` crate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use deelbo_transfer::{
    Architecture, BarProgress, FinetuneConfig, Method, TransferConfig, format_table,
    run_experiment, run_finetune,
};

/// Threads for candle's CPU kernels. One per run is fastest for these small networks on a
/// shared or 2-core machine (candle's default, a thread per core, made runs 2-20x slower there).
#[derive(Debug, Args)]
pub struct ThreadArgs {
    /// Threads for the CPU kernels (sets RAYON_NUM_THREADS unless it is already set).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
}

impl ThreadArgs {
    fn apply(&self) {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // SAFETY: called from `main`'s thread before any other thread exists (no candle or
            // rayon work has started), so nothing reads the environment concurrently.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string()) };
        }
    }
}

/// Arguments of `deelbo finetune`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The protocol: map-grid (145 runs), elbo, de-elbo or de-elbo-ptyl (4 runs each).
    #[arg(long, value_parser = parse_method)]
    pub method: Method,
    /// The network: mlp (64-256-256) or conv (conv2d + batch_norm + linear).
    #[arg(long, default_value = "mlp", value_parser = parse_arch)]
    pub arch: Architecture,
    /// Training-set size N (stratified over the target digits 5-9).
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Seed: training subset, head initialization, minibatches, noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for the cached pretrained network.
    #[arg(long, default_value = "deelbo-transfer-out")]
    pub out: PathBuf,
    /// Only these learning rates (comma-separated; the ELBOs' runs, or the MAP grid's), e.g. to
    /// look at one run of a protocol.
    #[arg(long, value_delimiter = ',')]
    pub lrs: Vec<f64>,
    /// Also print one line per training run (learning rate, final training loss, learned
    /// variances, sigma, test accuracy), the protocol's selection criterion among them.
    #[arg(long)]
    pub runs: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub threads: ThreadArgs,
}

/// Arguments of `deelbo experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Which experiment.
    #[command(subcommand)]
    pub experiment: Experiment,
}

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum Experiment {
    /// MAP + grid search vs plain ELBO vs DE-ELBO (L2-SP and PTYL priors) fine-tuning a
    /// pretrained MLP and conv net on 8x8 digits: N in {50, 100, 500}, 3 seeds; table,
    /// transfer.json and figure. Checkpointed.
    Transfer(TransferArgs),
}

/// Arguments of `deelbo experiment transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The MLP, one N, one seed and reduced grids (about a minute).
    #[arg(long)]
    pub quick: bool,
    /// Only these networks (repeatable; default: mlp and conv, or mlp with --quick).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Vec<Architecture>,
    /// Only these seeds (comma-separated; default 0,1,2, or 0 with --quick).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Only these protocols (comma-separated: map-grid, elbo, de-elbo, de-elbo-ptyl; default
    /// all four), e.g. to rerun the variational rows after a change that leaves MAP alone.
    #[arg(long, value_delimiter = ',', value_parser = parse_method)]
    pub methods: Vec<Method>,
    /// Output directory: pretrained network, checkpoints, transfer.json, table.txt, figures.
    #[arg(long, default_value = "deelbo-transfer-out")]
    pub out: PathBuf,
    /// Continue the checkpointed runs in --out instead of refusing to overwrite them.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub threads: ThreadArgs,
}

fn parse_method(s: &str) -> std::result::Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}

fn parse_arch(s: &str) -> std::result::Result<Architecture, String> {
    s.parse::<Architecture>().map_err(|e| e.to_string())
}

/// Run `deelbo finetune`.
pub fn run_finetune_command(args: &FinetuneArgs) -> Result<()> {
    args.threads.apply();
    let mut config = FinetuneConfig::new(args.n, args.seed, args.method, &args.out);
    config.arch = args.arch;
    if !args.lrs.is_empty() {
        config.protocol.elbo_lrs = args.lrs.clone();
        config.protocol.grid_lrs = args.lrs.clone();
    }
    let report = run_finetune(&config, &mut BarProgress::new()).with_context(|| {
        format!(
            "fine-tuning {} with {} (N = {})",
            args.arch, args.method, args.n
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report.row)?);
    } else {
        println!("{}", format_table(std::slice::from_ref(&report.row)));
    }
    if args.runs {
        print!("{}", run_lines(&report.records));
    }
    Ok(())
}

/// One line per training run: stage, learning rate, final training loss, the learned block
/// variances and distances, sigma, test accuracy (posterior mean) and the CPU seconds the run
/// costs its protocol (training and selection).
fn run_lines(records: &[deelbo_transfer::RunRecord]) -> String {
    let mut out = String::new();
    for r in records {
        let line = match &r.outcome {
            None => format!(
                "run {:>3} lr {:.0e}: {}",
                r.index,
                r.stage.lr(),
                r.failure.as_deref().unwrap_or("failed")
            ),
            Some(o) => {
                let blocks: Vec<String> = o
                    .blocks
                    .iter()
                    .map(|b| {
                        format!(
                            "{} v {:.2e} M/D {:.2e}",
                            b.name, b.variance, b.distance_per_weight
                        )
                    })
                    .collect();
                format!(
                    "run {:>3} lr {:.0e}: train loss {:.4}{} sigma {} {} test acc {:.3} cpu {:.1} s",
                    r.index,
                    r.stage.lr(),
                    o.final_train_loss,
                    o.validation
                        .map(|v| format!(" val NLL {:.4}", v.nll))
                        .unwrap_or_default(),
                    o.sigma.map(|s| format!("{s:.2e}")).unwrap_or("-".into()),
                    blocks.join(", "),
                    o.test.accuracy,
                    r.protocol_seconds().1.unwrap_or(f64::NAN)
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Run `deelbo experiment ...`.
pub fn run_experiment_command(args: &ExperimentArgs) -> Result<()> {
    match &args.experiment {
        Experiment::Transfer(t) => run_transfer(t),
    }
}

fn run_transfer(args: &TransferArgs) -> Result<()> {
    args.threads.apply();
    let mut config = if args.quick {
        TransferConfig::quick(&args.out)
    } else {
        TransferConfig::full(&args.out)
    };
    config.resume = args.resume;
    if !args.arch.is_empty() {
        config.architectures = args.arch.clone();
    }
    if !args.seeds.is_empty() {
        config.seeds = args.seeds.clone();
    }
    if !args.methods.is_empty() {
        config.methods = args.methods.clone();
    }
    let report = run_experiment(&config, &mut BarProgress::new())
        .with_context(|| format!("transfer experiment in {}", args.out.display()))?;
    println!("{}", format_table(&report.rows));
    for (p, reused) in report.pretrain.iter().zip(&report.pretrained_reused) {
        println!(
            "pretrained {}: source accuracy {:.3} ({})",
            p.arch,
            p.source_accuracy,
            if *reused { "cached" } else { "trained now" }
        );
    }
    println!("{} runs restored from checkpoints", report.restored_runs);
    for path in [
        &report.files.json,
        &report.files.table,
        &report.files.svg,
        &report.files.png,
    ] {
        println!("wrote {}", path.display());
    }
    Ok(())
}
