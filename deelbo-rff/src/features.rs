//! Random Fourier features for the RBF kernel, with fixed, seeded frequencies and phases.
//!
//! `phi_r(x) = sqrt(2/R) cos(sum_k W_rk x_k / l_k + b_r)`, `r = 1..R`, with `W_rk ~ N(0, 1)` and
//! `b_r ~ U(0, 2 pi)`. Then `E_{W,b}[phi(x)^T phi(x')] = exp(-sum_k (x_k - x'_k)^2 / (2 l_k^2))`,
//! the RBF kernel with unit outputscale (the outputscale is redundant with the learned prior
//! variance `tau`, see docs/DESIGN.md §4).
//!
//! The random numbers come from `deelbo-core`'s counter-based noise, so a `(seed, R, d)` triple
//! fixes the features bit for bit on every platform and a model file only needs to store the seed:
//! `W_rk = normal_at((seed, FREQUENCY_STREAM), r d + k)` and
//! `b_r = 2 pi uniform_at((seed, PHASE_STREAM), r)`.

use deelbo_core::{NoiseKey, fill_normals, uniform_at};
use ndarray::{Array1, Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RffError};
use crate::parallel::{BLOCK_ROWS, for_each_chunk_pair};

/// Noise stream of the frequencies `W`.
pub const FREQUENCY_STREAM: u64 = 0x5246_4600;
/// Noise stream of the phases `b`.
pub const PHASE_STREAM: u64 = 0x5246_4601;

/// The kernel lengthscale(s), in the units of the (standardized) inputs the features see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Lengthscale {
    /// One lengthscale for every input dimension.
    Isotropic(f64),
    /// One lengthscale per input dimension (automatic relevance determination).
    Ard(Vec<f64>),
}

impl Lengthscale {
    /// The lengthscale of each of `d` dimensions. Errors on a length mismatch or a value that is
    /// not positive and finite.
    pub fn per_dimension(&self, d: usize) -> Result<Vec<f64>> {
        let v = match self {
            Lengthscale::Isotropic(l) => vec![*l; d],
            Lengthscale::Ard(ls) => {
                if ls.len() != d {
                    return Err(RffError::Shape {
                        name: "ARD lengthscales".to_string(),
                        expected: d,
                        found: ls.len(),
                    });
                }
                ls.clone()
            }
        };
        if let Some(bad) = v.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(RffError::InvalidConfig {
                name: "lengthscale".to_string(),
                reason: format!("must be positive and finite, got {bad}"),
            });
        }
        Ok(v)
    }

    /// Every lengthscale multiplied by `factor[k]` (per dimension; used to express a lengthscale
    /// found on standardized inputs in the original input units).
    pub fn scaled(&self, factor: &[f64]) -> Lengthscale {
        match self {
            Lengthscale::Isotropic(l) if factor.len() == 1 => Lengthscale::Isotropic(l * factor[0]),
            Lengthscale::Isotropic(l) => Lengthscale::Ard(factor.iter().map(|f| l * f).collect()),
            Lengthscale::Ard(ls) => {
                Lengthscale::Ard(ls.iter().zip(factor).map(|(l, f)| l * f).collect())
            }
        }
    }
}

/// `R` random Fourier features of `d`-dimensional inputs: frequencies `W` (`R x d`) and phases
/// `b` (`R`), generated from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RffFeatures {
    seed: u64,
    frequencies: Array2<f64>,
    phases: Array1<f64>,
}

/// Features and the matching sines: `phi = sqrt(2/R) cos(Z)` and `sqrt(2/R) sin(Z)` for the
/// phases `Z = X diag(1/l) W^T + b` (both `N x R`). The sines give `dphi/d ln l`.
#[derive(Debug, Clone)]
pub struct FeaturesWithSines {
    /// `phi`, `N x R`.
    pub phi: Array2<f64>,
    /// `sqrt(2/R) sin(Z)`, `N x R`.
    pub sines: Array2<f64>,
}

impl RffFeatures {
    /// Draw `count` (`R`) features for `dim` (`d`) inputs from `seed`. Errors when `R` or `d` is 0.
    pub fn new(seed: u64, count: usize, dim: usize) -> Result<Self> {
        if count == 0 {
            return Err(RffError::InvalidConfig {
                name: "number of features R".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        if dim == 0 {
            return Err(RffError::InvalidConfig {
                name: "input dimension d".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        let mut w = vec![0.0f32; count * dim];
        fill_normals(NoiseKey::new(seed, FREQUENCY_STREAM), 0, &mut w);
        let frequencies = Array2::from_shape_fn((count, dim), |(r, k)| f64::from(w[r * dim + k]));
        let key = NoiseKey::new(seed, PHASE_STREAM);
        let phases = Array1::from_shape_fn(count, |r| {
            2.0 * std::f64::consts::PI * uniform_at(key, r as u64)
        });
        Ok(Self {
            seed,
            frequencies,
            phases,
        })
    }

    /// The seed the features were drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `R`, the number of features.
    pub fn count(&self) -> usize {
        self.phases.len()
    }

    /// `d`, the input dimension.
    pub fn dim(&self) -> usize {
        self.frequencies.ncols()
    }

    /// The frequencies `W`, `R x d` (standard normal).
    pub fn frequencies(&self) -> ArrayView2<'_, f64> {
        self.frequencies.view()
    }

    /// `W diag(1/l)` (`R x d`), after checking that `x` has `d` columns.
    fn scaled_frequencies(
        &self,
        x: ArrayView2<'_, f64>,
        lengthscale: &Lengthscale,
    ) -> Result<Array2<f64>> {
        if x.ncols() != self.dim() {
            return Err(RffError::Shape {
                name: "input columns of the features".to_string(),
                expected: self.dim(),
                found: x.ncols(),
            });
        }
        let ls = lengthscale.per_dimension(self.dim())?;
        let mut scaled = self.frequencies.clone();
        for (mut col, l) in scaled.columns_mut().into_iter().zip(&ls) {
            col.mapv_inplace(|w| w / l);
        }
        Ok(scaled)
    }

    /// The phases `Z = X diag(1/l) W^T + b` of the rows `x` written into `out` (row-major,
    /// `rows x R`): one BLAS `dgemm`, then the offsets.
    fn phases_into(
        &self,
        x: ArrayView2<'_, f64>,
        scaled: ArrayView2<'_, f64>,
        out: &mut [f64],
    ) -> Result<()> {
        crate::linalg::matmul_into(x, false, scaled, true, out)?;
        let phases = self.phases.as_slice().ok_or_else(|| RffError::Linalg {
            name: "feature phases".to_string(),
            reason: "not contiguous".to_string(),
        })?;
        for row in out.chunks_mut(self.count()) {
            for (z, b) in row.iter_mut().zip(phases) {
                *z += b;
            }
        }
        Ok(())
    }

    /// `Phi` and, when `sines` is asked for, `sqrt(2/R) sin(Z)`, filled in parallel over fixed
    /// blocks of [`BLOCK_ROWS`] rows straight into the `N x R` outputs.
    fn fill(
        &self,
        x: ArrayView2<'_, f64>,
        lengthscale: &Lengthscale,
        sines: bool,
    ) -> Result<(Array2<f64>, Option<Array2<f64>>)> {
        let scaled = self.scaled_frequencies(x, lengthscale)?;
        let (n, r) = (x.nrows(), self.count());
        let c = (2.0 / r as f64).sqrt();
        let mut phi = Array2::<f64>::zeros((n, r));
        let mut sin = if sines {
            Array2::<f64>::zeros((n, r))
        } else {
            Array2::<f64>::zeros((0, r))
        };
        let not_contiguous = || RffError::Linalg {
            name: "feature matrix".to_string(),
            reason: "not contiguous".to_string(),
        };
        let phi_out = phi.as_slice_mut().ok_or_else(not_contiguous)?;
        let sin_out = sin.as_slice_mut().ok_or_else(not_contiguous)?;
        for_each_chunk_pair(phi_out, sin_out, BLOCK_ROWS * r, |i, p, s| {
            let start = i * BLOCK_ROWS;
            let rows = x.slice(s![start..start + p.len() / r, ..]);
            if sines {
                self.phases_into(rows, scaled.view(), s)?;
                crate::trig::sin_cos_scaled_in_place(s, c, p);
            } else {
                self.phases_into(rows, scaled.view(), p)?;
                crate::trig::cos_scaled_in_place(p, c);
            }
            Ok(())
        })?;
        Ok((phi, sines.then_some(sin)))
    }

    /// The feature matrix `Phi` (`N x R`), `Phi_nr = sqrt(2/R) cos(sum_k W_rk x_nk / l_k + b_r)`
    /// for inputs `x` (`N x d`, already standardized if the model standardizes). Computed in
    /// parallel over fixed row blocks (same bits at any thread count).
    pub fn matrix(&self, x: ArrayView2<'_, f64>, lengthscale: &Lengthscale) -> Result<Array2<f64>> {
        Ok(self.fill(x, lengthscale, false)?.0)
    }

    /// `Phi` together with `sqrt(2/R) sin(Z)`; see [`FeaturesWithSines`].
    pub fn matrix_with_sines(
        &self,
        x: ArrayView2<'_, f64>,
        lengthscale: &Lengthscale,
    ) -> Result<FeaturesWithSines> {
        let (phi, sines) = self.fill(x, lengthscale, true)?;
        Ok(FeaturesWithSines {
            phi,
            sines: sines.unwrap_or_else(|| Array2::zeros((0, 0))),
        })
    }
}

/// The exact RBF kernel with unit outputscale,
/// `k(x, x') = exp(-sum_k (x_k - x'_k)^2 / (2 l_k^2))`, between the rows of `a` (`N1 x d`) and
/// `b` (`N2 x d`): an `N1 x N2` matrix.
pub fn rbf_kernel(
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    lengthscale: &Lengthscale,
) -> Result<Array2<f64>> {
    if a.ncols() != b.ncols() {
        return Err(RffError::Shape {
            name: "input columns of the kernel's second argument".to_string(),
            expected: a.ncols(),
            found: b.ncols(),
        });
    }
    let ls = lengthscale.per_dimension(a.ncols())?;
    Ok(Array2::from_shape_fn((a.nrows(), b.nrows()), |(i, j)| {
        let sq: f64 = a
            .row(i)
            .iter()
            .zip(b.row(j))
            .zip(&ls)
            .map(|((x, y), l)| ((x - y) / l).powi(2))
            .sum();
        (-0.5 * sq).exp()
    }))
}
