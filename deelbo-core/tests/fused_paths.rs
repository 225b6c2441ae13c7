//! The fused CPU step gives the same bits on every instruction-set path and at every thread
//! count, and the same bits as the naive single-threaded multi-pass reference: element-wise
//! outputs and, since both follow the crate's one reduction order, the `f64` reductions too.

use deelbo_core::InstructionSet;
use deelbo_core::REDUCTION_CHUNK;
use deelbo_core::fused::{self, CLAIM_CHUNKS, KlGradScales, Scale, SgdMomentum, naive};
use deelbo_core::test_util::normal_data;
use deelbo_core::{NoiseKey, ParamBlock, ScaleStats};

/// Deterministic test data: the shared helper on stream 7.
fn data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    normal_data(len, NoiseKey::new(seed, 7), scale)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Sizes around the tile (512), chunk (4096), claim (16 chunks) and lane (8) boundaries (the
/// largest gives several claims, so threads share the queue); offsets that are not multiples of
/// 4 (the noise's block) exercise the scalar heads.
const SIZES: [usize; 6] = [
    7,
    517,
    REDUCTION_CHUNK,
    2 * REDUCTION_CHUNK + 9,
    CLAIM_CHUNKS * REDUCTION_CHUNK - 3,
    3 * CLAIM_CHUNKS * REDUCTION_CHUNK + 13,
];
const FIRSTS: [u64; 3] = [0, 3, (1 << 33) + 6];
const THREADS: [usize; 3] = [1, 2, 5];

#[test]
fn forward_is_the_same_on_every_path_and_thread_count_and_equals_naive() {
    let paths = InstructionSet::available();
    for &len in &SIZES {
        let m = data(len, 1, 0.3);
        let mu = data(len, 2, 0.3);
        let sig: Vec<f32> = data(len, 3, 0.01).iter().map(|s| s.abs() + 1e-3).collect();
        for first in FIRSTS {
            let key = NoiseKey::new(len as u64, first);
            for (prior, scale) in [
                (Some(&mu[..]), Scale::Isotropic(0.05)),
                (None, Scale::Isotropic(0.05)),
                (Some(&mu[..]), Scale::Diagonal(&sig)),
            ] {
                let mut w_ref = vec![0.0f32; len];
                let (st_ref, _) = naive::forward(&m, prior, scale, key, first, &mut w_ref).unwrap();
                // The reduction equals the trait's reduction (the same order).
                let sq = match prior {
                    Some(mu) => m[..].squared_distance(mu).unwrap(),
                    None => m[..].sum_squares(),
                };
                assert_eq!(st_ref.sq_dist.to_bits(), sq.to_bits());
                for &isa in &paths {
                    for threads in THREADS {
                        let mut w = vec![f32::NAN; len];
                        let st =
                            fused::forward_on(isa, &m, prior, scale, key, first, &mut w, threads)
                                .unwrap();
                        let at = format!(
                            "{} len {len} first {first} threads {threads} prior {} {scale:?}",
                            isa.name(),
                            prior.is_some()
                        );
                        assert_eq!(bits(&w), bits(&w_ref), "w, {at}");
                        assert_eq!(st.sq_dist.to_bits(), st_ref.sq_dist.to_bits(), "M, {at}");
                        match (st.scale, st_ref.scale) {
                            (
                                ScaleStats::Diagonal {
                                    sum_sigma2: a,
                                    sum_ln_sigma2: b,
                                },
                                ScaleStats::Diagonal {
                                    sum_sigma2: c,
                                    sum_ln_sigma2: d,
                                },
                            ) => {
                                assert_eq!(a.to_bits(), c.to_bits(), "sum sigma^2, {at}");
                                assert_eq!(b.to_bits(), d.to_bits(), "sum ln sigma^2, {at}");
                            }
                            (a, b) => assert_eq!(a, b, "{at}"),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn backward_and_sgd_are_the_same_on_every_path_and_thread_count_and_equal_naive() {
    let paths = InstructionSet::available();
    let kl = KlGradScales {
        inv_kappa_n: 1.0 / 7.0e4,
        variance: 0.03,
    };
    let sgd = SgdMomentum {
        lr: 0.05,
        momentum: 0.9,
    };
    for &len in &SIZES {
        let m = data(len, 11, 0.3);
        let mu = data(len, 12, 0.3);
        let g = data(len, 13, 1e-3);
        let u0 = data(len, 14, 1e-4);
        let sig: Vec<f32> = data(len, 15, 0.01).iter().map(|s| s.abs() + 1e-3).collect();
        for first in FIRSTS {
            let key = NoiseKey::new(3, first ^ len as u64);
            for (prior, scale) in [
                (Some(&mu[..]), Scale::Isotropic(0.02)),
                (None, Scale::Isotropic(0.02)),
                (None, Scale::Diagonal(&sig)),
            ] {
                // Naive reference: forward tape, backward passes, SGD passes.
                let mut w = vec![0.0f32; len];
                let (_, tape) = naive::forward(&m, prior, scale, key, first, &mut w).unwrap();
                let diag = matches!(scale, Scale::Diagonal(_));
                let mut gm_ref = vec![0.0f32; len];
                let mut gs_ref = vec![0.0f32; len];
                let b_ref = naive::backward(
                    &tape,
                    scale,
                    &g,
                    kl,
                    &mut gm_ref,
                    diag.then_some(&mut gs_ref[..]),
                )
                .unwrap();
                let (mut m_ref, mut u_ref) = (m.clone(), u0.clone());
                naive::sgd_step(&mut m_ref, &mut u_ref, &gm_ref, sgd).unwrap();
                for &isa in &paths {
                    for threads in THREADS {
                        let at = format!(
                            "{} len {len} first {first} threads {threads} prior {} diag {diag}",
                            isa.name(),
                            prior.is_some()
                        );
                        let mut gm = vec![f32::NAN; len];
                        let mut gs = vec![f32::NAN; len];
                        let b = fused::backward_on(
                            isa,
                            &m,
                            prior,
                            scale,
                            key,
                            first,
                            &g,
                            kl,
                            &mut gm,
                            diag.then_some(&mut gs[..]),
                            threads,
                        )
                        .unwrap();
                        assert_eq!(bits(&gm), bits(&gm_ref), "grad m, {at}");
                        if diag {
                            assert_eq!(bits(&gs), bits(&gs_ref), "grad sigma, {at}");
                        }
                        assert_eq!(b.noise_dot.to_bits(), b_ref.noise_dot.to_bits(), "{at}");
                        assert_eq!(
                            b.grad_sigma.map(f64::to_bits),
                            b_ref.grad_sigma.map(f64::to_bits),
                            "{at}"
                        );
                        let (mut m1, mut u1) = (m.clone(), u0.clone());
                        let mut gs1 = vec![f32::NAN; len];
                        let b1 = fused::backward_sgd_on(
                            isa,
                            &mut m1,
                            &mut u1,
                            prior,
                            scale,
                            key,
                            first,
                            &g,
                            kl,
                            sgd,
                            diag.then_some(&mut gs1[..]),
                            threads,
                        )
                        .unwrap();
                        assert_eq!(bits(&m1), bits(&m_ref), "sgd means, {at}");
                        assert_eq!(bits(&u1), bits(&u_ref), "sgd momentum, {at}");
                        assert_eq!(b1.noise_dot.to_bits(), b_ref.noise_dot.to_bits(), "{at}");
                        if diag {
                            assert_eq!(bits(&gs1), bits(&gs_ref), "sgd grad sigma, {at}");
                        }
                    }
                }
            }
        }
    }
}

/// Streaming (non-temporal) stores for `w`, forced at every test size and automatic above
/// [`fused::STREAMING_STORE_MIN_LEN`]: the same bits as the naive reference on every path and
/// thread count, also for sample buffers that do not start on a 16-byte boundary (the scalar
/// heads and tails of every tile).
#[test]
fn forward_with_streaming_stores_equals_naive() {
    let big = fused::STREAMING_STORE_MIN_LEN + 517;
    assert!(fused::SampleStores::Auto.streams(big));
    assert!(!fused::SampleStores::Auto.streams(big - 1024));
    let cases = SIZES
        .iter()
        .map(|&len| (len, fused::SampleStores::Streaming))
        .chain([(big, fused::SampleStores::Auto)]);
    for (len, stores) in cases {
        let m = data(len, 21, 0.3);
        let mu = data(len, 22, 0.3);
        let key = NoiseKey::new(5, 9);
        let first = 3;
        let scale = Scale::Isotropic(0.05);
        let mut w_ref = vec![0.0f32; len];
        let (st_ref, _) = naive::forward(&m, Some(&mu), scale, key, first, &mut w_ref).unwrap();
        let mut buf = vec![f32::NAN; len + 3];
        for &isa in &InstructionSet::available() {
            for threads in [1usize, 2] {
                for shift in [0usize, 1, 3] {
                    let w = &mut buf[shift..shift + len];
                    w.fill(f32::NAN);
                    let st = fused::forward_with_stores(
                        isa,
                        stores,
                        &m,
                        Some(&mu),
                        scale,
                        key,
                        first,
                        w,
                        threads,
                    )
                    .unwrap();
                    let at = format!("{} len {len} threads {threads} shift {shift}", isa.name());
                    assert!(bits(w) == bits(&w_ref), "w, {at}");
                    assert_eq!(st.sq_dist.to_bits(), st_ref.sq_dist.to_bits(), "M, {at}");
                }
            }
        }
    }
}

#[test]
fn the_dot_is_the_deterministic_sum_of_exact_products_on_every_path() {
    let paths = InstructionSet::available();
    for &len in &[
        0usize,
        1,
        7,
        8,
        9,
        517,
        REDUCTION_CHUNK,
        REDUCTION_CHUNK + 1,
        3 * REDUCTION_CHUNK + 13,
    ] {
        // Magnitudes far apart, so a different order or an f32 product would change the bits.
        let a = data(len, 11, 1e3);
        let b = data(len, 12, 1e-2);
        let want = deelbo_core::deterministic_sum(
            a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)),
        );
        for &isa in &paths {
            let got = fused::dot_f64_on(isa, &a, &b).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "len {len} on {}", isa.name());
        }
        assert_eq!(fused::dot_f64(&a, &b).unwrap().to_bits(), want.to_bits());
    }
    assert!(fused::dot_f64(&[1.0, 2.0], &[1.0]).is_err());
}

/// The slice reductions behind `ParamBlock` (SIMD lanes for `f32`, vectorized groups for `f64`)
/// against `deterministic_sum` over the same terms, bit for bit, on every path, at lengths
/// around the lane, tile and chunk sizes and on a block of 1.5e6 weights; contiguous and
/// strided ndarray views agree too.
#[test]
fn slice_reductions_are_the_deterministic_sum_on_every_path() {
    use deelbo_core::{squared_distance_f64_on, sum_squares_f64_on};
    let paths = InstructionSet::available();
    for &len in &[
        0usize,
        1,
        7,
        9,
        517,
        REDUCTION_CHUNK - 1,
        REDUCTION_CHUNK,
        3 * REDUCTION_CHUNK + 13,
        1_500_000,
    ] {
        // A large common offset: squaring in f32, or differencing after widening in another
        // order, would change the bits.
        let a: Vec<f32> = data(len, 21, 1e-2).iter().map(|x| x + 3.0).collect();
        let b: Vec<f32> = data(len, 22, 1e-2).iter().map(|x| x + 3.0).collect();
        let wide = |x: &f32| f64::from(*x);
        let sq = deelbo_core::deterministic_sum(a.iter().map(|x| wide(x) * wide(x)));
        let dist = deelbo_core::deterministic_sum(a.iter().zip(&b).map(|(x, y)| {
            let d = wide(x) - wide(y);
            d * d
        }));
        let dot = deelbo_core::deterministic_sum(a.iter().zip(&b).map(|(x, y)| wide(x) * wide(y)));
        let sum = deelbo_core::deterministic_sum(a.iter().map(wide));
        for &isa in &paths {
            let at = format!("len {len} on {}", isa.name());
            assert_eq!(sum_squares_f64_on(isa, &a).to_bits(), sq.to_bits(), "{at}");
            let got = squared_distance_f64_on(isa, &a, &b).unwrap();
            assert_eq!(got.to_bits(), dist.to_bits(), "{at}");
        }
        assert_eq!(a[..].sum_squares().to_bits(), sq.to_bits(), "len {len}");
        assert_eq!(
            a[..].squared_distance(&b[..]).unwrap().to_bits(),
            dist.to_bits()
        );
        assert_eq!(a[..].dot(&b[..]).unwrap().to_bits(), dot.to_bits());
        assert_eq!(a[..].sum().to_bits(), sum.to_bits());
        // f64 slices (the vectorized portable groups).
        let a64: Vec<f64> = a.iter().map(|x| wide(x) * (1.0 + 1e-9)).collect();
        let b64: Vec<f64> = b.iter().map(wide).collect();
        let want =
            deelbo_core::deterministic_sum(a64.iter().zip(&b64).map(|(x, y)| (x - y) * (x - y)));
        assert_eq!(
            a64[..].squared_distance(&b64[..]).unwrap().to_bits(),
            want.to_bits()
        );
        let want = deelbo_core::deterministic_sum(a64.iter().map(|x| x * x));
        assert_eq!(a64[..].sum_squares().to_bits(), want.to_bits());
        // ndarray: contiguous arrays take the slice path, strided views the iterator; same bits.
        let arr = ndarray::Array1::from(a.clone());
        assert_eq!(arr.sum_squares().to_bits(), sq.to_bits());
        if len > 1 {
            let doubled = ndarray::Array1::from_iter(a.iter().flat_map(|x| [*x, -1.0]));
            let strided = doubled.slice(ndarray::s![..;2]);
            assert_eq!(
                strided.sum_squares().to_bits(),
                sq.to_bits(),
                "strided, len {len}"
            );
        }
    }
    assert!(squared_distance_f64_on(paths[0], &[1.0, 2.0], &[1.0]).is_err());
}
