//! The versioned model file `deelbo rff fit` writes and `deelbo rff predict` reads: JSON with a
//! format tag, a version, the column names and the library's [`RffModel`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use deelbo_rff::RffModel;
use serde::{Deserialize, Serialize};

/// The `format` tag of a model file.
pub const FORMAT: &str = "deelbo-rff-model";
/// The model-file version this build writes and reads.
pub const VERSION: u64 = 1;

/// A model file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] when written by this build.
    pub version: u64,
    /// The deelbo version that wrote it.
    pub written_by: String,
    /// The target column's name.
    pub target: String,
    /// The input columns, in the order the model expects them.
    pub inputs: Vec<String>,
    /// The fitted model.
    pub model: RffModel,
}

impl ModelFile {
    /// Wrap a model with its column names.
    pub fn new(target: String, inputs: Vec<String>, model: RffModel) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: VERSION,
            written_by: env!("CARGO_PKG_VERSION").to_string(),
            target,
            inputs,
            model,
        }
    }

    /// Write as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).context("cannot serialize the model")?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the model file {}", path.display()))
    }

    /// Read and check format, version and internal consistency.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the model file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!("{}: not a deelbo model file (invalid JSON)", path.display())
        })?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            bail!(
                "{}: not a deelbo model file (no \"format\": \"{FORMAT}\")",
                path.display()
            );
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(other) => bail!(
                "{}: model file version {other} is not supported by this deelbo (it reads version {VERSION}); refit the model",
                path.display()
            ),
            None => bail!("{}: model file has no version number", path.display()),
        }
        let file: ModelFile = serde_json::from_value(value)
            .with_context(|| format!("{}: malformed model file", path.display()))?;
        if file.inputs.len() != file.model.dim() {
            bail!(
                "{}: malformed model file: {} input columns but the model expects {}",
                path.display(),
                file.inputs.len(),
                file.model.dim()
            );
        }
        file.model
            .validate()
            .with_context(|| format!("{}: malformed model file", path.display()))?;
        Ok(file)
    }
}
