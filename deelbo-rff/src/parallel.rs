//! Deterministic parallelism over fixed blocks: the work is cut into blocks whose boundaries do
//! not depend on the thread count, each block is computed by one thread, and results come back
//! in block order, so every sum over blocks is added in the same order whatever the threads.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Result;

/// Rows per block of the row-parallel passes (features, Gram accumulation).
pub const BLOCK_ROWS: usize = 128;

/// The number of worker threads: `DEELBO_THREADS` if set to a positive integer, else the
/// available parallelism.
pub fn threads() -> usize {
    std::env::var("DEELBO_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f(0), ..., f(count - 1)` computed on up to [`threads`] threads, returned in index order.
/// The first error (in index order) is returned.
pub fn map_blocks<T, F>(count: usize, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
{
    let workers = threads().min(count);
    if workers <= 1 {
        return (0..count).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<T>>> = (0..count).map(|_| None).collect();
    let results: Vec<Vec<(usize, Result<T>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        done.push((i, f(i)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in results.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                Err(crate::error::RffError::Linalg {
                    name: "a parallel block".to_string(),
                    reason: "a worker thread panicked".to_string(),
                })
            })
        })
        .collect()
}

/// Row ranges `[start, end)` of `n` rows cut into blocks of `block` rows.
pub fn row_blocks(n: usize, block: usize) -> Vec<(usize, usize)> {
    let block = block.max(1);
    (0..n.div_ceil(block))
        .map(|i| (i * block, ((i + 1) * block).min(n)))
        .collect()
}

/// `f(i, chunk_i)` for the consecutive chunks of `chunk_len` elements of `out` (the last one may
/// be shorter), on up to [`threads`] threads. Each chunk is written by exactly one call whose
/// inputs do not depend on the thread count, so neither does the result. The first error (in
/// chunk order) is returned.
pub fn for_each_chunk<F>(out: &mut [f64], chunk_len: usize, f: F) -> Result<()>
where
    F: Fn(usize, &mut [f64]) -> Result<()> + Sync,
{
    for_each_chunk_pair(out, &mut [], chunk_len, |i, a, _| f(i, a))
}

/// [`for_each_chunk`] over two buffers at once: `f(i, a_i, b_i)` with `a_i`, `b_i` the `i`-th
/// chunks of `chunk_len` elements of `a` and `b` (`b` may be empty, then every `b_i` is empty;
/// otherwise `a` and `b` must have the same length).
pub fn for_each_chunk_pair<F>(a: &mut [f64], b: &mut [f64], chunk_len: usize, f: F) -> Result<()>
where
    F: Fn(usize, &mut [f64], &mut [f64]) -> Result<()> + Sync,
{
    if !b.is_empty() && b.len() != a.len() {
        return Err(crate::error::RffError::Shape {
            name: "second buffer of a parallel pass".to_string(),
            expected: a.len(),
            found: b.len(),
        });
    }
    let chunk_len = chunk_len.max(1);
    let mut b_chunks = b.chunks_mut(chunk_len);
    let chunks: Vec<std::sync::Mutex<(&mut [f64], &mut [f64])>> = a
        .chunks_mut(chunk_len)
        .map(|ac| std::sync::Mutex::new((ac, b_chunks.next().unwrap_or(&mut []))))
        .collect();
    map_blocks(chunks.len(), |i| {
        // Each index is claimed by one worker only, so the lock is never contended.
        let mut pair = chunks[i]
            .lock()
            .map_err(|_| crate::error::RffError::Linalg {
                name: "a parallel block".to_string(),
                reason: "a worker thread panicked".to_string(),
            })?;
        let (ac, bc) = &mut *pair;
        f(i, ac, bc)
    })?;
    Ok(())
}
