//! Fitting end to end: determinism, serialization, ARD, the R < N path, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use deelbo_core::KappaRule;
use deelbo_core::{NoiseKey, normal_at};
use deelbo_rff::fit::MapGridSettings;
use deelbo_rff::search::GridSearch;
use deelbo_rff::{Dataset, Lengthscale, Method, RffConfig, RffError, RffModel, fit};
use ndarray::{Array1, Array2, array};

fn coarse() -> GridSearch {
    GridSearch {
        grid_points: 30,
        ..deelbo_rff::fit::DEFAULT_LENGTHSCALE_SEARCH
    }
}

fn sine(n: usize, d: usize, seed: u64) -> Dataset {
    let x = Array2::from_shape_fn((n, d), |(i, k)| {
        f64::from(normal_at(NoiseKey::new(seed, 1), (i * d + k) as u64))
    });
    let y = Array1::from_shape_fn(n, |i| {
        (3.0 * x[[i, 0]]).sin() + 0.1 * f64::from(normal_at(NoiseKey::new(seed, 2), i as u64))
    });
    Dataset::new(x, y).unwrap()
}

#[test]
fn fits_are_deterministic_and_models_round_trip_through_json() {
    let data = sine(25, 1, 1);
    for method in [
        Method::Elbo(KappaRule::DataEmphasized),
        Method::Evidence,
        Method::MapGrid,
        Method::LaplaceDiag,
    ] {
        let cfg = RffConfig::new(method)
            .with_features(128)
            .with_lengthscale_search(coarse());
        let a = fit(&data, &cfg).unwrap().model;
        let b = fit(&data, &cfg).unwrap().model;
        assert_eq!(a, b, "{method:?} not deterministic");
        let json = serde_json::to_string(&a).unwrap();
        let back: RffModel = serde_json::from_str(&json).unwrap();
        back.validate().unwrap();
        let pa = a.predict(data.x()).unwrap();
        let pb = back.predict(data.x()).unwrap();
        for (u, v) in pa.mean.iter().zip(&pb.mean) {
            assert_eq!(
                u.to_bits(),
                v.to_bits(),
                "{method:?} mean changed through JSON"
            );
        }
        for (u, v) in pa.std.iter().zip(&pb.std) {
            assert_eq!(u.to_bits(), v.to_bits());
        }
    }
}

#[test]
fn more_data_than_features_recovers_the_noise() {
    // N = 300 > R = 96: the R x R path. True noise 0.1.
    let data = sine(300, 1, 2);
    for method in [Method::Elbo(KappaRule::Standard), Method::Evidence] {
        let cfg = RffConfig::new(method)
            .with_features(96)
            .with_lengthscale_search(coarse());
        let report = fit(&data, &cfg).unwrap();
        let m = report.model;
        assert!(
            (0.08..0.13).contains(&m.noise_std()),
            "{method:?}: noise {}",
            m.noise_std()
        );
    }
}

#[test]
fn ard_evidence_ends_at_a_stationary_point_of_the_dense_evidence() {
    // y depends on x0 only; x1 is noise. The ARD fit must (a) give x1 a much longer lengthscale
    // and (b) end where the exact evidence, recomputed densely (N x N Cholesky) from the model's
    // own (l, tau, s_n), has a zero gradient in every ln l_k and the reported value.
    let data = sine(40, 2, 3);
    let cfg = RffConfig::new(Method::Evidence)
        .with_features(128)
        .with_lengthscale_search(coarse())
        .with_ard(true);
    let report = fit(&data, &cfg).unwrap();
    let m = report.model;
    let Lengthscale::Ard(ls) = m.lengthscale.clone() else {
        panic!("expected ARD lengthscales")
    };
    assert!(ls[1] > 3.0 * ls[0], "ARD lengthscales {ls:?}");
    let features = m.feature_map().unwrap();
    let xs = m.standardizer.transform_x(data.x()).unwrap();
    let ys = m.standardizer.transform_y(data.y());
    let dense = |l: &[f64]| {
        let phi = features
            .matrix(xs.view(), &Lengthscale::Ard(l.to_vec()))
            .unwrap();
        deelbo_rff::evidence::log_evidence(
            phi.view(),
            ys.view(),
            m.prior_variance,
            m.noise_variance,
        )
        .unwrap()
    };
    let at = dense(&ls);
    let n = data.len() as f64;
    let reported = m.objective + n * m.standardizer.y_std.ln();
    assert!(
        (at - reported).abs() < 1e-6 * at.abs(),
        "{at} vs {reported}"
    );
    for k in 0..2 {
        let h = 1e-4f64;
        let (mut a, mut b) = (ls.clone(), ls.clone());
        a[k] *= h.exp();
        b[k] *= (-h).exp();
        let slope = (dense(&a) - dense(&b)) / (2.0 * h);
        if (ls[k] / 100.0).ln().abs() < 1e-9 {
            // At the ARD upper bound (ln 100): the evidence must want it longer still (a KKT
            // point), and the report must say the input is unused.
            assert!(
                slope > -0.05,
                "d ln p / d ln l_{k} = {slope} at the upper bound"
            );
            assert!(
                report
                    .warnings
                    .iter()
                    .any(|w| w.contains(&format!("input {k}"))),
                "{:?}",
                report.warnings
            );
        } else {
            // Interior: a unit step in ln l_k would change the evidence by less than 0.05 nats.
            assert!(
                slope.abs() < 0.05,
                "d ln p / d ln l_{k} = {slope} at {ls:?}"
            );
        }
    }
    assert!(
        ls[0] < 10.0,
        "the relevant input keeps a finite lengthscale: {ls:?}"
    );
    assert_eq!(m.predict(data.x()).unwrap().mean.len(), 40);
}

#[test]
fn bad_input_gives_typed_errors() {
    let x = array![[0.0], [1.0], [2.0]];
    assert!(matches!(
        Dataset::new(x.clone(), array![1.0, f64::NAN, 2.0]),
        Err(RffError::NonFinite { row: 1, .. })
    ));
    assert!(matches!(
        Dataset::new(array![[0.0], [f64::INFINITY]], array![1.0, 2.0]),
        Err(RffError::NonFinite {
            row: 1,
            column: 0,
            ..
        })
    ));
    assert!(matches!(
        Dataset::new(x.clone(), array![2.0, 2.0, 2.0]),
        Err(RffError::ConstantTarget { .. })
    ));
    assert!(matches!(
        Dataset::new(array![[0.0]], array![1.0]),
        Err(RffError::TooFewExamples { .. })
    ));
    assert!(matches!(
        Dataset::new(x.clone(), array![1.0, 2.0]),
        Err(RffError::Shape { .. })
    ));
    let tiny = Dataset::new(x, array![1.0, 2.0, 0.5]).unwrap();
    let map = RffConfig::new(Method::MapGrid)
        .with_features(16)
        .with_map_grid(MapGridSettings::default());
    assert!(matches!(
        fit(&tiny, &map),
        Err(RffError::TooFewExamples { required: 5, .. })
    ));
    let ard_ev = RffConfig::new(Method::MapGrid)
        .with_features(16)
        .with_ard(true);
    assert!(matches!(
        fit(&tiny, &ard_ev),
        Err(RffError::InvalidConfig { .. })
    ));
    let ok = fit(
        &tiny,
        &RffConfig::new(Method::Evidence)
            .with_features(16)
            .with_lengthscale_search(coarse()),
    )
    .unwrap();
    assert!(matches!(
        ok.model.predict(array![[1.0, 2.0]].view()),
        Err(RffError::Shape { .. })
    ));
    assert!(matches!(
        ok.model.predict(array![[f64::NAN]].view()),
        Err(RffError::NonFinite { .. })
    ));
}

#[test]
fn large_data_fits_stream_in_blocks_and_match_the_in_memory_fit() {
    // N = 1500 > max_rows = 512: the search runs on a seeded subsample, the final model on sums
    // over every row. Streaming the same rows (Dataset's own RowSource) gives the same bits,
    // the known noise 0.1 is recovered, and the thread count does not change a bit either.
    let data = sine(1500, 2, 5);
    let cfg = RffConfig::new(Method::Evidence)
        .with_features(64)
        .with_ard(true)
        .with_lengthscale_search(coarse());
    let a = fit(&data, &cfg).unwrap().model;
    let mut rows = data.clone();
    let mut stages = Vec::new();
    let b = deelbo_rff::fit::fit_source(&mut rows, &cfg, &mut |s, _| stages.push(s))
        .unwrap()
        .model;
    assert_eq!(a, b);
    assert!(stages.contains(&deelbo_rff::fit::Stage::Summing));
    assert!(
        (a.noise_std() - 0.1).abs() < 0.02,
        "noise {}",
        a.noise_std()
    );
    // Memory refusal is a typed error before any work.
    let huge = cfg.clone().with_features(60_000);
    assert!(matches!(
        fit(&data, &huge),
        Err(RffError::TooMuchMemory { .. })
    ));
}

/// The fitted models at 1, 2 and 5 threads are identical. (Other tests may run while the
/// variable is changed: by this very property, that cannot affect them.)
fn assert_thread_count_invariant(data: &Dataset, cfg: &RffConfig) {
    let mut models = Vec::new();
    for threads in ["1", "2", "5"] {
        // SAFETY: the variable only selects a thread count (see above).
        unsafe { std::env::set_var("DEELBO_THREADS", threads) };
        models.push(fit(data, cfg).unwrap().model);
    }
    unsafe { std::env::remove_var("DEELBO_THREADS") };
    assert_eq!(models[0], models[1]);
    assert_eq!(models[0], models[2]);
}

#[test]
fn the_same_seed_gives_the_same_bits_at_any_thread_count() {
    // Row blocks are fixed and summed in block order; BLAS runs single-threaded.
    let cfg = RffConfig::new(Method::Evidence)
        .with_features(96)
        .with_ard(true)
        .with_lengthscale_search(coarse());
    assert_thread_count_invariant(&sine(1100, 3, 8), &cfg);
}

#[test]
fn the_same_seed_gives_the_same_bits_at_any_thread_count_with_fewer_rows_than_features() {
    // N <= R: the N x N Gram matrix and the ARD gradient's products run in parallel row blocks.
    let cfg = RffConfig::new(Method::Evidence)
        .with_features(256)
        .with_ard(true)
        .with_lengthscale_search(coarse());
    assert_thread_count_invariant(&sine(150, 3, 9), &cfg);
}
