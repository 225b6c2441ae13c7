//! The standardized rows the hyperparameter search runs on, and the seeded features every
//! method starts from. With more rows than [`crate::fit::SearchSettings::max_rows`] the search
//! runs on a seeded subsample and the final model on sums over every row
//! ([`crate::fit::statistics`]).

use std::collections::BinaryHeap;

use deelbo_core::{NoiseKey, uniform_at};
use ndarray::{Array1, Array2};

use crate::data::{ColumnMoments, Dataset, RowSource, Standardizer};
use crate::error::{Result, RffError};
use crate::features::RffFeatures;
use crate::fit::config::RffConfig;

/// Noise stream of the search subsample.
pub const SUBSAMPLE_STREAM: u64 = 0x5355_4253;

/// Standardized data and features shared by the methods.
pub(crate) struct Prepared {
    /// The standardized rows of the search (all rows unless `subsampled`).
    pub x: Array2<f64>,
    /// Their standardized targets.
    pub y: Array1<f64>,
    pub standardizer: Standardizer,
    pub features: RffFeatures,
    /// `N`, all training rows.
    n_total: usize,
    /// Whether `x`, `y` are a subsample (then the final model needs a pass over every row).
    pub subsampled: bool,
}

impl Prepared {
    /// Every row in memory.
    pub(crate) fn new(data: &Dataset, config: &RffConfig) -> Result<Self> {
        let standardizer = if config.standardize {
            Standardizer::fit(data)?
        } else {
            Standardizer::identity(data.dim())
        };
        let x = standardizer.transform_x(data.x())?;
        let y = standardizer.transform_y(data.y());
        let features = RffFeatures::new(config.seed, config.features, data.dim())?;
        Ok(Self {
            x,
            y,
            standardizer,
            features,
            n_total: data.len(),
            subsampled: false,
        })
    }

    /// One pass over `source`: the standardization (streaming moments) and the seeded subsample
    /// of at most `max_rows` rows (the rows with the smallest `uniform((seed, stream), row)`,
    /// kept in row order: independent of block sizes and thread counts).
    pub(crate) fn from_source(
        source: &mut dyn RowSource,
        config: &RffConfig,
        max_rows: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        let d = source.dim();
        let mut moments = ColumnMoments::new(d + 1);
        let key = NoiseKey::new(config.seed, SUBSAMPLE_STREAM);
        // Max-heap on (key, row): pop the largest to keep the max_rows smallest.
        let mut heap: BinaryHeap<(u64, usize, Vec<u64>)> = BinaryHeap::new();
        let mut row_index = 0usize;
        source.visit(&mut |x, y| {
            for (r, &t) in x.rows().into_iter().zip(y.iter()) {
                moments.push(r.iter().copied().chain(std::iter::once(t)));
                let u = uniform_at(key, row_index as u64).to_bits();
                if heap.len() < max_rows
                    || heap
                        .peek()
                        .is_some_and(|top| (u, row_index) < (top.0, top.1))
                {
                    let v: Vec<u64> = r
                        .iter()
                        .chain(std::iter::once(&t))
                        .map(|v| v.to_bits())
                        .collect();
                    heap.push((u, row_index, v));
                    if heap.len() > max_rows {
                        heap.pop();
                    }
                }
                row_index += 1;
            }
            progress(row_index);
            Ok(())
        })?;
        let n_total = moments.count();
        if n_total < 2 {
            return Err(RffError::TooFewExamples {
                required: 2,
                found: n_total,
            });
        }
        let standardizer = if config.standardize {
            Standardizer::from_moments(&moments)?
        } else {
            Standardizer::identity(d)
        };
        let mut rows: Vec<(usize, Vec<u64>)> = heap.into_iter().map(|(_, i, v)| (i, v)).collect();
        rows.sort_by_key(|r| r.0);
        let raw_x = Array2::from_shape_fn((rows.len(), d), |(i, k)| f64::from_bits(rows[i].1[k]));
        let raw_y = Array1::from_shape_fn(rows.len(), |i| f64::from_bits(rows[i].1[d]));
        let x = standardizer.transform_x(raw_x.view())?;
        let y = standardizer.transform_y(raw_y.view());
        let features = RffFeatures::new(config.seed, config.features, d)?;
        Ok(Self {
            x,
            y,
            standardizer,
            features,
            n_total,
            subsampled: n_total > rows.len(),
        })
    }

    /// `N`, every training row.
    pub(crate) fn n(&self) -> usize {
        self.n_total
    }

    /// `sqrt(d)`, the scale of the lengthscale search.
    pub(crate) fn sqrt_d(&self) -> f64 {
        (self.x.ncols() as f64).sqrt()
    }

    /// `ln y_std`, the per-example log-density shift from standardized to original targets.
    pub(crate) fn ln_y_scale(&self) -> f64 {
        self.standardizer.y_std.ln()
    }

    /// A search profile `(t, value)` over `t = ln(l/sqrt(d))` as `(l in the first input's units,
    /// value)`.
    pub(crate) fn profile_in_input_units(&self, grid: &[(f64, f64)]) -> Vec<(f64, f64)> {
        let scale = self.sqrt_d() * self.standardizer.x_std[0];
        grid.iter().map(|&(t, v)| (t.exp() * scale, v)).collect()
    }
}
