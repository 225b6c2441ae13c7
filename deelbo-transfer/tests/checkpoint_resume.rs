//! Checkpoint / resume: an interrupted experiment continues without redoing or losing finished
//! runs; a fresh run refuses to overwrite, a changed configuration refuses to resume; and
//! `run_finetune` reproduces a protocol of the experiment bit for bit (same seed, same result).

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests themselves

use std::io::Write;

use deelbo_transfer::checkpoint::{RUNS_FILE, read_records};
use deelbo_transfer::{
    FinetuneConfig, Method, NoProgress, Progress, RunRecord, TransferConfig, TransferError,
    read_rows_json, run_experiment, run_finetune,
};

/// A tiny configuration: N = 10, one seed, a 2-cell grid, 2 ELBO learning rates, 15 steps,
/// a 30-step pretraining.
fn tiny(dir: &std::path::Path) -> TransferConfig {
    let mut c = TransferConfig::quick(dir);
    c.sizes = vec![10];
    c.protocol.alphas = vec![1e-3, 0.0];
    c.protocol.betas = vec![0.0];
    c.protocol.grid_lrs = vec![0.05];
    c.protocol.elbo_lrs = vec![0.05, 0.01];
    c.protocol.train.steps = 15;
    c.protocol.pretrain.steps = 30;
    c.protocol.pretrain.swag_steps = 10;
    c.protocol.pretrain.swag_every = 2;
    c.protocol.predictive_samples = 3;
    c
}

#[derive(Default)]
struct Count {
    runs: usize,
    begin: Option<(usize, usize)>,
}

impl Progress for Count {
    fn begin(&mut self, total: usize, done: usize) {
        self.begin = Some((total, done));
    }
    fn run_finished(&mut self, _r: &RunRecord) {
        self.runs += 1;
    }
}

fn same_result(a: &RunRecord, b: &RunRecord) {
    assert_eq!(a.key(), b.key());
    assert_eq!(a.stage, b.stage);
    let (Some(x), Some(y)) = (&a.outcome, &b.outcome) else {
        panic!("run {:?} failed", a.key());
    };
    assert_eq!(x.test, y.test, "run {:?}", a.key());
    assert_eq!(x.final_train_loss, y.final_train_loss, "run {:?}", a.key());
    assert_eq!(x.blocks, y.blocks);
    assert_eq!(x.test_predictive, y.test_predictive);
}

#[test]
fn resume_neither_redoes_nor_loses_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path());
    let total = 3 + 2 + 2 + 2;
    let mut count = Count::default();
    let first = run_experiment(&config, &mut count).unwrap();
    assert_eq!(count.runs, total);
    assert_eq!(first.records.len(), total);
    assert_eq!(first.rows.len(), 4);

    // A fresh run into the same directory is refused.
    assert!(matches!(
        run_experiment(&config, &mut NoProgress),
        Err(TransferError::OutputExists { .. })
    ));

    // Simulate an interruption: keep the first 4 runs and a torn fifth line.
    let log = dir.path().join(RUNS_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), total);
    let mut kept = lines[..4].join("\n");
    kept.push('\n');
    kept.push_str(&lines[4][..lines[4].len() / 2]);
    std::fs::write(&log, kept).unwrap();

    let mut resumed_cfg = config.clone();
    resumed_cfg.resume = true;
    let mut count = Count::default();
    let second = run_experiment(&resumed_cfg, &mut count).unwrap();
    assert_eq!(count.begin, Some((total, 4)));
    assert_eq!(count.runs, total - 4, "only the missing runs are trained");
    assert_eq!(second.restored_runs, 4);
    assert_eq!(second.records.len(), total);
    // Restored runs are the recorded ones (same wall time: not redone); the re-run ones give the
    // same results as before (deterministic).
    for (a, b) in first.records.iter().zip(&second.records) {
        same_result(a, b);
    }
    for (a, b) in first.records[..4].iter().zip(&second.records[..4]) {
        assert_eq!(a.seconds, b.seconds);
    }
    assert_eq!(first.rows.len(), second.rows.len());
    for (a, b) in first.rows.iter().zip(&second.rows) {
        assert_eq!(a.test, b.test);
        assert_eq!(a.blocks, b.blocks);
        assert_eq!(a.runs, b.runs);
    }
    // The log now holds every run exactly once, and transfer.json every row.
    let on_disk = read_records(&log).unwrap();
    assert_eq!(on_disk.len(), total);
    let mut keys: Vec<_> = on_disk.iter().map(|r| r.key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total);
    let rows = read_rows_json(&second.files.json).unwrap();
    assert_eq!(rows.len(), 4);

    // Resuming a finished experiment trains nothing.
    let mut count = Count::default();
    let third = run_experiment(&resumed_cfg, &mut count).unwrap();
    assert_eq!(count.runs, 0);
    assert_eq!(third.restored_runs, total);

    // A changed protocol refuses to resume.
    let mut changed = resumed_cfg.clone();
    changed.protocol.elbo_lrs = vec![0.05];
    match run_experiment(&changed, &mut NoProgress) {
        Err(TransferError::ConfigMismatch { difference, .. }) => {
            assert!(difference.contains("elbo-lrs"), "{difference}")
        }
        other => panic!("expected a config mismatch, got {other:?}"),
    }

    // A corrupt line in the middle is an error naming the line.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"not json\n{}\n").unwrap();
    match run_experiment(&resumed_cfg, &mut NoProgress) {
        Err(TransferError::Checkpoint { line, .. }) => assert_eq!(line, total + 1),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }

    // run_finetune of one protocol reproduces the experiment's row (cached network reused).
    let mut one = FinetuneConfig::new(10, 0, Method::DeElbo, dir.path());
    one.protocol = config.protocol.clone();
    let ft = run_finetune(&one, &mut NoProgress).unwrap();
    assert!(ft.pretrained_reused);
    let row = first
        .rows
        .iter()
        .find(|r| r.method == Method::DeElbo)
        .unwrap();
    assert_eq!(ft.row.test, row.test);
    assert_eq!(ft.row.blocks, row.blocks);
    assert_eq!(ft.records.len(), 2);

    // Bad configurations are rejected before any work.
    let mut bad = FinetuneConfig::new(3, 0, Method::MapGrid, dir.path());
    bad.protocol = config.protocol.clone();
    assert!(matches!(
        run_finetune(&bad, &mut NoProgress),
        Err(TransferError::InvalidConfig { .. })
    ));
}
