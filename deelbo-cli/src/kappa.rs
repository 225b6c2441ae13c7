//! `deelbo kappa`: the kappa rules and their values.

use anyhow::Result;
use clap::Args;
use deelbo_core::KappaRule;

/// Arguments of `deelbo kappa`.
#[derive(Debug, Args)]
pub struct KappaArgs {
    /// D, the number of model parameters (for RFF regression: the number of features R).
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u64).range(1..))]
    pub params: u64,
    /// N, the number of training examples.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub examples: u64,
}

/// Run `deelbo kappa`.
pub fn run(args: &KappaArgs) -> Result<()> {
    let (d, n) = (args.params as usize, args.examples as usize);
    println!(
        "D = {d} parameters, N = {n} examples; the objective is kappa * sum_n E_q[log p(y_n|w)] - KL(q||p)"
    );
    println!("{:<28} {:>12}  note", "rule", "kappa");
    let rules = [
        (
            KappaRule::Standard,
            "standard (plain ELBO)",
            "a lower bound on the log evidence; underfits when D >> N",
        ),
        (
            KappaRule::DataEmphasized,
            "data-emphasized D/N",
            "the recommendation when D >> N",
        ),
        (
            KappaRule::HalfDataEmphasized,
            "half D/(2N)",
            "what the paper's RFF figure used",
        ),
    ];
    for (rule, name, note) in rules {
        let k = rule.resolve(d, n)?;
        let clamp = if k.clamped() {
            " (raised to 1: D/N < 1)"
        } else {
            ""
        };
        println!("{name:<28} {:>12}  {note}{clamp}", format!("{}", k.value()));
    }
    println!(
        "RFF regression with learned noise: for kappa > D/N the objective grows without bound as the noise shrinks\n(N <= D), so keep kappa <= D/N there."
    );
    Ok(())
}
