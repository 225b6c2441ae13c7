//! In-process memory ceilings: the cheapest kernels that move exactly the bytes of each fused
//! pass, on the same threads scheduled the same way (scoped threads per call taking claims of
//! 16 x 4096 elements from a shared queue, as `deelbo_core::fused` does). A fused pass cannot be faster
//! than its ceiling on the same machine at the same moment, so `ceiling time / pass time` is the
//! fraction of the memory floor the pass reaches.
//!
//! | ceiling | kernel | traffic per weight | pass it bounds |
//! |---|---|---|---|
//! | [`read2_write1`] | `c = a + b` | read 8 B, write 4 B | forward (read `m`, `mu`; write `w`) |
//! | [`read3_write1`] | `c = a + b + d` | read 12 B, write 4 B | backward (read `g`, `m`, `mu`; write `d loss/d m`) |
//! | [`read4_write2`] | `x += a`, `y += b` | read 16 B, write 8 B | backward + SGD (read `g`, `m`, `mu`, `u`; write `m`, `u`) |
//!
//! Each write-only output comes in two flavours ([`Stores`]): ordinary stores (the CPU first
//! reads every written line: 4 more bytes per weight) and non-temporal streaming stores (no
//! read, the lines bypass the caches). The harness takes the faster as the ceiling.

use deelbo_core::REDUCTION_CHUNK;
use deelbo_core::fused::CLAIM_CHUNKS;

/// How a write-only output is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stores {
    /// Ordinary stores (read for ownership, then write back).
    Regular,
    /// Non-temporal streaming stores (`movntps`, x86-64 only; elsewhere the same as
    /// [`Stores::Regular`]).
    Streaming,
}

impl Stores {
    /// `"regular"` or `"streaming"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Streaming => "streaming",
        }
    }
}

/// Elements per unit of work a thread claims: the fused step's claim of
/// [`CLAIM_CHUNKS`] chunks.
pub const CLAIM: usize = CLAIM_CHUNKS * REDUCTION_CHUNK;

/// The element ranges of the claims covering `0..len`.
pub fn claims(len: usize) -> Vec<(usize, usize)> {
    (0..len.div_ceil(CLAIM))
        .map(|c| (c * CLAIM, ((c + 1) * CLAIM).min(len)))
        .collect()
}

/// Runs `f` on every item on `threads` scoped threads taking items from a shared queue (the
/// fused step's dynamic schedule); on the calling thread when one thread or one item.
pub fn run_queue<T: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) + Sync) {
    let threads = threads.min(items.len());
    if threads <= 1 {
        items.into_iter().for_each(f);
        return;
    }
    let queue = std::sync::Mutex::new(items.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next();
                    let Some(item) = next else { break };
                    f(item);
                }
            });
        }
    });
}

/// Runs `f(start, end, outputs)` for each claim of `0..len` on `threads` threads (the fused
/// step's schedule), with every output slice cut to that claim.
pub fn for_each_range<const K: usize>(
    len: usize,
    threads: usize,
    outputs: [&mut [f32]; K],
    f: impl Fn(usize, usize, [&mut [f32]; K]) + Sync,
) {
    let mut rest = outputs;
    let mut items = Vec::new();
    for (start, end) in claims(len) {
        let mut mine: [&mut [f32]; K] = std::array::from_fn(|_| Default::default());
        for (m, r) in mine.iter_mut().zip(rest.iter_mut()) {
            let (a, b) = std::mem::take(r).split_at_mut(end - start);
            *m = a;
            *r = b;
        }
        items.push((start, end, mine));
    }
    run_queue(items, threads, |(start, end, outs)| f(start, end, outs));
}

/// `out[i] = x[i] + y[i]` with the chosen stores.
fn add2(out: &mut [f32], x: &[f32], y: &[f32], stores: Stores) {
    let n = out.len();
    let (x, y) = (&x[..n], &y[..n]);
    #[cfg(target_arch = "x86_64")]
    if stores == Stores::Streaming {
        streaming::add2(out, x, y);
        return;
    }
    let _ = stores;
    for i in 0..n {
        out[i] = x[i] + y[i];
    }
}

/// `out[i] = (x[i] + y[i]) + z[i]` with the chosen stores.
fn add3(out: &mut [f32], x: &[f32], y: &[f32], z: &[f32], stores: Stores) {
    let n = out.len();
    let (x, y, z) = (&x[..n], &y[..n], &z[..n]);
    #[cfg(target_arch = "x86_64")]
    if stores == Stores::Streaming {
        streaming::add3(out, x, y, z);
        return;
    }
    let _ = stores;
    for i in 0..n {
        out[i] = (x[i] + y[i]) + z[i];
    }
}

/// The forward pass's ceiling: `c = a + b` (read 2 arrays, write 1).
pub fn read2_write1(a: &[f32], b: &[f32], c: &mut [f32], threads: usize, stores: Stores) {
    let len = c.len();
    for_each_range(len, threads, [c], |s, e, [c]| {
        add2(c, &a[s..e], &b[s..e], stores)
    });
}

/// The backward pass's ceiling: `c = a + b + d` (read 3 arrays, write 1).
pub fn read3_write1(
    a: &[f32],
    b: &[f32],
    d: &[f32],
    c: &mut [f32],
    threads: usize,
    stores: Stores,
) {
    let len = c.len();
    for_each_range(len, threads, [c], |s, e, [c]| {
        add3(c, &a[s..e], &b[s..e], &d[s..e], stores)
    });
}

/// The backward + SGD pass's ceiling: `x += a`, `y += b` in place (read 4 arrays, write 2; an
/// in-place output is read anyway, so streaming stores would not save traffic).
pub fn read4_write2(a: &[f32], b: &[f32], x: &mut [f32], y: &mut [f32], threads: usize) {
    let len = x.len();
    for_each_range(len, threads, [x, y], |s, e, [x, y]| {
        let (a, b) = (&a[s..e], &b[s..e]);
        let n = x.len();
        let y = &mut y[..n];
        for i in 0..n {
            x[i] += a[i];
            y[i] += b[i];
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod streaming {
    use std::arch::x86_64::{__m128, _mm_add_ps, _mm_loadu_ps, _mm_sfence, _mm_stream_ps};

    /// Scalar head up to 16-byte alignment of `out`, then 4-wide `f(i)` streamed, scalar tail,
    /// then a store fence (streaming stores are weakly ordered).
    fn stream(out: &mut [f32], scalar: impl Fn(usize) -> f32, vector: impl Fn(usize) -> __m128) {
        let n = out.len();
        let head = out.as_ptr().align_offset(16).min(n);
        for (i, o) in out[..head].iter_mut().enumerate() {
            *o = scalar(i);
        }
        let body = head + (n - head) / 4 * 4;
        let mut i = head;
        while i < body {
            // SAFETY: `i + 4 <= body <= n`, and `out[i..]` is 16-byte aligned (`i - head` is a
            // multiple of 4 floats past the aligned `out[head]`).
            unsafe { _mm_stream_ps(out.as_mut_ptr().add(i), vector(i)) };
            i += 4;
        }
        for (k, o) in out[body..].iter_mut().enumerate() {
            *o = scalar(body + k);
        }
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe { _mm_sfence() };
    }

    /// Four unaligned floats of `x` from `i` (`i + 4 <= x.len()`).
    fn load(x: &[f32], i: usize) -> __m128 {
        let x = &x[i..i + 4];
        // SAFETY: `x` holds exactly 4 floats; the load is unaligned.
        unsafe { _mm_loadu_ps(x.as_ptr()) }
    }

    pub(super) fn add2(out: &mut [f32], x: &[f32], y: &[f32]) {
        stream(
            out,
            |i| x[i] + y[i],
            // SAFETY: SSE is part of the x86-64 baseline.
            |i| unsafe { _mm_add_ps(load(x, i), load(y, i)) },
        );
    }

    pub(super) fn add3(out: &mut [f32], x: &[f32], y: &[f32], z: &[f32]) {
        stream(
            out,
            |i| (x[i] + y[i]) + z[i],
            // SAFETY: SSE is part of the x86-64 baseline.
            |i| unsafe { _mm_add_ps(_mm_add_ps(load(x, i), load(y, i)), load(z, i)) },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_compute_what_they_say_on_every_split() {
        for len in [0usize, 3, 4096, 4097, 3 * CLAIM + 5] {
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| 0.5 * i as f32).collect();
            let d: Vec<f32> = (0..len).map(|i| -(i as f32)).collect();
            for threads in [1usize, 2, 3] {
                for stores in [Stores::Regular, Stores::Streaming] {
                    let mut c = vec![f32::NAN; len];
                    read2_write1(&a, &b, &mut c, threads, stores);
                    assert!(c.iter().zip(&a).zip(&b).all(|((c, a), b)| *c == a + b));
                    read3_write1(&a, &b, &d, &mut c, threads, stores);
                    assert!((0..len).all(|i| c[i] == (a[i] + b[i]) + d[i]));
                }
                let (mut x, mut y) = (vec![1.0f32; len], vec![2.0f32; len]);
                read4_write2(&a, &b, &mut x, &mut y, threads);
                assert!((0..len).all(|i| x[i] == 1.0 + a[i] && y[i] == 2.0 + b[i]));
            }
        }
        let c = claims(2 * CLAIM + 5);
        assert_eq!(
            c,
            vec![(0, CLAIM), (CLAIM, 2 * CLAIM), (2 * CLAIM, 2 * CLAIM + 5)]
        );
    }
}
