//! The parallel products, the inverse from a Cholesky factor and the eigenvalues with
//! projections, against naive dense references and at several thread counts.

use deelbo_rff::RffError;
use deelbo_rff::linalg::{
    GRAM_ROWS_TILE, JITTER_LEVELS, PRODUCT_COLUMNS, PRODUCT_ROWS, cholesky, cholesky_in_place,
    eigh, eigh_projected, gram_rows, inverse_from_cholesky, matmul_into, matmul_parallel,
    matmul_parallel_columns, matvec, tridiagonalize_toward,
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
    // Sizes around the tile boundary.
    for &n in &[
        1,
        GRAM_ROWS_TILE - 1,
        GRAM_ROWS_TILE,
        GRAM_ROWS_TILE + 1,
        2 * GRAM_ROWS_TILE + 5,
        3 * GRAM_ROWS_TILE + 7,
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
fn matmul_parallel_columns_matches_the_naive_product_around_the_block_width() {
    for &n in &[
        1,
        PRODUCT_COLUMNS - 1,
        PRODUCT_COLUMNS + 1,
        2 * PRODUCT_COLUMNS + 5,
    ] {
        let (m, k) = (13, 17);
        let a = matrix(m, k, 8);
        let b = matrix(k, n, 9);
        let reference = naive_product(&a, &b) * 1.5;
        let c = matmul_parallel_columns(1.5, a.view(), false, b.view()).unwrap();
        assert!(max_abs_diff(&c, &reference) < 1e-12, "n = {n}");
        let at = a.t().as_standard_layout().into_owned();
        let ct = matmul_parallel_columns(1.5, at.view(), true, b.view()).unwrap();
        assert!(
            max_abs_diff(&ct, &reference) < 1e-12,
            "n = {n}, transposed A"
        );
    }
    let a = matrix(4, 5, 1);
    assert!(matmul_parallel_columns(1.0, a.view(), false, a.view()).is_err());
}

#[test]
fn matvec_matches_the_naive_product_both_ways_and_checks_the_length() {
    let a = matrix(23, 9, 10);
    let x = ndarray::Array1::from_iter((0..9).map(|i| i as f64 - 3.5));
    let z = ndarray::Array1::from_iter((0..23).map(|i| (i as f64).sin()));
    let ax = matvec(a.view(), false, x.view()).unwrap();
    let atz = matvec(a.view(), true, z.view()).unwrap();
    for i in 0..23 {
        let r: f64 = (0..9).map(|j| a[[i, j]] * x[j]).sum();
        assert!((ax[i] - r).abs() < 1e-12);
    }
    for j in 0..9 {
        let r: f64 = (0..23).map(|i| a[[i, j]] * z[i]).sum();
        assert!((atz[j] - r).abs() < 1e-12);
    }
    assert!(matvec(a.view(), false, z.view()).is_err());
    // A non-contiguous view is read correctly.
    let cols = a.slice(ndarray::s![.., 1..4]);
    let y = matvec(cols, false, ndarray::array![1.0, -2.0, 0.5].view()).unwrap();
    for i in 0..23 {
        let r = a[[i, 1]] - 2.0 * a[[i, 2]] + 0.5 * a[[i, 3]];
        assert!((y[i] - r).abs() < 1e-12);
    }
}

#[test]
fn cholesky_escalates_jitter_on_a_singular_matrix_and_names_an_indefinite_one() {
    // Rank one: the second pivot is exactly 0, so dpotrf fails and the first jitter level
    // (1e-12 x the mean diagonal) must be added to the matrix as given, not to the factor's
    // leftovers: L L^T = A + jitter I.
    // (A diagonal other than 1, so the failed attempt's partial factor differs from A.)
    let a = ndarray::array![[4.0, 4.0, 8.0], [4.0, 4.0, 8.0], [8.0, 8.0, 16.0]];
    let ch = cholesky("rank one", &a).unwrap();
    let mean_diag = 8.0;
    assert!(ch.jitter > 0.0 && ch.jitter <= JITTER_LEVELS[JITTER_LEVELS.len() - 1] * mean_diag);
    let mut shifted = a.clone();
    shifted.diag_mut().mapv_inplace(|v| v + ch.jitter);
    let llt = naive_product(&ch.lower, &ch.lower.t().to_owned());
    assert!(max_abs_diff(&llt, &shifted) < 1e-9, "{llt:?}");
    for i in 0..3 {
        for j in i + 1..3 {
            assert_eq!(ch.lower[[i, j]], 0.0);
        }
    }
    // In place and by reference give the same bits.
    let spd = {
        let m = matrix(30, 30, 12);
        let mut s = naive_product(&m, &m.t().to_owned());
        s.diag_mut().mapv_inplace(|v| v + 0.1);
        s
    };
    let by_ref = cholesky("spd", &spd).unwrap();
    let in_place = cholesky_in_place("spd", spd.clone()).unwrap();
    assert_eq!(by_ref.lower, in_place.lower);
    assert_eq!(in_place.jitter, 0.0);
    // Indefinite beyond any jitter: a typed error naming the matrix.
    let bad = ndarray::array![[1.0, 3.0], [3.0, 1.0]];
    match cholesky("indefinite", &bad) {
        Err(RffError::NotPositiveDefinite { name, minor }) => {
            assert!(name.contains("indefinite"), "{name}");
            assert_eq!(minor, 2);
        }
        other => panic!("expected NotPositiveDefinite, got {other:?}"),
    }
}

#[test]
fn the_tridiagonal_reduction_keeps_the_spectrum_and_the_moments_of_the_start_vector() {
    for &(n, seed) in &[(1usize, 1u64), (2, 2), (7, 3), (40, 4)] {
        let m = matrix(n, n + 3, seed);
        let a = naive_product(&m, &m.t().to_owned());
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7 + 0.3).cos()).collect();
        let (d, e) = tridiagonalize_toward("a", a.clone(), &v).unwrap();
        assert_eq!((d.len(), e.len()), (n, n.saturating_sub(1)));
        let t = Array2::from_shape_fn((n, n), |(i, j)| {
            if i == j {
                d[i]
            } else if i == j + 1 {
                e[j]
            } else if j == i + 1 {
                e[i]
            } else {
                0.0
            }
        });
        // Orthogonally similar: the same eigenvalues.
        let (la, _) = eigh("a", &a).unwrap();
        let (lt, _) = eigh("t", &t).unwrap();
        for (x, y) in la.iter().zip(&lt) {
            assert!((x - y).abs() < 1e-10 * (1.0 + la[n - 1].abs()), "n = {n}");
        }
        // U e_1 = v/||v||: v^T A v = ||v||^2 T_11 and ||A v||^2 = ||v||^2 ||T e_1||^2.
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let av: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[[i, j]] * v[j]).sum())
            .collect();
        let vav: f64 = v.iter().zip(&av).map(|(x, y)| x * y).sum();
        let avav: f64 = av.iter().map(|x| x * x).sum();
        let te1: f64 = d[0] * d[0] + e.first().map_or(0.0, |b| b * b);
        assert!(
            (vav - vv * d[0]).abs() < 1e-10 * (1.0 + vav.abs()),
            "n = {n}"
        );
        assert!(
            (avav - vv * te1).abs() < 1e-9 * (1.0 + avav.abs()),
            "n = {n}"
        );
    }
    // A zero start vector still gives the spectrum; a wrong length or NaN is an error.
    let m = matrix(5, 8, 7);
    let a = naive_product(&m, &m.t().to_owned());
    let (d, _) = tridiagonalize_toward("a", a.clone(), &[0.0; 5]).unwrap();
    assert!((d.iter().sum::<f64>() - a.diag().sum()).abs() < 1e-12);
    assert!(tridiagonalize_toward("a", a.clone(), &[1.0; 4]).is_err());
    assert!(tridiagonalize_toward("a", a, &[1.0, f64::NAN, 0.0, 0.0, 0.0]).is_err());
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
    let a = matrix(3 * GRAM_ROWS_TILE + 3, 41, 3);
    let b = matrix(41, 17, 4);
    let wide_a = matrix(19, 23, 5);
    let wide_b = matrix(23, 4 * PRODUCT_COLUMNS + 9, 6);
    let mut results = Vec::new();
    for threads in ["1", "2", "3"] {
        // SAFETY: the variable only selects a thread count, which by this very property cannot
        // change another test's result.
        unsafe { std::env::set_var("DEELBO_THREADS", threads) };
        results.push((
            gram_rows(a.view()).unwrap(),
            matmul_parallel(1.0, a.view(), false, b.view(), false).unwrap(),
            matmul_parallel_columns(1.0, wide_a.view(), false, wide_b.view()).unwrap(),
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
