//! The paper's RFF experiment from the library, printed as a table (the `deelbo demo` command
//! adds figures and `results.json`).
//!
//! Run: `cargo run --release -p deelbo-rff --example 01_paper_experiment`

use deelbo_rff::demo::{DemoConfig, MethodOutcome, run_demo};

fn row(m: &MethodOutcome) {
    let s = &m.summary;
    let l = match &s.lengthscale {
        deelbo_rff::Lengthscale::Isotropic(l) => format!("{l:.3}"),
        deelbo_rff::Lengthscale::Ard(ls) => format!("{ls:.3?}"),
    };
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>9.3} {:>8.4} {:>8.4} {:>8.3} {:>10.2} {:>6.3}",
        m.label,
        s.kappa
            .map(|k| format!("{k}"))
            .unwrap_or_else(|| "-".into()),
        l,
        format!("{:.3}", s.noise_std),
        s.prior_variance,
        s.train_rmse,
        m.test_rmse,
        m.test_nll,
        s.objective,
        m.seconds
    );
}

fn main() -> Result<(), deelbo_rff::RffError> {
    let config = DemoConfig::default();
    let report = run_demo(&config, |_| {})?;
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>8} {:>10} {:>6}",
        "method",
        "kappa",
        "l",
        "noise",
        "prior_var",
        "train",
        "test",
        "testNLL",
        "objective",
        "sec"
    );
    for m in report.methods.iter().chain(&report.kappa_sweep) {
        row(m);
    }
    Ok(())
}
