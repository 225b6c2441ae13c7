//! SWAG statistics of a block, collected over the last epochs of pretraining (Maddox et al.,
//! "A Simple Baseline for Bayesian Uncertainty in Deep Learning"), and the low-rank-plus-diagonal
//! prior they define for fine-tuning (the PTYL prior: "pre-train your loss").
//!
//! From snapshots `theta_1 .. theta_T` of the block's flat weights (tensors sorted by name,
//! row-major: the layout of a [`crate::BlockPlan`] block), with running mean
//! `theta_bar_t = (1/t) sum_{i<=t} theta_i`:
//!
//! - mean `theta_bar = theta_bar_T`, diagonal variance `var_j = (1/T) sum_t theta_tj^2 - theta_bar_j^2`
//!   (accumulated in `f64`, floored at `variance_floor * mean_j(var_j)`);
//! - deviation columns `d_t = theta_t - theta_bar_t` of the last `K` snapshots (`D x K`);
//! - the SWAG covariance `Sigma = (1/2) diag(var) + D D^T / (2 (K - 1))`, i.e. the prior
//!   covariance `Sigma_p = A + U U^T` with `A = diag(var)/2`, `U = D / sqrt(2 (K - 1))`.

use std::collections::VecDeque;

use candle_core::{DType, Device, Tensor, Var};
use deelbo_core::{LowRankPrior, check};
use ndarray::{Array1, Array2};

use crate::error::Result;

/// How SWAG statistics are turned into a prior.
///
/// # Parameters
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `rank` | 5 | `>= 2` | `K`, deviation columns kept (the last `K` snapshots) |
/// | `variance_floor` | `1e-3` | `> 0` | `var_j` is floored at this times the mean variance |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwagSettings {
    /// `K`, the number of deviation columns (the last `K` snapshots).
    pub rank: usize,
    /// Relative floor of the diagonal variance (weights that never moved would otherwise get
    /// an infinite prior precision).
    pub variance_floor: f64,
}

impl Default for SwagSettings {
    fn default() -> Self {
        Self {
            rank: 5,
            variance_floor: 1e-3,
        }
    }
}

impl SwagSettings {
    /// Check every value.
    pub fn validate(&self) -> Result<()> {
        check::in_range("SWAG rank K", self.rank as f64, 2.0..)?;
        check::positive("SWAG variance floor", self.variance_floor)?;
        Ok(())
    }
}

/// Accumulates SWAG statistics of a set of tensors, snapshot by snapshot.
#[derive(Debug)]
pub struct SwagCollector {
    tensors: Vec<(String, Var)>,
    rank: usize,
    count: usize,
    mean: Vec<f64>,
    second: Vec<f64>,
    deviations: VecDeque<Vec<f64>>,
}

/// The collected statistics of one block.
#[derive(Debug, Clone, PartialEq)]
pub struct SwagStatistics {
    /// `(name, shape)` of every tensor in flat-layout order (sorted by name).
    pub layout: Vec<(String, Vec<usize>)>,
    /// `theta_bar`, `D` values.
    pub mean: Vec<f64>,
    /// `var_j`, `D` values (not yet floored).
    pub variance: Vec<f64>,
    /// Deviation columns `d_t`, `D x K`.
    pub deviations: Array2<f64>,
    /// Number of snapshots `T`.
    pub snapshots: usize,
}

impl SwagCollector {
    /// A collector over `tensors` (sorted by name here, the block layout), keeping `rank`
    /// deviation columns.
    pub fn new(mut tensors: Vec<(String, Var)>, rank: usize) -> Result<Self> {
        check::in_range("SWAG rank K", rank as f64, 2.0..)?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let d: usize = tensors.iter().map(|(_, v)| v.elem_count()).sum();
        check::has_parameters("the SWAG block", d)?;
        Ok(Self {
            tensors,
            rank,
            count: 0,
            mean: vec![0.0; d],
            second: vec![0.0; d],
            deviations: VecDeque::with_capacity(rank),
        })
    }

    /// Add the tensors' current values as a snapshot.
    ///
    /// # Formula
    /// ```text
    /// theta_bar_t = theta_bar_{t-1} + (theta_t - theta_bar_{t-1})/t,
    /// s_t = s_{t-1} + (theta_t^2 - s_{t-1})/t,   d_t = theta_t - theta_bar_t
    /// ```
    pub fn collect(&mut self) -> Result<()> {
        let mut flat = Vec::with_capacity(self.mean.len());
        for (_, v) in &self.tensors {
            flat.extend(v.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        check::all_finite("SWAG snapshot", &flat)?;
        self.count += 1;
        let t = self.count as f64;
        for ((m, s), &x) in self.mean.iter_mut().zip(&mut self.second).zip(&flat) {
            *m += (x - *m) / t;
            *s += (x * x - *s) / t;
        }
        let dev: Vec<f64> = flat.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        if self.deviations.len() == self.rank {
            self.deviations.pop_front();
        }
        self.deviations.push_back(dev);
        Ok(())
    }

    /// Snapshots collected so far.
    pub fn snapshots(&self) -> usize {
        self.count
    }

    /// The statistics; needs at least `K` snapshots.
    pub fn statistics(&self) -> Result<SwagStatistics> {
        check::in_range(
            "SWAG snapshots (at least K)",
            self.count as f64,
            self.rank as f64..,
        )?;
        let d = self.mean.len();
        let mut deviations = Array2::zeros((d, self.rank));
        for (k, col) in self.deviations.iter().enumerate() {
            for (j, &x) in col.iter().enumerate() {
                deviations[[j, k]] = x;
            }
        }
        Ok(SwagStatistics {
            layout: self
                .tensors
                .iter()
                .map(|(n, v)| (n.clone(), v.dims().to_vec()))
                .collect(),
            mean: self.mean.clone(),
            variance: self
                .mean
                .iter()
                .zip(&self.second)
                .map(|(m, s)| (s - m * m).max(0.0))
                .collect(),
            deviations,
            snapshots: self.count,
        })
    }
}

impl SwagStatistics {
    /// `D`.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// `true` when `D = 0` (never, for collected statistics).
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// The SWAG covariance as a [`LowRankPrior`]: `A = max(var_j, floor)/2`,
    /// `U = D/sqrt(2 (K - 1))`, `floor = variance_floor * mean_j(var_j)`. Also returns how many
    /// diagonal entries were floored.
    ///
    /// # Formula
    /// ```text
    /// Sigma_p = (1/2) diag(max(var, floor)) + D D^T / (2 (K - 1))
    /// ```
    pub fn prior(&self, settings: &SwagSettings) -> Result<(LowRankPrior, usize)> {
        settings.validate()?;
        let k = self.deviations.ncols();
        check::in_range("SWAG rank K", k as f64, 2.0..)?;
        let mean_var = self.variance.iter().sum::<f64>() / self.len().max(1) as f64;
        let floor = check::positive(
            "SWAG variance floor (the block never moved)",
            settings.variance_floor * mean_var,
        )?;
        let mut floored = 0;
        let diag: Array1<f64> = self
            .variance
            .iter()
            .map(|&v| {
                if v < floor {
                    floored += 1;
                    0.5 * floor
                } else {
                    0.5 * v
                }
            })
            .collect();
        let u = &self.deviations / (2.0 * (k as f64 - 1.0)).sqrt();
        Ok((LowRankPrior::new(diag, u.view())?, floored))
    }

    /// The mean `theta_bar` as named tensors of `dtype` on `device`, in layout order.
    pub fn mean_tensors(&self, dtype: DType, device: &Device) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.layout.len());
        let mut offset = 0;
        for (name, shape) in &self.layout {
            let n: usize = shape.iter().product();
            let t = Tensor::from_vec(
                self.mean[offset..offset + n].to_vec(),
                shape.as_slice(),
                device,
            )?
            .to_dtype(dtype)?;
            out.push((name.clone(), t));
            offset += n;
        }
        Ok(out)
    }
}
