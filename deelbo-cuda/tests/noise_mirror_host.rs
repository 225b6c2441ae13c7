//! The CUDA noise functions (Philox4x32-10 + Box–Muller, exactly as emitted into the kernels)
//! compiled as plain C++ on the host with shims for the three CUDA intrinsics, and compared bit
//! for bit with `deelbo_core::noise`. This checks the transcription of the transform — constant
//! bit patterns, operation order, quadrant logic — without a GPU. (On the GPU the same source is
//! compiled by NVRTC with `--fmad=false`; the GPU tests compare the device output directly.)
//!
//! Needs a host C++ compiler (`c++`); says it was skipped when there is none.

// The helper below is test code too (clippy's allow-unwrap-in-tests covers only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use deelbo_core::NoiseKey;
use deelbo_core::mirror::box_muller;
use deelbo_core::normal_at;
use deelbo_cuda::source::noise_source;

const SHIMS: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#define __device__
#define __forceinline__ inline
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * (unsigned long long)b) >> 32);
}
"#;

const MAIN: &str = r#"
/* Reads lines from stdin:
     N k0 k1 s_lo s_hi j count  -> prints the 4*count normals of Philox blocks j.. as hex bits
     B a b                       -> prints the two Box-Muller outputs of the words (a, b)
     P c0 c1 c2 c3 k0 k1          -> prints the four Philox words */
int main() {
    char op[4];
    while (std::scanf("%3s", op) == 1) {
        if (op[0] == 'N') {
            unsigned int k0, k1, s_lo, s_hi;
            unsigned long long j, count;
            if (std::scanf("%x %x %x %x %llu %llu", &k0, &k1, &s_lo, &s_hi, &j, &count) != 6) return 2;
            for (unsigned long long t = 0; t < count; ++t) {
                deelbo_f4 z = deelbo_normals(j + t, k0, k1, s_lo, s_hi);
                std::printf("%08x %08x %08x %08x\n", __float_as_uint(z.x), __float_as_uint(z.y),
                            __float_as_uint(z.z), __float_as_uint(z.w));
            }
        } else if (op[0] == 'B') {
            unsigned int a, b;
            if (std::scanf("%x %x", &a, &b) != 2) return 2;
            float z0, z1;
            deelbo_box_muller(a, b, &z0, &z1);
            std::printf("%08x %08x\n", __float_as_uint(z0), __float_as_uint(z1));
        } else if (op[0] == 'P') {
            unsigned int c[4], k[2];
            if (std::scanf("%x %x %x %x %x %x", &c[0], &c[1], &c[2], &c[3], &k[0], &k[1]) != 6) return 2;
            deelbo_u4 w = deelbo_philox(c[0], c[1], c[2], c[3], k[0], k[1]);
            std::printf("%08x %08x %08x %08x\n", w.x, w.y, w.z, w.w);
        } else {
            return 3;
        }
    }
    return 0;
}
"#;

fn compiler() -> Option<String> {
    for cc in ["c++", "g++", "clang++"] {
        if Command::new(cc).arg("--version").output().is_ok() {
            return Some(cc.to_string());
        }
    }
    None
}

fn run(exe: &std::path::Path, input: &str) -> Vec<u32> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from another thread: the harness's output would otherwise fill the pipe while
    // the input is still being written.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "harness failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).unwrap())
        .collect()
}

#[test]
fn cuda_noise_source_compiled_on_the_host_matches_the_core_bit_for_bit() {
    let Some(cc) = compiler() else {
        deelbo_cuda::report_skip("skipped: no host C++ compiler to build the noise mirror");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("noise.cpp");
    let exe = dir.path().join("noise");
    std::fs::write(&src, format!("{SHIMS}{}{MAIN}", noise_source())).unwrap();
    // x86-64 computes f32 in SSE registers; -ffp-contract=off forbids FMA contraction, the
    // host analogue of --fmad=false.
    let status = Command::new(&cc)
        .args(["-O2", "-ffp-contract=off", "-Wno-unknown-pragmas", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "{cc} failed to compile the noise source");

    // 1. Philox words against rand_philox (including the Random123 known-answer inputs).
    let cases: [([u32; 4], [u32; 2]); 4] = [
        ([0; 4], [0; 2]),
        ([u32::MAX; 4], [u32::MAX; 2]),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
        ),
        ([7, 0, 3, 1], [0xdead_beef, 0x1234_5678]),
    ];
    let mut input = String::new();
    for (c, k) in &cases {
        input += &format!(
            "P {:x} {:x} {:x} {:x} {:x} {:x}\n",
            c[0], c[1], c[2], c[3], k[0], k[1]
        );
    }
    let got = run(&exe, &input);
    for (n, (c, k)) in cases.iter().enumerate() {
        assert_eq!(
            &got[4 * n..4 * n + 4],
            &rand_philox::philox4x32_10(*c, *k)[..]
        );
    }

    // 2. Box–Muller on edge words (extreme uniforms, quadrant and fold boundaries) and a sweep.
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let edges = [
        0u32,
        1,
        0x1ff,
        0x200,
        0x7fff_ffff,
        0x8000_0000,
        0xbfff_ffff,
        0xc000_0000,
        0xffff_fe00,
        u32::MAX,
        0x3fff_ff80,
        0x4000_0000,
        0x2000_0000,
        0x1fff_ff80,
    ];
    for &a in &edges {
        for &b in &edges {
            pairs.push((a, b));
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200_000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        pairs.push(((x >> 32) as u32, x as u32));
    }
    let input: String = pairs
        .iter()
        .map(|(a, b)| format!("B {a:x} {b:x}\n"))
        .collect();
    let got = run(&exe, &input);
    for (n, &(a, b)) in pairs.iter().enumerate() {
        let (z0, z1) = box_muller(a, b);
        assert_eq!(
            (got[2 * n], got[2 * n + 1]),
            (z0.to_bits(), z1.to_bits()),
            "box_muller({a:#x}, {b:#x})"
        );
    }

    // 3. Whole noise streams through the kernels' entry function, several keys and offsets.
    for (seed, stream, j) in [
        (0u64, 0u64, 0u64),
        (42, 3, 1),
        (u64::MAX, u64::MAX, 1 << 40),
        (7, (5 << 32) | 9, 123_456),
    ] {
        let key = NoiseKey::new(seed, stream);
        let k = deelbo_core::mirror::philox_key(&key);
        let count = 4096u64;
        let input = format!(
            "N {:x} {:x} {:x} {:x} {j} {count}\n",
            k[0],
            k[1],
            stream as u32,
            (stream >> 32) as u32
        );
        let got = run(&exe, &input);
        for (t, bits) in got.iter().enumerate() {
            let want = normal_at(key, 4 * j + t as u64);
            assert_eq!(
                *bits,
                want.to_bits(),
                "seed {seed} stream {stream} element {t}"
            );
        }
    }
    println!(
        "host-compiled CUDA noise source matches deelbo_core::noise on {} Box-Muller pairs and 4 streams",
        pairs.len()
    );
}
