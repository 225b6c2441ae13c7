//! Counter-based Gaussian noise: Philox4x32-10 keyed by `(seed, stream)` and counted by element
//! index, turned into standard normals by a fixed Box–Muller transform.
//!
//! # The mapping (frozen; the CUDA kernels implement the same one)
//!
//! For a [`NoiseKey`] `{ seed, stream }` and an element index `i`:
//!
//! 1. Philox key = [`rand_philox::splitmix64`]`(seed)` split into `[low 32 bits, high 32 bits]`.
//! 2. Block `j = i / 4`; the 128-bit counter is `(stream << 64) | j`, i.e. counter words
//!    `[j_lo, j_hi, stream_lo, stream_hi]`. [`rand_philox::philox4x32_10`] gives four words
//!    `w0..w3`.
//! 3. Elements `4j, 4j+1` come from the pair `(w0, w1)`, elements `4j+2, 4j+3` from `(w2, w3)`,
//!    each pair through [`box_muller`]: `(r cos θ, r sin θ)`.
//!
//! Element `i`'s value depends on `(seed, stream, i)` alone, never on chunking, thread count or
//! device, so a GPU kernel that regenerates `eps_i` in its backward pass gets the same bits.
//!
//! The transform uses only operations IEEE 754 rounds exactly (`+ - * /`, `sqrt`, integer/bit
//! operations and exact int-to-float conversions), evaluated in a fixed order with no fused
//! multiply-add, and its own polynomials for `ln` and `sin`/`cos` (library versions differ by ulps
//! across platforms). The polynomial coefficients are the `f32` bit patterns in
//! [`TRANSFORM_CONSTANTS`], which GPU code generators should emit verbatim.
//!
//! # Instruction-set paths
//!
//! [`fill_normals`] picks the fastest path the running CPU supports ([`InstructionSet`]):
//! AVX-512F intrinsics (the Philox rounds on eight blocks per vector in 64-bit elements, four
//! vectors interleaved; Box–Muller on sixteen blocks per vector, four vector pairs
//! interleaved), AVX2 intrinsics (eight blocks per vector in 32-bit lanes, two vectors
//! interleaved, Box–Muller two pairs at a time), or the portable baseline. All three perform the
//! same IEEE 754 operations in the same order and give the same bits;
//! `tests/noise_paths.rs` compares them over 1e8 values and against digests recorded before
//! the AVX-512 path existed. Measured on one core, in cache, on an AMD Zen 5 VM with AVX-512
//! (`376c260`): portable 2.55, AVX2 intrinsics 1.06, AVX-512 intrinsics 0.46 ns per normal
//! (`deelbo-bench/results/cpu/one_core.txt`; before `5402b41`'s layouts, on an Intel Xeon with
//! AVX-512, 0.84 on the AVX-512 path;
//! `deelbo-bench/scripts/cpu-results.sh` regenerates them).
//!
//! Accuracy: `|ln|` and `sin/cos` errors are a few f32 ulps; the radius uses a 23-bit uniform, so
//! `|eps| <= sqrt(-2 ln 2^-24) ≈ 5.77` (the tail beyond 5.77 sd, probability 8e-9, is cut).

use rand_philox::{Philox, philox4x32_10, splitmix64};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Where a noise stream comes from: a user seed and a stream index (e.g. one per training step
/// and parameter block, see [`NoiseKey::for_block_step`]). Same key + same index → same `eps`,
/// bit for bit, on every platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoiseKey {
    /// The user seed; mixed by SplitMix64 into the Philox key.
    pub seed: u64,
    /// The stream index; the high 64 bits of the Philox counter.
    pub stream: u64,
}

impl NoiseKey {
    /// A key from a seed and a stream index.
    pub const fn new(seed: u64, stream: u64) -> Self {
        Self { seed, stream }
    }

    /// The key for parameter block `block` at training step `step`:
    /// `stream = (block << 32) | step`. Distinct `(block, step)` pairs never share noise.
    pub const fn for_block_step(seed: u64, block: u32, step: u32) -> Self {
        Self {
            seed,
            stream: ((block as u64) << 32) | step as u64,
        }
    }

    /// The two Philox key words: SplitMix64(seed) as `[low, high]`.
    pub(crate) fn philox_key(&self) -> [u32; 2] {
        let k = splitmix64(self.seed);
        [k as u32, (k >> 32) as u32]
    }

    /// The four Philox counter words for block `j` (elements `4j .. 4j+3`):
    /// `[j_lo, j_hi, stream_lo, stream_hi]`.
    pub(crate) fn counter_words(&self, block: u64) -> [u32; 4] {
        [
            block as u32,
            (block >> 32) as u32,
            self.stream as u32,
            (self.stream >> 32) as u32,
        ]
    }

    /// The four raw Philox words of block `j`.
    pub(crate) fn block_words(&self, block: u64) -> [u32; 4] {
        philox4x32_10(self.counter_words(block), self.philox_key())
    }
}

/// `f32` bit patterns of every constant the normal transform uses, by name. GPU code generators
/// emit these verbatim (e.g. `__int_as_float(0x3fc90fdb)`) so both sides use identical values.
pub const TRANSFORM_CONSTANTS: [(&str, u32); 20] = [
    ("TWO_POW_M23", 0x3400_0000),
    ("SQRT2", 0x3fb5_04f3),
    ("LN2_HI", 0x3f31_7180),
    ("LN2_LO", 0x3717_f7d1),
    ("L3", 0x3f2a_aaab),
    ("L5", 0x3ecc_cccd),
    ("L7", 0x3e92_4925),
    ("L9", 0x3e63_8e39),
    ("L11", 0x3e3a_2e8c),
    ("L13", 0x3e1d_89d9),
    ("S1", 0x3fc9_0fdb),
    ("S3", 0xbf25_5de7),
    ("S5", 0x3da3_35e3),
    ("S7", 0xbb99_6966),
    ("S9", 0x3928_3c1a),
    ("C2", 0xbf9d_e9e6),
    ("C4", 0x3e81_e0f8),
    ("C6", 0xbcaa_e9e4),
    ("C8", 0x3a70_fa83),
    ("C10", 0xb7d3_68f9),
];

const fn constant(i: usize) -> f32 {
    f32::from_bits(TRANSFORM_CONSTANTS[i].1)
}

const TWO_POW_M23: f32 = constant(0);
const SQRT2: f32 = constant(1);
const LN2_HI: f32 = constant(2);
const LN2_LO: f32 = constant(3);
const L3: f32 = constant(4);
const L5: f32 = constant(5);
const L7: f32 = constant(6);
const L9: f32 = constant(7);
const L11: f32 = constant(8);
const L13: f32 = constant(9);
const S1: f32 = constant(10);
const S3: f32 = constant(11);
const S5: f32 = constant(12);
const S7: f32 = constant(13);
const S9: f32 = constant(14);
const C2: f32 = constant(15);
const C4: f32 = constant(16);
const C6: f32 = constant(17);
const C8: f32 = constant(18);
const C10: f32 = constant(19);

/// Natural log of `x` for normal positive `f32` (here `x` in `[2^-24, 1)`), from exact operations
/// only: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, `f = (m - 1)/(m + 1)`,
/// `ln m = 2 atanh f = 2f + f s (2/3 + 2/5 s + ... + 2/13 s^5)` with `s = f^2`,
/// `ln x = e ln2_hi + (e ln2_lo + ln m)`. Error below 2 ulp on the range used.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // Branch-free select (same operations as `if m > SQRT2 { m *= 0.5; e += 1 }`), so that
    // batches vectorize; halving is exact.
    let big = m > SQRT2;
    let m = if big { m * 0.5 } else { m };
    let e = e + i32::from(big);
    let f = (m - 1.0) / (m + 1.0);
    let s = f * f;
    let p = L3 + s * (L5 + s * (L7 + s * (L9 + s * (L11 + s * L13))));
    let ln_m = f + f + (f * s) * p;
    let ef = e as f32;
    ef * LN2_HI + (ef * LN2_LO + ln_m)
}

/// `(sin(2 pi t), cos(2 pi t))` for the angle `t` (in turns) encoded as quadrant `q` in `0..4` and
/// fraction `f` in `(0, 1)` of that quadrant: `t = (q + f)/4`. The fraction is folded to
/// `g = min(f, 1 - f)` in `[0, 1/2]` and `sin(pi g/2)`, `cos(pi g/2)` are degree-9/10 Taylor
/// polynomials in `g` (truncation error < 2e-9).
#[inline(always)]
pub fn sincos_quadrant_f32(q: u32, f: f32) -> (f32, f32) {
    let fold = f > 0.5;
    let g = if fold { 1.0 - f } else { f };
    let t = g * g;
    let sin_g = g * (S1 + t * (S3 + t * (S5 + t * (S7 + t * S9))));
    let cos_g = 1.0 + t * (C2 + t * (C4 + t * (C6 + t * (C8 + t * C10))));
    // Quadrant q: (sin, cos) of (q + f) quarter turns from (s, c) of f:
    // q = 0: (s, c); 1: (c, -s); 2: (-s, -c); 3: (-c, s). Written as a swap and two sign flips
    // (exact) so the whole transform is branch-free.
    let swap = fold ^ (q & 1 == 1);
    let (a, b) = if swap { (cos_g, sin_g) } else { (sin_g, cos_g) };
    let sin_sign = (q & 2) << 30;
    let cos_sign = ((q ^ (q >> 1)) & 1) << 31;
    (
        f32::from_bits(a.to_bits() ^ sin_sign),
        f32::from_bits(b.to_bits() ^ cos_sign),
    )
}

/// Box–Muller on two Philox words: `u = ((a >> 9) + 1/2) 2^-23` in `(0, 1)`,
/// `r = sqrt(-2 ln u)`, angle `theta = 2 pi (q + f)/4` with quadrant `q = b >> 30` and
/// `f = (((b >> 7) & (2^23 - 1)) + 1/2) 2^-23`. Returns `(r cos theta, r sin theta)`, two
/// independent standard normals.
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let u = ((a >> 9) as f32 + 0.5) * TWO_POW_M23;
    let r = (-2.0 * ln_f32(u)).sqrt();
    let f = (((b >> 7) & 0x007f_ffff) as f32 + 0.5) * TWO_POW_M23;
    let (s, c) = sincos_quadrant_f32(b >> 30, f);
    (r * c, r * s)
}

/// The four normals of one Philox block: `box_muller(w0, w1)` then `box_muller(w2, w3)`.
#[inline(always)]
pub fn normals_from_words(w: [u32; 4]) -> [f32; 4] {
    let (z0, z1) = box_muller(w[0], w[1]);
    let (z2, z3) = box_muller(w[2], w[3]);
    [z0, z1, z2, z3]
}

/// `eps_i`, the standard normal for element `index` of the stream `key`.
pub fn normal_at(key: NoiseKey, index: u64) -> f32 {
    normals_from_words(key.block_words(index / 4))[(index % 4) as usize]
}

/// Words generated per refill in [`fill_normals`] on the portable path.
const WORDS_PER_CHUNK: usize = 1024;

/// The instruction-set paths of [`fill_normals_on`]. Every path computes the same operations on
/// the same operands in the same order, so they give the same bits; they differ in speed only.
/// A value other than [`InstructionSet::portable`] can only be obtained when the running CPU
/// supports it (detected at run time), so passing one is always safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstructionSet(Path);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Path {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl InstructionSet {
    /// The baseline path: `rand_philox`'s stream filler and the scalar transform (whatever the
    /// compiler's target baseline vectorizes). Always available.
    pub const fn portable() -> Self {
        Self(Path::Portable)
    }

    /// Philox and the transform in AVX2 intrinsics (8 lanes, sixteen blocks per step), when the
    /// CPU has AVX2.
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            return Some(Self(Path::Avx2));
        }
        None
    }

    /// Philox and the transform in AVX-512F intrinsics (16 lanes), when the CPU has AVX-512 F,
    /// DQ, BW and VL (every AVX-512 CPU since Skylake-SP has all four; the fused step's loops
    /// are compiled for them).
    pub fn avx512() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
        {
            return Some(Self(Path::Avx512));
        }
        None
    }

    /// The fastest available path (what [`fill_normals`] uses): AVX-512, else AVX2, else
    /// portable.
    pub fn detected() -> Self {
        Self::avx512()
            .or_else(Self::avx2)
            .unwrap_or_else(Self::portable)
    }

    /// Every path this CPU can run, slowest first (portable is always first).
    pub fn available() -> Vec<Self> {
        std::iter::once(Self::portable())
            .chain(Self::avx2())
            .chain(Self::avx512())
            .collect()
    }

    /// Runs `kernel` inside a function compiled for this instruction set: its `run` is
    /// `#[inline(always)]`, so its loops are vectorized for it. The operations, and so the bits,
    /// do not change: Rust never contracts `a * b + c` into a fused multiply-add or
    /// reassociates floating-point sums.
    #[inline(always)]
    pub(crate) fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self.0 {
            Path::Portable => kernel.run(),
            // SAFETY (both arms): an `InstructionSet` holding this path is only constructed
            // after run-time detection of its features.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { run_avx2(kernel) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { run_avx512(kernel) },
        }
    }

    /// The path, for code that dispatches on it.
    #[inline(always)]
    pub(crate) fn path(self) -> Path {
        self.0
    }

    /// `"portable"`, `"avx2"` or `"avx512"`.
    pub fn name(&self) -> &'static str {
        match self.0 {
            Path::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => "avx512",
        }
    }
}

/// A loop to be compiled once per instruction set ([`InstructionSet::run`]). Implementations
/// mark `run` `#[inline(always)]` (a closure would not be inlined into the per-instruction-set
/// functions, and its loops would stay baseline code).
pub(crate) trait Kernel {
    /// What the loop returns.
    type Output;
    /// The loop.
    fn run(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// Write `eps_{first + k}` into `out[k]` for every `k`: the same values as [`normal_at`], computed
/// many Philox blocks at a time on the fastest instruction set of the running CPU
/// ([`InstructionSet::detected`]; AVX-512 runs 16 lanes, AVX2 8). The bits are the same on
/// every path.
pub fn fill_normals(key: NoiseKey, first: u64, out: &mut [f32]) {
    fill_normals_on(InstructionSet::detected(), key, first, out);
}

/// [`fill_normals`] on a chosen instruction-set path (for tests and benchmarks of each path).
pub fn fill_normals_on(isa: InstructionSet, key: NoiseKey, first: u64, out: &mut [f32]) {
    // Head: indices up to the next multiple of 4.
    let head = ((4 - first % 4) % 4).min(out.len() as u64) as usize;
    let (head_out, body) = out.split_at_mut(head);
    for (k, o) in head_out.iter_mut().enumerate() {
        *o = normal_at(key, first + k as u64);
    }
    let start_block = (first + head as u64) / 4;
    match isa.0 {
        Path::Portable => fill_blocks_portable(key, start_block, body),
        // SAFETY (both arms): an `InstructionSet` holding this path is only constructed after
        // run-time detection of the feature (`InstructionSet::avx2`, `::avx512`).
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::fill_blocks(key, start_block, body) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { avx512::fill_blocks(key, start_block, body) },
    }
}

/// `f` on each of `N` independent vectors: each step of the SIMD paths' `ln` and `box_muller`
/// is written once and applied to all of them in turn, so the instruction stream interleaves
/// `N` dependency chains (the division, the square root and the polynomials are long chains).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn each<const N: usize, T: Copy, U>(x: [T; N], mut f: impl FnMut(T) -> U) -> [U; N] {
    std::array::from_fn(|k| f(x[k]))
}

/// [`each`] over two arrays side by side.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn each2<const N: usize, T: Copy, V: Copy, U>(
    x: [T; N],
    y: [V; N],
    mut f: impl FnMut(T, V) -> U,
) -> [U; N] {
    std::array::from_fn(|k| f(x[k], y[k]))
}

/// Box–Muller over consecutive word pairs: one straight-line loop, so it vectorizes.
#[inline(always)]
fn transform_words(words: &[u32], normals: &mut [f32]) {
    for (z, w) in normals.chunks_exact_mut(2).zip(words.chunks_exact(2)) {
        let (z0, z1) = box_muller(w[0], w[1]);
        z[0] = z0;
        z[1] = z1;
    }
}

/// [`fill_normals`] for a run starting at element `4 first_block`, with `rand_philox`'s own
/// stream filler (baseline instruction set).
fn fill_blocks_portable(key: NoiseKey, first_block: u64, out: &mut [f32]) {
    let counter = (u128::from(key.stream) << 64) | u128::from(first_block);
    let mut rng = Philox::new(key.philox_key(), counter);
    let mut words = [0u32; WORDS_PER_CHUNK];
    let mut normals = [0.0f32; WORDS_PER_CHUNK];
    for chunk in out.chunks_mut(WORDS_PER_CHUNK) {
        let n_words = chunk.len().div_ceil(4) * 4;
        rng.fill_u32(&mut words[..n_words]);
        transform_words(&words[..n_words], &mut normals[..n_words]);
        chunk.copy_from_slice(&normals[..chunk.len()]);
    }
}

/// A uniform on the open interval `(0, 1)` for element `index`: word `index % 4` of block
/// `index / 4`, mapped by [`rand_philox::u32_to_unit_f64`] (`(w + 1/2) 2^-32`, exact).
pub fn uniform_at(key: NoiseKey, index: u64) -> f64 {
    rand_philox::u32_to_unit_f64(key.block_words(index / 4)[(index % 4) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        // The three published Philox4x32-10 known-answer vectors (Random123 kat_vectors).
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([0xffff_ffff; 4], [0xffff_ffff; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn key_and_counter_layout_matches_the_documented_mapping() {
        let key = NoiseKey::new(7, 0x0123_4567_89ab_cdef);
        let k = splitmix64(7);
        assert_eq!(key.philox_key(), [k as u32, (k >> 32) as u32]);
        assert_eq!(
            key.counter_words(0x1_0000_0002),
            [2, 1, 0x89ab_cdef, 0x0123_4567]
        );
        // rand_philox's own stream over the same (key, counter) gives the same words.
        let mut rng = Philox::new(key.philox_key(), (u128::from(key.stream) << 64) | 5);
        let w: Vec<u32> = (0..4).map(|_| rng.next_u32()).collect();
        assert_eq!(w, key.block_words(5).to_vec());
    }

    #[test]
    fn ln_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for k in 0..200_000u32 {
            let x = ((k * 41 + 7) % (1 << 23)) as f32 * TWO_POW_M23 + 0.5 * TWO_POW_M23;
            let ours = f64::from(ln_f32(x));
            let exact = f64::from(x).ln();
            let ulp = f64::from(f32::EPSILON) * exact.abs().max(1e-30);
            worst = worst.max((ours - exact).abs() / ulp);
        }
        // Also the tiny end of the range.
        for e in 1..=24 {
            let x = (2.0f32).powi(-e);
            let err = (f64::from(ln_f32(x)) - f64::from(x).ln()).abs();
            assert!(err < 1e-5, "ln(2^-{e}) off by {err}");
        }
        assert!(worst < 4.0, "ln_f32 worst error {worst} ulp");
    }

    #[test]
    fn sincos_matches_std() {
        let mut worst = 0.0f64;
        for q in 0..4u32 {
            for k in 0..50_000u32 {
                let f = (k as f32 + 0.5) / 50_000.0;
                let (s, c) = sincos_quadrant_f32(q, f);
                let angle = std::f64::consts::FRAC_PI_2 * (f64::from(q) + f64::from(f));
                worst = worst
                    .max((f64::from(s) - angle.sin()).abs())
                    .max((f64::from(c) - angle.cos()).abs());
            }
        }
        assert!(worst < 3e-7, "sincos worst abs error {worst}");
    }

    #[test]
    fn fill_agrees_with_pointwise_for_any_offset_and_length() {
        let key = NoiseKey::new(42, 3);
        for first in [0u64, 1, 2, 3, 5, 1021, 4096 + 3] {
            for len in [0usize, 1, 3, 4, 7, 1023, 1024, 1025, 3000] {
                let mut out = vec![0.0f32; len];
                fill_normals(key, first, &mut out);
                for (k, &v) in out.iter().enumerate() {
                    assert_eq!(v.to_bits(), normal_at(key, first + k as u64).to_bits());
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_path_gives_the_same_bits_for_short_runs() {
        // Offsets and lengths around every path's grouping (4 words, 16 and 64 blocks, 1024
        // words), at a block index whose low counter word wraps inside the run.
        let key = NoiseKey::new(77, 1 << 40);
        let wrap = 4 * ((1u64 << 32) - 9);
        for first in [0u64, 1, 3, 4 * 9, wrap, wrap + 3, (1 << 35) + 2] {
            for len in [0usize, 1, 5, 63, 64, 65, 255, 1024 + 7, 4096 + 65] {
                let expect: Vec<u32> = (0..len)
                    .map(|k| normal_at(key, first + k as u64).to_bits())
                    .collect();
                for isa in InstructionSet::available() {
                    let mut out = vec![0.0f32; len];
                    fill_normals_on(isa, key, first, &mut out);
                    let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(bits, expect, "{} first {first} len {len}", isa.name());
                }
            }
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 1 << 20;
        let mut out = vec![0.0f32; n];
        fill_normals(NoiseKey::new(1, 0), 0, &mut out);
        let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = out.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64;
        let kurt = out.iter().map(|&v| f64::from(v).powi(4)).sum::<f64>() / n as f64;
        let tail = out.iter().filter(|v| v.abs() > 1.96).count() as f64 / n as f64;
        // Standard errors: mean 1e-3, var 1.4e-3, fourth moment 9e-3, tail 2e-4.
        assert!(mean.abs() < 5e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 7e-3, "var {var}");
        assert!((kurt - 3.0).abs() < 0.05, "E[z^4] {kurt}");
        assert!((tail - 0.05).abs() < 1.5e-3, "P(|z| > 1.96) = {tail}");
        // Neighbouring elements (same Box-Muller pair and across pairs) are uncorrelated.
        for lag in [1usize, 2, 4] {
            let c = out
                .iter()
                .zip(&out[lag..])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
                / (n - lag) as f64;
            assert!(c.abs() < 5e-3, "lag-{lag} correlation {c}");
        }
    }

    #[test]
    fn streams_and_seeds_differ() {
        let a = normal_at(NoiseKey::new(1, 0), 10);
        let b = normal_at(NoiseKey::new(1, 1), 10);
        let c = normal_at(NoiseKey::new(2, 0), 10);
        assert!(a != b && a != c && b != c);
        assert_ne!(
            NoiseKey::for_block_step(1, 1, 0),
            NoiseKey::for_block_step(1, 0, 1)
        );
    }

    #[test]
    fn uniforms_are_open_and_spread() {
        let key = NoiseKey::new(9, 0);
        let n = 100_000;
        let mean = (0..n).map(|i| uniform_at(key, i)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 5e-3);
        assert!((0..n).all(|i| {
            let u = uniform_at(key, i);
            u > 0.0 && u < 1.0
        }));
    }
}
