//! The adapter layer to `deelbo-core`: a host copy of a block's means and prior means as flat
//! `f64` slices, which implement the core's [`deelbo_core::ParamBlock`] trait. Through it every
//! core function (`KlTerms::from_block`, `Objective::evaluate`, `reparameterize`) runs on a candle
//! model's current state, giving the reference values the candle expressions are tested against.
//!
//! (The core's tensor traits are infallible and return host `f64`s, while every candle op is
//! fallible and may live on a device, so the traits are implemented on this snapshot rather than
//! on `candle_core::Tensor` itself.)

use candle_core::{DType, Tensor};
use deelbo_core::LowRankScale;
use deelbo_core::{IsotropicPosterior, KlTerms, LowRankPrior};

use crate::block::VariationalBlock;
use crate::error::Result;

/// A flat host copy of one block (tensor after tensor, row-major, as in the noise layout).
#[derive(Debug, Clone, PartialEq)]
pub struct HostBlock {
    /// The variational means `m`, `D_b` values.
    pub mean: Vec<f64>,
    /// The prior means `mu` (`None` = zero).
    pub prior_mean: Option<Vec<f64>>,
}

/// Flatten tensors (row-major, in order) into one host `f64` vector.
pub fn flatten_to_host<'a, I: IntoIterator<Item = &'a Tensor>>(tensors: I) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}

impl HostBlock {
    /// Copy a block's current means and prior means to the host.
    pub fn of(block: &VariationalBlock) -> Result<Self> {
        let mean = flatten_to_host(block.tensors().iter().map(|t| t.mean.as_tensor()))?;
        let prior_mean = if block.zero_prior_mean() {
            None
        } else {
            let mut mu = Vec::with_capacity(mean.len());
            for t in block.tensors() {
                match &t.prior_mean {
                    Some(p) => mu.extend(flatten_to_host([p])?),
                    None => mu.extend(std::iter::repeat_n(0.0, t.mean.elem_count())),
                }
            }
            Some(mu)
        };
        Ok(Self { mean, prior_mean })
    }

    /// The core's [`KlTerms`] for this block under the isotropic posterior `q`
    /// (`KlTerms::from_block(m, mu, q.stats())`).
    pub fn kl_terms(&self, q: &IsotropicPosterior) -> Result<KlTerms> {
        Ok(KlTerms::from_block(
            &self.mean[..],
            self.prior_mean.as_deref(),
            q.stats(),
        )?)
    }

    /// The core's [`KlTerms`] for this block under a low-rank-plus-diagonal prior and the
    /// isotropic posterior `q` (`LowRankPrior::kl_terms(m, mu, sigma)`; zero prior mean when
    /// the block has none).
    pub fn low_rank_kl_terms(
        &self,
        prior: &LowRankPrior,
        q: &IsotropicPosterior,
    ) -> Result<KlTerms> {
        let zeros;
        let mu = match &self.prior_mean {
            Some(mu) => mu.as_slice(),
            None => {
                zeros = vec![0.0; self.mean.len()];
                zeros.as_slice()
            }
        };
        Ok(prior.kl_terms(
            &self.mean[..],
            mu,
            LowRankScale::Isotropic { sigma: q.sigma() },
        )?)
    }
}
