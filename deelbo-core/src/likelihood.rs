//! Likelihoods: Gaussian with learned noise, categorical from logits, and the analytic expected
//! Gaussian log-likelihood of a linear-in-weights model under `q = N(m, sigma^2 I)`.
//!
//! All log-likelihoods are in nats and summed over examples in `f64` with
//! [`crate::reduce::deterministic_sum`].

use ndarray::ArrayView2;

use crate::check;
use crate::error::{CoreError, Result};
use crate::reduce::deterministic_sum;

/// `ln(2 pi)`, the normalizer of every Gaussian log-density in the workspace.
pub const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// `sum_n ln N(y_n; f_n, s^2) = sum_n [ -1/2 ln(2 pi s^2) - (y_n - f_n)^2/(2 s^2) ]` for
/// targets `y`, predictions `f` and noise variance `s^2 > 0`.
pub fn gaussian_log_likelihood(y: &[f64], f: &[f64], noise_variance: f64) -> Result<f64> {
    check::same_len("predictions", y.len(), f.len())?;
    let s2 = check::positive("noise variance", noise_variance)?;
    check::all_finite("targets", y)?;
    check::all_finite("predictions", f)?;
    let norm = -0.5 * (LN_2PI + s2.ln());
    Ok(deterministic_sum(
        y.iter()
            .zip(f)
            .map(|(y, f)| norm - (y - f) * (y - f) / (2.0 * s2)),
    ))
}

/// The expected Gaussian log-likelihood of a linear model `f_n = phi_n^T w` under
/// `q(w) = N(m, S)`:
///
/// `E_q[ln p(y | w)] = sum_n [ -1/2 ln(2 pi s^2) - ((y_n - phi_n^T m)^2 + phi_n^T S phi_n)/(2 s^2) ]`
///
/// `predictions[n] = phi_n^T m`; `feature_variances[n] = phi_n^T S phi_n`
/// (`= sigma^2 ||phi_n||^2` for `S = sigma^2 I`). Exact: no Monte Carlo.
pub fn expected_gaussian_log_likelihood(
    y: &[f64],
    predictions: &[f64],
    feature_variances: &[f64],
    noise_variance: f64,
) -> Result<f64> {
    check::same_len("predictions", y.len(), predictions.len())?;
    check::same_len("feature variances", y.len(), feature_variances.len())?;
    let s2 = check::positive("noise variance", noise_variance)?;
    check::all_finite("targets", y)?;
    check::all_finite("predictions", predictions)?;
    check::all_finite("feature variances", feature_variances)?;
    let norm = -0.5 * (LN_2PI + s2.ln());
    Ok(deterministic_sum(
        y.iter()
            .zip(predictions)
            .zip(feature_variances)
            .map(|((y, f), v)| norm - ((y - f) * (y - f) + v) / (2.0 * s2)),
    ))
}

/// Row-wise `log_softmax(z)_c = z_c - logsumexp(z)`, with `logsumexp(z) = z_max + ln sum_c
/// e^(z_c - z_max)` (no overflow).
pub fn log_softmax_row(logits: &[f64], out: &mut [f64]) -> Result<()> {
    check::same_len("log-softmax output", logits.len(), out.len())?;
    check::all_finite("logits", logits)?;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
    for (o, z) in out.iter_mut().zip(logits) {
        *o = z - lse;
    }
    Ok(())
}

/// `sum_n ln softmax(z_n)_{y_n}` for a `N x C` matrix of logits and labels in `0..C`.
pub fn categorical_log_likelihood(logits: ArrayView2<'_, f64>, labels: &[usize]) -> Result<f64> {
    check::same_len("labels", logits.nrows(), labels.len())?;
    let classes = logits.ncols();
    let mut row_buf = vec![0.0; classes];
    let mut out = vec![0.0; classes];
    let mut terms = Vec::with_capacity(labels.len());
    for (n, (row, &label)) in logits.rows().into_iter().zip(labels).enumerate() {
        if label >= classes {
            return Err(CoreError::LabelOutOfRange {
                row: n,
                label,
                classes,
            });
        }
        row_buf.iter_mut().zip(row).for_each(|(b, &z)| *b = z);
        log_softmax_row(&row_buf, &mut out).map_err(|e| match e {
            CoreError::NonFinite { value, .. } => CoreError::NonFinite {
                name: format!("logits row {n}"),
                index: n,
                value,
            },
            other => other,
        })?;
        terms.push(out[label]);
    }
    Ok(deterministic_sum(terms.into_iter()))
}

/// The gradient of the mean categorical NLL `-(1/N) sum_n ln softmax(z_n)_{y_n}` with respect to
/// the logits: `(softmax(z_n) - onehot(y_n))/N`, written into `grad` (`N x C`, row-major).
pub fn categorical_mean_nll_gradient(
    logits: ArrayView2<'_, f64>,
    labels: &[usize],
    grad: &mut [f64],
) -> Result<()> {
    let (n, c) = logits.dim();
    check::same_len("labels", n, labels.len())?;
    check::same_len("gradient buffer", n * c, grad.len())?;
    let mut row_buf = vec![0.0; c];
    for (i, (row, &label)) in logits.rows().into_iter().zip(labels).enumerate() {
        if label >= c {
            return Err(CoreError::LabelOutOfRange {
                row: i,
                label,
                classes: c,
            });
        }
        let g = &mut grad[i * c..(i + 1) * c];
        row_buf.iter_mut().zip(row).for_each(|(b, &z)| *b = z);
        log_softmax_row(&row_buf, g)?;
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = (gk.exp() - if k == label { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gaussian_matches_direct_formula() {
        let y = [0.3, -1.0, 2.0];
        let f = [0.1, -0.5, 2.5];
        let s2 = 0.7f64;
        let direct: f64 = y
            .iter()
            .zip(&f)
            .map(|(y, f)| {
                -0.5 * (2.0 * std::f64::consts::PI * s2).ln() - (y - f) * (y - f) / (2.0 * s2)
            })
            .sum();
        assert!((gaussian_log_likelihood(&y, &f, s2).unwrap() - direct).abs() < 1e-12);
        assert!(gaussian_log_likelihood(&y, &f, 0.0).is_err());
        assert!(gaussian_log_likelihood(&y, &f[..2], 1.0).is_err());
        assert!(gaussian_log_likelihood(&[f64::NAN], &[0.0], 1.0).is_err());
    }

    #[test]
    fn log_softmax_is_stable_for_huge_logits() {
        let z = array![[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]];
        let ll = categorical_log_likelihood(z.view(), &[0, 2]).unwrap();
        assert!((ll - (0.0 + (1.0f64 / 3.0).ln())).abs() < 1e-12);
        assert!(categorical_log_likelihood(z.view(), &[0, 3]).is_err());
        assert!(categorical_log_likelihood(z.view(), &[0]).is_err());
    }

    #[test]
    fn categorical_gradient_matches_finite_differences() {
        let z = array![[0.2, -1.3, 0.7], [2.0, 0.1, -0.4]];
        let labels = [2, 0];
        let mut g = vec![0.0; 6];
        categorical_mean_nll_gradient(z.view(), &labels, &mut g).unwrap();
        let h = 1e-6;
        for (idx, &g_idx) in g.iter().enumerate() {
            let (i, j) = (idx / 3, idx % 3);
            let mut zp = z.clone();
            zp[[i, j]] += h;
            let mut zm = z.clone();
            zm[[i, j]] -= h;
            let fp = -categorical_log_likelihood(zp.view(), &labels).unwrap() / 2.0;
            let fm = -categorical_log_likelihood(zm.view(), &labels).unwrap() / 2.0;
            assert!(((fp - fm) / (2.0 * h) - g_idx).abs() < 1e-8);
        }
    }
}
