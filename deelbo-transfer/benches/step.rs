#![allow(missing_docs)] // criterion_group! generates undocumented items
#![allow(clippy::expect_used)] // a bench aborts on a broken setup
//! One training step, DE-ELBO vs MAP (+ L2-SP), same model, batch and device (CPU, the
//! experiment's `Trainer::step`): the MLP (64-256-256-5) and the conv net, at the experiment's
//! minibatch of 128 and at the full set of N = 50.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench -p deelbo-transfer --bench step
//! ```
//!
//! Criterion times each step; afterwards the bench prints the DE-ELBO/MAP step ratio measured
//! in the same process by interleaved rounds (median over rounds of wall time, and the ratio of
//! process CPU seconds over all rounds), so machine load drifts hit both sides alike, and each
//! side's median wall time per step, and beside them the time of drawing one step's standard
//! normals alone and the ratio that cost by itself sets (`noise floor`: the noise's bits are
//! the CPU/GPU contract, so no step can be cheaper than MAP plus this). A filter that matches no criterion case
//! (`cargo bench -p deelbo-transfer --bench step -- none`) skips the criterion timings; the
//! interleaved part still runs.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use deelbo_core::{InstructionSet, KappaRule, NoiseKey, fill_normals};
use deelbo_transfer::cputime::process_cpu_seconds;
use deelbo_transfer::data::Batch;
use deelbo_transfer::pretrain::Pretrained;
use deelbo_transfer::synthetic;
use deelbo_transfer::train::{BackbonePrior, RunObjective, Trainer};
use deelbo_transfer::{Architecture, TrainSettings};

type Setup = (Pretrained, Batch);

/// A "pretrained" network (seeded initialization) and a batch of `n` random 8x8 inputs.
fn setup(arch: Architecture, n: usize) -> Setup {
    (
        synthetic::pretrained(arch, 1).expect("network"),
        synthetic::batch(n, NoiseKey::new(9, 9)).expect("batch"),
    )
}

fn trainer(s: &Setup, arch: Architecture, objective: RunObjective) -> Trainer {
    let inputs = synthetic::run_inputs(arch, &s.0, &s.1);
    let settings = TrainSettings {
        steps: u32::MAX as usize,
        ..TrainSettings::default()
    };
    Trainer::new(&inputs, objective, 1e-2, 0, &settings).expect("trainer")
}

const MAP: RunObjective = RunObjective::Map {
    alpha: 1e-3,
    beta: 1e-3,
};
const DE_ELBO: RunObjective = RunObjective::Variational {
    rule: KappaRule::DataEmphasized,
    prior: BackbonePrior::L2sp,
};

const CASES: [(Architecture, usize); 4] = [
    (Architecture::Mlp, 128),
    (Architecture::Mlp, 50),
    (Architecture::Conv, 128),
    (Architecture::Conv, 50),
];

fn bench_steps(c: &mut Criterion) {
    for (arch, n) in CASES {
        let s = setup(arch, n);
        let mut group = c.benchmark_group(format!("step/{arch}/batch{n}"));
        group.measurement_time(Duration::from_secs(3));
        for (name, objective) in [("map", MAP), ("de-elbo", DE_ELBO)] {
            let mut t = trainer(&s, arch, objective);
            let mut step = 0usize;
            group.bench_function(name, |b| {
                b.iter(|| {
                    step += 1;
                    t.step(&s.1.x, &s.1.y, step).expect("step")
                })
            });
        }
        group.finish();
    }
}

/// Interleaved rounds of MAP and DE-ELBO steps: the median wall time per step of each (ms),
/// the DE-ELBO/MAP ratios (median wall, CPU seconds over all rounds), and the median time of
/// drawing one step's standard normals alone (the noise contract's Philox + Box-Muller for all
/// `D` weights, the one cost a MAP step has no counterpart of), interleaved with them.
struct Interleaved {
    map_ms: f64,
    de_elbo_ms: f64,
    noise_ms: f64,
    wall: f64,
    cpu: f64,
}

impl Interleaved {
    /// The ratio a DE-ELBO step would reach if drawing the noise were its only extra work.
    fn noise_floor(&self) -> f64 {
        1.0 + self.noise_ms / self.map_ms
    }
}

fn interleaved_ratio(arch: Architecture, n: usize, rounds: usize, steps: usize) -> Interleaved {
    let s = setup(arch, n);
    let mut map = trainer(&s, arch, MAP);
    let mut de = trainer(&s, arch, DE_ELBO);
    let mut walls = [Vec::new(), Vec::new()];
    let mut cpu = [0.0f64; 2];
    let mut step = 0usize;
    let mut eps = vec![0.0f32; de.model().num_params()];
    let mut noise_walls = Vec::new();
    for round in 0..rounds {
        let w0 = Instant::now();
        for k in 0..steps {
            fill_normals(NoiseKey::new(round as u64, k as u64), 0, &mut eps);
            std::hint::black_box(&eps);
        }
        noise_walls.push(w0.elapsed().as_secs_f64());
        for (k, t) in [&mut map, &mut de].into_iter().enumerate() {
            let c0 = process_cpu_seconds().unwrap_or(0.0);
            let w0 = Instant::now();
            for _ in 0..steps {
                step += 1;
                t.step(&s.1.x, &s.1.y, step).expect("step");
            }
            walls[k].push(w0.elapsed().as_secs_f64());
            cpu[k] += process_cpu_seconds().unwrap_or(0.0) - c0;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, d) = (median(&mut walls[0]), median(&mut walls[1]));
    Interleaved {
        map_ms: m * 1e3 / steps as f64,
        de_elbo_ms: d * 1e3 / steps as f64,
        noise_ms: median(&mut noise_walls) * 1e3 / steps as f64,
        wall: d / m,
        cpu: if cpu[0] > 0.0 {
            cpu[1] / cpu[0]
        } else {
            f64::NAN
        },
    }
}

criterion_group! {
    name = benches;
    // Plots need system fonts (criterion's plotters backend); the numbers do not.
    config = Criterion::default().without_plots();
    targets = bench_steps
}

fn main() {
    benches();
    Criterion::default()
        .without_plots()
        .configure_from_args()
        .final_summary();
    println!("\nDE-ELBO / MAP step ratio (same process, interleaved; target <= 1.15):");
    println!(
        "noise: {} lanes; `noise floor` = 1 + (one step's normals alone) / (MAP step)",
        InstructionSet::detected().name()
    );
    println!(
        "{:<6} {:>6} {:>12} {:>12} {:>14} {:>14} {:>14} {:>12}",
        "arch",
        "batch",
        "wall median",
        "cpu total",
        "map ms/step",
        "de-elbo ms/step",
        "noise ms/step",
        "noise floor"
    );
    for (arch, n) in CASES {
        let r = interleaved_ratio(arch, n, 15, 40);
        println!(
            "{:<6} {:>6} {:>11.3}x {:>11.3}x {:>14.3} {:>14.3} {:>14.3} {:>11.3}x",
            arch.name(),
            n,
            r.wall,
            r.cpu,
            r.map_ms,
            r.de_elbo_ms,
            r.noise_ms,
            r.noise_floor()
        );
    }
}
