//! The GPU kernels against the CPU reference (`deelbo_core::fused`, `deelbo_core::noise`).
//! Without a CUDA driver every test prints "skipped: no CUDA driver" and checks nothing else;
//! with one, a failure to open the device or compile the kernels fails the test.

use deelbo_core::fused::{self, KlGradScales, Scale, SgdMomentum};
use deelbo_core::test_util::{normal_data, rel_err};
use deelbo_core::{NoiseKey, ScaleStats};
use deelbo_cuda::{
    CudaDevice, DeviceParamBlock, DeviceScale, ForwardKernel, NaiveStep, device_or_skip,
};

fn device(test: &str) -> Option<CudaDevice> {
    match device_or_skip(test) {
        Ok(d) => d,
        Err(e) => panic!("{test}: the CUDA driver is present but the device failed: {e}"),
    }
}

fn data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    normal_data(len, NoiseKey::new(seed, 77), scale)
}

/// Sizes around the block geometry: not multiples of 4, of 256 threads x 4 elements, or of the
/// grid-stride span.
const SIZES: [usize; 8] = [1, 3, 5, 1023, 1024, 4097, 1_000_003, 5_000_001];
const OFFSETS: [u64; 4] = [0, 1, 2, 1 << 33];

#[test]
fn gpu_noise_is_bit_identical_to_the_cpu_noise() {
    let Some(dev) = device("gpu_noise_is_bit_identical_to_the_cpu_noise") else {
        return;
    };
    for &len in &SIZES {
        for &first in &OFFSETS {
            for (seed, stream) in [(0u64, 0u64), (12345, 7), (u64::MAX, u64::MAX)] {
                let key = NoiseKey::new(seed, stream);
                // m = 0, sigma = 1: the sample is the noise itself.
                let zeros = vec![0.0f32; len];
                let mut block = DeviceParamBlock::new(&dev, &zeros, None, first).unwrap();
                block.forward(DeviceScale::Isotropic(1.0), key).unwrap();
                let eps = dev.download(block.sample()).unwrap();
                let mut cpu = vec![0.0f32; len];
                deelbo_core::fill_normals(key, first, &mut cpu);
                for i in 0..len {
                    assert_eq!(
                        eps[i].to_bits(),
                        cpu[i].to_bits(),
                        "len {len} first {first} seed {seed} stream {stream} index {i}: gpu {} cpu {}",
                        eps[i],
                        cpu[i]
                    );
                }
            }
        }
    }
    println!("GPU noise bit-identical on {}", dev.name());
}

#[test]
fn gpu_forward_matches_cpu_and_is_repeatable() {
    let Some(dev) = device("gpu_forward_matches_cpu_and_is_repeatable") else {
        return;
    };
    for &len in &SIZES {
        for &first in &[0u64, 3] {
            let key = NoiseKey::for_block_step(9, 1, len as u32);
            let m = data(len, 1, 0.3);
            let mu = data(len, 2, 0.3);
            let sig: Vec<f32> = (0..len).map(|j| 0.01 + 1e-7 * (j % 1000) as f32).collect();
            let mut block = DeviceParamBlock::new(&dev, &m, Some(&mu), first).unwrap();
            let sig_dev = dev.upload(&sig).unwrap();
            for (scale_gpu, scale_cpu) in [
                (DeviceScale::Isotropic(0.02), Scale::Isotropic(0.02)),
                (DeviceScale::Diagonal(&sig_dev), Scale::Diagonal(&sig)),
            ] {
                let st = block.forward(scale_gpu, key).unwrap();
                let w = dev.download(block.sample()).unwrap();
                let mut w_cpu = vec![0.0f32; len];
                let st_cpu =
                    fused::forward(&m, Some(&mu), scale_cpu, key, first, &mut w_cpu, 2).unwrap();
                assert!(w == w_cpu, "len {len}: sample differs from the CPU step");
                assert!(
                    rel_err(st.sq_dist, st_cpu.sq_dist) < 1e-6,
                    "M {} vs {}",
                    st.sq_dist,
                    st_cpu.sq_dist
                );
                if let (
                    ScaleStats::Diagonal {
                        sum_sigma2: a,
                        sum_ln_sigma2: b,
                    },
                    ScaleStats::Diagonal {
                        sum_sigma2: c,
                        sum_ln_sigma2: d,
                    },
                ) = (st.scale, st_cpu.scale)
                {
                    assert!(
                        rel_err(a, c) < 1e-6 && rel_err(b, d) < 1e-6,
                        "{a} {b} vs {c} {d}"
                    );
                }
                let v = st.kl_terms().unwrap().optimal_variance();
                let v_cpu = st_cpu.kl_terms().unwrap().optimal_variance();
                assert!(rel_err(v, v_cpu) < 1e-6);
                // Repeated runs: the same bits.
                for _ in 0..3 {
                    let again = block.forward(scale_gpu, key).unwrap();
                    assert_eq!(again.sq_dist.to_bits(), st.sq_dist.to_bits());
                    assert_eq!(dev.download(block.sample()).unwrap(), w);
                }
                // The prefetching kernel: the same sample, the same sums to rounding, and
                // repeatable too.
                let pre = block
                    .forward_with(ForwardKernel::Prefetch, scale_gpu, key)
                    .unwrap();
                assert!(dev.download(block.sample()).unwrap() == w_cpu);
                assert!(rel_err(pre.sq_dist, st_cpu.sq_dist) < 1e-6);
                let pre2 = block
                    .forward_with(ForwardKernel::Prefetch, scale_gpu, key)
                    .unwrap();
                assert_eq!(pre2.sq_dist.to_bits(), pre.sq_dist.to_bits());
            }
        }
    }
}

#[test]
fn gpu_backward_and_sgd_match_cpu() {
    let Some(dev) = device("gpu_backward_and_sgd_match_cpu") else {
        return;
    };
    for &len in &[5usize, 4097, 1_000_003] {
        for &first in &[0u64, 1] {
            let key = NoiseKey::new(31, len as u64);
            let m = data(len, 11, 0.3);
            let mu = data(len, 12, 0.3);
            let g = data(len, 13, 1e-3);
            let sig: Vec<f32> = (0..len).map(|j| 0.02 + 1e-7 * (j % 333) as f32).collect();
            let kl = KlGradScales {
                inv_kappa_n: 1.0 / 5e4,
                variance: 0.09,
            };
            let sgd = SgdMomentum {
                lr: 0.05,
                momentum: 0.9,
            };
            let g_dev = dev.upload(&g).unwrap();
            let sig_dev = dev.upload(&sig).unwrap();
            let mut block = DeviceParamBlock::new(&dev, &m, Some(&mu), first).unwrap();

            // Gradient mode, isotropic.
            let mut gm_dev = dev.zeros(len).unwrap();
            let b = block
                .backward(
                    DeviceScale::Isotropic(0.02),
                    key,
                    &g_dev,
                    kl,
                    &mut gm_dev,
                    None,
                )
                .unwrap();
            let mut gm = vec![0.0f32; len];
            let b_cpu = fused::backward(
                &m,
                Some(&mu),
                Scale::Isotropic(0.02),
                key,
                first,
                &g,
                kl,
                &mut gm,
                None,
                2,
            )
            .unwrap();
            assert!(
                dev.download(&gm_dev).unwrap() == gm,
                "mean gradient differs"
            );
            let abs_sum: f64 = g.iter().map(|&x| f64::from(x).abs()).sum::<f64>() * 6.0;
            assert!((b.noise_dot - b_cpu.noise_dot).abs() <= 1e-6 * abs_sum);
            assert!(
                (b.grad_sigma.unwrap() - b_cpu.grad_sigma.unwrap()).abs()
                    <= 1e-6 * (abs_sum + b_cpu.grad_sigma.unwrap().abs())
            );
            let again = block
                .backward(
                    DeviceScale::Isotropic(0.02),
                    key,
                    &g_dev,
                    kl,
                    &mut gm_dev,
                    None,
                )
                .unwrap();
            assert_eq!(again.noise_dot.to_bits(), b.noise_dot.to_bits());

            // Gradient mode, diagonal.
            let mut gs_dev = dev.zeros(len).unwrap();
            block
                .backward(
                    DeviceScale::Diagonal(&sig_dev),
                    key,
                    &g_dev,
                    kl,
                    &mut gm_dev,
                    Some(&mut gs_dev),
                )
                .unwrap();
            let mut gs = vec![0.0f32; len];
            fused::backward(
                &m,
                Some(&mu),
                Scale::Diagonal(&sig),
                key,
                first,
                &g,
                kl,
                &mut gm,
                Some(&mut gs),
                2,
            )
            .unwrap();
            assert!(
                dev.download(&gs_dev).unwrap() == gs,
                "sigma gradient differs"
            );

            // Fused SGD with momentum, two steps.
            let mut m_cpu = m.clone();
            let mut u_cpu = vec![0.0f32; len];
            for _ in 0..2 {
                block
                    .backward_sgd(DeviceScale::Isotropic(0.02), key, &g_dev, kl, sgd, None)
                    .unwrap();
                fused::backward_sgd(
                    &mut m_cpu,
                    &mut u_cpu,
                    Some(&mu),
                    Scale::Isotropic(0.02),
                    key,
                    first,
                    &g,
                    kl,
                    sgd,
                    None,
                    2,
                )
                .unwrap();
            }
            assert!(
                dev.download(block.mean()).unwrap() == m_cpu,
                "updated means differ"
            );
            assert!(
                dev.download(block.velocity()).unwrap() == u_cpu,
                "momentum differs"
            );
        }
    }
}

#[test]
fn gpu_naive_kernels_agree_with_the_fused_ones() {
    let Some(dev) = device("gpu_naive_kernels_agree_with_the_fused_ones") else {
        return;
    };
    let len = 1_000_003;
    let key = NoiseKey::new(4, 4);
    let m = data(len, 21, 0.3);
    let mu = data(len, 22, 0.3);
    let g = data(len, 23, 1e-3);
    let kl = KlGradScales {
        inv_kappa_n: 1e-4,
        variance: 0.1,
    };
    let mut block = DeviceParamBlock::new(&dev, &m, Some(&mu), 0).unwrap();
    let mut naive = NaiveStep::new(&dev, len).unwrap();
    let fused_stats = block.forward(DeviceScale::Isotropic(0.05), key).unwrap();
    let w_fused = dev.download(block.sample()).unwrap();
    let naive_stats = naive.forward(&mut block, 0.05, key).unwrap();
    assert!(dev.download(block.sample()).unwrap() == w_fused);
    assert!(rel_err(naive_stats.sq_dist, fused_stats.sq_dist) < 1e-6);
    let g_dev = dev.upload(&g).unwrap();
    let (mut a, mut b) = (dev.zeros(len).unwrap(), dev.zeros(len).unwrap());
    let bf = block
        .backward(DeviceScale::Isotropic(0.05), key, &g_dev, kl, &mut a, None)
        .unwrap();
    let bn = naive.backward(0.05, &g_dev, kl, &mut b).unwrap();
    assert!(dev.download(&a).unwrap() == dev.download(&b).unwrap());
    let abs_sum: f64 = g.iter().map(|&x| f64::from(x).abs()).sum::<f64>() * 6.0;
    assert!((bf.noise_dot - bn.noise_dot).abs() <= 1e-6 * abs_sum);
}

#[test]
fn gpu_errors_are_typed() {
    let Some(dev) = device("gpu_errors_are_typed") else {
        return;
    };
    assert!(DeviceParamBlock::new(&dev, &[1.0, 2.0], Some(&[1.0]), 0).is_err());
    assert!(dev.zeros(0).is_err());
    let mut block = DeviceParamBlock::new(&dev, &[1.0, 2.0], None, 0).unwrap();
    assert!(
        block
            .forward(DeviceScale::Isotropic(0.0), NoiseKey::default())
            .is_err()
    );
    let short = dev.zeros(1).unwrap();
    assert!(
        block
            .forward(DeviceScale::Diagonal(&short), NoiseKey::default())
            .is_err()
    );
    // A request far beyond any GPU's memory is a typed error, not a panic (the driver reports
    // out of memory; some drivers may call an impossible size an invalid value instead).
    match dev.zeros(1 << 40) {
        Err(deelbo_cuda::CudaError::OutOfMemory { bytes, .. }) => assert_eq!(bytes, 1 << 42),
        Err(e @ deelbo_cuda::CudaError::Driver { .. }) => println!("4 TiB allocation: {e}"),
        other => panic!("expected an allocation error, got {other:?}"),
    }
}
