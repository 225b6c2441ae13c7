//! f32 blocks with millions of entries reduce to the same sums as an f64 reference, and the
//! reparameterized sample is reproducible bit for bit.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use deelbo_core::{KlTerms, NoiseKey, ParamBlock, ParamBlockMut, ScaleStats, fill_normals};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// Exact-ish f64 reference: the f32 values widened, summed by sorted-magnitude pairwise
/// summation (a different algorithm from the block reduction under test).
fn reference_sum(values: impl Iterator<Item = f64>) -> f64 {
    fn pairwise(v: &[f64]) -> f64 {
        if v.len() <= 8 {
            v.iter().sum()
        } else {
            let (a, b) = v.split_at(v.len() / 2);
            pairwise(a) + pairwise(b)
        }
    }
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    pairwise(&v)
}

#[test]
fn f32_reductions_match_f64_to_1e_minus_6_for_millions_of_entries() {
    let d = 5_000_000;
    let mut m32 = vec![0.0f32; d];
    let mut mu32 = vec![0.0f32; d];
    fill_normals(NoiseKey::new(3, 0), 0, &mut m32);
    fill_normals(NoiseKey::new(3, 1), 0, &mut mu32);
    // A realistic L2-SP block: means close to the pretrained weights, with an offset that a
    // naive f32 accumulator would lose.
    for (m, mu) in m32.iter_mut().zip(&mu32) {
        *m = *mu + 1e-3 * *m + 0.25;
    }
    let m64: Vec<f64> = m32.iter().map(|&v| f64::from(v)).collect();
    let mu64: Vec<f64> = mu32.iter().map(|&v| f64::from(v)).collect();

    let sum_ref = reference_sum(m64.iter().copied());
    let sq_ref = reference_sum(m64.iter().map(|v| v * v));
    let dist_ref = reference_sum(m64.iter().zip(&mu64).map(|(a, b)| (a - b) * (a - b)));
    let dot_ref = reference_sum(m64.iter().zip(&mu64).map(|(a, b)| a * b));

    assert!(rel(m32[..].sum(), sum_ref) < 1e-6);
    assert!(rel(m32[..].sum_squares(), sq_ref) < 1e-6);
    assert!(rel(m32[..].squared_distance(&mu32[..]).unwrap(), dist_ref) < 1e-6);
    assert!(rel(m32[..].dot(&mu32[..]).unwrap(), dot_ref) < 1e-6);
    // The f64 block path gives the same numbers.
    assert!(rel(m64[..].squared_distance(&mu64[..]).unwrap(), dist_ref) < 1e-12);

    // Downstream: v* and KL* from the f32 block match the f64 block.
    let s = ScaleStats::Isotropic { sigma: 1e-4 };
    let t32 = KlTerms::from_block(&m32[..], Some(&mu32[..]), s).unwrap();
    let t64 = KlTerms::from_block(&m64[..], Some(&mu64[..]), s).unwrap();
    assert!(rel(t32.optimal_variance(), t64.optimal_variance()) < 1e-6);
    assert!(rel(t32.kl_at_optimum().unwrap(), t64.kl_at_optimum().unwrap()) < 1e-6);

    // A plain f32 running sum is visibly worse here: the reduction really is doing its job.
    let naive: f32 = m32.iter().zip(&mu32).map(|(a, b)| (a - b) * (a - b)).sum();
    assert!(rel(f64::from(naive), dist_ref) > 1e-6);
}

#[test]
fn reparameterized_samples_are_reproducible_and_f32_matches_f64() {
    let d = 100_003;
    let mean32: Vec<f32> = (0..d).map(|i| (i as f32 * 1e-3).sin()).collect();
    let mean64: Vec<f64> = mean32.iter().map(|&v| f64::from(v)).collect();
    let key = NoiseKey::for_block_step(11, 2, 5);
    let mut a = vec![0.0f32; d];
    let mut b = vec![0.0f32; d];
    a.reparameterize(&mean32, 0.01, key, 0).unwrap();
    b.reparameterize(&mean32, 0.01, key, 0).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let mut c = vec![0.0f64; d];
    c.reparameterize(&mean64, 0.01, key, 0).unwrap();
    let worst = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "f32 vs f64 sample differ by {worst}");
    // A different step gives different noise.
    b.reparameterize(&mean32, 0.01, NoiseKey::for_block_step(11, 2, 6), 0)
        .unwrap();
    assert!(a.iter().zip(&b).filter(|(x, y)| x != y).count() > d / 2);
}
