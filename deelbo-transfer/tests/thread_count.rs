//! The project rule "the same seed gives the same bits, at any thread count", for the candle
//! path: a few training steps of the transfer [`Trainer`] (MLP and conv net, MAP and DE-ELBO,
//! the experiment's minibatch of 128 and the full set of N = 50), and the candle ops they are
//! made of, run in child processes of this test binary with `RAYON_NUM_THREADS` = 1, 2 and 3;
//! every child must print the same digests.
//!
//! The children are this binary itself (`std::env::current_exe()`) running only
//! [`child_prints_digests`] with `DEELBO_THREAD_CHILD=1`: candle reads `RAYON_NUM_THREADS`
//! for its matmul parallelism on every call and rayon reads it once for the global pool, so
//! only a fresh process runs at another thread count.
//!
//! At candle 0.11.1 every digest agrees (see `deelbo_candle`'s crate docs for why). The test
//! does catch a thread-split reduction: with the gradient-clipping norm summed in
//! `get_num_threads()` f32 parts (a deliberate, reverted change to `NesterovSgd::step`) every
//! training digest differed at 2 and 3 threads while the op digests stayed equal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers unwrap like the tests

use std::collections::BTreeMap;
use std::process::Command;

use candle_core::{DType, Device, Tensor, Var};
use deelbo_core::KappaRule;
use deelbo_transfer::data::load_digits;
use deelbo_transfer::pretrain::pretrain;
use deelbo_transfer::synthetic;
use deelbo_transfer::train::{BackbonePrior, RunInputs, RunObjective, Trainer, train_run};
use deelbo_transfer::{Architecture, PretrainSettings, TrainSettings};

mod common;
use common::{normals, setup};

const CHILD: &str = "DEELBO_THREAD_CHILD";
const STEPS: usize = 4;

/// FNV-1a over the bits of every value.
#[derive(Clone, Copy)]
struct Digest(u64);

impl Digest {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn tensor(&mut self, t: &Tensor) {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .for_each(|v| self.word(u64::from(v.to_bits()))),
            DType::F64 => t
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .for_each(|v| self.word(v.to_bits())),
            other => panic!("digest of {other:?}"),
        }
    }
}

fn digest_of(tensors: &[&Tensor]) -> String {
    let mut d = Digest::new();
    tensors.iter().for_each(|t| d.tensor(t));
    format!("{:016x}", d.0)
}

/// `STEPS` training steps; the digest of every loss, mean, `rho` and buffer afterwards.
fn train_digest(arch: Architecture, n: usize, objective: RunObjective) -> String {
    let (pretrained, batch) = setup(arch, n);
    let inputs = synthetic::run_inputs(arch, &pretrained, &batch);
    let settings = TrainSettings {
        steps: 100,
        ..TrainSettings::default()
    };
    let mut t = Trainer::new(&inputs, objective, 1e-2, 7, &settings).unwrap();
    let mut losses = Vec::new();
    for step in 0..STEPS {
        losses.push(t.step(&batch.x, &batch.y, step).unwrap());
    }
    let model = t.model();
    let mut d = Digest::new();
    losses.iter().for_each(|l| d.word(l.to_bits()));
    model
        .mean_vars()
        .iter()
        .for_each(|v: &Var| d.tensor(v.as_tensor()));
    d.tensor(model.rho().as_tensor());
    model.buffers().iter().for_each(|(_, b)| d.tensor(b));
    format!("{:016x}", d.0)
}

/// The real pipeline, shortened: pretraining (main phase and SWAG) on the source digits, then a
/// DE-ELBO run through `train_run` (minibatches by `index_select`, batch-norm calibration, the
/// final loss, posterior-mean and predictive test metrics) on `n` target rows.
fn pipeline_digests(arch: Architecture, out: &mut BTreeMap<String, String>) {
    let dev = Device::Cpu;
    let tasks = load_digits().unwrap();
    let settings = PretrainSettings {
        steps: 30,
        swag_steps: 10,
        swag_every: 5,
        swag_rank: 2,
        ..PretrainSettings::default()
    };
    let pre = pretrain(arch, &tasks.source, &settings, &dev).unwrap();
    let mut d = Digest::new();
    pre.tensors.iter().for_each(|(_, t)| d.tensor(t));
    pre.swag.mean.iter().for_each(|v| d.word(v.to_bits()));
    pre.swag.variance.iter().for_each(|v| d.word(v.to_bits()));
    pre.swag.deviations.iter().for_each(|v| d.word(v.to_bits()));
    d.word(pre.record.source_nll.to_bits());
    out.insert(format!("pipeline {arch} pretrain"), format!("{:016x}", d.0));
    let rows = tasks.target.rows();
    for n in [50, 300] {
        let train = tasks
            .target
            .tensors(&(0..n).collect::<Vec<_>>(), &dev)
            .unwrap();
        let test = tasks
            .target
            .tensors(&(n..rows).collect::<Vec<_>>(), &dev)
            .unwrap();
        let inputs = RunInputs {
            arch,
            pretrained: &pre,
            ptyl: None,
            train: &train,
            validation: None,
            test: &test,
            predictive_samples: 3,
        };
        let settings = TrainSettings {
            steps: 20,
            ..TrainSettings::default()
        };
        let objective = RunObjective::Variational {
            rule: KappaRule::DataEmphasized,
            prior: BackbonePrior::L2sp,
        };
        let mut r = train_run(inputs, objective, 5e-2, 3, &settings).unwrap();
        (r.seconds, r.cpu_seconds, r.eval_seconds) = (0.0, None, 0.0);
        out.insert(
            format!("pipeline {arch} de-elbo n{n}"),
            format!("{:?}", serde_json_bits(&r)),
        );
    }
}

/// Every float of a run outcome by its bits (Debug prints shortest round-trip decimals, which
/// identify the bits).
fn serde_json_bits(r: &deelbo_transfer::RunOutcome) -> String {
    let mut d = Digest::new();
    for b in format!("{r:?}").bytes() {
        d.word(u64::from(b));
    }
    format!("{:016x}", d.0)
}

/// Digest of the value and the gradients of `f(inputs)` summed with fixed weights.
fn op_digest(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) -> String {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts);
    let w = normals(77, out.elem_count(), out.dims());
    let grads = out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let mut all = vec![out.clone()];
    all.extend(ts.iter().map(|t| grads.get(t).unwrap().clone()));
    digest_of(&all.iter().collect::<Vec<_>>())
}

/// Every digest, by name: single ops first, then training runs.
fn digests() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // The MLP's matmuls (forward and backward shapes come from the autodiff).
    for (m, k, n) in [
        (128, 64, 256),
        (128, 256, 256),
        (50, 256, 256),
        (128, 256, 5),
        (900, 64, 256),
        (900, 256, 256),
    ] {
        let a = normals(1, m * k, &[m, k]);
        let b = normals(2, n * k, &[n, k]);
        out.insert(
            format!("op matmul {m}x{k} @ ({n}x{k})^T"),
            op_digest(&[a, b], |t| t[0].matmul(&t[1].t().unwrap()).unwrap()),
        );
    }
    // A sweep over gemm's regimes (tiny, gemv, horizontal kernel, packed or unpacked operands,
    // k blocked in several chunks), row- and column-major right operands, f32 and f64.
    let mut sweep = Digest::new();
    for m in [1usize, 7, 33, 65, 129, 700] {
        for n in [1usize, 5, 64, 65, 300] {
            for k in [3usize, 64, 513, 2000] {
                let a = normals(5, m * k, &[m, k]);
                let b = normals(6, k * n, &[k, n]);
                let bt = normals(6, k * n, &[n, k]).t().unwrap();
                for (x, y) in [(&a, &b), (&a, &bt)] {
                    sweep.tensor(&x.matmul(y).unwrap());
                    let (x, y) = (
                        x.to_dtype(DType::F64).unwrap(),
                        y.to_dtype(DType::F64).unwrap(),
                    );
                    sweep.tensor(&x.matmul(&y).unwrap());
                }
            }
        }
    }
    out.insert("op matmul sweep".to_string(), format!("{:016x}", sweep.0));
    // The conv net's convolutions.
    for (n, c_in, c_out, hw) in [
        (128, 1, 8, 8),
        (128, 8, 16, 4),
        (50, 8, 16, 4),
        (900, 1, 8, 8),
        (900, 8, 16, 4),
    ] {
        let x = normals(3, n * c_in * hw * hw, &[n, c_in, hw, hw]);
        let k = normals(4, c_out * c_in * 9, &[c_out, c_in, 3, 3]);
        out.insert(
            format!("op conv2d {n}x{c_in}x{hw}x{hw} * {c_out}x{c_in}x3x3"),
            op_digest(&[x, k], |t| t[0].conv2d(&t[1], 1, 1, 1, 1).unwrap()),
        );
    }
    const MAP: RunObjective = RunObjective::Map {
        alpha: 1e-3,
        beta: 1e-3,
    };
    const DE_ELBO: RunObjective = RunObjective::Variational {
        rule: KappaRule::DataEmphasized,
        prior: BackbonePrior::L2sp,
    };
    for arch in Architecture::ALL {
        for n in [128, 50] {
            for (name, objective) in [("map", MAP), ("de-elbo", DE_ELBO)] {
                out.insert(
                    format!("train {arch} batch{n} {name}"),
                    train_digest(arch, n, objective),
                );
            }
        }
    }
    for arch in Architecture::ALL {
        pipeline_digests(arch, &mut out);
    }
    out
}

/// Run only as a child of [`same_bits_at_one_two_and_three_threads`]: prints the digests.
#[test]
fn child_prints_digests() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    for (name, d) in digests() {
        println!("DIGEST {name} = {d}");
    }
}

fn child_digests(threads: usize) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "child_prints_digests",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env_remove("CANDLE_NUM_THREADS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child at {threads} threads failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DIGEST "))
        .filter_map(|l| l.split_once(" = "))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert!(!map.is_empty(), "no digests from the child:\n{stdout}");
    map
}

#[test]
fn same_bits_at_one_two_and_three_threads() {
    let one = child_digests(1);
    let mut differ = Vec::new();
    for threads in [2, 3] {
        let other = child_digests(threads);
        assert_eq!(
            one.keys().collect::<Vec<_>>(),
            other.keys().collect::<Vec<_>>()
        );
        for (name, d) in &one {
            let e = &other[name];
            println!("{name}: 1 thread {d}, {threads} threads {e}");
            if d != e {
                differ.push(format!("{name} at {threads} threads"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "bits depend on the thread count: {differ:?}"
    );
}
