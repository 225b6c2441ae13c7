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
    let n = c.nrows();
    for i in 0..n {
        for j in 0..i {
            c[[i, j]] = c[[j, i]];
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

/// `A A^T` (`n x n`) for `A` (`n x k`), by `dsyrk`.
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
    let (ni, ki) = (dim("rows", n)?, dim("columns", k)?);
    // SAFETY: `data` holds n x k row-major values (lda = k), `c` is n x n row-major (ldc = n).
    unsafe {
        cblas_sys::cblas_dsyrk(
            CBLAS_LAYOUT::CblasRowMajor,
            CBLAS_UPLO::CblasUpper,
            CBLAS_TRANSPOSE::CblasNoTrans,
            ni,
            ki,
            1.0,
            data.as_ptr(),
            ki,
            0.0,
            c.as_mut_ptr(),
            ni,
        );
    }
    mirror_upper(&mut c);
    Ok(c)
}

/// `op(A) op(B)` by `dgemm`, `op(X) = X^T` when the flag is set.
///
/// # Formula
/// `C_ij = sum_l op(A)_il op(B)_lj`.
pub fn matmul(
    a: ArrayView2<'_, f64>,
    transpose_a: bool,
    b: ArrayView2<'_, f64>,
    transpose_b: bool,
) -> Result<Array2<f64>> {
    blas_single_threaded();
    let (ar, ac) = a.dim();
    let (br, bc) = b.dim();
    let (m, ka) = if transpose_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if transpose_b { (bc, br) } else { (br, bc) };
    if ka != kb {
        return Err(RffError::Shape {
            name: "inner dimensions of a matrix product".to_string(),
            expected: ka,
            found: kb,
        });
    }
    let mut c = Array2::<f64>::zeros((m, n));
    if m == 0 || n == 0 || ka == 0 {
        return Ok(c);
    }
    let (da, db) = (contiguous(&a), contiguous(&b));
    let t = |f: bool| {
        if f {
            CBLAS_TRANSPOSE::CblasTrans
        } else {
            CBLAS_TRANSPOSE::CblasNoTrans
        }
    };
    // SAFETY: row-major buffers of the stated shapes; lda/ldb are the stored column counts.
    unsafe {
        cblas_sys::cblas_dgemm(
            CBLAS_LAYOUT::CblasRowMajor,
            t(transpose_a),
            t(transpose_b),
            dim("rows", m)?,
            dim("columns", n)?,
            dim("inner", ka)?,
            1.0,
            da.as_ptr(),
            dim("lda", ac)?,
            db.as_ptr(),
            dim("ldb", bc)?,
            0.0,
            c.as_mut_ptr(),
            dim("ldc", n)?,
        );
    }
    Ok(c)
}

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix by `dsyevd`
/// (divide and conquer). Errors name the matrix; non-finite input is rejected before LAPACK.
pub fn eigh(name: &str, a: &Array2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    blas_single_threaded();
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
    if n == 0 {
        return Ok((Vec::new(), Array2::zeros((0, 0))));
    }
    // Row-major symmetric = column-major symmetric: LAPACK sees the same matrix, and its
    // column-major eigenvector matrix read row-major is E^T.
    let mut work_a: Vec<f64> = a.iter().copied().collect();
    let ni = dim(name, n)?;
    let mut w = vec![0.0f64; n];
    let (jobz, uplo) = (b'V' as c_char, b'L' as c_char);
    let mut info: c_int = 0;
    let mut wq = 0.0f64;
    let mut iwq: c_int = 0;
    let query: c_int = -1;
    // SAFETY: workspace query (lwork = liwork = -1) on an n x n buffer.
    unsafe {
        lapack_sys::dsyevd_(
            &jobz,
            &uplo,
            &ni,
            work_a.as_mut_ptr(),
            &ni,
            w.as_mut_ptr(),
            &mut wq,
            &query,
            &mut iwq,
            &query,
            &mut info,
        );
    }
    if info != 0 {
        return Err(RffError::Linalg {
            name: name.to_string(),
            reason: format!("dsyevd workspace query failed (info {info})"),
        });
    }
    let lwork = (wq as usize).max(1);
    let liwork = (iwq as usize).max(1);
    let mut work = vec![0.0f64; lwork];
    let mut iwork = vec![0 as c_int; liwork];
    let (lw, liw) = (dim(name, lwork)?, dim(name, liwork)?);
    // SAFETY: buffers sized as LAPACK asked.
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
    if info != 0 {
        return Err(RffError::Linalg {
            name: name.to_string(),
            reason: format!("dsyevd did not converge (info {info})"),
        });
    }
    let et = Array2::from_shape_vec((n, n), work_a).map_err(|e| RffError::Linalg {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok((w, et.reversed_axes().as_standard_layout().into_owned()))
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

fn potrf(a: &Array2<f64>, n: c_int) -> (Vec<f64>, c_int) {
    let mut buf: Vec<f64> = a.iter().copied().collect();
    let uplo = b'U' as c_char; // row-major lower = column-major upper
    let mut info: c_int = 0;
    // SAFETY: an n x n buffer, lda = n.
    unsafe { lapack_sys::dpotrf_(&uplo, &n, buf.as_mut_ptr(), &n, &mut info) };
    (buf, info)
}

/// The lower Cholesky factor of a symmetric positive definite `a` by `dpotrf`. If the
/// factorization fails, `jitter = c mean(diag A)` is added for `c` in [`JITTER_LEVELS`] until it
/// succeeds; if none does, [`RffError::NotPositiveDefinite`] names the matrix, the failing minor
/// and the largest jitter tried.
///
/// # Formula
/// `A + jitter I = L L^T`.
pub fn cholesky(name: &str, a: &Array2<f64>) -> Result<Cholesky> {
    blas_single_threaded();
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
    let ni = dim(name, n)?;
    let scale = a.diag().iter().map(|v| v.abs()).sum::<f64>() / n.max(1) as f64;
    let mut last_minor = 0usize;
    for (attempt, &level) in std::iter::once(&0.0).chain(&JITTER_LEVELS).enumerate() {
        let jitter = level * scale.max(f64::MIN_POSITIVE);
        let trial = if attempt == 0 {
            a.clone()
        } else {
            let mut t = a.clone();
            t.diag_mut().mapv_inplace(|v| v + jitter);
            t
        };
        let (buf, info) = potrf(&trial, ni);
        if info == 0 {
            let mut lower = Array2::from_shape_vec((n, n), buf).map_err(|e| RffError::Linalg {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
            for i in 0..n {
                for j in i + 1..n {
                    lower[[i, j]] = 0.0;
                }
            }
            return Ok(Cholesky { lower, jitter });
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

/// `A^-1` from the Cholesky factor of `A` (`L^-T L^-1`), symmetric.
///
/// # Formula
/// `A^-1 = L^-T L^-1`.
pub fn inverse_from_cholesky(l: &Array2<f64>) -> Result<Array2<f64>> {
    let n = l.nrows();
    let mut x = Array2::<f64>::eye(n);
    solve_lower_in_place(l, &mut x, false)?;
    solve_lower_in_place(l, &mut x, true)?;
    Ok(x)
}
