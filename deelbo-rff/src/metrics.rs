//! Test metrics of a Gaussian predictive distribution.

use crate::error::{Result, RffError};
use crate::evidence::LN_2PI;

fn check(what: &str, y: &[f64], mean: &[f64], std: Option<&[f64]>) -> Result<()> {
    if y.len() != mean.len() || std.is_some_and(|s| s.len() != y.len()) {
        return Err(RffError::Shape {
            name: format!("{what} predictions"),
            expected: y.len(),
            found: mean.len(),
        });
    }
    if y.is_empty() {
        return Err(RffError::TooFewExamples {
            required: 1,
            found: 0,
        });
    }
    Ok(())
}

/// Root mean squared error `sqrt(mean_n (y_n - mu_n)^2)`, in the units of `y`.
pub fn rmse(y: &[f64], mean: &[f64]) -> Result<f64> {
    check("RMSE", y, mean, None)?;
    let s = deelbo_core::deterministic_sum(y.iter().zip(mean).map(|(a, b)| (a - b) * (a - b)));
    Ok((s / y.len() as f64).sqrt())
}

/// Mean Gaussian negative log-likelihood per point,
/// `mean_n [ 1/2 ln(2 pi v_n) + (y_n - mu_n)^2/(2 v_n) ]`, `v_n = std_n^2` (nats per point).
pub fn gaussian_nll(y: &[f64], mean: &[f64], std: &[f64]) -> Result<f64> {
    check("NLL", y, mean, Some(std))?;
    if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(RffError::InvalidConfig {
            name: "predictive standard deviation".to_string(),
            reason: format!("must be positive and finite, got {bad}"),
        });
    }
    let s = deelbo_core::deterministic_sum(y.iter().zip(mean).zip(std).map(|((y, m), s)| {
        let v = s * s;
        0.5 * (LN_2PI + v.ln()) + (y - m) * (y - m) / (2.0 * v)
    }));
    Ok(s / y.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_values() {
        let y = [1.0, 2.0];
        let m = [0.0, 2.0];
        assert!((rmse(&y, &m).unwrap() - (0.5f64).sqrt()).abs() < 1e-15);
        // Unit variance: NLL = 1/2 ln 2pi + mean((y - m)^2)/2 = 0.9189385 + 0.25.
        let nll = gaussian_nll(&y, &m, &[1.0, 1.0]).unwrap();
        assert!((nll - (0.918_938_533_204_672_7 + 0.25)).abs() < 1e-12);
        assert!(gaussian_nll(&y, &m, &[1.0, 0.0]).is_err());
        assert!(rmse(&y, &m[..1]).is_err());
    }
}
