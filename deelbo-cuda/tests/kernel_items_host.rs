//! The kernels' per-Philox-block work (`deelbo_forward_item`, `deelbo_backward_item`,
//! `deelbo_normal_item`, with their `float4` fast path and ragged edges), compiled as C++ on the
//! host from the generated source and run sequentially over every block of a range, against
//! `deelbo_core::fused`: the sample, gradients and momentum updates bit for bit, the `f64`
//! accumulations to 1e-12. This checks the index arithmetic for sizes and offsets that are not
//! multiples of 4 without a GPU; the GPU tests check the real launch.
//!
//! Needs a host C++ compiler (`c++`); says it was skipped when there is none.

// Helpers below are test code too (clippy's allow-unwrap-in-tests covers only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use deelbo_core::NoiseKey;
use deelbo_core::ScaleStats;
use deelbo_core::fused::{self, KlGradScales, Scale, SgdMomentum};
use deelbo_cuda::source::item_source;

const SHIMS: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <string>
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
struct float4 { float x, y, z, w; };
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * (unsigned long long)b) >> 32);
}
"#;

const MAIN: &str = r#"
static std::vector<float> load(const std::string& path, unsigned long long n) {
    std::vector<float> v(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(v.data(), 4, n, f) != n) { std::fprintf(stderr, "cannot read %s\n", path.c_str()); std::exit(2); }
    std::fclose(f);
    return v;
}
static void save(const std::string& path, const std::vector<float>& v) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), 4, v.size(), f) != v.size()) std::exit(3);
    std::fclose(f);
}
static float bits(const char* s) { return __uint_as_float((unsigned int)std::strtoul(s, 0, 16)); }

/* argv: mode dir n first k0 k1 s_lo s_hi vec4 has_mu has_diag sigma c kinv inv_v lr beta bmode */
int main(int argc, char** argv) {
    if (argc != 19) return 1;
    const char mode = argv[1][0];
    const std::string dir = argv[2];
    const unsigned long long n = std::strtoull(argv[3], 0, 10);
    const unsigned long long first = std::strtoull(argv[4], 0, 10);
    const unsigned int k0 = std::strtoul(argv[5], 0, 16), k1 = std::strtoul(argv[6], 0, 16);
    const unsigned int s_lo = std::strtoul(argv[7], 0, 16), s_hi = std::strtoul(argv[8], 0, 16);
    const int vec4 = std::atoi(argv[9]), has_mu = std::atoi(argv[10]), has_diag = std::atoi(argv[11]);
    const float sigma = bits(argv[12]), c = bits(argv[13]), kinv = bits(argv[14]);
    const float inv_v = bits(argv[15]), lr = bits(argv[16]), beta = bits(argv[17]);
    const int bmode = std::atoi(argv[18]);
    std::vector<float> m = load(dir + "/m.bin", n);
    std::vector<float> mu = has_mu ? load(dir + "/mu.bin", n) : std::vector<float>();
    std::vector<float> sg = has_diag ? load(dir + "/sigma.bin", n) : std::vector<float>();
    const unsigned long long j0 = first >> 2;
    const unsigned long long jn = ((first + n + 3) >> 2) - j0;
    double acc[3] = {0.0, 0.0, 0.0};
    if (mode == 'F') {
        std::vector<float> w(n, -7.0f);
        for (unsigned long long t = 0; t < jn; ++t)
            deelbo_forward_item(j0 + t, first, n, vec4, w.data(), m.data(), has_mu ? mu.data() : 0,
                                has_diag ? sg.data() : 0, sigma, k0, k1, s_lo, s_hi, acc);
        save(dir + "/w.bin", w);
    } else if (mode == 'B') {
        std::vector<float> g = load(dir + "/g.bin", n);
        std::vector<float> u = load(dir + "/u.bin", n);
        std::vector<float> gm(n, -7.0f), gs(n, -7.0f);
        for (unsigned long long t = 0; t < jn; ++t)
            deelbo_backward_item(j0 + t, first, n, vec4, g.data(), m.data(), has_mu ? mu.data() : 0,
                                 has_diag ? sg.data() : 0, gm.data(), u.data(),
                                 has_diag ? gs.data() : 0, c, kinv, inv_v, lr, beta, bmode,
                                 k0, k1, s_lo, s_hi, acc);
        save(dir + "/gm.bin", gm);
        save(dir + "/gs.bin", gs);
        save(dir + "/m_out.bin", m);
        save(dir + "/u_out.bin", u);
    } else {
        std::vector<float> eps(n, -7.0f);
        for (unsigned long long t = 0; t < jn; ++t)
            deelbo_normal_item(j0 + t, first, n, vec4, eps.data(), k0, k1, s_lo, s_hi);
        save(dir + "/eps.bin", eps);
    }
    std::printf("%.17g %.17g %.17g\n", acc[0], acc[1], acc[2]);
    return 0;
}
"#;

fn write(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    deelbo_core::test_util::normal_data(len, NoiseKey::new(seed, 5), scale)
}

struct Harness {
    exe: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Harness {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        mode: char,
        n: usize,
        first: u64,
        key: NoiseKey,
        has_mu: bool,
        has_diag: bool,
        floats: [f32; 6],
        bmode: i32,
    ) -> [f64; 3] {
        let k = deelbo_core::mirror::philox_key(&key);
        let mut cmd = Command::new(&self.exe);
        cmd.arg(mode.to_string())
            .arg(self.dir.path())
            .arg(n.to_string())
            .arg(first.to_string())
            .arg(format!("{:x}", k[0]))
            .arg(format!("{:x}", k[1]))
            .arg(format!("{:x}", key.stream as u32))
            .arg(format!("{:x}", (key.stream >> 32) as u32))
            .arg(if first.is_multiple_of(4) { "1" } else { "0" })
            .arg(if has_mu { "1" } else { "0" })
            .arg(if has_diag { "1" } else { "0" });
        for f in floats {
            cmd.arg(format!("{:x}", f.to_bits()));
        }
        cmd.arg(bmode.to_string());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "harness failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        [v[0], v[1], v[2]]
    }
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-12 * scale.max(1e-300)
}

#[test]
fn kernel_item_functions_on_the_host_match_the_cpu_step() {
    let cc = ["c++", "g++", "clang++"]
        .into_iter()
        .find(|cc| Command::new(cc).arg("--version").output().is_ok());
    let Some(cc) = cc else {
        deelbo_cuda::report_skip("skipped: no host C++ compiler to build the kernel-item harness");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("items.cpp");
    let exe = dir.path().join("items");
    std::fs::write(&src, format!("{SHIMS}{}{MAIN}", item_source())).unwrap();
    let status = Command::new(cc)
        .args(["-O2", "-ffp-contract=off", "-Wno-unknown-pragmas", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "{cc} failed to compile the kernel items");
    let h = Harness { exe, dir };
    let p = |name: &str| h.dir.path().join(name);

    let kl = KlGradScales {
        inv_kappa_n: 1.0 / 7e3,
        variance: 0.05,
    };
    let (c, kinv, inv_v) = kl.f32_constants();
    let sgd = SgdMomentum {
        lr: 0.03,
        momentum: 0.9,
    };
    let mut checked = 0;
    for &n in &[1usize, 2, 3, 4, 5, 7, 1023, 1024, 4097, 100_003] {
        for &first in &[0u64, 1, 2, 3, 4, 6, (1 << 33) + 1] {
            let key = NoiseKey::new(n as u64 ^ first, 17);
            let m = data(n, 1, 0.3);
            let mu = data(n, 2, 0.3);
            let g = data(n, 3, 1e-3);
            let u = data(n, 4, 1e-3);
            let sig: Vec<f32> = (0..n).map(|j| 0.01 + 1e-6 * (j % 101) as f32).collect();
            write(&p("m.bin"), &m);
            write(&p("mu.bin"), &mu);
            write(&p("g.bin"), &g);
            write(&p("u.bin"), &u);
            write(&p("sigma.bin"), &sig);
            let abs_g: f64 = g.iter().map(|&x| f64::from(x).abs()).sum::<f64>() * 6.0;

            for (has_mu, has_diag) in [(true, false), (false, true), (true, true)] {
                let prior = has_mu.then_some(&mu[..]);
                let scale = if has_diag {
                    Scale::Diagonal(&sig)
                } else {
                    Scale::Isotropic(0.02)
                };
                // Forward.
                let acc = h.run(
                    'F',
                    n,
                    first,
                    key,
                    has_mu,
                    has_diag,
                    [0.02, 0.0, 0.0, 0.0, 0.0, 0.0],
                    0,
                );
                let mut w = vec![0.0f32; n];
                let st = fused::forward(&m, prior, scale, key, first, &mut w, 1).unwrap();
                assert!(read(&p("w.bin")) == w, "forward n {n} first {first}");
                assert!(
                    close(acc[0], st.sq_dist, st.sq_dist),
                    "M n {n} first {first}"
                );
                if let ScaleStats::Diagonal {
                    sum_sigma2,
                    sum_ln_sigma2,
                } = st.scale
                {
                    assert!(close(acc[1], sum_sigma2, sum_sigma2));
                    // CUDA's and the host's f64 log agree to an ulp or so.
                    assert!((acc[2] - sum_ln_sigma2).abs() <= 1e-12 * sum_ln_sigma2.abs());
                }

                // Backward, gradient mode.
                let floats = [0.02, c, kinv, inv_v, sgd.lr, sgd.momentum];
                let acc = h.run('B', n, first, key, has_mu, has_diag, floats, 0);
                let mut gm = vec![0.0f32; n];
                let mut gs = vec![0.0f32; n];
                let b = fused::backward(
                    &m,
                    prior,
                    scale,
                    key,
                    first,
                    &g,
                    kl,
                    &mut gm,
                    Some(&mut gs),
                    1,
                )
                .unwrap();
                assert!(read(&p("gm.bin")) == gm, "grad m n {n} first {first}");
                if has_diag {
                    assert!(read(&p("gs.bin")) == gs, "grad sigma n {n} first {first}");
                }
                assert!(close(acc[0], b.noise_dot, abs_g));

                // Backward with the momentum update.
                h.run('B', n, first, key, has_mu, has_diag, floats, 1);
                let (mut m2, mut u2) = (m.clone(), u.clone());
                fused::backward_sgd(
                    &mut m2,
                    &mut u2,
                    prior,
                    scale,
                    key,
                    first,
                    &g,
                    kl,
                    sgd,
                    Some(&mut gs),
                    1,
                )
                .unwrap();
                assert!(read(&p("m_out.bin")) == m2, "sgd m n {n} first {first}");
                assert!(read(&p("u_out.bin")) == u2, "sgd u n {n} first {first}");
                checked += 1;
            }

            // The naive path's noise kernel.
            h.run('N', n, first, key, false, false, [0.0; 6], 0);
            let mut eps = vec![0.0f32; n];
            deelbo_core::fill_normals(key, first, &mut eps);
            assert!(read(&p("eps.bin")) == eps, "noise n {n} first {first}");
        }
    }
    println!("kernel items match the CPU step in {checked} configurations");
}
