//! `deelbo demo`: the paper's RFF/GP experiment with a table, `results.json` and two figures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use deelbo_rff::demo::{DemoConfig, DemoReport, MethodOutcome, run_demo};
use indicatif::{ProgressBar, ProgressStyle};

use deelbo_report::{BandFigure, BandPanel, format_number, render_table};

use crate::table::format_lengthscale;

/// Arguments of `deelbo demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for results.json and the figures (created if missing).
    #[arg(long, value_name = "DIR", default_value = "deelbo-demo")]
    pub out: PathBuf,
    /// Seed of the data (N = 20 training and 1000 test points).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

fn rows(outcomes: &[MethodOutcome]) -> Vec<Vec<String>> {
    outcomes
        .iter()
        .map(|m| {
            let s = &m.summary;
            vec![
                m.label.clone(),
                s.kappa.map_or_else(|| "-".to_string(), |k| format!("{k}")),
                format_lengthscale(&s.lengthscale),
                format_number(s.noise_std),
                format_number(s.prior_variance),
                format_number(s.train_rmse),
                format_number(m.test_rmse),
                format_number(m.test_nll),
                format!("{:.3}", m.seconds),
            ]
        })
        .collect()
}

const HEADER: [&str; 9] = [
    "method",
    "kappa",
    "lengthscale",
    "noise std",
    "prior var",
    "train RMSE",
    "test RMSE",
    "test NLL",
    "seconds",
];

fn panel(report: &DemoReport, m: &MethodOutcome, title: String) -> BandPanel {
    let s = &m.summary;
    let l = match &s.lengthscale {
        deelbo_rff::Lengthscale::Isotropic(l) => format!("{l:.3}"),
        deelbo_rff::Lengthscale::Ard(v) => format!("{v:.3?}"),
    };
    let reference = (0..=200)
        .map(|i| {
            let x = -3.3 + 6.6 * f64::from(i) / 200.0;
            (x, (3.0 * x).sin())
        })
        .collect();
    BandPanel {
        title,
        note: format!(
            "l = {l}, noise = {}, test RMSE = {}, NLL = {}",
            format_number(s.noise_std),
            format_number(m.test_rmse),
            format_number(m.test_nll)
        ),
        points: report
            .train_x
            .iter()
            .copied()
            .zip(report.train_y.iter().copied())
            .collect(),
        curve_x: m.curve.x.clone(),
        mean: m.curve.mean.clone(),
        std: m.curve.std.clone(),
        reference,
    }
}

/// Run `deelbo demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let mut config = DemoConfig::default();
    config.seed = args.seed;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let bar = ProgressBar::new(config.total_steps() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut started = false;
    let report = run_demo(&config, |label| {
        if started {
            bar.inc(1);
        }
        started = true;
        bar.set_message(label.to_string());
    })
    .context("the demo failed")?;
    bar.finish_and_clear();

    println!(
        "RFF regression, the paper's experiment: N = {} points x ~ N(0,1), y = sin(3x) + 0.1 eps (seed {}), R = {} features, {} test points",
        config.n_train, config.seed, config.features, config.n_test
    );
    println!(
        "Hyperparameters in data units; test NLL in nats per point; D/N = {}, D/(2N) = {}.\n",
        config.features as f64 / config.n_train as f64,
        config.features as f64 / (2.0 * config.n_train as f64)
    );
    println!("{}", render_table(&HEADER, &rows(&report.methods)));
    println!("kappa sweep (DE-ELBO):");
    println!("{}", render_table(&HEADER, &rows(&report.kappa_sweep)));

    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let subtitle = "dots: training data;  line: predictive mean;  shading: ±1 and ±2 predictive std;  gray: true sin(3x)".to_string();
    let methods = BandFigure {
        title: format!(
            "RFF regression (R = {}, N = {}): methods",
            config.features, config.n_train
        ),
        subtitle: subtitle.clone(),
        panels: report
            .methods
            .iter()
            .map(|m| panel(&report, m, m.label.clone()))
            .collect(),
        columns: 4,
        x_range: config.curve_range,
        y_range: (-2.5, 2.5),
        panel_size: (480, 360),
    };
    let sweep = BandFigure {
        title: format!(
            "DE-ELBO kappa sweep (R = {}, N = {})",
            config.features, config.n_train
        ),
        subtitle,
        panels: report
            .kappa_sweep
            .iter()
            .map(|m| {
                panel(
                    &report,
                    m,
                    format!("κ = {}", m.summary.kappa.unwrap_or(f64::NAN)),
                )
            })
            .collect(),
        columns: 3,
        x_range: config.curve_range,
        y_range: (-2.5, 2.5),
        panel_size: (480, 360),
    };
    let mut written = vec![json_path];
    written.extend(methods.save(&args.out.join("methods"))?);
    written.extend(sweep.save(&args.out.join("kappa_sweep"))?);
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!("total {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
