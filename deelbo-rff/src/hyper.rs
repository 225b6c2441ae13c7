//! The objectives as functions of the hyperparameters alone, `theta = (ln l_1..l_p, ln tau,
//! ln s_n^2)` (`p = 1` isotropic, `p = d` ARD), with the weights' (variational) posterior
//! profiled out in closed form: one Cholesky factorization per evaluation and the exact
//! gradient by the envelope theorem. This is what the ARD search (and any joint refinement)
//! climbs with L-BFGS.
//!
//! Write `G = Phi^T Phi`, `c = Phi^T y`, `s'^2 = s_n^2/kappa` (`kappa = 1` for the evidence),
//! `A = G/s'^2 + I/tau`, `m = A^-1 c/s'^2` (the posterior mean for noise `s'^2`) and
//! `r = y - Phi m`.
//!
//! - Evidence, `S = A^-1`:
//!   `ln p = -1/2 [N ln 2 pi + N ln s_n^2 + R ln tau + ln det A + (y^T y - c^T m)/s_n^2]`;
//!   `d/d ln tau = 1/2 [(||m||^2 + tr S)/tau - R]`,
//!   `d/d ln s_n^2 = 1/2 [(||r||^2 + tr(G S))/s_n^2 - N]` with `tr(G S) = s_n^2 (R - tr S/tau)`,
//!   `d/d Phi = (r m^T - Phi S)/s_n^2`.
//! - (DE-)ELBO with `q = N(m, diag(v))`, `v_j = 1/(1/tau + G_jj/s'^2)` (diagonal) or
//!   `v_j = 1/(1/tau + tr G/(R s'^2))` (isotropic), both the exact maximizers, `E = ||r||^2 +
//!   sum_j v_j G_jj`:
//!   `J = kappa [-N/2 ln(2 pi s_n^2) - E/(2 s_n^2)] - 1/2 sum_j [(v_j + m_j^2)/tau - 1 + ln tau - ln v_j]`;
//!   `d/d ln tau = 1/2 [(sum_j v_j + ||m||^2)/tau - R]`, `d/d ln s_n^2 = kappa [E/(2 s_n^2) - N/2]`,
//!   `d/d Phi = kappa (r m^T - Phi diag(v))/s_n^2`.
//! - Lengthscales: `d/d ln l_k = sum_{n,r} (d/d Phi)_nr sqrt(2/R) sin(z_nr) W_rk x_nk / l_k`.
//!
//! When `N <= R` the same quantities come from the `N x N` matrix `C = tau Phi Phi^T + s'^2 I`:
//! `alpha = C^-1 y`, `m = tau Phi^T alpha`, the evidence `-1/2 [N ln 2 pi + ln det C + y^T alpha]`,
//! and by Woodbury `Phi S = tau s_n^2 C^-1 Phi`, `tr S = tau R - tau (N - s_n^2 tr C^-1)`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::{Result, RffError};
use crate::evidence::LN_2PI;
use crate::features::{Lengthscale, RffFeatures};
use crate::linalg::{
    cholesky_in_place, inverse_in_place, matmul_parallel, matmul_parallel_columns, matvec,
    solve_lower_in_place,
};
use crate::parallel::BLOCK_ROWS;

/// The family of the variational posterior `q(w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosteriorFamily {
    /// `q = N(m, sigma^2 I)`, one variance (docs/DESIGN.md §4).
    Isotropic,
    /// `q = N(m, diag(v))`, one variance per weight: `1/v_j = 1/tau + kappa G_jj/s_n^2`.
    Diagonal,
}

/// Which objective of the hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HyperObjective {
    /// The exact log evidence.
    Evidence,
    /// `J_kappa` with the posterior family.
    Elbo {
        /// The likelihood weight (`>= 1`).
        kappa: f64,
        /// The family of `q`.
        family: PosteriorFamily,
    },
}

/// One evaluation: the value, its gradient in `theta`, and the profiled posterior.
#[derive(Debug, Clone)]
pub struct HyperValue {
    /// The objective (standardized-target nats).
    pub value: f64,
    /// `d value / d theta` (empty when not asked for).
    pub gradient: Vec<f64>,
    /// The (variational) posterior mean `m` (`R`).
    pub mean: Array1<f64>,
    /// The variational variances `v_j` (`R`; ELBO only, empty for the evidence).
    pub variances: Vec<f64>,
    /// Jitter the Cholesky factorization needed (0 normally).
    pub jitter: f64,
}

/// The objective on standardized data `x` (`N x d`), `y` (`N`) and seeded features.
pub struct HyperProblem<'a> {
    x: ArrayView2<'a, f64>,
    y: ArrayView1<'a, f64>,
    features: &'a RffFeatures,
    objective: HyperObjective,
    ard: bool,
}

impl<'a> HyperProblem<'a> {
    /// The problem; `ard` chooses `p = d` lengthscales instead of one.
    pub fn new(
        x: ArrayView2<'a, f64>,
        y: ArrayView1<'a, f64>,
        features: &'a RffFeatures,
        objective: HyperObjective,
        ard: bool,
    ) -> Result<Self> {
        if x.nrows() != y.len() {
            return Err(RffError::Shape {
                name: "targets (one per input row)".to_string(),
                expected: x.nrows(),
                found: y.len(),
            });
        }
        if let HyperObjective::Elbo { kappa, .. } = objective {
            deelbo_core::Kappa::new(kappa)?;
        }
        Ok(Self {
            x,
            y,
            features,
            objective,
            ard,
        })
    }

    /// `p`, the number of log-lengthscales in `theta`.
    pub fn lengthscale_count(&self) -> usize {
        if self.ard { self.x.ncols() } else { 1 }
    }

    /// The lengthscale that `theta` encodes.
    pub fn lengthscale(&self, theta: &[f64]) -> Lengthscale {
        let p = self.lengthscale_count();
        if self.ard {
            Lengthscale::Ard(theta[..p].iter().map(|t| t.exp()).collect())
        } else {
            Lengthscale::Isotropic(theta[0].exp())
        }
    }

    /// The objective, its gradient (if `gradient`) and the profiled posterior at `theta`.
    pub fn evaluate(&self, theta: &[f64], gradient: bool) -> Result<HyperValue> {
        let p = self.lengthscale_count();
        if theta.len() != p + 2 {
            return Err(RffError::Shape {
                name: "hyperparameters (log-lengthscales, ln tau, ln noise variance)".to_string(),
                expected: p + 2,
                found: theta.len(),
            });
        }
        let (tau, s2) = (theta[p].exp(), theta[p + 1].exp());
        deelbo_core::check::positive("prior variance tau", tau)?;
        deelbo_core::check::positive("noise variance", s2)?;
        let ls = self.lengthscale(theta);
        let (phi, sines) = if gradient {
            let fs = self.features.matrix_with_sines(self.x, &ls)?;
            (fs.phi, Some(fs.sines))
        } else {
            (self.features.matrix(self.x, &ls)?, None)
        };
        let (n, r) = phi.dim();
        let (kappa, family) = match self.objective {
            HyperObjective::Evidence => (1.0, None),
            HyperObjective::Elbo { kappa, family } => (kappa, Some(family)),
        };
        let s2e = s2 / kappa;
        let nf = n as f64;
        let rf = r as f64;
        let yy: f64 = self.y.dot(&self.y);

        // The posterior mean m and, for the evidence, the quantities that need S = A^-1.
        let mean: Array1<f64>;
        let jitter;
        // value_ev: the evidence; trace_s: tr S; d_phi_s: Phi S (N x R) for the gradient.
        let mut evidence_value = 0.0;
        let mut trace_s = 0.0;
        let mut phi_s: Option<Array2<f64>> = None;
        // diag(Phi^T Phi), which only the ELBO's variances need.
        let gram_diag: Array1<f64> = if family.is_some() {
            phi.map_axis(Axis(0), |c| c.dot(&c))
        } else {
            Array1::zeros(0)
        };
        let trace_g = gram_diag.sum();
        if n <= r {
            let mut c = crate::linalg::gram_rows(phi.view())?;
            c *= tau;
            c.diag_mut().mapv_inplace(|v| v + s2e);
            let ch = cholesky_in_place("the covariance tau Phi Phi^T + s_n^2 I", c)?;
            jitter = ch.jitter;
            let mut alpha = self.y.to_owned().insert_axis(Axis(1));
            solve_lower_in_place(&ch.lower, &mut alpha, false)?;
            let z_sq: f64 = alpha.iter().map(|v| v * v).sum();
            solve_lower_in_place(&ch.lower, &mut alpha, true)?;
            let alpha = alpha.remove_axis(Axis(1));
            mean = matvec(phi.view(), true, alpha.view())? * tau;
            if family.is_none() {
                let log_det: f64 = 2.0 * ch.lower.diag().iter().map(|v| v.ln()).sum::<f64>();
                evidence_value = -0.5 * (nf * LN_2PI + log_det + z_sq);
                if gradient {
                    // S = tau I - tau^2 Phi^T C^-1 Phi, so Phi S = tau Phi - tau^2 K C^-1 Phi,
                    // and tr S = tau R - tau^2 tr(C^-1 K) = tau R - tau (N - s_n^2 tr C^-1).
                    let ci = inverse_in_place(ch.lower)?;
                    let tr_ci: f64 = ci.diag().sum();
                    trace_s = tau * rf - tau * (nf - s2 * tr_ci);
                    // With K C^-1 = (I - s_n^2 C^-1)/tau: Phi S = tau s_n^2 C^-1 Phi.
                    phi_s = Some(matmul_parallel_columns(
                        tau * s2,
                        ci.view(),
                        false,
                        phi.view(),
                    )?);
                }
            }
        } else {
            let g = crate::spectrum::gram_of_columns(phi.view())?;
            let cvec = matvec(phi.view(), true, self.y)?;
            let mut a = &g / s2e;
            a.diag_mut().mapv_inplace(|v| v + 1.0 / tau);
            let ch = cholesky_in_place("the posterior precision Phi^T Phi/s_n^2 + I/tau", a)?;
            jitter = ch.jitter;
            let mut mm = (&cvec / s2e).insert_axis(Axis(1));
            solve_lower_in_place(&ch.lower, &mut mm, false)?;
            solve_lower_in_place(&ch.lower, &mut mm, true)?;
            mean = mm.remove_axis(Axis(1));
            if family.is_none() {
                let log_det_a: f64 = 2.0 * ch.lower.diag().iter().map(|v| v.ln()).sum::<f64>();
                evidence_value = -0.5
                    * (nf * LN_2PI
                        + nf * s2.ln()
                        + rf * tau.ln()
                        + log_det_a
                        + (yy - cvec.dot(&mean)) / s2);
                if gradient {
                    let s = inverse_in_place(ch.lower)?;
                    trace_s = s.diag().sum();
                    phi_s = Some(matmul_parallel(1.0, phi.view(), false, s.view(), false)?);
                }
            }
        }
        let fitted = matvec(phi.view(), false, mean.view())?;
        let resid = &self.y - &fitted;
        let rr: f64 = resid.dot(&resid);
        let mm: f64 = mean.dot(&mean);

        let (value, g_tau, g_s2, variances, phi_weight) = match family {
            None => {
                let tr_gs = s2 * (rf - trace_s / tau);
                (
                    evidence_value,
                    0.5 * ((mm + trace_s) / tau - rf),
                    0.5 * ((rr + tr_gs) / s2 - nf),
                    Vec::new(),
                    1.0 / s2,
                )
            }
            Some(family) => {
                let v: Vec<f64> = match family {
                    PosteriorFamily::Isotropic => {
                        vec![1.0 / (1.0 / tau + trace_g / (rf * s2e)); r]
                    }
                    PosteriorFamily::Diagonal => gram_diag
                        .iter()
                        .map(|gjj| 1.0 / (1.0 / tau + gjj / s2e))
                        .collect(),
                };
                let sum_v: f64 = v.iter().sum();
                let e = rr + v.iter().zip(&gram_diag).map(|(a, b)| a * b).sum::<f64>();
                let kl = 0.5
                    * v.iter()
                        .zip(&mean)
                        .map(|(vj, mj)| (vj + mj * mj) / tau - 1.0 + tau.ln() - vj.ln())
                        .sum::<f64>();
                let value = kappa * (-0.5 * nf * (LN_2PI + s2.ln()) - e / (2.0 * s2)) - kl;
                (
                    value,
                    0.5 * ((sum_v + mm) / tau - rf),
                    kappa * (e / (2.0 * s2) - 0.5 * nf),
                    v,
                    kappa / s2,
                )
            }
        };
        let mut grad = Vec::new();
        if let Some(mut h) = sines {
            // d/dPhi = w (r m^T - Phi Sigma), Sigma = S (evidence) or diag(v), times the sines,
            // written over the sines in parallel over fixed row blocks.
            let not_contiguous = || RffError::Linalg {
                name: "gradient of the features".to_string(),
                reason: "not contiguous".to_string(),
            };
            let resid_s = resid.as_slice().ok_or_else(not_contiguous)?;
            let mean_s = mean.as_slice().ok_or_else(not_contiguous)?;
            let sigma_phi = match &phi_s {
                Some(ps) => ps.as_slice(),
                None => phi.as_slice(),
            }
            .ok_or_else(not_contiguous)?;
            let h_s = h.as_slice_mut().ok_or_else(not_contiguous)?;
            crate::parallel::for_each_chunk(h_s, BLOCK_ROWS * r, |i, chunk| {
                let first = i * BLOCK_ROWS;
                for (k, row) in chunk.chunks_mut(r).enumerate() {
                    let row_index = first + k;
                    let rn = resid_s[row_index];
                    let sp = &sigma_phi[row_index * r..(row_index + 1) * r];
                    if phi_s.is_some() {
                        for ((hv, &m), &p) in row.iter_mut().zip(mean_s).zip(sp) {
                            *hv *= phi_weight * (rn * m - p);
                        }
                    } else {
                        for (((hv, &m), &p), &v) in
                            row.iter_mut().zip(mean_s).zip(sp).zip(&variances)
                        {
                            *hv *= phi_weight * (rn * m - p * v);
                        }
                    }
                }
                Ok(())
            })?;
            let hw = matmul_parallel(1.0, h.view(), false, self.features.frequencies(), false)?; // N x d
            let lsd = ls.per_dimension(self.x.ncols())?;
            let per_dim: Vec<f64> = (0..self.x.ncols())
                .map(|k| self.x.column(k).dot(&hw.column(k)) / lsd[k])
                .collect();
            if self.ard {
                grad.extend(per_dim);
            } else {
                grad.push(per_dim.iter().sum());
            }
            grad.push(g_tau);
            grad.push(g_s2);
        }
        if !value.is_finite() {
            return Err(RffError::Optimizer {
                name: "hyperparameter objective".to_string(),
                reason: format!("not finite ({value}) at theta = {theta:?}"),
            });
        }
        Ok(HyperValue {
            value,
            gradient: grad,
            mean,
            variances,
            jitter,
        })
    }
}
