//! Regression data: a validated `N x d` input matrix with `N` targets, and the per-column
//! standardization a fitted model stores.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RffError, ensure_finite_matrix, ensure_finite_vector};

/// A validated regression data set: `x` is `N x d`, `y` has `N` entries, everything finite,
/// `N >= 2`, `d >= 1`, and the targets are not all equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    x: Array2<f64>,
    y: Array1<f64>,
}

impl Dataset {
    /// Validate and wrap inputs `x` (`N x d`) and targets `y` (`N`).
    ///
    /// Errors: shape mismatch, NaN/Inf (with row and column), fewer than 2 rows, no input
    /// columns, constant targets.
    pub fn new(x: Array2<f64>, y: Array1<f64>) -> Result<Self> {
        if x.nrows() != y.len() {
            return Err(RffError::Shape {
                name: "targets (one per input row)".to_string(),
                expected: x.nrows(),
                found: y.len(),
            });
        }
        if x.ncols() == 0 {
            return Err(RffError::Shape {
                name: "input columns (at least one)".to_string(),
                expected: 1,
                found: 0,
            });
        }
        if y.len() < 2 {
            return Err(RffError::TooFewExamples {
                required: 2,
                found: y.len(),
            });
        }
        ensure_finite_matrix("inputs", x.view())?;
        ensure_finite_vector("targets", y.view())?;
        let first = y[0];
        if y.iter().all(|&v| v == first) {
            return Err(RffError::ConstantTarget { value: first });
        }
        Ok(Self { x, y })
    }

    /// The inputs, `N x d`.
    pub fn x(&self) -> ArrayView2<'_, f64> {
        self.x.view()
    }

    /// The targets, `N`.
    pub fn y(&self) -> ArrayView1<'_, f64> {
        self.y.view()
    }

    /// `N`, the number of examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Always `false` (a data set holds at least 2 examples); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// `d`, the number of input columns.
    pub fn dim(&self) -> usize {
        self.x.ncols()
    }

    /// The examples at `rows`, in that order (a subset for a train/validation split).
    pub fn select(&self, rows: &[usize]) -> Result<Self> {
        Self::new(self.x.select(Axis(0), rows), self.y.select(Axis(0), rows))
    }
}

/// Per-column affine standardization stored with a model:
/// `x_s = (x - x_mean)/x_std` column-wise and `y_s = (y - y_mean)/y_std`.
///
/// Columns with zero spread get `x_std = 1` (they are then constant zero after centering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Column means of the training inputs (`d`).
    pub x_mean: Vec<f64>,
    /// Column standard deviations of the training inputs (`d`, population form `1/N`).
    pub x_std: Vec<f64>,
    /// Mean of the training targets.
    pub y_mean: f64,
    /// Standard deviation of the training targets (population form, `> 0`).
    pub y_std: f64,
}

/// The error for a column (`None`: the targets) whose mean or spread overflows `f64`.
fn too_large(column: Option<usize>) -> RffError {
    RffError::Overflow {
        name: column.map_or_else(
            || "the targets".to_string(),
            |k| format!("input column {k}"),
        ),
        reason: "values too large: the mean or spread overflows f64 (rescale the column)"
            .to_string(),
    }
}

/// Population mean and standard deviation `(mean, sqrt(mean((v - mean)^2)))`.
fn mean_std(v: ArrayView1<'_, f64>) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = deelbo_core::deterministic_sum(v.iter().copied()) / n;
    let var = deelbo_core::deterministic_sum(v.iter().map(|&a| (a - mean) * (a - mean))) / n;
    (mean, var.sqrt())
}

impl Standardizer {
    /// Fit to a training set. Errors when a column's spread is not finite (values near the
    /// largest `f64`, whose squares overflow): such a column cannot be standardized.
    pub fn fit(data: &Dataset) -> Result<Self> {
        for (k, c) in data.x.columns().into_iter().enumerate() {
            let (m, s) = mean_std(c);
            if !(m.is_finite() && s.is_finite()) {
                return Err(too_large(Some(k)));
            }
        }
        let (ym, ys) = mean_std(data.y.view());
        if !(ym.is_finite() && ys.is_finite()) {
            return Err(too_large(None));
        }
        Ok(Self::fit_checked(data))
    }

    fn fit_checked(data: &Dataset) -> Self {
        let (x_mean, x_std): (Vec<f64>, Vec<f64>) = data
            .x
            .columns()
            .into_iter()
            .map(|c| {
                let (m, s) = mean_std(c);
                (m, if s > 0.0 && s.is_finite() { s } else { 1.0 })
            })
            .unzip();
        let (y_mean, y_std) = mean_std(data.y.view());
        Self {
            x_mean,
            x_std,
            y_mean,
            y_std: if y_std > 0.0 { y_std } else { 1.0 },
        }
    }

    /// The identity transform for `d` columns (no standardization).
    pub fn identity(d: usize) -> Self {
        Self {
            x_mean: vec![0.0; d],
            x_std: vec![1.0; d],
            y_mean: 0.0,
            y_std: 1.0,
        }
    }

    /// `d`, the number of input columns this transform expects.
    pub fn dim(&self) -> usize {
        self.x_mean.len()
    }

    /// Standardized inputs `(x - x_mean)/x_std` (`N x d`). Errors on a column-count mismatch.
    pub fn transform_x(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        if x.ncols() != self.dim() {
            return Err(RffError::Shape {
                name: "input columns".to_string(),
                expected: self.dim(),
                found: x.ncols(),
            });
        }
        let mut out = x.to_owned();
        for (mut col, (m, s)) in out
            .columns_mut()
            .into_iter()
            .zip(self.x_mean.iter().zip(&self.x_std))
        {
            col.mapv_inplace(|v| (v - m) / s);
        }
        Ok(out)
    }

    /// Standardized targets `(y - y_mean)/y_std`.
    pub fn transform_y(&self, y: ArrayView1<'_, f64>) -> Array1<f64> {
        y.mapv(|v| (v - self.y_mean) / self.y_std)
    }
}

/// The callback of [`RowSource::visit`]: one block of raw inputs (`rows x d`) and targets.
pub type BlockFn<'f> = dyn FnMut(ArrayView2<'_, f64>, ArrayView1<'_, f64>) -> Result<()> + 'f;

/// Rows of a regression data set that can be read more than once, block by block, without
/// holding them all: what a fit streams over when the data do not fit in memory (`deelbo rff
/// fit` reads its CSV file this way). Every visit must yield the same rows in the same order and
/// the same blocks (the block boundaries fix the order of the sums, hence the bits).
pub trait RowSource {
    /// `d`, the number of input columns.
    fn dim(&self) -> usize;
    /// Call `block(x, y)` for consecutive blocks of raw (unstandardized) rows: `x` is
    /// `rows x d`, `y` has `rows` entries, every value finite. Errors (a bad cell, an I/O
    /// failure) stop the visit.
    fn visit(&mut self, block: &mut BlockFn<'_>) -> Result<()>;
}

/// Rows per block of [`Dataset`]'s own [`RowSource`] implementation.
pub const MEMORY_BLOCK_ROWS: usize = 4096;

impl RowSource for Dataset {
    fn dim(&self) -> usize {
        self.x.ncols()
    }

    fn visit(&mut self, block: &mut BlockFn<'_>) -> Result<()> {
        for (a, b) in crate::parallel::row_blocks(self.len(), MEMORY_BLOCK_ROWS) {
            block(
                self.x.slice(ndarray::s![a..b, ..]),
                self.y.slice(ndarray::s![a..b]),
            )?;
        }
        Ok(())
    }
}

/// Streaming per-column moments (Welford's update: numerically stable in one pass), for the
/// standardization of data read block by block.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMoments {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl ColumnMoments {
    /// Moments of `columns` columns, no rows yet.
    pub fn new(columns: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; columns],
            m2: vec![0.0; columns],
        }
    }

    /// Add one row.
    ///
    /// # Formula
    /// `n += 1; delta = v - mean; mean += delta/n; M2 += delta (v - mean)`.
    pub fn push(&mut self, row: impl IntoIterator<Item = f64>) {
        self.count += 1;
        let n = self.count as f64;
        for ((m, s), v) in self.mean.iter_mut().zip(&mut self.m2).zip(row) {
            let delta = v - *m;
            *m += delta / n;
            *s += delta * (v - *m);
        }
    }

    /// Rows seen.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Column means.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Population standard deviations `sqrt(M2/n)`.
    pub fn std(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        // NaN (an overflowed sum) propagates; only rounding below zero is clamped.
        self.m2
            .iter()
            .map(|s| {
                let v = s / n;
                if v < 0.0 { 0.0 } else { v.sqrt() }
            })
            .collect()
    }
}

impl Standardizer {
    /// The standardization from streaming moments of the `d` input columns followed by the
    /// target (the last column), with the same zero-spread rule as [`Standardizer::fit`].
    pub fn from_moments(moments: &ColumnMoments) -> Result<Self> {
        let d = moments.mean.len().saturating_sub(1);
        let std = moments.std();
        let y_std = std[d];
        if y_std == 0.0 {
            return Err(RffError::ConstantTarget {
                value: moments.mean[d],
            });
        }
        for (k, (s, m)) in std.iter().zip(&moments.mean).enumerate() {
            if !(s.is_finite() && m.is_finite()) {
                return Err(too_large(if k == d { None } else { Some(k) }));
            }
        }
        Ok(Self {
            x_mean: moments.mean[..d].to_vec(),
            x_std: std[..d]
                .iter()
                .map(|&s| if s > 0.0 && s.is_finite() { s } else { 1.0 })
                .collect(),
            y_mean: moments.mean[d],
            y_std,
        })
    }
}
