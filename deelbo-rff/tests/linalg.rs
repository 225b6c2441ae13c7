//! The parallel products, the inverse from a Cholesky factor and the eigenvalues with
//! projections, against naive dense references and at several thread counts.

use deelbo_rff::linalg::{
    PRODUCT_ROWS, cholesky, eigh, eigh_projected, gram_rows, inverse_from_cholesky, matmul_into,
    matmul_parallel,
};
use ndarray::Array2;

/// A deterministic pseudo-random `r x c` matrix.
fn matrix(r: usize, c: usize, seed: u64) -> Array2<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_fn((r, c), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    })
}

fn naive_product(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
        (0..a.ncols()).map(|l| a[[i, l]] * b[[l, j]]).sum()
    })
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn gram_rows_matches_the_naive_product_and_is_exactly_symmetric() {
    // Sizes around the block boundary.
    for &n in &[
        1,
        PRODUCT_ROWS - 1,
        PRODUCT_ROWS,
        PRODUCT_ROWS + 1,
        3 * PRODUCT_ROWS + 7,
    ] {
        let a = matrix(n, 37, n as u64);
        let k = gram_rows(a.view()).unwrap();
        let reference = naive_product(&a, &a.t().to_owned());
        assert!(max_abs_diff(&k, &reference) < 1e-12, "n = {n}");
        assert_eq!(k, k.t().to_owned(), "n = {n}");
    }
}

#[test]
fn matmul_parallel_matches_the_naive_product_for_every_transpose() {
    let (m, k, n) = (2 * PRODUCT_ROWS + 5, 19, 23);
    let a = matrix(m, k, 1);
    let b = matrix(k, n, 2);
    let reference = naive_product(&a, &b) * 0.5;
    let at = a.t().as_standard_layout().into_owned();
    let bt = b.t().as_standard_layout().into_owned();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (x, y) = (if ta { &at } else { &a }, if tb { &bt } else { &b });
        let c = matmul_parallel(0.5, x.view(), ta, y.view(), tb).unwrap();
        assert!(max_abs_diff(&c, &reference) < 1e-12, "{ta} {tb}");
    }
    assert!(matmul_parallel(1.0, a.view(), false, a.view(), false).is_err());
}

#[test]
fn matmul_into_fills_a_block_of_a_larger_buffer_and_checks_its_length() {
    let (m, k, n) = (PRODUCT_ROWS + 3, 11, 29);
    let a = matrix(m, k, 6);
    let b = matrix(n, k, 7);
    let reference = naive_product(&a, &b.t().to_owned());
    // Stale values in the buffer must be overwritten, not added to.
    let mut out = vec![f64::NAN; m * n];
    matmul_into(a.view(), false, b.view(), true, &mut out).unwrap();
    let c = Array2::from_shape_vec((m, n), out).unwrap();
    assert!(max_abs_diff(&c, &reference) < 1e-12);
    // Rows of A that are a view (a slice of a larger matrix) give those rows of the product.
    let mut rows = vec![0.0; 5 * n];
    matmul_into(
        a.slice(ndarray::s![2..7, ..]),
        false,
        b.view(),
        true,
        &mut rows,
    )
    .unwrap();
    let c5 = Array2::from_shape_vec((5, n), rows).unwrap();
    assert!(max_abs_diff(&c5, &reference.slice(ndarray::s![2..7, ..]).to_owned()) < 1e-12);
    let mut short = vec![0.0; m * n - 1];
    assert!(matmul_into(a.view(), false, b.view(), true, &mut short).is_err());
}

#[test]
fn the_parallel_products_give_the_same_bits_at_any_thread_count() {
    let a = matrix(5 * PRODUCT_ROWS + 3, 41, 3);
    let b = matrix(41, 17, 4);
    let mut results = Vec::new();
    for threads in ["1", "2", "3"] {
        // SAFETY: the variable only selects a thread count, which by this very property cannot
        // change another test's result.
        unsafe { std::env::set_var("DEELBO_THREADS", threads) };
        results.push((
            gram_rows(a.view()).unwrap(),
            matmul_parallel(1.0, a.view(), false, b.view(), false).unwrap(),
        ));
    }
    unsafe { std::env::remove_var("DEELBO_THREADS") };
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn inverse_from_cholesky_inverts() {
    let n = 70;
    let x = matrix(n, n + 5, 5);
    let mut a = naive_product(&x, &x.t().to_owned());
    a.diag_mut().mapv_inplace(|v| v + 0.1);
    let l = cholesky("test matrix", &a).unwrap().lower;
    let inv = inverse_from_cholesky(&l).unwrap();
    assert_eq!(inv, inv.t().to_owned());
    let eye = naive_product(&a, &inv);
    assert!(max_abs_diff(&eye, &Array2::eye(n)) < 1e-9);
}

#[test]
fn eigh_projected_gives_the_values_of_eigh_and_the_projections_on_its_vectors() {
    for &n in &[1, 2, 9, 150] {
        let x = matrix(n, n / 2 + 1, 6 + n as u64); // rank-deficient for n > 2
        let a = naive_product(&x, &x.t().to_owned());
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
        let (values, vectors) = eigh("test", &a).unwrap();
        let (values_p, projections) = eigh_projected("test", &a, &v).unwrap();
        let scale = values.iter().copied().fold(1.0, f64::max);
        for (p, q) in values.iter().zip(&values_p) {
            assert!((p - q).abs() < 1e-12 * scale, "n = {n}: {p} vs {q}");
        }
        // Eigenvectors are defined up to sign (and within a repeated eigenvalue only their span),
        // so compare the squared projections summed over groups of equal eigenvalues.
        let dense: Vec<f64> = (0..n)
            .map(|i| vectors.column(i).iter().zip(&v).map(|(a, b)| a * b).sum())
            .collect();
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            while j < n && (values[j] - values[i]).abs() < 1e-9 * scale {
                j += 1;
            }
            let e1: f64 = dense[i..j].iter().map(|p| p * p).sum();
            let e2: f64 = projections[i..j].iter().map(|p| p * p).sum();
            assert!(
                (e1 - e2).abs() < 1e-9,
                "n = {n}, group {i}..{j}: {e1} vs {e2}"
            );
            i = j;
        }
        // The projections keep the vector's energy (E is orthogonal).
        let total: f64 = projections.iter().map(|p| p * p).sum();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        assert!((total - vv).abs() < 1e-10 * vv.max(1.0));
    }
    assert!(eigh_projected("test", &Array2::eye(3), &[1.0, f64::NAN, 0.0]).is_err());
    assert!(eigh_projected("test", &Array2::eye(3), &[1.0]).is_err());
}
