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

/// Population mean and standard deviation `(mean, sqrt(mean((v - mean)^2)))`.
fn mean_std(v: ArrayView1<'_, f64>) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = deelbo_core::tensor::deterministic_sum(v.iter().copied()) / n;
    let var =
        deelbo_core::tensor::deterministic_sum(v.iter().map(|&a| (a - mean) * (a - mean))) / n;
    (mean, var.sqrt())
}

impl Standardizer {
    /// Fit to a training set.
    pub fn fit(data: &Dataset) -> Self {
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
