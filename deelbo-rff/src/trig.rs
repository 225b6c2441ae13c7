//! Branch-free, auto-vectorizable `cos` / `sin` for the random-feature phases: the features are
//! `N x R` cosines, and the C library's scalar `cos` was the largest single cost of forming them.
//!
//! The argument is reduced by Cody-Waite with `pi/2` split in three parts and the quadrant read
//! from the low bits of a rounding constant; `cos` and `sin` on `[-pi/4, pi/4]` are fdlibm's
//! kernel polynomials (`__kernel_cos`, `__kernel_sin`, without the tail term). Only `+ - *` of
//! IEEE doubles, no fused multiply-add: the AVX2 and the portable builds of the loop compute the
//! same bits. The error is within about one unit in the last place of 1 (absolute `~2e-16`) for
//! `|x| <= REDUCTION_LIMIT`; blocks holding a larger (or non-finite) phase use the C library.

/// Largest `|x|` the three-part reduction handles exactly (`n = round(x 2/pi) < 2^20`, so
/// `n P1` and `n P2` are exact products of 33-bit constants).
pub const REDUCTION_LIMIT: f64 = 1.0e6;

const INV_PIO2: f64 = std::f64::consts::FRAC_2_PI;
/// `pi/2` in three parts: the first 33 bits, the next 33 bits, the rest.
const PIO2_1: f64 = 1.570_796_326_734_125_6;
const PIO2_2: f64 = 6.077_100_506_303_966e-11;
const PIO2_3: f64 = 2.022_266_248_795_950_6e-21;
/// `1.5 2^52`: `(v + ROUND) - ROUND` rounds `v` to the nearest integer (ties to even) for
/// `|v| < 2^51`, and the low bits of `(v + ROUND).to_bits()` are that integer mod `2^k`.
const ROUND: f64 = 6_755_399_441_055_744.0;

const C1: f64 = 0.0416666666666666;
const C2: f64 = -1.388_888_888_887_411e-3;
const C3: f64 = 2.480_158_728_947_673e-5;
const C4: f64 = -2.755_731_435_139_066_3e-7;
const C5: f64 = 2.087_572_321_298_175e-9;
const C6: f64 = -1.135_964_755_778_819_5e-11;

const S1: f64 = -1.666_666_666_666_663_2e-1;
const S2: f64 = 8.333_333_333_322_49e-3;
const S3: f64 = -1.984_126_982_985_795e-4;
const S4: f64 = 2.755_731_370_707_006_8e-6;
const S5: f64 = -2.505_076_025_340_682e-8;
const S6: f64 = 1.589_690_995_211_55e-10;

/// `(r, q)`: `x = r + q pi/2` (mod `2 pi`), `|r| <= ~pi/4`, `q` in `0..4`.
#[inline(always)]
fn reduce(x: f64) -> (f64, u64) {
    let t = x * INV_PIO2 + ROUND;
    let q = t.to_bits() & 3;
    let n = t - ROUND;
    let r = ((x - n * PIO2_1) - n * PIO2_2) - n * PIO2_3;
    (r, q)
}

/// `cos r` and `sin r` on `|r| <= ~pi/4` (fdlibm kernels).
#[inline(always)]
fn kernels(r: f64) -> (f64, f64) {
    let z = r * r;
    let pc = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos = w + (((1.0 - w) - hz) + z * pc);
    let ps = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    let sin = r + r * z * (S1 + z * ps);
    (cos, sin)
}

/// `v` with its sign flipped when `flip` (0 or 1).
#[inline(always)]
fn negate_if(v: f64, flip: u64) -> f64 {
    f64::from_bits(v.to_bits() ^ (flip << 63))
}

/// `cos x` for `|x| <= REDUCTION_LIMIT`.
///
/// # Formula
/// `x = r + q pi/2`: `cos x = (cos r, -sin r, -cos r, sin r)` for `q = 0, 1, 2, 3`.
#[inline(always)]
pub fn cos_reduced(x: f64) -> f64 {
    let (r, q) = reduce(x);
    let (c, s) = kernels(r);
    let v = if q & 1 == 0 { c } else { s };
    negate_if(v, ((q + 1) >> 1) & 1)
}

/// `(sin x, cos x)` for `|x| <= REDUCTION_LIMIT`.
///
/// # Formula
/// `x = r + q pi/2`: `sin x = (sin r, cos r, -sin r, -cos r)` for `q = 0, 1, 2, 3`.
#[inline(always)]
pub fn sin_cos_reduced(x: f64) -> (f64, f64) {
    let (r, q) = reduce(x);
    let (c, s) = kernels(r);
    let odd = q & 1 == 1;
    let (sv, cv) = if odd { (c, s) } else { (s, c) };
    (negate_if(sv, q >> 1), negate_if(cv, ((q + 1) >> 1) & 1))
}

/// Elements per chunk of the range check.
const CHUNK: usize = 256;

fn in_range(z: &[f64]) -> bool {
    // NaN fails the comparison: the C library path.
    z.iter()
        .fold(true, |ok, v| ok & (v.abs() <= REDUCTION_LIMIT))
}

#[inline(always)]
fn cos_scaled_portable(z: &mut [f64], scale: f64) {
    for chunk in z.chunks_mut(CHUNK) {
        if in_range(chunk) {
            for v in chunk.iter_mut() {
                *v = scale * cos_reduced(*v);
            }
        } else {
            for v in chunk.iter_mut() {
                *v = scale * v.cos();
            }
        }
    }
}

#[inline(always)]
fn sin_cos_scaled_in_place_portable(z_sin: &mut [f64], scale: f64, cos: &mut [f64]) {
    for (sc, cc) in z_sin.chunks_mut(CHUNK).zip(cos.chunks_mut(CHUNK)) {
        if in_range(sc) {
            for (s, c) in sc.iter_mut().zip(cc.iter_mut()) {
                let (sv, cv) = sin_cos_reduced(*s);
                *c = scale * cv;
                *s = scale * sv;
            }
        } else {
            for (s, c) in sc.iter_mut().zip(cc.iter_mut()) {
                let (sv, cv) = s.sin_cos();
                *c = scale * cv;
                *s = scale * sv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn cos_scaled_avx2(z: &mut [f64], scale: f64) {
    cos_scaled_portable(z, scale);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sin_cos_scaled_in_place_avx2(z_sin: &mut [f64], scale: f64, cos: &mut [f64]) {
    sin_cos_scaled_in_place_portable(z_sin, scale, cos);
}

/// `z_i <- scale cos(z_i)` in place (AVX2 when the CPU has it; the same bits either way).
pub fn cos_scaled_in_place(z: &mut [f64], scale: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        unsafe { cos_scaled_avx2(z, scale) };
        return;
    }
    cos_scaled_portable(z, scale);
}

/// `cos_i = scale cos(z_i)` and `z_i <- scale sin(z_i)`: the sines written over the phases
/// (slices of equal length; AVX2 when the CPU has it, the same bits either way).
pub fn sin_cos_scaled_in_place(z_sin: &mut [f64], scale: f64, cos: &mut [f64]) {
    let n = z_sin.len().min(cos.len());
    let (z_sin, cos) = (&mut z_sin[..n], &mut cos[..n]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        unsafe { sin_cos_scaled_in_place_avx2(z_sin, scale, cos) };
        return;
    }
    sin_cos_scaled_in_place_portable(z_sin, scale, cos);
}
