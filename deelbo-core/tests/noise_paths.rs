//! Every instruction-set path of the noise generator gives the frozen bits: the same values as the
//! scalar reference `normal_at`, and the digests recorded before the AVX-512 path existed (the
//! CUDA kernels and deelbo-candle reproduce this mapping, so it must never change).

use deelbo_core::{InstructionSet, fill_normals_on};
use deelbo_core::{NoiseKey, normal_at};

/// Word-wise FNV-1a over the `f32` bit patterns.
fn digest(values: &[f32], mut h: u64) -> u64 {
    for v in values {
        h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// `(key, first index, length, digest)`, computed with the AVX2 path and with `normal_at` at the
/// commit before the AVX-512 path was added (b0117b8).
fn golden() -> [(NoiseKey, u64, usize, u64); 4] {
    [
        (NoiseKey::new(0, 0), 0, 1 << 20, 0x2659_092e_4256_028d),
        (NoiseKey::new(42, 7), 3, 1_000_003, 0x3b97_524a_a3bc_237c),
        (
            NoiseKey::new(u64::MAX, u64::MAX),
            4 * ((1u64 << 32) - 100) + 2,
            100_001,
            0x522b_ede8_ec88_5b24,
        ),
        (
            NoiseKey::for_block_step(2024, 3, 99),
            12_345,
            777_777,
            0x24c9_a9d4_ec5f_4a9d,
        ),
    ]
}

#[test]
fn every_path_reproduces_the_frozen_digests() {
    let paths = InstructionSet::available();
    println!(
        "noise paths on this CPU: {:?}",
        paths.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
    for (key, first, len, expect) in golden() {
        let mut out = vec![0.0f32; len];
        for &isa in &paths {
            out.fill(0.0);
            fill_normals_on(isa, key, first, &mut out);
            assert_eq!(
                digest(&out, FNV_OFFSET),
                expect,
                "{} path, {key:?}, first {first}",
                isa.name()
            );
        }
        let pointwise: Vec<f32> = (0..len).map(|k| normal_at(key, first + k as u64)).collect();
        assert_eq!(digest(&pointwise, FNV_OFFSET), expect, "normal_at, {key:?}");
    }
}

/// 1.04e8 values per path: four streams of 2.6e7 values at offsets that are and are not
/// multiples of 4 and of the paths' group sizes, one crossing a wrap of the counter's low word.
/// Every buffer of every path is compared with the portable path's buffer, and the reference
/// `normal_at` checks every 61st value.
#[test]
fn all_paths_agree_bit_for_bit_on_over_1e8_values() {
    const PER_STREAM: usize = 26_000_000;
    const BUFFER: usize = 1 << 20;
    let streams = [
        (NoiseKey::new(1, 0), 0u64),
        (NoiseKey::new(0x5eed, 1 << 33), 1),
        (
            NoiseKey::for_block_step(u64::MAX - 1, 7, 123),
            4 * ((1u64 << 32) - 1_000_000) + 3,
        ),
        (NoiseKey::new(31_337, u64::MAX), (1u64 << 60) + 130),
    ];
    let paths = InstructionSet::available();
    let mut buffers = vec![vec![0.0f32; BUFFER]; paths.len()];
    let mut total = 0usize;
    for (key, first) in streams {
        let mut digests = vec![FNV_OFFSET; paths.len()];
        let mut done = 0usize;
        while done < PER_STREAM {
            let len = BUFFER.min(PER_STREAM - done);
            let start = first + done as u64;
            for (p, &isa) in paths.iter().enumerate() {
                fill_normals_on(isa, key, start, &mut buffers[p][..len]);
                digests[p] = digest(&buffers[p][..len], digests[p]);
            }
            for (p, isa) in paths.iter().enumerate().skip(1) {
                if buffers[p][..len] != buffers[0][..len] {
                    let k = (0..len)
                        .find(|&k| buffers[p][k].to_bits() != buffers[0][k].to_bits())
                        .unwrap_or(0);
                    panic!(
                        "{} differs from portable at {key:?} index {}: {} vs {}",
                        isa.name(),
                        start + k as u64,
                        buffers[p][k],
                        buffers[0][k]
                    );
                }
            }
            for k in (0..len).step_by(61) {
                assert_eq!(
                    buffers[0][k].to_bits(),
                    normal_at(key, start + k as u64).to_bits(),
                    "portable vs normal_at at {key:?} index {}",
                    start + k as u64
                );
            }
            done += len;
        }
        assert!(digests.iter().all(|&d| d == digests[0]));
        println!(
            "{key:?} from {first}: {PER_STREAM} values, digest {:#018x}",
            digests[0]
        );
        total += PER_STREAM;
    }
    assert!(total >= 100_000_000);
}
