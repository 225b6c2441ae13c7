//! What a fit is asked to do: the [`Method`] and the [`RffConfig`] entry point with its nested
//! settings. Nothing here touches data; [`RffConfig::validate`] runs before any work.

use deelbo_core::{KappaRule, check};
use serde::{Deserialize, Serialize};

use crate::elbo::AscentSettings;
use crate::error::{Result, RffError};
use crate::evidence::NoiseBounds;
use crate::hyper::PosteriorFamily;
use crate::search::GridSearch;

/// How the hyperparameters are learned. What each maximizes (the model's `objective`):
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The closed-form `J_kappa` (docs/DESIGN.md §4) with the given kappa rule: `Standard` is the
    /// plain ELBO, `DataEmphasized` (`D/N`, `D = R`) and `HalfDataEmphasized` (`D/(2N)`) the
    /// DE-ELBO, `Fixed(k)` any `k >= 1`. Learns `l, tau, s_n, m, sigma`.
    Elbo(KappaRule),
    /// Type-II maximum likelihood: the exact log evidence `ln p(y | l, tau, s_n)`; predicts with
    /// the exact posterior.
    Evidence,
    /// MAP weights with `(l, tau, s_n)` chosen by validation NLL on an 80/20 split, refit on all
    /// data; `objective` is minus the selected validation NLL per point. Predicts with the noise
    /// alone (a point estimate).
    MapGrid,
    /// The diagonal empirical-Fisher Laplace evidence (LA-LML) at the MAP weights; predicts with
    /// the noise alone.
    LaplaceDiag,
}

impl Method {
    /// The name used in tables, JSON and model files: `elbo`, `de-elbo` (`D/N`), `de-elbo-half`
    /// (`D/(2N)`), `de-elbo-fixed` (any `Fixed(k)`, the value is in the `kappa` field),
    /// `evidence`, `map-grid`, `la-lml`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Elbo(KappaRule::Standard) => "elbo",
            Method::Elbo(KappaRule::DataEmphasized) => "de-elbo",
            Method::Elbo(KappaRule::HalfDataEmphasized) => "de-elbo-half",
            Method::Elbo(KappaRule::Fixed(_)) => "de-elbo-fixed",
            Method::Evidence => "evidence",
            Method::MapGrid => "map-grid",
            Method::LaplaceDiag => "la-lml",
        }
    }
}

/// The default lengthscale search: `l/sqrt(d)` in `[0.01, 10]`, a coarse grid of 16 points
/// (steps of 0.46 in `ln l`), then Brent's method in the best bracket to `1e-3` in `ln l`.
pub const DEFAULT_LENGTHSCALE_SEARCH: GridSearch = GridSearch {
    lower: -2.0 * std::f64::consts::LN_10,
    upper: std::f64::consts::LN_10,
    grid_points: 16,
    tolerance: 1e-3,
};

/// How the lengthscale(s) are searched.
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `lengthscale` | [`DEFAULT_LENGTHSCALE_SEARCH`] | finite `lower < upper`, `>= 2` points | the global search over `t = ln(l/sqrt(d))` on standardized inputs |
/// | `ard_iterations` | 100 | `>= 1` | L-BFGS iterations of the per-dimension (ARD) refinement |
/// | `max_rows` | 512 | `>= 16` | rows the hyperparameter search (ELBO and evidence) runs on; with more training rows it runs on a seeded subsample of this many and the final model on sums over every row |
/// | `ard_upper` | `ln 100` | `> lengthscale.upper` | upper end of each ARD `ln l_k` (standardized inputs; a column whose lengthscale ends there is effectively unused) |
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SearchSettings {
    /// The global search over `t = ln(l/sqrt(d))`.
    pub lengthscale: GridSearch,
    /// L-BFGS iterations for ARD.
    pub ard_iterations: u64,
    /// Upper end of each ARD `ln l_k` (standardized inputs).
    pub ard_upper: f64,
    /// Rows of the hyperparameter search (a seeded subsample when there are more).
    pub max_rows: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            lengthscale: DEFAULT_LENGTHSCALE_SEARCH,
            ard_iterations: 100,
            ard_upper: 100f64.ln(),
            max_rows: 512,
        }
    }
}

impl SearchSettings {
    /// Check the ranges in the table above.
    pub fn validate(&self) -> Result<()> {
        self.lengthscale.validate("lengthscale search")?;
        if !(self.ard_upper.is_finite() && self.ard_upper > self.lengthscale.upper) {
            return Err(RffError::InvalidConfig {
                name: "ard_upper".to_string(),
                reason: format!(
                    "must be finite and above the lengthscale search's upper end {}, got {}",
                    self.lengthscale.upper, self.ard_upper
                ),
            });
        }
        if self.max_rows < 16 {
            return Err(RffError::InvalidConfig {
                name: "max_rows".to_string(),
                reason: format!("must be at least 16, got {}", self.max_rows),
            });
        }
        if self.ard_iterations == 0 {
            return Err(RffError::InvalidConfig {
                name: "ard_iterations".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }
}

/// Everything a fit needs besides the data: the entry point of [`crate::fit()`].
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `method` | given to [`RffConfig::new`] | any [`Method`] | what is maximized |
/// | `features` | 1024 | `>= 1` | `R`, the number of random features (`D = R` for kappa) |
/// | `seed` | 0 | any | seed of the random features and of the MAP split |
/// | `ard` | `false` | | one lengthscale per input column (ELBO and evidence methods) |
/// | `posterior` | `Isotropic` | | the family of `q` of the ELBO methods (`Diagonal`: one variance per weight) |
/// | `standardize` | `true` | | standardize inputs and targets (recommended) |
/// | `search` | [`SearchSettings::default`] | see there | the lengthscale search |
/// | `noise` | [`NoiseBounds::default`] | `0 < min_std <= max_std < inf` | bounds on the noise std (standardized targets) |
/// | `ascent` | [`AscentSettings::default`] | see there | coordinate ascent of the ELBO methods |
/// | `map_grid` | [`MapGridSettings::default`] | see there | the grids of the MAP baseline |
/// | `max_memory` | 8 GiB | `>= 1 MiB` | refuse fits whose [`RffConfig::memory_estimate`] exceeds this (bytes) |
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RffConfig {
    /// The method.
    pub method: Method,
    /// `R`, the number of random features.
    pub features: usize,
    /// Seed of the random features (and of the MAP split).
    pub seed: u64,
    /// Per-dimension lengthscales.
    pub ard: bool,
    /// The family of `q` (ELBO methods).
    pub posterior: PosteriorFamily,
    /// Standardize inputs and targets.
    pub standardize: bool,
    /// The lengthscale search.
    pub search: SearchSettings,
    /// Bounds on the noise standard deviation (standardized targets).
    pub noise: NoiseBounds,
    /// Coordinate-ascent settings of the ELBO methods.
    pub ascent: AscentSettings,
    /// Grids of the MAP baseline.
    pub map_grid: MapGridSettings,
    /// Memory limit in bytes.
    pub max_memory: u64,
}

impl Default for RffConfig {
    /// [`RffConfig::new`] with the DE-ELBO at `D/(2N)`.
    fn default() -> Self {
        Self::new(Method::Elbo(KappaRule::HalfDataEmphasized))
    }
}

impl RffConfig {
    /// Defaults for `method` (see the table above).
    pub fn new(method: Method) -> Self {
        Self {
            method,
            features: 1024,
            seed: 0,
            ard: false,
            posterior: PosteriorFamily::Isotropic,
            standardize: true,
            search: SearchSettings::default(),
            noise: NoiseBounds::default(),
            ascent: AscentSettings::default(),
            map_grid: MapGridSettings::default(),
            max_memory: 8 << 30,
        }
    }

    /// Set the memory limit (bytes).
    pub fn with_max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// An upper estimate of the bytes a fit of `n` rows and `d` inputs allocates, and what
    /// dominates it.
    ///
    /// # Formula
    /// With `R` features, `S = min(n, max_rows)` search rows (all `n` for the baselines) and
    /// `B` = [`crate::spectrum::GRAM_BLOCK_ROWS`] rows per streamed block, in 8-byte words:
    /// `9 R^2` (Gram, its tiles while accumulating, eigenvectors, inverse, posterior factor and
    /// copies) `+ 6 S R` (features, sines and gradient terms) `+ 3 S^2` (example-space Gram,
    /// factor, inverse) `+ 2 B R` (a streamed block's features and their row blocks)
    /// `+ (n d` when the rows are held in memory`)`.
    pub fn memory_estimate(&self, n: usize, d: usize, rows_in_memory: bool) -> (u64, String) {
        let r = self.features as u128;
        let searchable = matches!(self.method, Method::Elbo(_) | Method::Evidence);
        let s = if searchable {
            n.min(self.search.max_rows)
        } else {
            n
        } as u128;
        let block = crate::spectrum::GRAM_BLOCK_ROWS as u128;
        let held = if rows_in_memory {
            (n as u128) * (d as u128 + 1)
        } else {
            0
        };
        let words = 9 * r * r + 6 * s * r + 3 * s * s + 2 * block * r + held;
        let bytes = (words * 8).min(u64::MAX as u128) as u64;
        let reason = if 9 * r * r >= 6 * s * r + 3 * s * s {
            format!(
                "9 {} x {} matrices of R = {} features",
                self.features, self.features, self.features
            )
        } else {
            format!("{s} rows x R = {} features", self.features)
        };
        (bytes, reason)
    }

    /// [`RffError::TooMuchMemory`] when the estimate for `n x d` exceeds `max_memory`.
    pub fn check_memory(&self, n: usize, d: usize, rows_in_memory: bool) -> Result<()> {
        let (bytes, reason) = self.memory_estimate(n, d, rows_in_memory);
        if bytes > self.max_memory {
            return Err(RffError::TooMuchMemory {
                needed_mib: bytes >> 20,
                limit_mib: self.max_memory >> 20,
                reason,
            });
        }
        Ok(())
    }

    /// Set `R`.
    pub fn with_features(mut self, r: usize) -> Self {
        self.features = r;
        self
    }

    /// Set the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turn ARD on or off.
    pub fn with_ard(mut self, ard: bool) -> Self {
        self.ard = ard;
        self
    }

    /// Set the family of `q`.
    pub fn with_posterior(mut self, family: PosteriorFamily) -> Self {
        self.posterior = family;
        self
    }

    /// Set the global lengthscale search.
    pub fn with_lengthscale_search(mut self, search: GridSearch) -> Self {
        self.search.lengthscale = search;
        self
    }

    /// Set the MAP grids.
    pub fn with_map_grid(mut self, grid: MapGridSettings) -> Self {
        self.map_grid = grid;
        self
    }

    /// Check every setting against its range; [`crate::fit()`] calls this before any work.
    pub fn validate(&self) -> Result<()> {
        check::has_parameters("the random features (R)", self.features)?;
        if self.max_memory < 1 << 20 {
            return Err(RffError::InvalidConfig {
                name: "max_memory".to_string(),
                reason: format!("must be at least 1 MiB, got {} bytes", self.max_memory),
            });
        }
        self.search.validate()?;
        self.noise.validate()?;
        self.ascent.validate()?;
        if matches!(self.method, Method::MapGrid) {
            self.map_grid.validate()?;
        }
        if let Method::Elbo(KappaRule::Fixed(k)) = self.method {
            deelbo_core::Kappa::new(k)?;
        }
        if self.ard && !matches!(self.method, Method::Elbo(_) | Method::Evidence) {
            return Err(RffError::InvalidConfig {
                name: "ard".to_string(),
                reason: format!(
                    "per-dimension lengthscales are supported by the ELBO and evidence methods, not {}",
                    self.method.name()
                ),
            });
        }
        Ok(())
    }
}

/// The grids of the MAP baseline (standardized units), checked by
/// [`MapGridSettings::validate`] when a map-grid fit starts.
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `lengthscale_points` | 30 | `>= 1` | lengthscales, log-spaced over the fit's lengthscale search range (1: its midpoint) |
/// | `prior_variances` | 13 values, `1e-3 ..= 1e3` log-spaced | non-empty, each `> 0`, finite | prior variances `tau` tried |
/// | `noise_stds` | 13 values, `0.01 ..= 1` log-spaced | non-empty, each `> 0`, finite | noise standard deviations `s_n` tried |
/// | `validation_fraction` | 0.2 | `(0, 1)` | share of the training rows held out (seeded split) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapGridSettings {
    /// Lengthscale grid points, log-spaced over the fit's lengthscale search range.
    pub lengthscale_points: usize,
    /// Prior variances `tau` to try.
    pub prior_variances: Vec<f64>,
    /// Noise standard deviations to try.
    pub noise_stds: Vec<f64>,
    /// Fraction of the training set held out for validation.
    pub validation_fraction: f64,
}

/// `count` values log-spaced from `lo` to `hi` (inclusive).
pub fn log_space(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if count < 2 {
        return vec![lo];
    }
    let (a, b) = (lo.ln(), hi.ln());
    (0..count)
        .map(|i| (a + (b - a) * i as f64 / (count - 1) as f64).exp())
        .collect()
}

impl Default for MapGridSettings {
    /// 30 lengthscales, `tau` in `{1e-3, 10^-2.5, ..., 1e3}` (13 values), `s_n` in 13 log-spaced
    /// values from `0.01` to `1`, 20 % validation.
    fn default() -> Self {
        Self {
            lengthscale_points: 30,
            prior_variances: log_space(1e-3, 1e3, 13),
            noise_stds: log_space(1e-2, 1.0, 13),
            validation_fraction: 0.2,
        }
    }
}

impl MapGridSettings {
    /// Every axis has a value, every value is positive and finite, the fraction is in `(0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.lengthscale_points < 1
            || self.prior_variances.is_empty()
            || self.noise_stds.is_empty()
        {
            return Err(RffError::InvalidConfig {
                name: "MAP grid".to_string(),
                reason: "every axis needs at least one value".to_string(),
            });
        }
        for &v in self.prior_variances.iter().chain(&self.noise_stds) {
            deelbo_core::check::positive("MAP grid value", v)?;
        }
        use std::ops::Bound::Excluded;
        deelbo_core::check::in_range(
            "validation_fraction",
            self.validation_fraction,
            (Excluded(0.0), Excluded(1.0)),
        )?;
        Ok(())
    }
}
