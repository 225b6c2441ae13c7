//! Seeded initialization of a `candle_nn::VarMap`: candle's own `Init` draws from an unseeded
//! generator, so two runs of `VarBuilder::from_varmap` start from different weights. The
//! VarBuilder of [`seeded_var_builder`] creates every missing tensor from the core's
//! counter-based noise instead, keyed by the seed and the tensor's name, following the layer's
//! own `Init` hint (constant, normal, uniform, Kaiming normal/uniform with candle's fan and
//! gain rules). Same seed, same weights, on every machine and thread count.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use deelbo_core::uniform_at;
use deelbo_core::{NoiseKey, fill_normals};

/// Noise streams of initialization: `INIT_STREAM ^ fnv1a(name)`.
const INIT_STREAM: u64 = 0x1417_0000_0000_0000;

/// 64-bit FNV-1a of a tensor name: the stream of its initialization noise.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct SeededInit<'a> {
    varmap: &'a VarMap,
    seed: u64,
}

/// The values of `init` for `shape`, drawn with `key`: `eps_j = normal_at(key, j)` or
/// `u_j = uniform_at(key, j)` for element `j` (row-major).
fn values(init: Init, shape: &Shape, key: NoiseKey) -> Vec<f64> {
    let n = shape.elem_count();
    let normals = |mean: f64, std: f64| {
        let mut eps = vec![0.0f32; n];
        fill_normals(key, 0, &mut eps);
        eps.into_iter()
            .map(|z| mean + std * f64::from(z))
            .collect::<Vec<f64>>()
    };
    let uniforms = |lo: f64, up: f64| {
        (0..n)
            .map(|j| lo + (up - lo) * uniform_at(key, j as u64))
            .collect::<Vec<f64>>()
    };
    match init {
        Init::Const(c) => vec![c; n],
        Init::Randn { mean, stdev } => normals(mean, stdev),
        Init::Uniform { lo, up } => uniforms(lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normals(0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniforms(-bound, bound)
                }
            }
        }
    }
}

impl SimpleBackend for SeededInit<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data =
            self.varmap.data().lock().map_err(|_| {
                candle_core::Error::Msg("the VarMap's lock is poisoned".to_string())
            })?;
        if let Some(v) = data.get(name) {
            let t = v.as_tensor();
            if t.shape() != &s {
                candle_core::bail!(
                    "tensor `{name}` has shape {:?} in the VarMap, the model asks for {:?}",
                    t.dims(),
                    s.dims()
                );
            }
            return t.to_dtype(dtype);
        }
        let key = NoiseKey::new(self.seed, INIT_STREAM ^ name_hash(name));
        let t = Tensor::from_vec(values(h, &s, key), s.clone(), dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data =
            self.varmap.data().lock().map_err(|_| {
                candle_core::Error::Msg("the VarMap's lock is poisoned".to_string())
            })?;
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no tensor named `{name}` in the VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A VarBuilder that returns the tensors of `varmap` and creates missing ones (as trainable
/// `Var`s inserted into `varmap`) from the layer's `Init` hint with seeded noise: the stream of
/// tensor `name` is `NoiseKey::new(seed, INIT_STREAM ^ fnv1a(name))`, element `j` its `j`-th
/// normal (`Randn`, Kaiming normal) or uniform (`Uniform`, Kaiming uniform) draw.
///
/// # Formula
/// ```text
/// Kaiming: std = gain / sqrt(fan);  normal: w_j = std eps_j;  uniform: w_j ~ U(-sqrt(3) std, sqrt(3) std)
/// ```
pub fn seeded_var_builder<'a>(
    varmap: &'a VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'a> {
    VarBuilder::from_backend(Box::new(SeededInit { varmap, seed }), dtype, device.clone())
}
