//! Helpers shared by the test suites, benches and examples of the deelbo crates (feature
//! `test-util`; not part of the stable API).

use crate::noise::{NoiseKey, fill_normals};

/// `scale * eps_i` for `i in 0..len`, the core's counter-based normals of stream `key`:
/// deterministic test data of a chosen magnitude, identical on every machine.
pub fn normal_data(len: usize, key: NoiseKey, scale: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    fill_normals(key, 0, &mut v);
    for x in &mut v {
        *x *= scale;
    }
    v
}

/// The relative error `|a - b| / |b|` of `a` against the reference `b` (`b = 0` counts as the
/// smallest positive normal, so a zero reference only matches an exact zero).
///
/// # Formula
/// ```text
/// rel(a, b) = |a - b| / max(|b|, f64::MIN_POSITIVE)
/// ```
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::normal_at;

    #[test]
    fn normal_data_is_the_scaled_noise_stream() {
        let key = NoiseKey::new(3, 77);
        let v = normal_data(9, key, 2.0);
        for (i, x) in v.iter().enumerate() {
            assert_eq!(x.to_bits(), (2.0 * normal_at(key, i as u64)).to_bits());
        }
        assert_eq!(rel_err(1.5, 1.0), 0.5);
        assert_eq!(rel_err(0.0, 0.0), 0.0);
        assert!(rel_err(1e-300, 0.0) > 1.0);
    }
}
