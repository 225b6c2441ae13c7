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
use ndarray::{Array1, Array2, ArrayView2, Zip, s};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RffError};
use crate::parallel::{BLOCK_ROWS, map_blocks, row_blocks};

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

    /// The phases `Z = X diag(1/l) W^T + b`, `N x R`.
    fn phases_of(&self, x: ArrayView2<'_, f64>, lengthscale: &Lengthscale) -> Result<Array2<f64>> {
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
        // One BLAS dgemm per row block (ndarray's own product as the fallback).
        let mut z = crate::linalg::matmul(x, false, scaled.view(), true)
            .unwrap_or_else(|_| x.dot(&scaled.t()));
        for mut row in z.rows_mut() {
            row += &self.phases;
        }
        Ok(z)
    }

    /// The feature matrix `Phi` (`N x R`), `Phi_nr = sqrt(2/R) cos(sum_k W_rk x_nk / l_k + b_r)`
    /// for inputs `x` (`N x d`, already standardized if the model standardizes). Computed in
    /// parallel over fixed row blocks (same bits at any thread count).
    pub fn matrix(&self, x: ArrayView2<'_, f64>, lengthscale: &Lengthscale) -> Result<Array2<f64>> {
        let c = (2.0 / self.count() as f64).sqrt();
        let blocks = row_blocks(x.nrows(), BLOCK_ROWS);
        let parts = map_blocks(blocks.len(), |i| {
            let (a, b) = blocks[i];
            let mut z = self.phases_of(x.slice(s![a..b, ..]), lengthscale)?;
            match z.as_slice_mut() {
                Some(zs) => crate::trig::cos_scaled_in_place(zs, c),
                None => z.mapv_inplace(|v| c * v.cos()),
            }
            Ok(z)
        })?;
        stack_rows(parts, x.nrows(), self.count())
    }

    /// `Phi` together with `sqrt(2/R) sin(Z)`; see [`FeaturesWithSines`].
    pub fn matrix_with_sines(
        &self,
        x: ArrayView2<'_, f64>,
        lengthscale: &Lengthscale,
    ) -> Result<FeaturesWithSines> {
        let c = (2.0 / self.count() as f64).sqrt();
        let blocks = row_blocks(x.nrows(), BLOCK_ROWS);
        let parts = map_blocks(blocks.len(), |i| {
            let (a, b) = blocks[i];
            let z = self.phases_of(x.slice(s![a..b, ..]), lengthscale)?;
            let mut phi = Array2::zeros(z.raw_dim());
            let mut sines = Array2::zeros(z.raw_dim());
            match (z.as_slice(), phi.as_slice_mut(), sines.as_slice_mut()) {
                (Some(zs), Some(ps), Some(ss)) => crate::trig::sin_cos_scaled(zs, c, ps, ss),
                _ => Zip::from(&mut phi)
                    .and(&mut sines)
                    .and(&z)
                    .for_each(|p, s, &v| {
                        let (sin, cos) = v.sin_cos();
                        *p = c * cos;
                        *s = c * sin;
                    }),
            }
            Ok((phi, sines))
        })?;
        let (phis, sines): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        Ok(FeaturesWithSines {
            phi: stack_rows(phis, x.nrows(), self.count())?,
            sines: stack_rows(sines, x.nrows(), self.count())?,
        })
    }
}

/// Row blocks stacked into one `rows x cols` matrix.
fn stack_rows(parts: Vec<Array2<f64>>, rows: usize, cols: usize) -> Result<Array2<f64>> {
    if parts.len() == 1 {
        return Ok(parts
            .into_iter()
            .next()
            .unwrap_or_else(|| Array2::zeros((rows, cols))));
    }
    let mut out = Array2::zeros((rows, cols));
    let mut start = 0;
    for p in parts {
        let end = start + p.nrows();
        out.slice_mut(s![start..end, ..]).assign(&p);
        start = end;
    }
    Ok(out)
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
