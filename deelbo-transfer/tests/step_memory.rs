//! Training does not grow the heap: the resident set after 200 more [`Trainer::step`]s (MLP and
//! conv net, MAP and DE-ELBO) is within 32 MiB of where it was. Before the optimizer detached
//! the gradients, every momentum buffer held its step's graph and, through `b <- mu b + g`,
//! every earlier one: the MLP grew by about 2.5 MB per step (2.6 GB RSS after 1000 steps), and
//! the fresh pages made page faults the largest item of a step's profile. Linux only (reads
//! `/proc/self/status`); its own test binary, so no other test allocates meanwhile.

#![allow(clippy::unwrap_used)]

mod common;

use deelbo_core::KappaRule;
use deelbo_transfer::synthetic;
use deelbo_transfer::train::{BackbonePrior, RunObjective, Trainer};
use deelbo_transfer::{Architecture, TrainSettings};

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn two_hundred_steps_leave_the_resident_set_flat() {
    if resident_kib().is_none() {
        eprintln!("no /proc/self/status: skipped");
        return;
    }
    let objectives = [
        RunObjective::Map {
            alpha: 1e-3,
            beta: 1e-3,
        },
        RunObjective::Variational {
            rule: KappaRule::DataEmphasized,
            prior: BackbonePrior::L2sp,
        },
    ];
    for arch in Architecture::ALL {
        for objective in objectives {
            let (pretrained, batch) = common::setup(arch, 50);
            let inputs = synthetic::run_inputs(arch, &pretrained, &batch);
            let settings = TrainSettings {
                steps: 1000,
                ..TrainSettings::default()
            };
            let mut t = Trainer::new(&inputs, objective, 1e-2, 0, &settings).unwrap();
            for step in 0..20 {
                t.step(&batch.x, &batch.y, step).unwrap();
            }
            let before = resident_kib().unwrap();
            for step in 20..220 {
                t.step(&batch.x, &batch.y, step).unwrap();
            }
            let after = resident_kib().unwrap();
            let grown = after.saturating_sub(before);
            println!("{arch} {objective:?}: {before} -> {after} KiB");
            assert!(
                grown < 32 * 1024,
                "{arch} {objective:?}: the resident set grew by {grown} KiB in 200 steps"
            );
        }
    }
}
