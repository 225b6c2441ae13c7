//! Times training steps of one protocol in a process of its own, the situation of a user's own
//! training loop (the `step` bench keeps both protocols in one process, so each side's freed
//! memory serves the other's next step). Prints wall and CPU milliseconds per step and the
//! minor page faults per step: memory the allocator handed back to the kernel and the next
//! step faulted in again.
//!
//! ```text
//! cargo run --release -p deelbo-transfer --example step_timing -- [map|de-elbo] [mlp|conv] [batch] [steps]
//! ```
//!
//! Defaults: `de-elbo mlp 50 2000`, after 200 warm-up steps, on the synthetic setup of
//! `deelbo_transfer::synthetic` (the bench's). Set `RAYON_NUM_THREADS=1` for the bench's single
//! core; compare `GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432`
//! (glibc keeps freed blocks up to 32 MiB for reuse, the `deelbo` binary's `rff` setting).

use anyhow::{Context, Result, bail};
use deelbo_core::{KappaRule, NoiseKey};
use deelbo_transfer::cputime::{Stopwatch, minor_page_faults};
use deelbo_transfer::synthetic;
use deelbo_transfer::train::{BackbonePrior, RunObjective, Trainer};
use deelbo_transfer::{Architecture, TrainSettings};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let protocol = arg(0, "de-elbo");
    let objective = match protocol.as_str() {
        "map" => RunObjective::Map {
            alpha: 1e-3,
            beta: 1e-3,
        },
        "de-elbo" => RunObjective::Variational {
            rule: KappaRule::DataEmphasized,
            prior: BackbonePrior::L2sp,
        },
        other => bail!("protocol `{other}`: expected map or de-elbo"),
    };
    let arch: Architecture = arg(1, "mlp").parse().context("architecture")?;
    let n: usize = arg(2, "50").parse().context("batch size")?;
    let steps: usize = arg(3, "2000").parse().context("steps")?;
    if n == 0 || steps == 0 {
        bail!("batch size and steps must be positive");
    }
    let pretrained = synthetic::pretrained(arch, 1)?;
    let batch = synthetic::batch(n, NoiseKey::new(9, 9))?;
    let inputs = synthetic::run_inputs(arch, &pretrained, &batch);
    let settings = TrainSettings {
        steps: u32::MAX as usize,
        ..TrainSettings::default()
    };
    let mut trainer = Trainer::new(&inputs, objective, 1e-2, 0, &settings)?;
    for step in 1..=200 {
        trainer.step(&batch.x, &batch.y, step)?;
    }
    let faults = minor_page_faults();
    let watch = Stopwatch::start();
    for step in 201..201 + steps {
        trainer.step(&batch.x, &batch.y, step)?;
    }
    let per_step = |s: f64| s * 1e3 / steps as f64;
    let cpu = watch.cpu_seconds().map(per_step);
    let faults = faults
        .zip(minor_page_faults())
        .map(|(a, b)| (b - a) as f64 / steps as f64);
    println!(
        "{protocol} {arch} batch {n}: {:.3} ms/step wall, {} ms/step CPU, {} page faults/step",
        per_step(watch.wall_seconds()),
        cpu.map_or("n/a".into(), |c| format!("{c:.3}")),
        faults.map_or("n/a".into(), |f| format!("{f:.1}")),
    );
    Ok(())
}
