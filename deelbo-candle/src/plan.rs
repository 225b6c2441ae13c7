//! Block plans: which named tensors of a model form which prior block.
//!
//! A candle model names its tensors by path (`conv1.weight`, `bn1.running_mean`, `head.bias`,
//! ...), whether they live in a `candle_nn::VarMap` or a safetensors file. A [`BlockPlan`]
//! assigns every name to one block by prefix (`conv1` claims `conv1` and `conv1.*`), or marks it
//! a *buffer* by suffix (non-trainable state such as batch-norm running statistics, which is
//! neither sampled nor regularized). Inside a block the tensors are ordered by name, which fixes
//! the block's flat layout and so its noise stream.

use candle_core::Tensor;
use deelbo_core::PriorVariance;

use crate::block::{BlockSpec, PriorMean};
use crate::error::{AdapterError, Result};

/// Where a block's prior is centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorCentre {
    /// At the tensors' values when the model is built (pretrained weights: L2-SP).
    Initial,
    /// At zero (a new head: plain L2).
    Zero,
}

/// One block of a plan: its name, the name prefixes it claims, its prior centre and variance.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRule {
    /// The block's name (`backbone`, `head`).
    pub name: String,
    /// Tensor-name prefixes the block claims (`""` claims every name).
    pub prefixes: Vec<String>,
    /// Where the prior is centred.
    pub centre: PriorCentre,
    /// Learned or fixed prior variance.
    pub variance: PriorVariance,
}

impl BlockRule {
    /// A block with a learned variance.
    pub fn new<S: AsRef<str>>(name: &str, prefixes: &[S], centre: PriorCentre) -> Self {
        Self {
            name: name.to_string(),
            prefixes: prefixes.iter().map(|p| p.as_ref().to_string()).collect(),
            centre,
            variance: PriorVariance::Learned,
        }
    }

    fn claims(&self, tensor: &str) -> bool {
        self.prefixes.iter().any(|p| {
            p.is_empty()
                || tensor == p
                || (tensor.starts_with(p.as_str()) && tensor[p.len()..].starts_with('.'))
        })
    }
}

/// The assignment of a model's named tensors to prior blocks and buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    /// The blocks, in block-index order; a name goes to the first block that claims it.
    pub blocks: Vec<BlockRule>,
    /// Name suffixes of buffers (`running_mean` claims `bn1.running_mean`).
    pub buffer_suffixes: Vec<String>,
}

/// Named tensors, in order.
pub type NamedTensors = Vec<(String, Tensor)>;

/// The batch-norm running statistics of `candle_nn::batch_norm`.
pub const BATCH_NORM_BUFFERS: [&str; 2] = ["running_mean", "running_var"];

impl BlockPlan {
    /// The transfer-learning plan: a `backbone` block (L2-SP prior centred on the initial,
    /// pretrained values, variance `lambda` learned) claiming `backbone` prefixes, a `head` block
    /// (zero-mean prior, variance `tau` learned) claiming `head` prefixes, and the batch-norm
    /// running statistics as buffers.
    pub fn transfer<S: AsRef<str>>(backbone: &[S], head: &[S]) -> Self {
        Self {
            blocks: vec![
                BlockRule::new("backbone", backbone, PriorCentre::Initial),
                BlockRule::new("head", head, PriorCentre::Zero),
            ],
            buffer_suffixes: BATCH_NORM_BUFFERS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn is_buffer(&self, name: &str) -> bool {
        self.buffer_suffixes.iter().any(|s| {
            name == s || (name.ends_with(s.as_str()) && name[..name.len() - s.len()].ends_with('.'))
        })
    }

    /// Split named tensors into one [`BlockSpec`] per rule (tensors sorted by name; a tensor
    /// that is a candle `Var` stays shared) and the buffers (sorted by name). Errors when a
    /// tensor is claimed by nothing or a block gets no tensor.
    pub fn specs(&self, mut tensors: NamedTensors) -> Result<(Vec<BlockSpec>, NamedTensors)> {
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut per_block: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); self.blocks.len()];
        let mut buffers = Vec::new();
        for (name, t) in tensors {
            if self.is_buffer(&name) {
                buffers.push((name, t));
                continue;
            }
            match self.blocks.iter().position(|r| r.claims(&name)) {
                Some(b) => per_block[b].push((name, t)),
                None => {
                    return Err(AdapterError::UnassignedTensor {
                        reason: format!(
                            "no block prefix ({}) and no buffer suffix ({}) matches it",
                            self.blocks
                                .iter()
                                .flat_map(|r| r.prefixes.iter().map(|p| format!("`{p}`")))
                                .collect::<Vec<_>>()
                                .join(", "),
                            self.buffer_suffixes.join(", ")
                        ),
                        name,
                    });
                }
            }
        }
        let mut specs = Vec::with_capacity(self.blocks.len());
        for (rule, init) in self.blocks.iter().zip(per_block) {
            if init.is_empty() {
                return Err(AdapterError::InvalidBlock {
                    name: rule.name.clone(),
                    reason: format!("no tensor name starts with {:?}", rule.prefixes),
                });
            }
            let spec = match rule.centre {
                PriorCentre::Initial => {
                    let mu = init.iter().map(|(_, t)| t.detach()).collect();
                    BlockSpec {
                        name: rule.name.clone(),
                        init,
                        prior_mean: PriorMean::Tensors(mu),
                        variance: rule.variance,
                        covariance: Default::default(),
                    }
                }
                PriorCentre::Zero => BlockSpec::zero_mean(rule.name.clone(), init),
            };
            specs.push(spec.with_variance(rule.variance));
        }
        Ok((specs, buffers))
    }
}
