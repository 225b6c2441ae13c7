//! A named set of weight tensors: what a forward pass reads, whether the weights are a
//! reparameterized sample `w~ = m + sigma eps`, the posterior means, or plain MAP weights.

use candle_core::Tensor;

use crate::error::{AdapterError, Result};

/// Named weight tensors, in insertion order. Cloning is cheap (candle tensors are shared).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    entries: Vec<(String, Tensor)>,
}

impl Weights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a tensor under `name` (a later entry with the same name shadows nothing: names
    /// are expected to be unique, and [`Weights::get`] returns the first match).
    pub fn push(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.entries.push((name.into(), tensor));
    }

    /// The tensor named `name`, or [`AdapterError::MissingTensor`].
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| AdapterError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// All `(name, tensor)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of scalar weights over all tensors.
    pub fn num_weights(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// The same weights detached from the autodiff graph (for evaluation or saving).
    pub fn detached(&self) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.detach()))
                .collect(),
        }
    }
}

impl FromIterator<(String, Tensor)> for Weights {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}
