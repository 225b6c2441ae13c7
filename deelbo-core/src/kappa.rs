//! Kappa, the likelihood weight of the data-emphasized ELBO:
//! `J_kappa = kappa sum_n E_q[log p(y_n | x_n, w)] - sum_b KL(q_b || p_b)`.

use crate::check;
use crate::error::{CoreError, Result};

/// How kappa is chosen from the model size `D` and the training-set size `N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KappaRule {
    /// `kappa = 1`: the plain ELBO (a true lower bound on the log evidence).
    Standard,
    /// `kappa = D/N`, the recommendation when `D >> N`. When `D < N` this would fall below 1 and
    /// is clamped to 1 (the plain ELBO); [`Kappa::clamped`] reports whether that happened.
    DataEmphasized,
    /// `kappa = D/(2N)`, clamped to 1 like [`KappaRule::DataEmphasized`]: the rule for Gaussian
    /// likelihoods with a learned noise (the published RFF code used it for its regression figure).
    ///
    /// # Formula
    ///
    /// With noise variance `s^2`,
    /// `kappa ln N(y | f, s^2) = ln N(y | f, s^2/kappa) - (kappa - 1)/2 ln(2 pi s^2) - 1/2 ln kappa`,
    /// so `J_kappa(q, s^2) = ELBO(q; s^2/kappa) - N (kappa - 1)/2 ln(2 pi s^2) - N/2 ln kappa`:
    /// kappa acts as an improper prior pushing the noise down. Along interpolating fits
    /// (`N <= D`, isotropic `q`, learned prior variance) the ELBO part grows like `D/2 ln(1/s^2)`
    /// and the likelihood part like `kappa N/2 ln s^2`, so `J ~ (D - kappa N)/2 ln s^2`: flat at
    /// `kappa = D/N`, unbounded above it (the fit collapses to the noise floor). `D/(2N)` keeps
    /// the margin `(D - kappa N)/2 = D/4`, which grows with `D` (an independent check found
    /// `D/8` already overfitting and `D/N - 1` still collapsing). For `N >= D/2` the rule gives
    /// less than 1 and is clamped to 1, the plain ELBO ([`Kappa::clamped`]).
    HalfDataEmphasized,
    /// A fixed `kappa >= 1`; smaller or non-finite values are rejected.
    Fixed(f64),
}

/// A resolved, validated kappa (finite, `>= 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kappa {
    value: f64,
    clamped: bool,
}

impl Kappa {
    /// Validate a raw value: finite and `>= 1`.
    pub fn new(value: f64) -> Result<Self> {
        if value.is_finite() && value >= 1.0 {
            Ok(Self {
                value,
                clamped: false,
            })
        } else {
            Err(CoreError::InvalidKappa { value })
        }
    }

    /// The value of kappa.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// `true` when the rule asked for a value below 1 and it was raised to 1.
    pub fn clamped(&self) -> bool {
        self.clamped
    }
}

impl KappaRule {
    /// Resolve the rule for a model of `params` weights (`D`) trained on `examples` examples
    /// (`N`). Errors: `D = 0`, `N = 0`, or a fixed kappa below 1 / not finite.
    pub fn resolve(&self, params: usize, examples: usize) -> Result<Kappa> {
        check::has_parameters("the model", params)?;
        if examples == 0 {
            return Err(CoreError::NoExamples);
        }
        let ratio = params as f64 / examples as f64;
        let raw = match *self {
            KappaRule::Standard => 1.0,
            KappaRule::DataEmphasized => ratio,
            KappaRule::HalfDataEmphasized => ratio / 2.0,
            KappaRule::Fixed(k) => return Kappa::new(k),
        };
        Ok(if raw < 1.0 {
            Kappa {
                value: 1.0,
                clamped: true,
            }
        } else {
            Kappa {
                value: raw,
                clamped: false,
            }
        })
    }

    /// A short name for tables: `elbo`, `de-elbo`, `de-elbo-half`, `fixed`.
    pub fn name(&self) -> &'static str {
        match self {
            KappaRule::Standard => "elbo",
            KappaRule::DataEmphasized => "de-elbo",
            KappaRule::HalfDataEmphasized => "de-elbo-half",
            KappaRule::Fixed(_) => "fixed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_give_their_values() {
        assert_eq!(KappaRule::Standard.resolve(1024, 20).unwrap().value(), 1.0);
        assert_eq!(
            KappaRule::DataEmphasized.resolve(1024, 20).unwrap().value(),
            51.2
        );
        assert_eq!(
            KappaRule::HalfDataEmphasized
                .resolve(1024, 20)
                .unwrap()
                .value(),
            25.6
        );
        assert_eq!(
            KappaRule::Fixed(6.0).resolve(1024, 20).unwrap().value(),
            6.0
        );
    }

    #[test]
    fn small_ratios_clamp_and_bad_values_fail() {
        let k = KappaRule::DataEmphasized.resolve(10, 100).unwrap();
        assert_eq!(k.value(), 1.0);
        assert!(k.clamped());
        assert!(matches!(
            KappaRule::Fixed(0.5).resolve(10, 10),
            Err(CoreError::InvalidKappa { .. })
        ));
        assert!(KappaRule::Fixed(f64::NAN).resolve(10, 10).is_err());
        assert!(KappaRule::Fixed(f64::INFINITY).resolve(10, 10).is_err());
        assert_eq!(
            KappaRule::Standard.resolve(10, 0),
            Err(CoreError::NoExamples)
        );
        assert!(matches!(
            KappaRule::Standard.resolve(0, 10),
            Err(CoreError::NoParameters { .. })
        ));
    }
}
