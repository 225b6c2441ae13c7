//! Element-wise functions candle lacks, with exact `f64` forward passes and backward passes, as
//! candle custom ops: [`softplus`] (the posterior-scale link `sigma = softplus(rho)`) and
//! [`log1p`] (for `KL* = (D/2) ln(1 + M/(D sigma^2))` when `M` is tiny).
//!
//! On the CPU the forward pass evaluates `deelbo_core::softplus` / `f64::ln_1p` per element (in
//! `f64`, rounded once to the tensor's dtype), so the adapter's scalars equal the core's. On other
//! devices the same functions are built from candle's primitive ops (slightly less accurate).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::Result;

fn map_f64(
    name: &'static str,
    storage: &CpuStorage,
    layout: &Layout,
    f: fn(f64) -> f64,
) -> candle_core::Result<(CpuStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    use candle_core::cpu_backend::unary_map;
    let out = match storage {
        CpuStorage::F32(s) => CpuStorage::F32(unary_map(s, layout, |x| f(f64::from(x)) as f32)),
        CpuStorage::F64(s) => CpuStorage::F64(unary_map(s, layout, f)),
        other => {
            return Err(candle_core::Error::UnsupportedDTypeForOp(
                other.dtype(),
                name,
            ));
        }
    };
    Ok((out, layout.shape().clone()))
}

/// `sigmoid(x)` forward only (the derivative of softplus), exact in `f64`.
struct SigmoidExact;

impl CustomOp1 for SigmoidExact {
    fn name(&self) -> &'static str {
        "deelbo-sigmoid"
    }
    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f64(self.name(), storage, layout, deelbo_core::sigmoid)
    }
}

/// `softplus(x) = ln(1 + e^x)`, backward `sigmoid(x)`.
struct SoftplusExact;

impl CustomOp1 for SoftplusExact {
    fn name(&self) -> &'static str {
        "deelbo-softplus"
    }
    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f64(self.name(), storage, layout, deelbo_core::softplus)
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let s = arg.detach().apply_op1_no_bwd(&SigmoidExact)?;
        Ok(Some(grad_res.mul(&s)?))
    }
}

/// `ln(1 + x)`, backward `1/(1 + x)`.
struct Log1pExact;

impl CustomOp1 for Log1pExact {
    fn name(&self) -> &'static str {
        "deelbo-log1p"
    }
    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f64(self.name(), storage, layout, f64::ln_1p)
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.div(&arg.detach().affine(1.0, 1.0)?)?))
    }
}

/// `softplus(x) = ln(1 + e^x)` element-wise, differentiable (`d/dx = sigmoid(x)`). On the CPU the
/// value is `deelbo_core::softplus` (`max(x, 0) + ln1p(e^-|x|)`) evaluated in `f64`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        Ok(x.apply_op1(SoftplusExact)?)
    } else {
        // max(x, 0) + ln(1 + e^-|x|)
        Ok(x.relu()?
            .add(&x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?)
    }
}

/// `ln(1 + x)` element-wise for `x > -1`, differentiable (`d/dx = 1/(1 + x)`); exact
/// (`f64::ln_1p`) on the CPU, so tiny `x` keep their relative precision.
pub fn log1p(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        Ok(x.apply_op1(Log1pExact)?)
    } else {
        Ok(x.affine(1.0, 1.0)?.log()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn softplus_and_log1p_match_the_core_and_differentiate() {
        let xs = [-30.0f64, -9.21, -1.0, 0.0, 0.7, 25.0];
        let v = Var::new(&xs[..], &Device::Cpu).unwrap();
        let y = softplus(v.as_tensor()).unwrap();
        let vals = y.to_vec1::<f64>().unwrap();
        for (x, s) in xs.iter().zip(&vals) {
            assert_eq!(*s, deelbo_core::softplus(*x));
        }
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(v.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        for (x, d) in xs.iter().zip(&gx) {
            assert_eq!(*d, deelbo_core::sigmoid(*x));
        }
        let small = [1e-12f64, 1e-6, 0.5, 3.0];
        let w = Var::new(&small[..], &Device::Cpu).unwrap();
        let l = log1p(w.as_tensor()).unwrap();
        for (x, y) in small.iter().zip(l.to_vec1::<f64>().unwrap()) {
            assert_eq!(y, x.ln_1p());
        }
        let g = l.sum_all().unwrap().backward().unwrap();
        for (x, d) in small
            .iter()
            .zip(g.get(w.as_tensor()).unwrap().to_vec1::<f64>().unwrap())
        {
            assert!((d - 1.0 / (1.0 + x)).abs() < 1e-15);
        }
    }
}
