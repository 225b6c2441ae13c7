//! The eigendecomposition of a Gram matrix, which turns every evidence and ELBO evaluation at a
//! fixed lengthscale into `O(k)` sums, `k = min(N, R)`.
//!
//! Write the thin SVD of the features as `Phi = U diag(s) V^T` (`U`: `N x k`, `V`: `R x k`,
//! `lambda_i = s_i^2`). We eigendecompose the smaller Gram matrix:
//!
//! - `N <= R` ([`Basis::Examples`]): `Phi Phi^T = E diag(lambda) E^T`, so `U = E` and
//!   `V = Phi^T E diag(1/s)`;
//! - `R < N` ([`Basis::Features`]): `Phi^T Phi = E diag(lambda) E^T`, so `V = E` and
//!   `U = Phi E diag(1/s)`.
//!
//! The targets enter through `y~ = U^T y` and the squared norm of their part outside the range of
//! `U`, `y_perp^2 = ||y||^2 - ||y~||^2`. A weight vector in the row space of `Phi` is
//! `m = V m~`; then `||m||^2 = ||m~||^2` and `||y - Phi m||^2 = sum_i (y~_i - s_i m~_i)^2 + y_perp^2`.
//! The cross terms `c~_i = s_i y~_i = v_i^T Phi^T y` give every shrinkage estimate without a
//! division: `m~_i = g c~_i/(g lambda_i + s_n^2)`. In the feature basis `y~_i = c~_i/s_i` is only
//! formed for `lambda_i > 1e-12 lambda_max`; the target energy of smaller components is counted in
//! `y_perp^2` (their fitted part `s_i m~_i` is below rounding).
//!
//! A kernel matrix `K` (`N x N`, the exact GP) is decomposed the same way ([`Spectrum::of_kernel`]);
//! only the evidence is defined for it.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::{Result, RffError};

/// Which Gram matrix was decomposed; holds its eigenvectors `E` (columns).
#[derive(Debug, Clone)]
pub enum Basis {
    /// `Phi Phi^T` (`N x N`); `E` is `N x N`.
    Examples(Array2<f64>),
    /// `Phi^T Phi` (`R x R`); `E` is `R x R`.
    Features(Array2<f64>),
    /// A kernel matrix `K` (`N x N`); `E` is `N x N`.
    Kernel(Array2<f64>),
    /// Not kept ([`Spectrum::values_of_features`], for a search): every `O(k)` objective is
    /// defined, the weights, fitted values and posterior factor are not.
    Discarded,
}

/// Relative threshold below which an eigenvalue counts as zero.
pub const RELATIVE_EIGENVALUE_FLOOR: f64 = 1e-12;

/// `Phi^T Phi` summed over fixed row blocks computed in parallel (block order, so the same bits
/// at any thread count).
pub(crate) fn gram_of_columns(phi: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    let mut sums = crate::linalg::GramAccumulator::new(phi.ncols());
    let zeros = Array1::<f64>::zeros(phi.nrows());
    for (a, b) in crate::parallel::row_blocks(phi.nrows(), GRAM_BLOCK_ROWS) {
        sums.add(
            phi.slice(ndarray::s![a..b, ..]),
            zeros.slice(ndarray::s![a..b]),
        )?;
    }
    Ok(sums.finish()?.gram)
}

/// Rows per block when the Gram matrix `Phi^T Phi` of a feature matrix in memory is summed
/// (fixed, so the same bits at any thread count).
pub const GRAM_BLOCK_ROWS: usize = 4096;

/// Eigenvalues, projected targets and trace of a Gram matrix; see the module docs.
#[derive(Debug, Clone)]
pub struct Spectrum {
    /// `lambda_i = s_i^2 >= 0` (ascending; tiny negative rounding clamped to 0), `k` entries.
    pub eigenvalues: Vec<f64>,
    /// `y~_i = u_i^T y`, `k` entries (0 for components of the feature basis with
    /// `lambda_i <= 1e-12 lambda_max`).
    pub projected_targets: Vec<f64>,
    /// `c~_i = s_i y~_i = v_i^T Phi^T y`, `k` entries.
    pub cross_targets: Vec<f64>,
    /// `y_perp^2 = ||y||^2 - ||y~||^2 >= 0`, the target energy outside the range of `U`.
    pub orthogonal_energy: f64,
    /// `T = sum_n ||phi_n||^2 = tr(Phi Phi^T)` (the kernel trace for [`Basis::Kernel`]).
    pub trace: f64,
    /// `N`, the number of examples.
    pub examples: usize,
    /// `R`, the number of features (`N` for a kernel).
    pub features: usize,
    /// Which Gram matrix and its eigenvectors.
    pub basis: Basis,
}

fn discarded() -> RffError {
    RffError::InvalidConfig {
        name: "spectrum".to_string(),
        reason: "its eigenvectors were not kept (Spectrum::values_of_features): use \
                 Spectrum::of_features for weights, fitted values or a posterior"
            .to_string(),
    }
}

fn eigh_projected_of(what: &str, gram: &Array2<f64>, v: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (values, projected) = crate::linalg::eigh_projected(what, gram, v)?;
    Ok((checked_eigenvalues(what, values)?, projected))
}

fn eigh_of(what: &str, gram: &Array2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    let (values, vectors) = crate::linalg::eigh(what, gram)?;
    Ok((checked_eigenvalues(what, values)?, vectors))
}

/// The eigenvalues with tiny negative rounding clamped to 0, or an error at a non-finite one.
fn checked_eigenvalues(what: &str, values: Vec<f64>) -> Result<Vec<f64>> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(RffError::Linalg {
            name: what.to_string(),
            reason: format!("non-finite eigenvalue {bad}"),
        });
    }
    Ok(values.into_iter().map(|v| v.max(0.0)).collect())
}

impl Spectrum {
    /// Decompose the features `phi` (`N x R`) with targets `y` (`N`), using the `N x N` Gram
    /// matrix when `N <= R` and the `R x R` one otherwise.
    pub fn of_features(phi: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<Self> {
        Self::decompose_features(phi, y, true)
    }

    /// [`Spectrum::of_features`] without the eigenvectors (basis [`Basis::Discarded`]): the
    /// same eigenvalues, the projections `E^T y` (or `E^T Phi^T y`) from
    /// [`crate::linalg::eigh_projected`] at about half the cost. What a search over the
    /// lengthscale needs: every evidence and ELBO value at a fixed lengthscale.
    pub fn values_of_features(phi: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<Self> {
        Self::decompose_features(phi, y, false)
    }

    fn decompose_features(
        phi: ArrayView2<'_, f64>,
        y: ArrayView1<'_, f64>,
        keep_vectors: bool,
    ) -> Result<Self> {
        let (n, r) = phi.dim();
        if y.len() != n {
            return Err(RffError::Shape {
                name: "targets (one per feature row)".to_string(),
                expected: n,
                found: y.len(),
            });
        }
        let yy = deelbo_core::deterministic_sum(y.iter().map(|v| v * v));
        if n <= r {
            let what = "the N x N Gram matrix Phi Phi^T";
            let gram = crate::linalg::gram_rows(phi)?;
            // tr(Phi Phi^T) = sum_n ||phi_n||^2, from the Gram diagonal (N terms, not N R).
            let trace = deelbo_core::deterministic_sum(gram.diag().iter().copied());
            let (eigenvalues, projected, basis) = if keep_vectors {
                let (eigenvalues, e) = eigh_of(what, &gram)?;
                let projected = e.t().dot(&y).to_vec();
                (eigenvalues, projected, Basis::Examples(e))
            } else {
                let (eigenvalues, projected) = eigh_projected_of(what, &gram, &y.to_vec())?;
                (eigenvalues, projected, Basis::Discarded)
            };
            Ok(Self::in_example_basis(
                eigenvalues,
                projected,
                yy,
                trace,
                r,
                basis,
            ))
        } else {
            let what = "the R x R Gram matrix Phi^T Phi";
            let gram = gram_of_columns(phi)?;
            let trace = deelbo_core::deterministic_sum(gram.diag().iter().copied());
            let cross = phi.t().dot(&y);
            let (eigenvalues, c, basis) = if keep_vectors {
                let (eigenvalues, e) = eigh_of(what, &gram)?;
                let c = e.t().dot(&cross).to_vec();
                (eigenvalues, c, Basis::Features(e))
            } else {
                let (eigenvalues, c) = eigh_projected_of(what, &gram, &cross.to_vec())?;
                (eigenvalues, c, Basis::Discarded)
            };
            Ok(Self::in_feature_basis(eigenvalues, c, yy, trace, n, basis))
        }
    }

    /// The spectrum in the feature basis from accumulated sums over rows: `G = Phi^T Phi`
    /// (`R x R`), `c = Phi^T y`, `y^T y`, `T = tr G` and `N` (no `N x R` matrix needed).
    pub fn of_gram(
        gram: Array2<f64>,
        cross: Array1<f64>,
        yy: f64,
        trace: f64,
        examples: usize,
    ) -> Result<Self> {
        let r = gram.nrows();
        if gram.ncols() != r || cross.len() != r {
            return Err(RffError::Shape {
                name: "Gram statistics (R x R and R)".to_string(),
                expected: r,
                found: cross.len(),
            });
        }
        let (eigenvalues, e) = eigh_of("the R x R Gram matrix Phi^T Phi", &gram)?;
        let c = e.t().dot(&cross).to_vec();
        Ok(Self::in_feature_basis(
            eigenvalues,
            c,
            yy,
            trace,
            examples,
            Basis::Features(e),
        ))
    }

    /// A spectrum in the feature basis (`V = E`) from `c~ = E^T Phi^T y`: `y~_i = c~_i/s_i` for
    /// `lambda_i > 1e-12 lambda_max` (else 0), `y_perp^2 = ||y||^2 - ||y~||^2`.
    fn in_feature_basis(
        eigenvalues: Vec<f64>,
        c: Vec<f64>,
        yy: f64,
        trace: f64,
        examples: usize,
        basis: Basis,
    ) -> Self {
        let r = eigenvalues.len();
        let floor = RELATIVE_EIGENVALUE_FLOOR * eigenvalues.iter().copied().fold(0.0f64, f64::max);
        let projected: Vec<f64> = c
            .iter()
            .zip(&eigenvalues)
            .map(|(c, &l)| {
                if l > floor && l > 0.0 {
                    c / l.sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let energy = deelbo_core::deterministic_sum(projected.iter().map(|v| v * v));
        Self {
            eigenvalues,
            projected_targets: projected,
            cross_targets: c,
            orthogonal_energy: (yy - energy).max(0.0),
            trace,
            examples,
            features: r,
            basis,
        }
    }

    /// Decompose a symmetric positive semi-definite kernel matrix `k` (`N x N`) with targets `y`.
    pub fn of_kernel(k: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<Self> {
        let n = k.nrows();
        if k.ncols() != n || y.len() != n {
            return Err(RffError::Shape {
                name: "kernel matrix (N x N, one target per row)".to_string(),
                expected: n,
                found: if k.ncols() != n { k.ncols() } else { y.len() },
            });
        }
        let trace = k.diag().sum();
        let (eigenvalues, e) = eigh_of("the kernel matrix", &k.to_owned())?;
        let yy = deelbo_core::deterministic_sum(y.iter().map(|v| v * v));
        let projected = e.t().dot(&y).to_vec();
        Ok(Self::in_example_basis(
            eigenvalues,
            projected,
            yy,
            trace,
            n,
            Basis::Kernel(e),
        ))
    }

    /// A spectrum whose eigenvectors `E` live in example space (`U = E`): `y~ = E^T y`,
    /// `c~_i = s_i y~_i`, `y_perp^2 = ||y||^2 - ||y~||^2` (rounding only).
    fn in_example_basis(
        eigenvalues: Vec<f64>,
        projected: Vec<f64>,
        yy: f64,
        trace: f64,
        features: usize,
        basis: Basis,
    ) -> Self {
        let energy = deelbo_core::deterministic_sum(projected.iter().map(|v| v * v));
        let cross = projected
            .iter()
            .zip(&eigenvalues)
            .map(|(y, l)| y * l.sqrt())
            .collect();
        Self {
            examples: projected.len(),
            eigenvalues,
            projected_targets: projected,
            cross_targets: cross,
            orthogonal_energy: (yy - energy).max(0.0),
            trace,
            features,
            basis,
        }
    }

    /// `k`, the number of components.
    pub fn len(&self) -> usize {
        self.eigenvalues.len()
    }

    /// `true` when there are no components.
    pub fn is_empty(&self) -> bool {
        self.eigenvalues.is_empty()
    }

    /// Whether component `i` has `lambda_i > 0` (a direction of the row space of `Phi`).
    pub fn is_active(&self, i: usize) -> bool {
        self.eigenvalues[i] > 0.0
    }

    /// The shrinkage coefficients `m~_i = g c~_i/(g lambda_i + s_n^2)`: the posterior mean of
    /// `q` for likelihood weight `kappa` and prior variance `tau` with `g = kappa tau` (the ELBO's
    /// mean update; `g = tau` is the exact posterior mean and the MAP weights).
    pub fn shrunk_coefficients(&self, g: f64, noise_variance: f64) -> Vec<f64> {
        self.cross_targets
            .iter()
            .zip(&self.eigenvalues)
            .map(|(c, l)| g * c / (g * l + noise_variance))
            .collect()
    }

    /// `||y - Phi m||^2 = sum_i (y~_i - s_i m~_i)^2 + y_perp^2` for `m = V m~`.
    /// `coeffs` must have `k` entries.
    pub fn residual_sq(&self, coeffs: &[f64]) -> f64 {
        let inside = deelbo_core::deterministic_sum(
            self.eigenvalues
                .iter()
                .zip(&self.projected_targets)
                .zip(coeffs)
                .map(|((l, y), c)| {
                    let d = y - l.sqrt() * c;
                    d * d
                }),
        );
        inside + self.orthogonal_energy
    }

    /// The factor `B` (`R x k_active`) of the exact posterior covariance
    /// `S = (Phi^T Phi/s_n^2 + I/tau)^-1 = tau I - B B^T`: column `i` is
    /// `v_i tau s_i/sqrt(tau lambda_i + s_n^2)`, formed as `Phi^T e_i tau/sqrt(tau lambda_i + s_n^2)`
    /// in the example basis (no division by `s_i`).
    pub fn posterior_factor(
        &self,
        phi: ArrayView2<'_, f64>,
        tau: f64,
        noise_variance: f64,
    ) -> Result<Array2<f64>> {
        let idx: Vec<usize> = (0..self.len()).filter(|&i| self.is_active(i)).collect();
        let scale = |i: usize| tau / (tau * self.eigenvalues[i] + noise_variance).sqrt();
        match &self.basis {
            Basis::Features(e) => {
                let mut b = e.select(Axis(1), &idx);
                for (mut col, &i) in b.columns_mut().into_iter().zip(&idx) {
                    let f = scale(i) * self.eigenvalues[i].sqrt();
                    col.mapv_inplace(|v| v * f);
                }
                Ok(b)
            }
            Basis::Examples(e) => {
                self.check_phi(phi)?;
                let mut es = e.select(Axis(1), &idx);
                for (mut col, &i) in es.columns_mut().into_iter().zip(&idx) {
                    let f = scale(i);
                    col.mapv_inplace(|v| v * f);
                }
                Ok(phi.t().dot(&es))
            }
            Basis::Kernel(_) => Err(RffError::InvalidConfig {
                name: "spectrum".to_string(),
                reason: "a kernel spectrum has no feature-space basis".to_string(),
            }),
            Basis::Discarded => Err(discarded()),
        }
    }

    /// The right singular vectors `V` of the components with `lambda_i > 0` (`R x k_active`),
    /// and the indices of those components. Needs the features for the `N <= R` basis; not defined for a kernel.
    pub fn right_singular_vectors(
        &self,
        phi: ArrayView2<'_, f64>,
    ) -> Result<(Array2<f64>, Vec<usize>)> {
        let idx: Vec<usize> = (0..self.len()).filter(|&i| self.is_active(i)).collect();
        match &self.basis {
            Basis::Features(e) => Ok((e.select(Axis(1), &idx), idx)),
            Basis::Examples(e) => {
                self.check_phi(phi)?;
                let mut es = e.select(Axis(1), &idx);
                for (mut col, &i) in es.columns_mut().into_iter().zip(&idx) {
                    let s = self.eigenvalues[i].sqrt();
                    col.mapv_inplace(|v| v / s);
                }
                Ok((phi.t().dot(&es), idx))
            }
            Basis::Kernel(_) => Err(RffError::InvalidConfig {
                name: "spectrum".to_string(),
                reason: "a kernel spectrum has no feature-space basis".to_string(),
            }),
            Basis::Discarded => Err(discarded()),
        }
    }

    fn check_phi(&self, phi: ArrayView2<'_, f64>) -> Result<()> {
        if phi.dim() != (self.examples, self.features) {
            return Err(RffError::Shape {
                name: "features passed back to the spectrum (N x R)".to_string(),
                expected: self.examples * self.features,
                found: phi.len(),
            });
        }
        Ok(())
    }

    /// The weight vector `m = V m~` (`R`) for coefficients `m~` (`k`; entries with
    /// `lambda_i = 0` ignored in the example basis).
    /// `phi` must be the features the spectrum was built from.
    pub fn weights(&self, phi: ArrayView2<'_, f64>, coeffs: &[f64]) -> Result<Array1<f64>> {
        match &self.basis {
            Basis::Features(e) => {
                if coeffs.len() != self.len() {
                    return Err(RffError::Shape {
                        name: "spectral coefficients".to_string(),
                        expected: self.len(),
                        found: coeffs.len(),
                    });
                }
                Ok(e.dot(&ArrayView1::from(coeffs)))
            }
            Basis::Examples(e) => {
                self.check_phi(phi)?;
                let a = Array1::from_shape_fn(self.len(), |i| {
                    if self.is_active(i) {
                        coeffs[i] / self.eigenvalues[i].sqrt()
                    } else {
                        0.0
                    }
                });
                Ok(phi.t().dot(&e.dot(&a)))
            }
            Basis::Kernel(_) => Err(RffError::InvalidConfig {
                name: "spectrum".to_string(),
                reason: "a kernel spectrum has no weights".to_string(),
            }),
            Basis::Discarded => Err(discarded()),
        }
    }

    /// The fitted values `Phi m = U diag(s) m~` (`N`).
    pub fn fitted(&self, phi: ArrayView2<'_, f64>, coeffs: &[f64]) -> Result<Array1<f64>> {
        match &self.basis {
            Basis::Examples(e) => {
                let c =
                    Array1::from_shape_fn(self.len(), |i| coeffs[i] * self.eigenvalues[i].sqrt());
                Ok(e.dot(&c))
            }
            Basis::Features(_) => {
                self.check_phi(phi)?;
                Ok(phi.dot(&self.weights(phi, coeffs)?))
            }
            Basis::Kernel(_) => Err(RffError::InvalidConfig {
                name: "spectrum".to_string(),
                reason: "a kernel spectrum has no fitted values".to_string(),
            }),
            Basis::Discarded => Err(discarded()),
        }
    }
}
