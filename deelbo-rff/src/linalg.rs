//! The dense linear algebra of the fits, on the system BLAS/LAPACK (OpenBLAS), with one thread
//! policy: BLAS runs single-threaded and this crate parallelizes over fixed row blocks itself
//! ([`crate::parallel`]), so BLAS threads never fight the crate's threads and the same inputs
//! give the same bits at any thread count.
//!
//! - [`gram_rows`] / [`gram_cols`]: `A A^T` and `A^T A` by `dsyrk` (half the flops of a product,
//!   the upper triangle mirrored);
//! - [`matmul`]: `op(A) op(B)` by `dgemm` (ndarray's own `dot` does not use the BLAS);
//! - [`eigh`]: symmetric eigendecomposition by divide and conquer (`dsyevd`), several times faster
//!   than the QR iteration of `dsyev` that ndarray-linalg's `eigh` calls;
//! - [`cholesky`]: `dpotrf` with jitter escalation and a diagnostic error.

use std::ffi::{c_char, c_int};
use std::sync::Once;

use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, CBLAS_UPLO};
use ndarray::{Array2, ArrayView2};

use crate::error::{Result, RffError};

unsafe extern "C" {
    /// OpenBLAS's thread-count setter (exported by every libopenblas build).
    fn openblas_set_num_threads(num_threads: c_int);
}

static SINGLE_THREADED: Once = Once::new();

/// Make the BLAS single-threaded, once per process (the crate's own row-block threads do the
/// parallel work). Called by every routine here.
pub fn blas_single_threaded() {
    SINGLE_THREADED.call_once(|| {
        // SAFETY: a plain setter with no preconditions, called once before this crate's BLAS
        // calls.
        unsafe { openblas_set_num_threads(1) };
    });
}

fn dim(name: &str, v: usize) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| RffError::InvalidConfig {
        name: name.to_string(),
        reason: format!("dimension {v} is too large for the BLAS (32-bit indices)"),
    })
}

/// A standard-layout (row-major, contiguous) copy or view of `a`.
fn contiguous<'a>(a: &ArrayView2<'a, f64>) -> std::borrow::Cow<'a, [f64]> {
    match a.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// Mirror the upper triangle of a row-major square matrix into the lower one.
fn mirror_upper(c: &mut Array2<f64>) {
    mirror(c, true);
}

/// Make a row-major square matrix symmetric from one triangle: the upper one copied into the
/// lower (`from_upper`) or the lower into the upper.
fn mirror(c: &mut Array2<f64>, from_upper: bool) {
    let n = c.nrows();
    for i in 0..n {
        for j in 0..i {
            if from_upper {
                c[[i, j]] = c[[j, i]];
            } else {
                c[[j, i]] = c[[i, j]];
            }
        }
    }
}

/// `A^T A` (`k x k`) for `A` (`n x k`), by `dsyrk`.
///
/// # Formula
/// `G_ij = sum_n A_ni A_nj`.
pub fn gram_cols(a: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    blas_single_threaded();
    let (n, k) = a.dim();
    let mut c = Array2::<f64>::zeros((k, k));
    if n == 0 || k == 0 {
        return Ok(c);
    }
    let data = contiguous(&a);
    let (ni, ki) = (dim("rows", n)?, dim("columns", k)?);
    // SAFETY: `data` holds n x k row-major values (lda = k), `c` is k x k row-major (ldc = k).
    unsafe {
        cblas_sys::cblas_dsyrk(
            CBLAS_LAYOUT::CblasRowMajor,
            CBLAS_UPLO::CblasUpper,
            CBLAS_TRANSPOSE::CblasTrans,
            ki,
            ni,
            1.0,
            data.as_ptr(),
            ki,
            0.0,
            c.as_mut_ptr(),
            ki,
        );
    }
    mirror_upper(&mut c);
    Ok(c)
}

/// `C += A[:, a..a+p]^T A[:, b..b+q]` for a row-major `A` (`n x k`, `lda = k`) into a
/// row-major `C` (`p x q`): one `dsyrk` (upper triangle only) when the two column ranges are the
/// same, else one `dgemm`, both with `beta = 1`. The tile of a Gram matrix that
/// [`GramAccumulator`] adds a row block into; the sum over the block's rows is done by the
/// single-threaded BLAS in an order fixed by the shapes, so the same inputs give the same bits.
///
/// # Formula
/// `C_ij += sum_n A_n,a+i A_n,b+j`.
fn gram_tile_add(
    a: &[f64],
    n: usize,
    k: usize,
    (col_a, p): (usize, usize),
    (col_b, q): (usize, usize),
    c: &mut [f64],
) -> Result<()> {
    if a.len() != n * k || col_a + p > k || col_b + q > k || c.len() != p * q {
        return Err(RffError::Shape {
            name: "a Gram tile (rows x columns of its block)".to_string(),
            expected: n * k,
            found: a.len(),
        });
    }
    if n == 0 || p == 0 || q == 0 {
        return Ok(());
    }
    let (ni, ki, pi, qi) = (
        dim("rows", n)?,
        dim("columns", k)?,
        dim("tile", p)?,
        dim("tile", q)?,
    );
    // SAFETY: `a` holds n x k row-major values (checked above); the column ranges lie inside it,
    // so `a[col..]` with lda = k addresses an n x p (n x q) sub-matrix; `c` holds p x q values
    // (ldc = q).
    unsafe {
        if col_a == col_b && p == q {
            cblas_sys::cblas_dsyrk(
                CBLAS_LAYOUT::CblasRowMajor,
                CBLAS_UPLO::CblasUpper,
                CBLAS_TRANSPOSE::CblasTrans,
                pi,
                ni,
                1.0,
                a[col_a..].as_ptr(),
                ki,
                1.0,
                c.as_mut_ptr(),
                pi,
            );
        } else {
            cblas_sys::cblas_dgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                CBLAS_TRANSPOSE::CblasTrans,
                CBLAS_TRANSPOSE::CblasNoTrans,
                pi,
                qi,
                ni,
                1.0,
                a[col_a..].as_ptr(),
                ki,
                a[col_b..].as_ptr(),
                ki,
                1.0,
                c.as_mut_ptr(),
                qi,
            );
        }
    }
    Ok(())
}

/// `c += A^T y` for a row-major `A` (`n x k`) by `dgemv` (`beta = 1`).
///
/// # Formula
/// `c_j += sum_n A_nj y_n`.
fn cross_add(a: &[f64], n: usize, k: usize, y: &[f64], c: &mut [f64]) -> Result<()> {
    if a.len() != n * k || y.len() != n || c.len() != k {
        return Err(RffError::Shape {
            name: "targets of a Gram block (one per row)".to_string(),
            expected: n,
            found: y.len(),
        });
    }
    if n == 0 || k == 0 {
        return Ok(());
    }
    let (ni, ki) = (dim("rows", n)?, dim("columns", k)?);
    // SAFETY: `a` is n x k row-major (lda = k), `y` has n entries, `c` has k entries.
    unsafe {
        cblas_sys::cblas_dgemv(
            CBLAS_LAYOUT::CblasRowMajor,
            CBLAS_TRANSPOSE::CblasTrans,
            ni,
            ki,
            1.0,
            a.as_ptr(),
            ki,
            y.as_ptr(),
            1,
            1.0,
            c.as_mut_ptr(),
            1,
        );
    }
    Ok(())
}

/// Columns per tile of [`GramAccumulator`] (fixed: the tiling, hence the bits, never depend on
/// the thread count).
pub const GRAM_TILE: usize = 256;

/// The running sums `G = sum_blocks A_b^T A_b` (`k x k`), `c = sum_blocks A_b^T y_b`,
/// `y^T y` and the row count over row blocks `A_b` (`n_b x k`), in `O(k^2)` memory.
///
/// `G`'s upper triangle is cut into fixed [`GRAM_TILE`]-column tiles; each block adds into every
/// tile with one BLAS call (`beta = 1`), the tiles in parallel on [`crate::parallel::threads`]
/// threads, each tile (and `c`) owned by one task per block. Every tile is therefore the same
/// sequence of BLAS calls whatever the threads: the same bits at any thread count. No per-block
/// `k x k` partial sum is formed (a block of `n_b` rows costs `n_b k^2` flops and no `k^2`
/// memory traffic beyond the tiles).
#[derive(Debug)]
pub struct GramAccumulator {
    k: usize,
    /// Column ranges `(start, width)` of the tiles.
    panels: Vec<(usize, usize)>,
    /// `(i, j, tile)` for panels `i <= j`, the tile row-major `width_i x width_j`.
    tiles: Vec<(usize, usize, std::sync::Mutex<Vec<f64>>)>,
    cross: std::sync::Mutex<Vec<f64>>,
    yy: f64,
    rows: usize,
}

/// What [`GramAccumulator::finish`] returns.
#[derive(Debug, Clone)]
pub struct GramSums {
    /// `G = A^T A`, `k x k`, symmetric.
    pub gram: Array2<f64>,
    /// `c = A^T y`, `k`.
    pub cross: ndarray::Array1<f64>,
    /// `y^T y`.
    pub yy: f64,
    /// Rows added.
    pub rows: usize,
}

fn poisoned() -> RffError {
    RffError::Linalg {
        name: "a Gram tile".to_string(),
        reason: "a worker thread panicked while adding into it".to_string(),
    }
}

impl GramAccumulator {
    /// Empty sums for `k` columns.
    pub fn new(k: usize) -> Self {
        blas_single_threaded();
        let panels: Vec<(usize, usize)> = (0..k.div_ceil(GRAM_TILE))
            .map(|i| (i * GRAM_TILE, GRAM_TILE.min(k - i * GRAM_TILE)))
            .collect();
        let mut tiles = Vec::new();
        // Off-diagonal tiles (twice the work of a diagonal one) first, for load balance.
        for i in 0..panels.len() {
            for j in i + 1..panels.len() {
                tiles.push((
                    i,
                    j,
                    std::sync::Mutex::new(vec![0.0; panels[i].1 * panels[j].1]),
                ));
            }
        }
        for (i, p) in panels.iter().enumerate() {
            tiles.push((i, i, std::sync::Mutex::new(vec![0.0; p.1 * p.1])));
        }
        Self {
            k,
            panels,
            tiles,
            cross: std::sync::Mutex::new(vec![0.0; k]),
            yy: 0.0,
            rows: 0,
        }
    }

    /// Add the rows of `a` (`n x k`) with targets `y` (`n`).
    pub fn add(&mut self, a: ArrayView2<'_, f64>, y: ndarray::ArrayView1<'_, f64>) -> Result<()> {
        let (n, k) = a.dim();
        if k != self.k || y.len() != n {
            return Err(RffError::Shape {
                name: "columns of a block added to the Gram sums".to_string(),
                expected: self.k,
                found: k,
            });
        }
        let data = contiguous(&a);
        let yv = y.to_vec();
        let tiles = &self.tiles;
        let panels = &self.panels;
        let cross = &self.cross;
        crate::parallel::map_blocks(tiles.len() + 1, |t| {
            if t == tiles.len() {
                let mut c = cross.lock().map_err(|_| poisoned())?;
                return cross_add(&data, n, k, &yv, &mut c);
            }
            let (i, j, tile) = &tiles[t];
            let mut c = tile.lock().map_err(|_| poisoned())?;
            gram_tile_add(&data, n, k, panels[*i], panels[*j], &mut c)
        })?;
        self.yy += deelbo_core::deterministic_sum(yv.iter().map(|v| v * v));
        self.rows += n;
        Ok(())
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The sums, `G` assembled from its tiles (upper triangle mirrored).
    pub fn finish(self) -> Result<GramSums> {
        let mut gram = Array2::<f64>::zeros((self.k, self.k));
        for (i, j, tile) in self.tiles {
            let tile = tile.into_inner().map_err(|_| poisoned())?;
            let ((a, p), (b, q)) = (self.panels[i], self.panels[j]);
            for r in 0..p {
                for s in 0..q {
                    // Diagonal tiles hold only their upper triangle (dsyrk).
                    if i != j || s >= r {
                        gram[[a + r, b + s]] = tile[r * q + s];
                    }
                }
            }
        }
        mirror_upper(&mut gram);
        let cross = self.cross.into_inner().map_err(|_| poisoned())?;
        Ok(GramSums {
            gram,
            cross: ndarray::Array1::from(cross),
            yy: self.yy,
            rows: self.rows,
        })
    }
}

/// Output rows per block of the parallel row-blocked product ([`matmul_parallel`]).
pub const PRODUCT_ROWS: usize = 64;

/// Rows (and columns) per tile of [`gram_rows`]'s output.
pub const GRAM_ROWS_TILE: usize = 128;

/// Output columns per block of [`matmul_parallel_columns`].
pub const PRODUCT_COLUMNS: usize = 512;

/// `A A^T` (`n x n`) for `A` (`n x k`): the upper triangle cut into fixed
/// [`GRAM_ROWS_TILE`]-square tiles, each by one single-threaded BLAS call over all `k` columns
/// (`dsyrk` on a diagonal tile, `dgemm` off it), the tiles on the crate's threads (largest
/// first), then assembled and mirrored. Every entry is one BLAS dot product over `k` whose
/// tile is fixed by `n`, so the bits do not depend on the thread count. Square tiles balance
/// the threads and pack each row panel once per tile (row blocks of the whole upper triangle
/// repack all later rows for every block: measured 1.4 against 2.4 ms at `n = 332, k = 1024`
/// on 2 cores).
///
/// # Formula
/// `K_ij = sum_r A_ir A_jr`.
pub fn gram_rows(a: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    blas_single_threaded();
    let (n, k) = a.dim();
    let mut c = Array2::<f64>::zeros((n, n));
    if n == 0 || k == 0 {
        return Ok(c);
    }
    let data = contiguous(&a);
    let ki = dim("columns", k)?;
    let panels: Vec<(usize, usize)> = (0..n.div_ceil(GRAM_ROWS_TILE))
        .map(|i| {
            (
                i * GRAM_ROWS_TILE,
                GRAM_ROWS_TILE.min(n - i * GRAM_ROWS_TILE),
            )
        })
        .collect();
    // Off-diagonal tiles (twice the work of a diagonal one) first, for load balance.
    let mut tiles: Vec<(usize, usize)> = Vec::new();
    for i in 0..panels.len() {
        for j in i + 1..panels.len() {
            tiles.push((i, j));
        }
    }
    tiles.extend((0..panels.len()).map(|i| (i, i)));
    let blocks = crate::parallel::map_blocks(tiles.len(), |t| {
        let (i, j) = tiles[t];
        let ((ra, p), (rb, q)) = (panels[i], panels[j]);
        let mut tile = vec![0.0f64; p * q];
        let (pi, qi) = (dim("tile", p)?, dim("tile", q)?);
        // SAFETY: `data` is n x k row-major (lda = k); rows `ra..ra + p` and `rb..rb + q` exist;
        // `tile` is p x q row-major (ldc = q).
        unsafe {
            if i == j {
                cblas_sys::cblas_dsyrk(
                    CBLAS_LAYOUT::CblasRowMajor,
                    CBLAS_UPLO::CblasUpper,
                    CBLAS_TRANSPOSE::CblasNoTrans,
                    pi,
                    ki,
                    1.0,
                    data[ra * k..].as_ptr(),
                    ki,
                    0.0,
                    tile.as_mut_ptr(),
                    pi,
                );
            } else {
                cblas_sys::cblas_dgemm(
                    CBLAS_LAYOUT::CblasRowMajor,
                    CBLAS_TRANSPOSE::CblasNoTrans,
                    CBLAS_TRANSPOSE::CblasTrans,
                    pi,
                    qi,
                    ki,
                    1.0,
                    data[ra * k..].as_ptr(),
                    ki,
                    data[rb * k..].as_ptr(),
                    ki,
                    0.0,
                    tile.as_mut_ptr(),
                    qi,
                );
            }
        }
        Ok(tile)
    })?;
    for (&(i, j), tile) in tiles.iter().zip(&blocks) {
        let ((ra, p), (rb, q)) = (panels[i], panels[j]);
        for r in 0..p {
            // A diagonal tile holds only its upper triangle (dsyrk).
            let first = if i == j { r } else { 0 };
            for s in first..q {
                let v = tile[r * q + s];
                c[[ra + r, rb + s]] = v;
                c[[rb + s, ra + r]] = v;
            }
        }
    }
    Ok(c)
}

/// `alpha op(A) B` (`m x n`) in fixed blocks of [`PRODUCT_COLUMNS`] output columns, each by
/// one single-threaded `dgemm` on the crate's threads, written in place. Each block packs only
/// its own columns of `B`, where [`matmul_parallel`]'s row blocks each repack all of `B`: the
/// shape for a square `op(A)` times a wide `B` (measured in isolation for `332 x 332` times
/// `332 x 1024` on 2 cores: 1.6-1.8 ms, against 1.8-1.9 with 256-column blocks and 2.2-2.4 with
/// 64-row blocks). The blocks are fixed by the shapes, so the bits do not depend on the thread
/// count; at `R = 1024` that is two blocks, i.e. at most two threads.
///
/// # Formula
/// `C_ij = alpha sum_l op(A)_il B_lj`.
pub fn matmul_parallel_columns(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
) -> Result<Array2<f64>> {
    blas_single_threaded();
    let (m, ka, n) = product_shape(a, transpose_a, b, false)?;
    let mut c = Array2::<f64>::zeros((m, n));
    if m == 0 || n == 0 || ka == 0 {
        return Ok(c);
    }
    let (da, db) = (contiguous(&a), contiguous(&b));
    let (mi, ki, ni, lda) = (
        dim("rows", m)?,
        dim("inner", ka)?,
        dim("columns", n)?,
        dim("lda", a.ncols())?,
    );
    let out = c.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: "matrix product".to_string(),
        reason: "output is not contiguous".to_string(),
    })?;
    // The blocks write disjoint column ranges of the one output buffer.
    let out_ptr = SharedOut(out.as_mut_ptr());
    let out_ptr = &out_ptr;
    crate::parallel::map_blocks(n.div_ceil(PRODUCT_COLUMNS), |i| {
        let first = i * PRODUCT_COLUMNS;
        let width = dim("columns", PRODUCT_COLUMNS.min(n - first))?;
        // SAFETY: `da` is op(A)'s storage (row-major, lda its column count), `db` is B
        // (ka x n row-major, ldb = n) from column `first`; the output is m x n row-major
        // (ldc = n) and this block writes only columns `first..first + width` of it, which no
        // other block touches; `c` outlives the parallel pass.
        unsafe {
            cblas_sys::cblas_dgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                transpose_flag(transpose_a),
                CBLAS_TRANSPOSE::CblasNoTrans,
                mi,
                width,
                ki,
                alpha,
                da.as_ptr(),
                lda,
                db[first..].as_ptr(),
                ni,
                0.0,
                out_ptr.0.add(first),
                ni,
            );
        }
        Ok(())
    })?;
    Ok(c)
}

/// The output pointer of [`matmul_parallel_columns`], shared by blocks that write disjoint
/// columns.
struct SharedOut(*mut f64);
// SAFETY: every block writes a disjoint set of elements through the pointer (see the use).
unsafe impl Sync for SharedOut {}

/// `op(A) x` by one single-threaded `dgemv` (ndarray's own `dot` does not use the BLAS, and is
/// several times slower for a transposed `A`).
///
/// # Formula
/// `y_i = sum_j op(A)_ij x_j`.
pub fn matvec(
    a: ArrayView2<'_, f64>,
    transpose: bool,
    x: ndarray::ArrayView1<'_, f64>,
) -> Result<ndarray::Array1<f64>> {
    blas_single_threaded();
    let (rows, cols) = a.dim();
    let (m, inner) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    if x.len() != inner {
        return Err(RffError::Shape {
            name: "vector of a matrix-vector product".to_string(),
            expected: inner,
            found: x.len(),
        });
    }
    let mut y = ndarray::Array1::<f64>::zeros(m);
    if m == 0 || inner == 0 {
        return Ok(y);
    }
    let da = contiguous(&a);
    let xs: Vec<f64> = x.iter().copied().collect();
    let ys = y.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: "matrix-vector product".to_string(),
        reason: "output is not contiguous".to_string(),
    })?;
    // SAFETY: `da` is rows x cols row-major (lda = cols), `xs` has `inner` entries and `ys` `m`.
    unsafe {
        cblas_sys::cblas_dgemv(
            CBLAS_LAYOUT::CblasRowMajor,
            transpose_flag(transpose),
            dim("rows", rows)?,
            dim("columns", cols)?,
            1.0,
            da.as_ptr(),
            dim("lda", cols)?,
            xs.as_ptr(),
            1,
            0.0,
            ys.as_mut_ptr(),
            1,
        );
    }
    Ok(y)
}

/// `alpha op(A) op(B)` in blocks of [`PRODUCT_ROWS`] output rows, each by one single-threaded
/// `dgemm` on the crate's threads: the blocks are fixed by the shapes, so the bits do not depend
/// on the thread count. (Not for use inside another parallel pass: [`matmul`] is the serial
/// product.)
///
/// # Formula
/// `C_ij = alpha sum_l op(A)_il op(B)_lj`.
pub fn matmul_parallel(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
) -> Result<Array2<f64>> {
    product(alpha, a, transpose_a, b, transpose_b, PRODUCT_ROWS)
}

/// `op(A) op(B)` by one `dgemm`, `op(X) = X^T` when the flag is set.
///
/// # Formula
/// `C_ij = sum_l op(A)_il op(B)_lj`.
pub fn matmul(
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
) -> Result<Array2<f64>> {
    product(1.0, a, transpose_a, b, transpose_b, usize::MAX)
}

/// `op(A) op(B)` written into `out`, a row-major `m x n` buffer (`out.len() == m n`), by one
/// single-threaded `dgemm` on the calling thread: for filling one block of a larger matrix
/// inside a parallel pass without a temporary.
///
/// # Formula
/// `out_ij = sum_l op(A)_il op(B)_lj`.
pub fn matmul_into(
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
    out: &mut [f64],
) -> Result<()> {
    product_into(1.0, a, transpose_a, b, transpose_b, usize::MAX, out)
}

/// `alpha op(A) op(B)`, one single-threaded `dgemm` per block of `block_rows` output rows, the
/// blocks on the crate's threads (one block, on the calling thread, when `block_rows >= m`).
fn product(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
    block_rows: usize,
) -> Result<Array2<f64>> {
    let (m, _, n) = product_shape(a, transpose_a, b, transpose_b)?;
    let mut c = Array2::<f64>::zeros((m, n));
    let out = c.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: "matrix product".to_string(),
        reason: "output is not contiguous".to_string(),
    })?;
    product_into(alpha, a, transpose_a, b, transpose_b, block_rows, out)?;
    Ok(c)
}

/// [`product`] into a row-major `m x n` buffer (every element written).
fn product_into(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
    block_rows: usize,
    out: &mut [f64],
) -> Result<()> {
    blas_single_threaded();
    let (m, ka, n) = product_shape(a, transpose_a, b, transpose_b)?;
    if out.len() != m * n {
        return Err(RffError::Shape {
            name: "output of a matrix product (rows x columns)".to_string(),
            expected: m * n,
            found: out.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ka == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let (ac, bc) = (a.ncols(), b.ncols());
    let (da, db) = (contiguous(&a), contiguous(&b));
    let (ni, ki, lda, ldb) = (
        dim("columns", n)?,
        dim("inner", ka)?,
        dim("lda", ac)?,
        dim("ldb", bc)?,
    );
    let block = |i: usize, chunk: &mut [f64]| {
        let start = i * block_rows;
        let rows = dim("rows", chunk.len() / n)?;
        // Rows `start..` of op(A): rows of A, or columns of A when transposed.
        let a_offset = if transpose_a { start } else { start * ac };
        // SAFETY: row-major buffers of the stated shapes (lda/ldb their stored column counts);
        // the offset addresses rows (columns) `start..start + rows` of op(A) inside `da`;
        // `chunk` holds those rows of the m x n output (ldc = n).
        unsafe {
            cblas_sys::cblas_dgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                transpose_flag(transpose_a),
                transpose_flag(transpose_b),
                rows,
                ni,
                ki,
                alpha,
                da[a_offset..].as_ptr(),
                lda,
                db.as_ptr(),
                ldb,
                0.0,
                chunk.as_mut_ptr(),
                ni,
            );
        }
        Ok(())
    };
    if block_rows >= m {
        block(0, out)
    } else {
        crate::parallel::for_each_chunk(out, block_rows * n, block)
    }
}

/// `(m, k, n)` of `op(A) op(B)`, or a shape error when the inner dimensions differ.
fn product_shape(
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
) -> Result<(usize, usize, usize)> {
    let (m, ka) = if transpose_a {
        (a.ncols(), a.nrows())
    } else {
        a.dim()
    };
    let (kb, n) = if transpose_b {
        (b.ncols(), b.nrows())
    } else {
        b.dim()
    };
    if ka != kb {
        return Err(RffError::Shape {
            name: "inner dimensions of a matrix product".to_string(),
            expected: ka,
            found: kb,
        });
    }
    Ok((m, ka, n))
}

fn transpose_flag(t: bool) -> CBLAS_TRANSPOSE {
    if t {
        CBLAS_TRANSPOSE::CblasTrans
    } else {
        CBLAS_TRANSPOSE::CblasNoTrans
    }
}

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix by `dsyevd`
/// (divide and conquer). Errors name the matrix; non-finite input is rejected before LAPACK.
pub fn eigh(name: &str, a: &Array2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    blas_single_threaded();
    let n = checked_square(name, a)?;
    if n == 0 {
        return Ok((Vec::new(), Array2::zeros((0, 0))));
    }
    // Row-major symmetric = column-major symmetric: LAPACK sees the same matrix, and its
    // column-major eigenvector matrix read row-major is E^T.
    let mut work_a: Vec<f64> = a.iter().copied().collect();
    let ni = dim(name, n)?;
    let mut w = vec![0.0f64; n];
    let (jobz, uplo) = (b'V' as c_char, b'L' as c_char);
    with_workspace(
        name,
        "dsyevd",
        "did not converge",
        |work, lw, iwork, liw| {
            let mut info: c_int = 0;
            // SAFETY: an n x n buffer and n eigenvalues; `work`/`iwork` hold at least `lw`/`liw`
            // entries (one each for the query).
            unsafe {
                lapack_sys::dsyevd_(
                    &jobz,
                    &uplo,
                    &ni,
                    work_a.as_mut_ptr(),
                    &ni,
                    w.as_mut_ptr(),
                    work.as_mut_ptr(),
                    &lw,
                    iwork.as_mut_ptr(),
                    &liw,
                    &mut info,
                );
            }
            info
        },
    )?;
    let et = Array2::from_shape_vec((n, n), work_a).map_err(|e| RffError::Linalg {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok((w, et.reversed_axes().as_standard_layout().into_owned()))
}

/// `dsytrd` (lower, column-major; the row-major symmetric buffer `buf`, `n x n`, `n >= 1`,
/// overwritten by the reflectors): the diagonal `d` (`n`), the off-diagonal `e` and the reflector
/// scalars `tau` (`n - 1` each, at least one entry for LAPACK).
///
/// # Formula
/// `A = Q T Q^T`, `T` tridiagonal with diagonal `d` and off-diagonal `e`,
/// `Q = H(1) ... H(n-1)`, `H(i) = I - tau_i v_i v_i^T`.
fn tridiagonal_reduction(
    name: &str,
    buf: &mut [f64],
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let ni = dim(name, n)?;
    let uplo = b'L' as c_char;
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n.saturating_sub(1).max(1)];
    let mut tau = vec![0.0f64; n.saturating_sub(1).max(1)];
    if buf.len() != n * n {
        return Err(RffError::Shape {
            name: format!("{name} (n x n values)"),
            expected: n * n,
            found: buf.len(),
        });
    }
    with_workspace(name, "dsytrd", "failed", |work, lw, _, _| {
        let mut info: c_int = 0;
        // SAFETY: an n x n buffer (checked), d (n), e and tau (n - 1, at least 1); `work` holds
        // at least `lw` entries.
        unsafe {
            lapack_sys::dsytrd_(
                &uplo,
                &ni,
                buf.as_mut_ptr(),
                &ni,
                d.as_mut_ptr(),
                e.as_mut_ptr(),
                tau.as_mut_ptr(),
                work.as_mut_ptr(),
                &lw,
                &mut info,
            );
        }
        info
    })?;
    Ok((d, e, tau))
}

/// Eigenvalues (ascending) of a symmetric `a` (`n x n`) and the projections `E^T v` of a vector
/// on its eigenvectors, without forming `E`: `dsytrd` reduces `a = Q T Q^T`, `dormtr` applies
/// `Q^T` to `v` alone, and `dstevd` (the divide and conquer of [`eigh`]'s `dsyevd`) gives
/// `T = Z diag(lambda) Z^T`; then `E^T v = Z^T (Q^T v)`. This skips `dsyevd`'s back-transform
/// `E = Q Z` (`2 n^3` flops), about half of its cost. The eigenvalues are those of [`eigh`].
///
/// # Formula
/// `a = E diag(lambda) E^T`, returns `(lambda, E^T v)`.
pub fn eigh_projected(name: &str, a: &Array2<f64>, v: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    blas_single_threaded();
    let n = checked_square(name, a)?;
    if v.len() != n {
        return Err(RffError::Shape {
            name: format!("{name} (one projected entry per row)"),
            expected: n,
            found: v.len(),
        });
    }
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(RffError::Linalg {
            name: name.to_string(),
            reason: format!("the projected vector holds the non-finite value {x}"),
        });
    }
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut buf: Vec<f64> = a.iter().copied().collect();
    let ni = dim(name, n)?;
    let one: c_int = 1;
    let uplo = b'L' as c_char;
    let (mut d, mut e, tau) = tridiagonal_reduction(name, &mut buf, n)?;
    // Q^T v: the reflectors stored below the diagonal of `buf` (column-major 'L').
    let mut qv = v.to_vec();
    let (side, trans) = (b'L' as c_char, b'T' as c_char);
    with_workspace(name, "dormtr", "failed", |work, lw, _, _| {
        let mut info: c_int = 0;
        // SAFETY: the reflectors of dsytrd (n x n, tau n - 1); `qv` is n x 1 (ldc = n);
        // `work` holds at least `lw` entries.
        unsafe {
            lapack_sys::dormtr_(
                &side,
                &uplo,
                &trans,
                &ni,
                &one,
                buf.as_ptr(),
                &ni,
                tau.as_ptr(),
                qv.as_mut_ptr(),
                &ni,
                work.as_mut_ptr(),
                &lw,
                &mut info,
            );
        }
        info
    })?;
    // T = Z diag(lambda) Z^T; `z` is column-major n x n (column i: eigenvector i).
    let jobz = b'V' as c_char;
    let mut z = vec![0.0f64; n * n];
    with_workspace(
        name,
        "dstevd",
        "did not converge",
        |work, lw, iwork, liw| {
            let mut info: c_int = 0;
            // SAFETY: d (n), e (n - 1), z (n x n, ldz = n); `work`/`iwork` hold at least `lw`/`liw`
            // entries.
            unsafe {
                lapack_sys::dstevd_(
                    &jobz,
                    &ni,
                    d.as_mut_ptr(),
                    e.as_mut_ptr(),
                    z.as_mut_ptr(),
                    &ni,
                    work.as_mut_ptr(),
                    &lw,
                    iwork.as_mut_ptr(),
                    &liw,
                    &mut info,
                );
            }
            info
        },
    )?;
    let projections = z
        .chunks_exact(n)
        .map(|col| col.iter().zip(&qv).map(|(a, b)| a * b).sum())
        .collect();
    Ok((d, projections))
}

/// The symmetric tridiagonal `T = U^T A U` of a symmetric `a` (`n x n`, consumed) for an
/// orthogonal `U` whose first column is `v/||v||`: a Householder reflection `H` with
/// `H v = -+||v|| e_1` applied from both sides (`A' = H A H`, `O(n^2)`), then `dsytrd`, whose
/// reflectors all leave `e_1` fixed (`v(1:i) = 0`), on `A'`. Returns the diagonal (`n`) and the
/// off-diagonal (`n - 1`) of `T`. No eigenvectors are formed: quadratic forms in `v` become
/// `v^T f(A) v = ||v||^2 e_1^T f(T) e_1` ([`crate::tridiagonal`]).
///
/// # Formula
/// `H = I - beta u u^T`, `u = v + sign(v_1) ||v|| e_1`, `beta = 2/u^T u`;
/// `p = beta A u`, `q = p - (beta/2)(u^T p) u`, `H A H = A - u q^T - q u^T`.
pub fn tridiagonalize_toward(
    name: &str,
    mut a: Array2<f64>,
    v: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    blas_single_threaded();
    let n = checked_square(name, &a)?;
    if v.len() != n {
        return Err(RffError::Shape {
            name: format!("{name} (one start-vector entry per row)"),
            expected: n,
            found: v.len(),
        });
    }
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(RffError::Linalg {
            name: name.to_string(),
            reason: format!("the start vector holds the non-finite value {x}"),
        });
    }
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if !a.is_standard_layout() {
        a = a.as_standard_layout().into_owned();
    }
    let buf = a.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: name.to_string(),
        reason: "the matrix is not contiguous".to_string(),
    })?;
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        let mut u = v.to_vec();
        u[0] += if v[0] >= 0.0 { norm } else { -norm };
        let uu: f64 = u.iter().map(|x| x * x).sum();
        let beta = 2.0 / uu;
        // p = beta A u (A symmetric, row-major).
        let p: Vec<f64> = buf
            .chunks_exact(n)
            .map(|row| beta * row.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let up: f64 = u.iter().zip(&p).map(|(a, b)| a * b).sum();
        let q: Vec<f64> = p
            .iter()
            .zip(&u)
            .map(|(p, u)| p - 0.5 * beta * up * u)
            .collect();
        for (i, row) in buf.chunks_exact_mut(n).enumerate() {
            let (ui, qi) = (u[i], q[i]);
            for ((x, &uj), &qj) in row.iter_mut().zip(&u).zip(&q) {
                *x -= ui * qj + qi * uj;
            }
        }
    }
    let (d, mut e, _) = tridiagonal_reduction(name, buf, n)?;
    e.truncate(n - 1);
    Ok((d, e))
}

/// `n` for a square matrix of finite values, else the error naming it (shared by [`eigh`],
/// [`eigh_projected`] and [`cholesky`]).
fn checked_square(name: &str, a: &Array2<f64>) -> Result<usize> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(RffError::Shape {
            name: format!("{name} (square)"),
            expected: n,
            found: a.ncols(),
        });
    }
    if let Some(v) = a.iter().find(|v| !v.is_finite()) {
        return Err(RffError::Linalg {
            name: name.to_string(),
            reason: format!("holds the non-finite value {v} (inputs too large?)"),
        });
    }
    Ok(n)
}

/// A LAPACK routine called the documented two ways: a workspace query (`lwork = liwork = -1`;
/// the sizes come back in `work[0]`, `iwork[0]`), then with workspaces of those sizes.
/// `call(work, lwork, iwork, liwork)` runs the routine and returns its `info` (routines without
/// an integer workspace ignore the last two). A non-zero `info` is an error naming the matrix,
/// the routine and `failure` (or the failed query).
fn with_workspace(
    name: &str,
    routine: &str,
    failure: &str,
    mut call: impl FnMut(&mut [f64], c_int, &mut [c_int], c_int) -> c_int,
) -> Result<()> {
    let error = |what: String| RffError::Linalg {
        name: name.to_string(),
        reason: what,
    };
    let (mut wq, mut iwq) = ([0.0f64], [0 as c_int]);
    let info = call(&mut wq, -1, &mut iwq, -1);
    if info != 0 {
        return Err(error(format!(
            "{routine} workspace query failed (info {info})"
        )));
    }
    let mut work = vec![0.0f64; (wq[0] as usize).max(1)];
    let mut iwork = vec![0 as c_int; (iwq[0] as usize).max(1)];
    let (lw, liw) = (dim(name, work.len())?, dim(name, iwork.len())?);
    let info = call(&mut work, lw, &mut iwork, liw);
    if info != 0 {
        return Err(error(format!("{routine} {failure} (info {info})")));
    }
    Ok(())
}

/// A lower Cholesky factor and the jitter that was added to the diagonal to get it.
#[derive(Debug, Clone)]
pub struct Cholesky {
    /// `L`, lower triangular, `A + jitter I = L L^T`.
    pub lower: Array2<f64>,
    /// The jitter added (0 when `A` factorized as given).
    pub jitter: f64,
}

/// Jitter levels tried after a failed factorization, relative to the mean diagonal.
pub const JITTER_LEVELS: [f64; 5] = [1e-12, 1e-10, 1e-8, 1e-6, 1e-4];

/// [`cholesky`] of `a`, factorizing its storage in place (no copy of the matrix).
///
/// `dpotrf` on the row-major buffer (seen by LAPACK as column-major, i.e. transposed) writes
/// the factor into the row-major lower triangle and leaves the strict upper one untouched, so
/// after a failed attempt the matrix is restored from that triangle and the saved diagonal
/// before the next jitter level.
///
/// # Formula
/// `A + jitter I = L L^T`.
pub fn cholesky_in_place(name: &str, mut a: Array2<f64>) -> Result<Cholesky> {
    blas_single_threaded();
    let n = checked_square(name, &a)?;
    let ni = dim(name, n)?;
    if !a.is_standard_layout() {
        a = a.as_standard_layout().into_owned();
    }
    let diagonal: Vec<f64> = a.diag().to_vec();
    let scale = diagonal.iter().map(|v| v.abs()).sum::<f64>() / n.max(1) as f64;
    let buf = a.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: name.to_string(),
        reason: "the matrix is not contiguous".to_string(),
    })?;
    let mut last_minor = 0usize;
    for (attempt, &level) in std::iter::once(&0.0).chain(&JITTER_LEVELS).enumerate() {
        let jitter = level * scale.max(f64::MIN_POSITIVE);
        if attempt > 0 {
            // Restore the lower triangle from the untouched upper one, then add the jitter.
            for i in 0..n {
                for j in 0..i {
                    buf[i * n + j] = buf[j * n + i];
                }
                buf[i * n + i] = diagonal[i] + jitter;
            }
        }
        let uplo = b'U' as c_char; // row-major lower = column-major upper
        let mut info: c_int = 0;
        // SAFETY: an n x n buffer, lda = n.
        unsafe { lapack_sys::dpotrf_(&uplo, &ni, buf.as_mut_ptr(), &ni, &mut info) };
        if info == 0 {
            for i in 0..n {
                buf[i * n + i + 1..(i + 1) * n].fill(0.0);
            }
            return Ok(Cholesky { lower: a, jitter });
        }
        if info < 0 {
            return Err(RffError::Linalg {
                name: name.to_string(),
                reason: format!("dpotrf rejected argument {}", -info),
            });
        }
        last_minor = info as usize;
    }
    Err(RffError::NotPositiveDefinite {
        name: format!(
            "{name} (even with jitter {:.1e} x mean diagonal {scale:.3e})",
            JITTER_LEVELS[JITTER_LEVELS.len() - 1]
        ),
        minor: last_minor,
    })
}

/// The lower Cholesky factor of a symmetric positive definite `a` by `dpotrf`. If the
/// factorization fails, `jitter = c mean(diag A)` is added for `c` in [`JITTER_LEVELS`] until it
/// succeeds; if none does, [`RffError::NotPositiveDefinite`] names the matrix, the failing minor
/// and the largest jitter tried. ([`cholesky_in_place`] without the copy.)
///
/// # Formula
/// `A + jitter I = L L^T`.
pub fn cholesky(name: &str, a: &Array2<f64>) -> Result<Cholesky> {
    cholesky_in_place(name, a.clone())
}

/// Solve `L X = B` (`trans = false`) or `L^T X = B` in place for a lower-triangular `L`
/// (`n x n`) and `B` (`n x m`, row-major).
pub fn solve_lower_in_place(l: &Array2<f64>, b: &mut Array2<f64>, transpose: bool) -> Result<()> {
    blas_single_threaded();
    let n = l.nrows();
    if b.nrows() != n {
        return Err(RffError::Shape {
            name: "right-hand side of a triangular solve".to_string(),
            expected: n,
            found: b.nrows(),
        });
    }
    let m = b.ncols();
    if n == 0 || m == 0 {
        return Ok(());
    }
    let lv = l.view();
    let dl = contiguous(&lv);
    if !b.is_standard_layout() {
        *b = b.as_standard_layout().into_owned();
    }
    let data = b.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: "triangular solve".to_string(),
        reason: "right-hand side is not contiguous".to_string(),
    })?;
    // SAFETY: L is n x n row-major (lda = n), B is n x m row-major (ldb = m).
    unsafe {
        cblas_sys::cblas_dtrsm(
            CBLAS_LAYOUT::CblasRowMajor,
            cblas_sys::CBLAS_SIDE::CblasLeft,
            CBLAS_UPLO::CblasLower,
            if transpose {
                CBLAS_TRANSPOSE::CblasTrans
            } else {
                CBLAS_TRANSPOSE::CblasNoTrans
            },
            cblas_sys::CBLAS_DIAG::CblasNonUnit,
            dim("rows", n)?,
            dim("columns", m)?,
            1.0,
            dl.as_ptr(),
            dim("lda", n)?,
            data.as_mut_ptr(),
            dim("ldb", m)?,
        );
    }
    Ok(())
}

/// `A^-1` from the lower Cholesky factor `L` of `A`, by `dpotri` (`L^-1` by `dtrtri`, then the
/// product `L^-T L^-1`, about `2n^3/3` flops), mirrored to a full symmetric matrix.
/// ([`inverse_in_place`] without the copy.)
///
/// # Formula
/// `A^-1 = L^-T L^-1`.
pub fn inverse_from_cholesky(l: &Array2<f64>) -> Result<Array2<f64>> {
    inverse_in_place(l.clone())
}

/// [`inverse_from_cholesky`] in the storage of the factor `l` (consumed).
///
/// # Formula
/// `A^-1 = L^-T L^-1`.
pub fn inverse_in_place(mut l: Array2<f64>) -> Result<Array2<f64>> {
    blas_single_threaded();
    let n = l.nrows();
    if l.ncols() != n {
        return Err(RffError::Shape {
            name: "Cholesky factor (square)".to_string(),
            expected: n,
            found: l.ncols(),
        });
    }
    if n == 0 {
        return Ok(l);
    }
    if !l.is_standard_layout() {
        l = l.as_standard_layout().into_owned();
    }
    let ni = dim("Cholesky factor", n)?;
    let buf = l.as_slice_mut().ok_or_else(|| RffError::Linalg {
        name: "inverse from a Cholesky factor".to_string(),
        reason: "the factor is not contiguous".to_string(),
    })?;
    // Row-major lower L is column-major upper U = L^T, with A = U^T U.
    let uplo = b'U' as c_char;
    let mut info: c_int = 0;
    // SAFETY: an n x n buffer, lda = n.
    unsafe { lapack_sys::dpotri_(&uplo, &ni, buf.as_mut_ptr(), &ni, &mut info) };
    if info != 0 {
        return Err(RffError::Linalg {
            name: "inverse from a Cholesky factor".to_string(),
            reason: format!("dpotri failed (info {info}: a zero diagonal element of the factor)"),
        });
    }
    // The column-major upper triangle is the row-major lower one: mirror it upward.
    mirror(&mut l, false);
    Ok(l)
}
