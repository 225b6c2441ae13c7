//! The (DE-)ELBO methods: the closed-form inner optimum ([`crate::elbo`]) at each lengthscale,
//! a global isotropic lengthscale search, and optionally ARD ([`super::ard`]).

use deelbo_core::{Kappa, KappaRule};
use ndarray::Array2;

use crate::data::RowSource;
use crate::elbo::{ClosedFormElbo, ElboState};
use crate::error::{Result, RffError};
use crate::features::Lengthscale;
use crate::fit::ard::{IsoStart, ard_search, iso_polish};
use crate::fit::builder::{ModelParts, build_model};
use crate::fit::config::{Method, RffConfig};
use crate::fit::prepared::Prepared;
use crate::fit::report::FitReport;
use crate::fit::statistics::{final_spectrum, spectrum_rmse};
use crate::hyper::{HyperObjective, PosteriorFamily};
use crate::model::WeightCovariance;
use crate::search::maximize_parallel;
use crate::spectrum::Spectrum;

/// The inner ELBO optimum at one lengthscale.
pub(crate) struct ElboAt {
    pub phi: Array2<f64>,
    pub spectrum: Spectrum,
    pub state: ElboState,
    pub objective: f64,
}

/// Features, spectrum and the coordinate-ascent optimum at lengthscale `ls`.
pub(crate) fn elbo_at(
    prep: &Prepared,
    config: &RffConfig,
    kappa: Kappa,
    ls: &Lengthscale,
) -> Result<ElboAt> {
    let phi = prep.features.matrix(prep.x.view(), ls)?;
    let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
    let opt = ClosedFormElbo::new(&spectrum, kappa, config.noise)?.maximize(&config.ascent)?;
    Ok(ElboAt {
        phi,
        spectrum,
        state: opt.state,
        objective: opt.objective,
    })
}

/// Fit by maximizing `J_kappa` for the kappa `rule`.
pub(crate) fn fit(
    prep: &Prepared,
    config: &RffConfig,
    rule: KappaRule,
    source: Option<&mut dyn RowSource>,
    progress: &mut dyn FnMut(usize),
) -> Result<FitReport> {
    let kappa = rule.resolve(config.features, prep.n())?;
    let sqrt_d = prep.sqrt_d();
    let search = maximize_parallel(&config.search.lengthscale, "lengthscale", |t| {
        let at = elbo_at(
            prep,
            config,
            kappa,
            &Lengthscale::Isotropic(t.exp() * sqrt_d),
        )?;
        Ok((at.objective, ()))
    })?;
    let mut evaluations = search.evaluations;
    let mut ls = Lengthscale::Isotropic(search.argmax.exp() * sqrt_d);
    let mut at = elbo_at(prep, config, kappa, &ls)?;
    let family = config.posterior;
    let needs_joint = (config.ard && prep.x.ncols() > 1) || family == PosteriorFamily::Diagonal;
    if needs_joint {
        let objective = HyperObjective::Elbo {
            kappa: kappa.value(),
            family,
        };
        let start = IsoStart {
            lengthscale: search.argmax.exp() * sqrt_d,
            tau: at.state.tau,
            noise_variance: at.state.noise_variance,
        };
        let r = if config.ard && prep.x.ncols() > 1 {
            ard_search(prep, config, objective, &start)?
        } else {
            iso_polish(prep, config, objective, &start)?
        };
        evaluations += r.evaluations;
        if family == PosteriorFamily::Diagonal {
            if prep.subsampled {
                return Err(RffError::InvalidConfig {
                    name: "posterior".to_string(),
                    reason: format!(
                        "a diagonal q needs every row in memory: N = {} is above max_rows = {}",
                        prep.n(),
                        config.search.max_rows
                    ),
                });
            }
            let k = kappa.value();
            let parts = ModelParts {
                lengthscale: r.lengthscale,
                weights: r.value.mean.to_vec(),
                noise_variance: r.noise_variance,
                prior_variance: r.tau,
                covariance: WeightCovariance::Diagonal {
                    variances: r.value.variances.clone(),
                },
                objective: r.value.value,
                log_density_count: k * prep.n() as f64,
            };
            return Ok(FitReport {
                model: build_model(prep, config, Method::Elbo(rule), Some(k), parts),
                profile: prep.profile_in_input_units(&search.grid_values),
                evaluations,
                kappa: None,
                train_rmse: None,
                warnings: Vec::new(),
            });
        }
        let ard_at = elbo_at(prep, config, kappa, &r.lengthscale)?;
        evaluations += 1;
        if ard_at.objective >= at.objective {
            at = ard_at;
            ls = r.lengthscale;
        }
    }
    if config.ard && !matches!(ls, Lengthscale::Ard(_)) {
        ls = Lengthscale::Ard(vec![search.argmax.exp() * sqrt_d; prep.x.ncols()]);
    }
    if prep.subsampled {
        let (full, _) = final_spectrum(prep, source, &ls, progress)?;
        let opt = ClosedFormElbo::new(&full, kappa, config.noise)?.maximize(&config.ascent)?;
        at = ElboAt {
            phi: Array2::zeros((0, 0)),
            spectrum: full,
            state: opt.state,
            objective: opt.objective,
        };
    }
    let weights = at.spectrum.weights(at.phi.view(), &at.state.coeffs)?;
    let train_rmse = spectrum_rmse(&at.spectrum, &at.state.coeffs, prep);
    let k = kappa.value();
    let parts = ModelParts {
        lengthscale: ls,
        weights: weights.to_vec(),
        noise_variance: at.state.noise_variance,
        prior_variance: at.state.tau,
        covariance: WeightCovariance::Isotropic {
            sigma2: at.state.sigma2,
        },
        objective: at.objective,
        log_density_count: k * prep.n() as f64,
    };
    Ok(FitReport {
        model: build_model(prep, config, Method::Elbo(rule), Some(k), parts),
        profile: prep.profile_in_input_units(&search.grid_values),
        evaluations,
        kappa: None,
        train_rmse: Some(train_rmse),
        warnings: Vec::new(),
    })
}
