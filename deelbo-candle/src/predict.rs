//! Evaluation of a trained posterior: the posterior-mean prediction `softmax(f(x; m))` and the
//! S-sample predictive `p(y | x) ~= (1/S) sum_s softmax(f(x; m + sigma eps_s))`, and the metrics
//! (accuracy, mean negative log-likelihood) of either.

use candle_core::{DType, Tensor};
use candle_nn::ops::log_softmax;
use deelbo_core::check;
use deelbo_core::deterministic_sum;

use crate::error::{AdapterError, Result};
use crate::model::VariationalModel;
use crate::weights::Weights;

/// Accuracy and NLL of class predictions on a labelled set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassificationMetrics {
    /// Fraction of examples whose most probable class is the label, in `[0, 1]`.
    pub accuracy: f64,
    /// `-(1/n) sum_n ln p(y_n | x_n)`, nats per example.
    pub nll: f64,
    /// Number of examples `n`.
    pub examples: usize,
}

/// Metrics from a `(n, C)` matrix of log-probabilities and `n` labels in `0..C`. Ties in the
/// arg-max go to the lowest class index. The NLL sum is in `f64` (deterministic order).
pub fn metrics_from_log_probs(log_probs: &Tensor, labels: &[u32]) -> Result<ClassificationMetrics> {
    let rows = log_probs.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    if rows.len() != labels.len() {
        return Err(AdapterError::InvalidLabels {
            name: "labels".to_string(),
            reason: format!("{} labels for {} predictions", labels.len(), rows.len()),
        });
    }
    if rows.is_empty() {
        return Err(AdapterError::InvalidLabels {
            name: "labels".to_string(),
            reason: "no examples".to_string(),
        });
    }
    let mut correct = 0usize;
    let mut terms = Vec::with_capacity(rows.len());
    for (n, (row, &y)) in rows.iter().zip(labels).enumerate() {
        let y = y as usize;
        let Some(&lp) = row.get(y) else {
            return Err(AdapterError::InvalidLabels {
                name: "labels".to_string(),
                reason: format!("label {y} at row {n} is outside 0..{}", row.len()),
            });
        };
        let best = row
            .iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |acc, (c, &v)| {
                if v > acc.1 { (c, v) } else { acc }
            })
            .0;
        if best == y {
            correct += 1;
        }
        terms.push(-lp);
    }
    let n = rows.len();
    Ok(ClassificationMetrics {
        accuracy: correct as f64 / n as f64,
        nll: deterministic_sum(terms.into_iter()) / n as f64,
        examples: n,
    })
}

/// `log softmax(f(x; m))` at the posterior means (detached), `(n, C)`.
pub fn posterior_mean_log_probs<F>(
    model: &VariationalModel,
    forward: F,
    x: &Tensor,
) -> Result<Tensor>
where
    F: Fn(&Weights, &Tensor) -> Result<Tensor>,
{
    let logits = forward(&model.mean_weights().detached(), x)?;
    Ok(log_softmax(&logits, 1)?)
}

fn check_samples(samples: usize) -> Result<()> {
    check::in_range(
        "predictive samples",
        samples as f64,
        1.0..=f64::from(u32::MAX),
    )?;
    Ok(())
}

/// `ln((1/S) sum_s p_s)` per entry from `S` matrices of log-probabilities `ln p_s` (all of
/// shape `dims`), by a stable log-sum-exp in `f64`.
///
/// # Formula
/// ```text
/// ln p(y | x) = max_s l_s + ln sum_s exp(l_s - max_s l_s) - ln S
/// ```
fn log_mean_exp(
    per_sample: &[Vec<f64>],
    dims: (usize, usize),
    device: &candle_core::Device,
) -> Result<Tensor> {
    let ln_s = (per_sample.len() as f64).ln();
    let out: Vec<f64> = (0..dims.0 * dims.1)
        .map(|j| {
            let max = per_sample
                .iter()
                .map(|v| v[j])
                .fold(f64::NEG_INFINITY, f64::max);
            max + per_sample
                .iter()
                .map(|v| (v[j] - max).exp())
                .sum::<f64>()
                .ln()
                - ln_s
        })
        .collect();
    Ok(Tensor::from_vec(out, dims, device)?)
}

/// `ln((1/S) sum_s softmax(f(x; w_s)))` for `S = samples` draws
/// `w_s = model.sample_predictive(seed, s)`, combined per entry by a stable log-sum-exp in `f64`;
/// `(n, C)`, dtype `f64`.
///
/// # Formula
/// ```text
/// p(y | x) ~= (1/S) sum_s softmax(f(x; m + sigma eps_s))_y
/// ```
pub fn predictive_log_probs<F>(
    model: &VariationalModel,
    forward: F,
    x: &Tensor,
    samples: usize,
    seed: u64,
) -> Result<Tensor>
where
    F: Fn(&Weights, &Tensor) -> Result<Tensor>,
{
    check_samples(samples)?;
    let mut per_sample: Vec<Vec<f64>> = Vec::with_capacity(samples);
    let mut dims = (0, 0);
    for s in 0..samples {
        let w = model.sample_predictive(seed, s as u32)?;
        let lp = log_softmax(&forward(&w, x)?, 1)?.to_dtype(DType::F64)?;
        dims = lp.dims2()?;
        per_sample.push(lp.flatten_all()?.to_vec1::<f64>()?);
    }
    log_mean_exp(&per_sample, dims, x.device())
}

/// The S-sample predictive of any candle model: `logits_of(vb)` builds the model from the
/// VarBuilder `vb` = [`VariationalModel::predictive_var_builder`]`(seed, s)` and returns its
/// logits `(n, C)` on the evaluation inputs; the result is `ln((1/S) sum_s softmax(logits_s))`,
/// `(n, C)`, `f64`.
///
/// # Formula
/// ```text
/// p(y | x) ~= (1/S) sum_s softmax(f(x; m + sigma eps_s))_y
/// ```
pub fn predictive_log_probs_of<F>(
    model: &VariationalModel,
    logits_of: F,
    samples: usize,
    seed: u64,
) -> Result<Tensor>
where
    F: Fn(candle_nn::VarBuilder<'_>) -> Result<Tensor>,
{
    check_samples(samples)?;
    let mut per_sample: Vec<Vec<f64>> = Vec::with_capacity(samples);
    let mut dims = (0, 0);
    for s in 0..samples {
        let logits = logits_of(model.predictive_var_builder(seed, s as u32)?)?;
        let lp = log_softmax(&logits, 1)?.to_dtype(DType::F64)?;
        dims = lp.dims2()?;
        per_sample.push(lp.flatten_all()?.to_vec1::<f64>()?);
    }
    log_mean_exp(&per_sample, dims, model.device())
}
