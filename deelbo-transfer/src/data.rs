//! The 8x8 handwritten digits (1797 images, shipped inside smartcore's `datasets` feature; no
//! download), the source task (digits 0–4) and the target task (digits 5–9, relabelled 0–4), and
//! the seeded stratified splits of the protocol.
//!
//! Pixels are integers `0..=16` scaled to `[0, 1]`. All randomness (subset choice, holdout split,
//! minibatch order) comes from the core's Philox stream [`deelbo_core::uniform_at`], so a
//! seed fixes every split on every platform.

use candle_core::{Device, Tensor};
use deelbo_core::NoiseKey;
use deelbo_core::uniform_at;

use crate::error::{Result, TransferError};

/// Pixels per image.
pub const FEATURES: usize = 64;
/// Classes per task (5 digits each).
pub const CLASSES: usize = 5;

/// Noise streams of the data splits (the `stream` word of the key; the seed is the run seed).
const STREAM_SUBSET: u64 = 0x5eed_0001;
const STREAM_HOLDOUT: u64 = 0x5eed_0002;
/// Minibatch permutations use `STREAM_BATCH + epoch`.
const STREAM_BATCH: u64 = 0x5eed_1000_0000;

/// A classification task: row-major features `(rows, 64)` in `[0, 1]` and labels in `0..5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Features, `rows * 64` values.
    pub features: Vec<f32>,
    /// Labels in `0..CLASSES`.
    pub labels: Vec<u32>,
}

impl Task {
    /// Number of examples.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Number of examples per class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut c = [0; CLASSES];
        for &y in &self.labels {
            c[y as usize] += 1;
        }
        c
    }

    /// The rows `idx` as tensors: features `(n, 64)` f32 and labels `(n)` u32, plus the labels.
    pub fn tensors(&self, idx: &[usize], device: &Device) -> Result<Batch> {
        let mut x = Vec::with_capacity(idx.len() * FEATURES);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&self.features[i * FEATURES..(i + 1) * FEATURES]);
            y.push(self.labels[i]);
        }
        Ok(Batch {
            x: Tensor::from_vec(x, (idx.len(), FEATURES), device)?,
            y: Tensor::from_vec(y.clone(), idx.len(), device)?,
            labels: y,
        })
    }
}

/// Examples as candle tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Features `(n, 64)`, f32.
    pub x: Tensor,
    /// Labels `(n)`, u32.
    pub y: Tensor,
    /// The labels on the host.
    pub labels: Vec<u32>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The two tasks of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitTasks {
    /// Digits 0–4 (labels 0–4).
    pub source: Task,
    /// Digits 5–9 (labels 0–4 for digits 5–9).
    pub target: Task,
}

/// Load the digits from smartcore and split them into the source and target tasks. Errors if the
/// shipped data does not have the documented shape.
pub fn load_digits() -> Result<DigitTasks> {
    let ds = smartcore::dataset::digits::load_dataset();
    if ds.num_features != FEATURES || ds.data.len() != ds.num_samples * FEATURES {
        return Err(TransferError::Data {
            name: "digits".to_string(),
            reason: format!(
                "smartcore digits has {} features and {} values for {} samples",
                ds.num_features,
                ds.data.len(),
                ds.num_samples
            ),
        });
    }
    let mut source = Task {
        features: Vec::new(),
        labels: Vec::new(),
    };
    let mut target = source.clone();
    for (row, &t) in ds.target.iter().enumerate() {
        if !(t.is_finite() && (0.0..=9.0).contains(&t) && t.fract() == 0.0) {
            return Err(TransferError::Data {
                name: "digits".to_string(),
                reason: format!("row {row} has label {t}, expected an integer 0..=9"),
            });
        }
        let digit = t as u32;
        let pixels = &ds.data[row * FEATURES..(row + 1) * FEATURES];
        let task = if digit < 5 { &mut source } else { &mut target };
        task.features.extend(pixels.iter().map(|p| p / 16.0));
        task.labels.push(digit % 5);
    }
    Ok(DigitTasks { source, target })
}

/// Which rows form the minibatch of each step: consecutive slices of a concatenation of seeded
/// permutations (one per epoch, stream `STREAM_BATCH + epoch`); the full set when
/// `batch_size >= n`.
#[derive(Debug, Clone)]
pub(crate) struct BatchPlan {
    n: usize,
    size: usize,
    seed: u64,
    order: Vec<u32>,
    epoch: u64,
    pos: usize,
}

impl BatchPlan {
    pub(crate) fn new(n: usize, size: usize, seed: u64) -> Self {
        Self {
            n,
            size,
            seed,
            order: Vec::new(),
            epoch: 0,
            pos: 0,
        }
    }

    /// Whether every step uses the whole set.
    pub(crate) fn full(&self) -> bool {
        self.size >= self.n
    }

    /// The rows of the next minibatch.
    pub(crate) fn next(&mut self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.size);
        while out.len() < self.size {
            if self.pos == self.order.len() {
                let key = NoiseKey::new(self.seed, STREAM_BATCH + self.epoch);
                self.order = permutation(self.n, key)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                self.epoch += 1;
                self.pos = 0;
            }
            let take = (self.size - out.len()).min(self.order.len() - self.pos);
            out.extend_from_slice(&self.order[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }
}

/// A seeded permutation of `0..n` (Fisher–Yates driven by `uniform_at(key, i)`).
pub fn permutation(n: usize, key: NoiseKey) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let u = uniform_at(key, i as u64);
        let j = ((u * (i + 1) as f64) as usize).min(i);
        p.swap(i, j);
    }
    p
}

/// How many of `n` examples each class gets: `floor(n/C)`, plus one for the first `n mod C`.
pub fn per_class_counts(n: usize) -> [usize; CLASSES] {
    let mut c = [n / CLASSES; CLASSES];
    for x in c.iter_mut().take(n % CLASSES) {
        *x += 1;
    }
    c
}

/// Rows of a task split into a training subset and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows (sorted by class, then by draw order).
    pub train: Vec<usize>,
    /// All other rows (the test set), ascending.
    pub rest: Vec<usize>,
}

fn rows_by_class(labels: &[u32], rows: &[usize]) -> Vec<Vec<usize>> {
    let mut by = vec![Vec::new(); CLASSES];
    for &r in rows {
        by[labels[r] as usize].push(r);
    }
    by
}

/// A stratified training subset of `n` rows ([`per_class_counts`]) drawn with `seed`; the
/// remaining rows are the test set. Errors when a class has too few rows to leave at least one
/// test example.
pub fn stratified_subset(task: &Task, n: usize, seed: u64) -> Result<Split> {
    let all: Vec<usize> = (0..task.rows()).collect();
    let by = rows_by_class(&task.labels, &all);
    let counts = per_class_counts(n);
    let mut train = Vec::with_capacity(n);
    for (c, rows) in by.iter().enumerate() {
        if counts[c] >= rows.len() {
            return Err(TransferError::Data {
                name: "split".to_string(),
                reason: format!(
                    "class {c} has {} examples; {} training examples leave none for testing",
                    rows.len(),
                    counts[c]
                ),
            });
        }
        let perm = permutation(
            rows.len(),
            NoiseKey::new(seed, STREAM_SUBSET + c as u64 * 16),
        );
        train.extend(perm[..counts[c]].iter().map(|&k| rows[k]));
    }
    let mut chosen = vec![false; task.rows()];
    for &r in &train {
        chosen[r] = true;
    }
    let rest = all.into_iter().filter(|&r| !chosen[r]).collect();
    Ok(Split { train, rest })
}

/// Split training rows into fit / validation, stratified: each class puts
/// `round(fraction * count)` rows (at least 1) into validation and keeps at least one for fitting.
/// Errors when a class has fewer than 2 rows.
pub fn stratified_holdout(
    task: &Task,
    rows: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let by = rows_by_class(&task.labels, rows);
    let mut fit = Vec::new();
    let mut val = Vec::new();
    for (c, rs) in by.iter().enumerate() {
        if rs.len() < 2 {
            return Err(TransferError::Data {
                name: "split".to_string(),
                reason: format!(
                    "class {c} has {} training examples; a validation split needs at least 2",
                    rs.len()
                ),
            });
        }
        let k = ((fraction * rs.len() as f64).round() as usize).clamp(1, rs.len() - 1);
        let perm = permutation(
            rs.len(),
            NoiseKey::new(seed, STREAM_HOLDOUT + c as u64 * 16),
        );
        val.extend(perm[..k].iter().map(|&i| rs[i]));
        fit.extend(perm[k..].iter().map(|&i| rs[i]));
    }
    Ok((fit, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_into_two_five_class_tasks() {
        let d = load_digits().unwrap();
        assert_eq!(d.source.rows() + d.target.rows(), 1797);
        assert!(d.source.class_counts().iter().all(|&c| c >= 170));
        assert!(d.target.class_counts().iter().all(|&c| c >= 170));
        assert!(d.target.features.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }

    #[test]
    fn subsets_are_stratified_disjoint_and_seeded() {
        let d = load_digits().unwrap();
        let s = stratified_subset(&d.target, 50, 3).unwrap();
        assert_eq!(s.train.len(), 50);
        assert_eq!(s.train.len() + s.rest.len(), d.target.rows());
        let mut counts = [0; CLASSES];
        for &r in &s.train {
            counts[d.target.labels[r] as usize] += 1;
            assert!(!s.rest.contains(&r));
        }
        assert_eq!(counts, [10; CLASSES]);
        assert_eq!(s, stratified_subset(&d.target, 50, 3).unwrap());
        assert_ne!(s.train, stratified_subset(&d.target, 50, 4).unwrap().train);
        let (fit, val) = stratified_holdout(&d.target, &s.train, 0.2, 3).unwrap();
        assert_eq!((fit.len(), val.len()), (40, 10));
        assert!(stratified_subset(&d.target, 1000, 0).is_err());
        assert!(stratified_holdout(&d.target, &s.train[..5], 0.2, 0).is_err());
    }

    #[test]
    fn permutation_is_a_permutation() {
        let p = permutation(100, NoiseKey::new(1, 2));
        let mut q = p.clone();
        q.sort_unstable();
        assert_eq!(q, (0..100).collect::<Vec<_>>());
        assert_ne!(p, (0..100).collect::<Vec<_>>());
    }
}
