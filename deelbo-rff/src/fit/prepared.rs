//! The standardized data and the seeded features every method starts from.

use ndarray::{Array1, Array2};

use crate::data::{Dataset, Standardizer};
use crate::error::Result;
use crate::features::RffFeatures;
use crate::fit::config::RffConfig;

/// Standardized data and features shared by the methods.
pub(crate) struct Prepared {
    pub x: Array2<f64>,
    pub y: Array1<f64>,
    pub standardizer: Standardizer,
    pub features: RffFeatures,
}

impl Prepared {
    pub(crate) fn new(data: &Dataset, config: &RffConfig) -> Result<Self> {
        let standardizer = if config.standardize {
            Standardizer::fit(data)
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
        })
    }

    /// `N`.
    pub(crate) fn n(&self) -> usize {
        self.y.len()
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
