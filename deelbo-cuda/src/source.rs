//! The CUDA C++ source of every kernel, generated in Rust so that the noise transform's constants
//! come from [`deelbo_core::mirror::TRANSFORM_CONSTANTS`] (as `f32` bit patterns) and cannot drift
//! from the CPU side.
//!
//! The source is self-contained: no `#include`, only NVRTC built-ins (`__umulhi`,
//! `__uint_as_float`, `sqrtf`, `__shfl_down_sync`, `atomicAdd`, `__threadfence`). It must be
//! compiled with `--fmad=false` (and IEEE division and square root, NVRTC's defaults) so that
//! every `a * b + c` is a rounded product followed by a rounded sum, exactly as in
//! [`deelbo_core::mirror::box_muller`].
//!
//! The noise part ([`noise_source`]) is plain C++ apart from the `__device__` qualifiers and
//! three intrinsics, so a test can compile it on the host with shims and compare it bit for bit
//! with the Rust transform, without a GPU.

use std::fmt::Write as _;

use deelbo_core::mirror::TRANSFORM_CONSTANTS;

/// Threads per block of every element-wise kernel.
pub const BLOCK_THREADS: u32 = 256;

/// Blocks per multiprocessor the fused kernels are compiled for (`__launch_bounds__`): at most
/// 48 registers per thread, no spills on sm_90 (checked with `examples/03_register_usage.rs`),
/// 1280 resident threads per SM. Their grid is one wave: `MIN_BLOCKS_PER_SM` x the number of
/// multiprocessors (so no partial last wave), each thread looping over the block.
pub const MIN_BLOCKS_PER_SM: u32 = 5;

/// Blocks per multiprocessor the prefetching forward kernel is compiled for: it holds the next
/// block's inputs in registers too, so it gets up to 64 registers per thread (1024 resident
/// threads per SM).
pub const PREFETCH_MIN_BLOCKS_PER_SM: u32 = 4;

/// The most blocks a reduction kernel launches (the size of the partial-sum buffer); a
/// grid-stride loop covers larger inputs. The grid depends only on the input length and the
/// device, so the reduction order, and the result, is the same on every run.
pub const MAX_REDUCTION_BLOCKS: u32 = 4096;

/// Kernel entry points of the compiled module.
pub mod names {
    /// Fused forward: noise, `w = m + sigma eps`, reductions, in one pass.
    pub const FUSED_FORWARD: &str = "deelbo_fused_forward";
    /// The same with software prefetch of the next block's inputs.
    pub const FUSED_FORWARD_PREFETCH: &str = "deelbo_fused_forward_prefetch";
    /// Fused backward: regenerated noise, mean gradient or momentum-SGD update, `sum g eps`.
    pub const FUSED_BACKWARD: &str = "deelbo_fused_backward";
    /// Naive: `eps_i` into a buffer.
    pub const NAIVE_NORMAL: &str = "deelbo_naive_normal";
    /// Naive: `y = alpha x` (scalar alpha).
    pub const NAIVE_SCALE: &str = "deelbo_naive_scale";
    /// Naive: `y = a * x` element-wise.
    pub const NAIVE_MUL: &str = "deelbo_naive_mul";
    /// Naive: `z = x + y`.
    pub const NAIVE_ADD: &str = "deelbo_naive_add";
    /// Naive: `z = x - y`.
    pub const NAIVE_SUB: &str = "deelbo_naive_sub";
    /// Naive: `y = x^2`.
    pub const NAIVE_SQUARE: &str = "deelbo_naive_square";
    /// Naive: two-stage `f64` sum of an `f32` buffer.
    pub const NAIVE_SUM: &str = "deelbo_naive_sum";

    /// Every entry point, for loading and for checking the compiled PTX.
    pub const ALL: [&str; 10] = [
        FUSED_FORWARD,
        FUSED_FORWARD_PREFETCH,
        FUSED_BACKWARD,
        NAIVE_NORMAL,
        NAIVE_SCALE,
        NAIVE_MUL,
        NAIVE_ADD,
        NAIVE_SUB,
        NAIVE_SQUARE,
        NAIVE_SUM,
    ];
}

/// `#define DEELBO_<NAME> __uint_as_float(0x<bits>u)` for every transform constant.
fn constant_defines() -> String {
    let mut s = String::new();
    for (name, bits) in TRANSFORM_CONSTANTS {
        // Writing to a String cannot fail.
        let _ = writeln!(s, "#define DEELBO_{name} __uint_as_float(0x{bits:08x}u)");
    }
    s
}

/// The Philox4x32-10 block function and the Box–Muller transform as device functions: the
/// mirror of `rand_philox::philox4x32_10` and [`deelbo_core::mirror::box_muller`] /
/// `ln_f32` / `sincos_quadrant_f32`, operation for operation.
///
/// Defines `deelbo_u4`, `deelbo_philox(c0, c1, c2, c3, k0, k1)`, `deelbo_ln(x)`,
/// `deelbo_sincos_quadrant(q, f, &s, &c)`, `deelbo_box_muller(a, b, &z0, &z1)` and
/// `deelbo_normals(j, key, stream) -> deelbo_f4` (the four normals of Philox block `j`).
pub fn noise_source() -> String {
    let mut s = String::from(
        "typedef unsigned int deelbo_u32;\n\
         typedef unsigned long long deelbo_u64;\n",
    );
    s.push_str(&constant_defines());
    s.push_str(NOISE_BODY);
    s
}

const NOISE_BODY: &str = r#"
struct deelbo_u4 { deelbo_u32 x, y, z, w; };
struct deelbo_f4 { float x, y, z, w; };

/* Philox4x32-10 (Random123): round 0 with the key as given, rounds 1..9 bump the key first. */
__device__ __forceinline__ deelbo_u4 deelbo_philox(deelbo_u32 c0, deelbo_u32 c1, deelbo_u32 c2,
                                                   deelbo_u32 c3, deelbo_u32 k0, deelbo_u32 k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const deelbo_u32 hi0 = __umulhi(0xD2511F53u, c0);
        const deelbo_u32 lo0 = 0xD2511F53u * c0;
        const deelbo_u32 hi1 = __umulhi(0xCD9E8D57u, c2);
        const deelbo_u32 lo1 = 0xCD9E8D57u * c2;
        const deelbo_u32 n0 = hi1 ^ c1 ^ k0;
        const deelbo_u32 n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    deelbo_u4 out;
    out.x = c0;
    out.y = c1;
    out.z = c2;
    out.w = c3;
    return out;
}

/* ln x for normal positive x, exact operations only (mirror of deelbo_core::mirror::ln_f32). */
__device__ __forceinline__ float deelbo_ln(float x) {
    const deelbo_u32 bits = __float_as_uint(x);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > DEELBO_SQRT2) {
        m = m * 0.5f;
        e = e + 1;
    }
    const float f = (m - 1.0f) / (m + 1.0f);
    const float s = f * f;
    const float p = DEELBO_L3 + s * (DEELBO_L5 + s * (DEELBO_L7 + s * (DEELBO_L9
                    + s * (DEELBO_L11 + s * DEELBO_L13))));
    const float ln_m = (f + f) + (f * s) * p;
    const float ef = (float)e;
    return ef * DEELBO_LN2_HI + (ef * DEELBO_LN2_LO + ln_m);
}

/* (sin, cos) of the angle (q + f)/4 turns (mirror of deelbo_core::mirror::sincos_quadrant_f32). */
__device__ __forceinline__ void deelbo_sincos_quadrant(deelbo_u32 q, float f, float* sin_out,
                                                       float* cos_out) {
    const bool fold = f > 0.5f;
    const float g = fold ? (1.0f - f) : f;
    const float t = g * g;
    const float sin_g = g * (DEELBO_S1 + t * (DEELBO_S3 + t * (DEELBO_S5 + t * (DEELBO_S7
                        + t * DEELBO_S9))));
    const float cos_g = 1.0f + t * (DEELBO_C2 + t * (DEELBO_C4 + t * (DEELBO_C6 + t * (DEELBO_C8
                        + t * DEELBO_C10))));
    const float s = fold ? cos_g : sin_g;
    const float c = fold ? sin_g : cos_g;
    switch (q & 3u) {
        case 0u: *sin_out = s; *cos_out = c; break;
        case 1u: *sin_out = c; *cos_out = -s; break;
        case 2u: *sin_out = -s; *cos_out = -c; break;
        default: *sin_out = -c; *cos_out = s; break;
    }
}

/* Box-Muller on two words (mirror of deelbo_core::mirror::box_muller): (r cos, r sin). */
__device__ __forceinline__ void deelbo_box_muller(deelbo_u32 a, deelbo_u32 b, float* z0,
                                                  float* z1) {
    const float u = ((float)(a >> 9) + 0.5f) * DEELBO_TWO_POW_M23;
    const float r = sqrtf(-2.0f * deelbo_ln(u));
    const float f = ((float)((b >> 7) & 0x007fffffu) + 0.5f) * DEELBO_TWO_POW_M23;
    float sn, cs;
    deelbo_sincos_quadrant(b >> 30, f, &sn, &cs);
    *z0 = r * cs;
    *z1 = r * sn;
}

/* The four normals of Philox block j (elements 4j .. 4j+3) of the stream (key, stream). */
__device__ __forceinline__ deelbo_f4 deelbo_normals(deelbo_u64 j, deelbo_u32 k0, deelbo_u32 k1,
                                                    deelbo_u32 s_lo, deelbo_u32 s_hi) {
    const deelbo_u4 wds = deelbo_philox((deelbo_u32)j, (deelbo_u32)(j >> 32), s_lo, s_hi, k0, k1);
    deelbo_f4 z;
    deelbo_box_muller(wds.x, wds.y, &z.x, &z.y);
    deelbo_box_muller(wds.z, wds.w, &z.z, &z.w);
    return z;
}
"#;

/// [`noise_source`] plus the per-Philox-block work of each kernel as device functions:
/// `deelbo_span_of`, `deelbo_load4`/`deelbo_store4` (the `float4` fast path and the ragged
/// edges), `deelbo_forward_item`, `deelbo_backward_item`, `deelbo_normal_item`. The kernels are
/// grid-stride loops over these; a host test runs the same functions sequentially (with shims for
/// `float4` and the intrinsics) against the CPU step.
pub fn item_source() -> String {
    let mut s = noise_source();
    s.push_str(ITEMS_BODY);
    s
}

/// The complete module: [`item_source`] plus the fused and naive kernels.
pub fn kernel_source() -> String {
    let mut s = String::from(
        "/* deelbo-cuda kernels: generated by deelbo_cuda::source; compile with --fmad=false. */\n",
    );
    let _ = writeln!(s, "#define DEELBO_BLOCK {BLOCK_THREADS}");
    let _ = writeln!(s, "#define DEELBO_MIN_BLOCKS {MIN_BLOCKS_PER_SM}");
    let _ = writeln!(
        s,
        "#define DEELBO_PREFETCH_MIN_BLOCKS {PREFETCH_MIN_BLOCKS_PER_SM}"
    );
    s.push_str(&item_source());
    s.push_str(KERNELS_BODY);
    s
}

const ITEMS_BODY: &str = r#"
/* The elements of Philox block j (noise indices 4j .. 4j+3) that fall inside
   [first, first + n): local indices base + k for lo <= k < hi. vec: all four are inside and
   base is a multiple of 4, so float4 accesses are aligned (buffers are whole allocations). */
struct deelbo_span {
    long long base;
    int lo, hi;
    bool vec;
};

__device__ __forceinline__ deelbo_span deelbo_span_of(deelbo_u64 j, deelbo_u64 first,
                                                      deelbo_u64 n, int vec4) {
    deelbo_span sp;
    const deelbo_u64 g0 = j << 2;
    sp.base = (long long)g0 - (long long)first;
    sp.lo = g0 >= first ? 0 : (int)(first - g0);
    const deelbo_u64 end = first + n;
    sp.hi = g0 + 4 <= end ? 4 : (int)(end - g0);
    sp.vec = vec4 && sp.lo == 0 && sp.hi == 4;
    return sp;
}

__device__ __forceinline__ void deelbo_load4(const float* __restrict__ p, const deelbo_span& sp,
                                             float fill, float* v) {
    if (sp.vec) {
        const float4 q = *reinterpret_cast<const float4*>(p + sp.base);
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            v[k] = (k >= sp.lo && k < sp.hi) ? p[sp.base + k] : fill;
        }
    }
}

__device__ __forceinline__ void deelbo_store4(float* __restrict__ p, const deelbo_span& sp,
                                              const float* v) {
    if (sp.vec) {
        float4 q;
        q.x = v[0];
        q.y = v[1];
        q.z = v[2];
        q.w = v[3];
        *reinterpret_cast<float4*>(p + sp.base) = q;
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (k >= sp.lo && k < sp.hi) {
                p[sp.base + k] = v[k];
            }
        }
    }
}

/* The inputs of one Philox block of the forward pass. */
struct deelbo_fwd_in {
    float m[4], p[4], s[4];
};

/* Forward loads of one Philox block (separate from the arithmetic so a kernel can issue the
   next block's loads before computing the current one). */
__device__ __forceinline__ void deelbo_forward_load(const deelbo_span& sp,
                                                    const float* __restrict__ m,
                                                    const float* __restrict__ mu,
                                                    const float* __restrict__ sigma_diag,
                                                    float sigma, deelbo_fwd_in& in) {
    deelbo_load4(m, sp, 0.0f, in.m);
    if (mu) {
        deelbo_load4(mu, sp, 0.0f, in.p);
    } else {
        in.p[0] = in.p[1] = in.p[2] = in.p[3] = 0.0f;
    }
    if (sigma_diag) {
        deelbo_load4(sigma_diag, sp, 1.0f, in.s);
    } else {
        in.s[0] = in.s[1] = in.s[2] = in.s[3] = sigma;
    }
}

/* Forward arithmetic of one Philox block j: noise, w = m + sigma eps (stored), f64 sums of
   (m - mu)^2 and, when diag, of sigma^2 and ln sigma^2. */
__device__ __forceinline__ void deelbo_forward_compute(deelbo_u64 j, const deelbo_span& sp,
                                                       const deelbo_fwd_in& in,
                                                       float* __restrict__ w, bool diag,
                                                       deelbo_u32 k0, deelbo_u32 k1,
                                                       deelbo_u32 s_lo, deelbo_u32 s_hi,
                                                       double* acc) {
    const deelbo_f4 zz = deelbo_normals(j, k0, k1, s_lo, s_hi);
    const float z[4] = {zz.x, zz.y, zz.z, zz.w};
    float wv[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        wv[k] = in.m[k] + in.s[k] * z[k];
    }
    deelbo_store4(w, sp, wv);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        if (k >= sp.lo && k < sp.hi) {
            const double d = (double)in.m[k] - (double)in.p[k];
            acc[0] += d * d;
            if (diag) {
                const double sd = in.s[k];
                acc[1] += sd * sd;
                acc[2] += 2.0 * log(sd);
            }
        }
    }
}

/* Forward work of one Philox block j: loads, noise, w = m + sigma eps, f64 accumulations. */
__device__ __forceinline__ void deelbo_forward_item(
    deelbo_u64 j, deelbo_u64 first, deelbo_u64 n, int vec4, float* __restrict__ w,
    const float* __restrict__ m, const float* __restrict__ mu,
    const float* __restrict__ sigma_diag, float sigma, deelbo_u32 k0, deelbo_u32 k1,
    deelbo_u32 s_lo, deelbo_u32 s_hi, double* acc) {
    const deelbo_span sp = deelbo_span_of(j, first, n, vec4);
    deelbo_fwd_in in;
    deelbo_forward_load(sp, m, mu, sigma_diag, sigma, in);
    deelbo_forward_compute(j, sp, in, w, sigma_diag != 0, k0, k1, s_lo, s_hi, acc);
}

/* Backward work of one Philox block j. g = d loss/d w at the forward sample of the stream.
   mode 0: grad_m[i] = g + c (m - mu).
   mode 1: u[i] = beta u[i] + (g + c (m - mu)); m[i] = m[i] - lr u[i]   (in place).
   Diagonal (sigma_diag != null): grad_sigma[i] = g eps + k (sigma (1/v) - 1/sigma).
   acc0 += g eps in f64. */
__device__ __forceinline__ void deelbo_backward_item(
    deelbo_u64 j, deelbo_u64 first, deelbo_u64 n, int vec4, const float* __restrict__ grad_w,
    float* __restrict__ m, const float* __restrict__ mu, const float* __restrict__ sigma_diag,
    float* __restrict__ grad_m, float* __restrict__ velocity, float* __restrict__ grad_sigma,
    float c, float kinv, float inv_v, float lr, float beta, int mode, deelbo_u32 k0,
    deelbo_u32 k1, deelbo_u32 s_lo, deelbo_u32 s_hi, double* acc) {
    const deelbo_span sp = deelbo_span_of(j, first, n, vec4);
    float gv[4], mv[4], pv[4], gm[4];
    deelbo_load4(grad_w, sp, 0.0f, gv);
    deelbo_load4(m, sp, 0.0f, mv);
    if (mu) {
        deelbo_load4(mu, sp, 0.0f, pv);
    } else {
        pv[0] = pv[1] = pv[2] = pv[3] = 0.0f;
    }
    const deelbo_f4 zz = deelbo_normals(j, k0, k1, s_lo, s_hi);
    const float z[4] = {zz.x, zz.y, zz.z, zz.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        if (k >= sp.lo && k < sp.hi) {
            acc[0] += (double)gv[k] * (double)z[k];
        }
        gm[k] = gv[k] + c * (mv[k] - pv[k]);
    }
    if (mode == 0) {
        deelbo_store4(grad_m, sp, gm);
    } else {
        float uv[4], mn[4];
        deelbo_load4(velocity, sp, 0.0f, uv);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            uv[k] = beta * uv[k] + gm[k];
            mn[k] = mv[k] - lr * uv[k];
        }
        deelbo_store4(velocity, sp, uv);
        deelbo_store4(m, sp, mn);
    }
    if (sigma_diag) {
        float sv[4], gs[4];
        deelbo_load4(sigma_diag, sp, 1.0f, sv);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            gs[k] = gv[k] * z[k] + kinv * (sv[k] * inv_v - 1.0f / sv[k]);
        }
        deelbo_store4(grad_sigma, sp, gs);
    }
}

/* Noise of one Philox block j into eps (the naive path's randn_like). */
__device__ __forceinline__ void deelbo_normal_item(deelbo_u64 j, deelbo_u64 first, deelbo_u64 n,
                                                   int vec4, float* __restrict__ eps,
                                                   deelbo_u32 k0, deelbo_u32 k1,
                                                   deelbo_u32 s_lo, deelbo_u32 s_hi) {
    const deelbo_f4 zz = deelbo_normals(j, k0, k1, s_lo, s_hi);
    const float z[4] = {zz.x, zz.y, zz.z, zz.w};
    deelbo_store4(eps, deelbo_span_of(j, first, n, vec4), z);
}
"#;

const KERNELS_BODY: &str = r#"
#define DEELBO_WARPS (DEELBO_BLOCK / 32)


/* Sum of v over the block in a fixed order (warp shuffles, then warp 0 over the warp sums).
   The result is valid in thread 0. All threads of the block must call it. */
__device__ __forceinline__ double deelbo_block_sum(double v, double* scratch) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, off);
    }
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    __syncthreads(); /* scratch may still be read by a previous call */
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    double t = 0.0;
    if (warp == 0) {
        t = lane < DEELBO_WARPS ? scratch[lane] : 0.0;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            t += __shfl_down_sync(0xffffffffu, t, off);
        }
    }
    return t;
}

/* Two-stage deterministic reduction of NV values per thread: block sums go to
   partials[blockIdx.x * NV + r]; the last block to finish (atomic ticket) sums the partials in
   block order and writes result[r], then resets the ticket counter for the next launch. */
template <int NV>
__device__ __forceinline__ void deelbo_reduce(const double* acc, double* partials,
                                              deelbo_u32* counter, double* result) {
    __shared__ double scratch[DEELBO_WARPS];
    __shared__ bool is_last;
#pragma unroll
    for (int r = 0; r < NV; ++r) {
        const double b = deelbo_block_sum(acc[r], scratch);
        if (threadIdx.x == 0) {
            partials[blockIdx.x * NV + r] = b;
        }
    }
    if (threadIdx.x == 0) {
        __threadfence();
        const deelbo_u32 ticket = atomicAdd(counter, 1u);
        is_last = (ticket == gridDim.x - 1);
    }
    __syncthreads();
    if (!is_last) {
        return;
    }
    __threadfence();
    const volatile double* vp = partials;
#pragma unroll
    for (int r = 0; r < NV; ++r) {
        double t = 0.0;
        for (deelbo_u32 b = threadIdx.x; b < gridDim.x; b += DEELBO_BLOCK) {
            t += vp[b * NV + r];
        }
        t = deelbo_block_sum(t, scratch);
        if (threadIdx.x == 0) {
            result[r] = t;
        }
    }
    if (threadIdx.x == 0) {
        *counter = 0u;
    }
}

/* Fused forward over the n elements whose noise indices are first .. first + n - 1.
   Each thread handles whole Philox blocks j in a grid-stride loop (deelbo_forward_item):
   w[i] = m[i] + sigma_i * eps(first + i); acc0 += (m - mu)^2; diagonal: acc1 += sigma^2,
   acc2 += ln sigma^2 (all f64). mu == null means a zero prior mean; sigma_diag == null means
   the isotropic sigma. vec4: first % 4 == 0 (float4 path for whole blocks). */
extern "C" __global__ void __launch_bounds__(DEELBO_BLOCK, DEELBO_MIN_BLOCKS)
deelbo_fused_forward(float* __restrict__ w, const float* __restrict__ m,
                     const float* __restrict__ mu, const float* __restrict__ sigma_diag,
                     float sigma, deelbo_u64 n, deelbo_u64 first, deelbo_u32 k0, deelbo_u32 k1,
                     deelbo_u32 s_lo, deelbo_u32 s_hi, int vec4, double* __restrict__ partials,
                     deelbo_u32* __restrict__ counter, double* __restrict__ result) {
    double acc[3] = {0.0, 0.0, 0.0};
    const deelbo_u64 j0 = first >> 2;
    const deelbo_u64 jn = ((first + n + 3) >> 2) - j0;
    const deelbo_u64 stride = (deelbo_u64)gridDim.x * DEELBO_BLOCK;
    for (deelbo_u64 t = (deelbo_u64)blockIdx.x * DEELBO_BLOCK + threadIdx.x; t < jn; t += stride) {
        deelbo_forward_item(j0 + t, first, n, vec4, w, m, mu, sigma_diag, sigma, k0, k1, s_lo,
                            s_hi, acc);
    }
    deelbo_reduce<3>(acc, partials, counter, result);
}

/* The fused forward with software prefetch: each thread issues the loads of its next Philox
   block before the noise and arithmetic of the current one, so every warp keeps memory requests
   in flight while it computes. Same arguments, same outputs (bit for bit) and the same
   per-thread summation order as deelbo_fused_forward. */
extern "C" __global__ void __launch_bounds__(DEELBO_BLOCK, DEELBO_PREFETCH_MIN_BLOCKS)
deelbo_fused_forward_prefetch(float* __restrict__ w, const float* __restrict__ m,
                              const float* __restrict__ mu, const float* __restrict__ sigma_diag,
                              float sigma, deelbo_u64 n, deelbo_u64 first, deelbo_u32 k0,
                              deelbo_u32 k1, deelbo_u32 s_lo, deelbo_u32 s_hi, int vec4,
                              double* __restrict__ partials, deelbo_u32* __restrict__ counter,
                              double* __restrict__ result) {
    double acc[3] = {0.0, 0.0, 0.0};
    const deelbo_u64 j0 = first >> 2;
    const deelbo_u64 jn = ((first + n + 3) >> 2) - j0;
    const deelbo_u64 stride = (deelbo_u64)gridDim.x * DEELBO_BLOCK;
    const bool diag = sigma_diag != 0;
    deelbo_u64 t = (deelbo_u64)blockIdx.x * DEELBO_BLOCK + threadIdx.x;
    if (t < jn) {
        deelbo_span sp = deelbo_span_of(j0 + t, first, n, vec4);
        deelbo_fwd_in cur;
        deelbo_forward_load(sp, m, mu, sigma_diag, sigma, cur);
        for (;;) {
            const deelbo_u64 tn = t + stride;
            const bool more = tn < jn;
            deelbo_span spn = sp;
            deelbo_fwd_in nxt = cur;
            if (more) {
                spn = deelbo_span_of(j0 + tn, first, n, vec4);
                deelbo_forward_load(spn, m, mu, sigma_diag, sigma, nxt);
            }
            deelbo_forward_compute(j0 + t, sp, cur, w, diag, k0, k1, s_lo, s_hi, acc);
            if (!more) {
                break;
            }
            t = tn;
            sp = spn;
            cur = nxt;
        }
    }
    deelbo_reduce<3>(acc, partials, counter, result);
}

/* Fused backward (deelbo_backward_item per Philox block), reducing acc0 = sum g eps. */
extern "C" __global__ void __launch_bounds__(DEELBO_BLOCK, DEELBO_MIN_BLOCKS)
deelbo_fused_backward(const float* __restrict__ grad_w, float* __restrict__ m,
                      const float* __restrict__ mu, const float* __restrict__ sigma_diag,
                      float* __restrict__ grad_m, float* __restrict__ velocity,
                      float* __restrict__ grad_sigma, float c, float kinv, float inv_v, float lr,
                      float beta, int mode, deelbo_u64 n, deelbo_u64 first, deelbo_u32 k0,
                      deelbo_u32 k1, deelbo_u32 s_lo, deelbo_u32 s_hi, int vec4,
                      double* __restrict__ partials, deelbo_u32* __restrict__ counter,
                      double* __restrict__ result) {
    double acc[1] = {0.0};
    const deelbo_u64 j0 = first >> 2;
    const deelbo_u64 jn = ((first + n + 3) >> 2) - j0;
    const deelbo_u64 stride = (deelbo_u64)gridDim.x * DEELBO_BLOCK;
    for (deelbo_u64 t = (deelbo_u64)blockIdx.x * DEELBO_BLOCK + threadIdx.x; t < jn; t += stride) {
        deelbo_backward_item(j0 + t, first, n, vec4, grad_w, m, mu, sigma_diag, grad_m, velocity,
                             grad_sigma, c, kinv, inv_v, lr, beta, mode, k0, k1, s_lo, s_hi, acc);
    }
    deelbo_reduce<1>(acc, partials, counter, result);
}

/* ---- Naive multi-kernel version (one operation per pass, as an eager framework runs it). ---- */

extern "C" __global__ void deelbo_naive_normal(float* __restrict__ eps, deelbo_u64 n,
                                               deelbo_u64 first, deelbo_u32 k0, deelbo_u32 k1,
                                               deelbo_u32 s_lo, deelbo_u32 s_hi, int vec4) {
    const deelbo_u64 j0 = first >> 2;
    const deelbo_u64 jn = ((first + n + 3) >> 2) - j0;
    const deelbo_u64 stride = (deelbo_u64)gridDim.x * blockDim.x;
    for (deelbo_u64 t = (deelbo_u64)blockIdx.x * blockDim.x + threadIdx.x; t < jn; t += stride) {
        deelbo_normal_item(j0 + t, first, n, vec4, eps, k0, k1, s_lo, s_hi);
    }
}

#define DEELBO_GRID_LOOP(i, n) \
    for (deelbo_u64 i = (deelbo_u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (deelbo_u64)gridDim.x * blockDim.x)

/* In-place use (output == an input) is allowed: no __restrict__ here. */
extern "C" __global__ void deelbo_naive_scale(float* y, const float* x,
                                              float alpha, deelbo_u64 n) {
    DEELBO_GRID_LOOP(i, n) { y[i] = alpha * x[i]; }
}

extern "C" __global__ void deelbo_naive_mul(float* y, const float* a,
                                            const float* x, deelbo_u64 n) {
    DEELBO_GRID_LOOP(i, n) { y[i] = a[i] * x[i]; }
}

extern "C" __global__ void deelbo_naive_add(float* z, const float* x,
                                            const float* y, deelbo_u64 n) {
    DEELBO_GRID_LOOP(i, n) { z[i] = x[i] + y[i]; }
}

extern "C" __global__ void deelbo_naive_sub(float* z, const float* x,
                                            const float* y, deelbo_u64 n) {
    DEELBO_GRID_LOOP(i, n) { z[i] = x[i] - y[i]; }
}

extern "C" __global__ void deelbo_naive_square(float* y, const float* x,
                                               deelbo_u64 n) {
    DEELBO_GRID_LOOP(i, n) { y[i] = x[i] * x[i]; }
}

/* Deterministic two-stage f64 sum of an f32 buffer (launch with DEELBO_BLOCK threads). */
extern "C" __global__ void __launch_bounds__(DEELBO_BLOCK)
deelbo_naive_sum(const float* __restrict__ x, deelbo_u64 n, double* __restrict__ partials,
                 deelbo_u32* __restrict__ counter, double* __restrict__ result) {
    double acc[1] = {0.0};
    DEELBO_GRID_LOOP(i, n) { acc[0] += (double)x[i]; }
    deelbo_reduce<1>(acc, partials, counter, result);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transform_constant_is_defined_and_used() {
        let src = kernel_source();
        for (name, bits) in TRANSFORM_CONSTANTS {
            let define = format!("#define DEELBO_{name} __uint_as_float(0x{bits:08x}u)");
            assert!(src.contains(&define), "missing {define}");
            // Used somewhere beyond its definition (whole-word match).
            let uses = src
                .match_indices(&format!("DEELBO_{name}"))
                .filter(|(i, _)| {
                    let after = src[i + name.len() + 7..].chars().next();
                    !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == '_')
                })
                .count();
            assert!(uses >= 2, "DEELBO_{name} is defined but never used");
        }
    }

    #[test]
    fn source_is_self_contained_and_names_every_kernel() {
        let src = kernel_source();
        assert!(!src.contains("#include"));
        assert!(!src.contains('\0'));
        for name in names::ALL {
            assert!(
                src.contains(&format!("{name}(")),
                "kernel {name} missing from the source"
            );
        }
    }
}
