//! The `deelbo` binary on files in a temp dir: help, usage errors (exit 2), every bad input of
//! the issue (one stderr line naming the file/line/column, exit 1, no panic), fit -> predict, and
//! the demo's outputs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn deelbo(args: &[&str]) -> Run {
    let out = Command::cargo_bin("deelbo")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A bad input: exit code 1, exactly one non-empty stderr line starting with "error:" that
/// contains every `needle`, nothing on stdout, and no panic or backtrace.
fn assert_one_line_error(r: &Run, needles: &[&str]) {
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(r.code, 1, "exit code; stderr: {}", r.stderr);
    assert_eq!(
        lines.len(),
        1,
        "expected one stderr line, got: {:?}",
        r.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for n in needles {
        assert!(
            lines[0].contains(n),
            "'{}' does not mention '{n}'",
            lines[0]
        );
    }
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"));
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
}

/// `sin(3a) + 0.2 cos(b)` on a fixed grid, `n` rows, columns `a,b,y`.
fn training_csv(n: usize) -> String {
    let mut t = String::from("a,b,y\n");
    for i in 0..n {
        let a = -2.0 + 4.0 * i as f64 / (n - 1) as f64;
        let b = ((i * 7) % 11) as f64 / 5.0 - 1.0;
        let noise = 0.05 * ((i * 13) % 7) as f64 / 7.0 - 0.025;
        t.push_str(&format!(
            "{a},{b},{}\n",
            (3.0 * a).sin() + 0.2 * b.cos() + noise
        ));
    }
    t
}

#[test]
fn help_everywhere_and_usage_errors_exit_2() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["rff", "--help"],
        vec!["rff", "fit", "--help"],
        vec!["rff", "predict", "--help"],
        vec!["kappa", "--help"],
    ] {
        let r = deelbo(&args);
        assert_eq!(r.code, 0, "{args:?}");
        assert!(r.stdout.contains("Usage"), "{args:?}: {}", r.stdout);
    }
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "d.csv", &training_csv(10));
    let model = dir.path().join("m.json");
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["rff", "fit", "--data", s(&data), "--model", s(&model)],
        vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--kappa",
            "0.5",
        ],
        vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--kappa",
            "abc",
        ],
        vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--method",
            "nope",
        ],
        vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--features",
            "0",
        ],
        vec!["kappa", "--params", "0", "--examples", "3"],
        vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--grid-points",
            "1",
        ],
    ] {
        let r = deelbo(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"));
    }
    // Conflicts found after parsing are usage errors too, in one line.
    for extra in [
        ["--method", "elbo", "--kappa", "3"],
        ["--method", "map-grid", "--ard", ""],
    ] {
        let mut args = vec![
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
        ];
        args.extend(extra.iter().filter(|a| !a.is_empty()));
        let r = deelbo(&args);
        assert_eq!(r.code, 2, "{args:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    assert!(!model.exists(), "no model is written on a usage error");
}

#[test]
fn every_bad_training_file_gives_one_clear_line() {
    let dir = TempDir::new().unwrap();
    let model = dir.path().join("m.json");
    let fit = |file: &Path| {
        deelbo(&[
            "rff",
            "fit",
            "--data",
            s(file),
            "--target",
            "y",
            "--model",
            s(&model),
        ])
    };
    let missing = dir.path().join("nope.csv");
    assert_one_line_error(&fit(&missing), &["nope.csv", "cannot read"]);
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "notarget.csv",
            "a,b,z\n1,2,3\n4,5,6\n",
            vec!["notarget.csv", "no column named 'y'", "a, b, z"],
        ),
        (
            "text.csv",
            "a,y\n1,2\n3,abc\n5,6\n",
            vec!["text.csv", "line 3", "column 'y'", "'abc'", "not a number"],
        ),
        (
            "nan.csv",
            "a,y\n1,2\nNaN,3\n5,6\n",
            vec!["nan.csv", "line 3", "column 'a'", "not a finite number"],
        ),
        (
            "inf.csv",
            "a,y\n1,2\n3,4\n5,inf\n",
            vec!["inf.csv", "line 4", "column 'y'", "not a finite number"],
        ),
        (
            "ragged.csv",
            "a,b,y\n1,2,3\n4,5\n7,8,9\n",
            vec!["ragged.csv", "line 3", "2 fields", "header has 3"],
        ),
        (
            "one.csv",
            "a,y\n1,2\n",
            vec!["one.csv", "at least 2 data rows", "found 1"],
        ),
        (
            "header.csv",
            "a,y\n",
            vec!["header.csv", "at least 2 data rows", "found 0"],
        ),
        ("empty.csv", "", vec!["empty.csv", "empty"]),
        (
            "const.csv",
            "a,y\n1,5\n2,5\n3,5\n",
            vec!["const.csv", "'y' is constant", "5"],
        ),
        (
            "onlytarget.csv",
            "y\n1\n2\n",
            vec!["onlytarget.csv", "no input columns"],
        ),
        (
            "empty_cell.csv",
            "a,y\n1,2\n,3\n",
            vec!["empty_cell.csv", "line 3", "column 'a'", "not a number"],
        ),
    ];
    for (name, text, needles) in cases {
        let file = write(&dir, name, text);
        assert_one_line_error(&fit(&file), &needles);
    }
    assert!(!model.exists(), "no model is written for bad input");
}

#[test]
fn fit_then_predict_round_trip() {
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "train.csv", &training_csv(40));
    let model = dir.path().join("model.json");
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "128",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut expected = [
        "method",
        "kappa",
        "lengthscale",
        "noise_std",
        "prior_variance",
        "sigma",
        "objective",
        "train_rmse",
        "test_rmse",
        "test_nll",
        "seconds",
        "kappa_rule",
        "kappa_clamped",
        "kappa_reason",
        "warnings",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    // The default method of `rff fit` is the exact evidence with ARD (the real-data table).
    assert_eq!(v["method"], "evidence");
    assert!(v["kappa"].is_null() && v["kappa_rule"].is_null());
    assert!(
        v["lengthscale"].is_array(),
        "two inputs: one lengthscale per input in data units"
    );
    assert!(v["train_rmse"].as_f64().unwrap() < 0.2);

    // Predict on a file with the columns reordered, the target present, and an extra text
    // column: all ignored except the model's inputs.
    let mut shuffled = String::from("id,y,b,a\n");
    for (i, line) in training_csv(40).lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        shuffled.push_str(&format!("row{i},{},{},{}\n", f[2], f[1], f[0]));
    }
    let pred_in = write(&dir, "new.csv", &shuffled);
    let pred_out = dir.path().join("pred.csv");
    let r = deelbo(&[
        "rff",
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&pred_in),
        "--out",
        s(&pred_out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&pred_out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("mean,std"));
    let rows: Vec<(f64, f64)> = lines
        .map(|l| {
            let (m, s) = l.split_once(',').unwrap();
            (m.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 40);
    let targets: Vec<f64> = training_csv(40)
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let mse = rows
        .iter()
        .zip(&targets)
        .map(|((m, _), y)| (m - y).powi(2))
        .sum::<f64>()
        / 40.0;
    assert!(
        (mse.sqrt() - v["train_rmse"].as_f64().unwrap()).abs() < 1e-12,
        "predict reproduces the fit"
    );
    assert!(rows.iter().all(|(_, s)| *s > 0.0 && s.is_finite()));

    // Other methods fit too.
    for method in ["elbo", "evidence", "map-grid"] {
        let r = deelbo(&[
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--features",
            "64",
            "--method",
            method,
            "--grid-points",
            "20",
        ]);
        assert_eq!(r.code, 0, "{method}: {}", r.stderr);
        assert!(r.stdout.contains("noise std"), "{method}: {}", r.stdout);
    }
}

#[test]
fn a_clamped_kappa_is_reported_not_hidden() {
    // N = 40 rows, R = 64 features: D/(2N) = 0.8 < 1 is raised to 1, the plain ELBO. The fit
    // succeeds (exit 0), says so on stderr, in the table and in the JSON, and the model file
    // stores it.
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "train.csv", &training_csv(40));
    let model = dir.path().join("model.json");
    let base = [
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "64",
        "--method",
        "de-elbo",
        "--grid-points",
        "12",
    ];
    let mut args = base.to_vec();
    args.push("--json");
    let r = deelbo(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: kappa clamped: N = 40 >= D/2 = 32"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the plain ELBO"), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["method"], "de-elbo-half");
    assert_eq!(v["kappa_rule"], "de-elbo-half");
    assert_eq!(v["kappa"], 1.0);
    assert_eq!(v["kappa_clamped"], true);
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("kappa clamped"))
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(file["model"]["kappa_report"]["clamped"], true);
    let r = deelbo(&base);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("kappa           1 (clamped: N = 40 >= D/2 = 32"),
        "{}",
        r.stdout
    );
    // Unclamped: D/(2N) = 256/80 = 3.2, no warning about kappa.
    let mut args = base.to_vec();
    args[9] = "256";
    args.push("--json");
    let r = deelbo(&args);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["kappa_clamped"], false);
    assert!((v["kappa"].as_f64().unwrap() - 3.2).abs() < 1e-12);
    assert!(!r.stderr.contains("kappa clamped"));
}

#[test]
fn a_fit_above_the_memory_limit_is_refused_before_allocating() {
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "train.csv", &training_csv(20));
    let model = dir.path().join("model.json");
    // R = 65536: the R x R matrices alone are 32 GiB each.
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "65536",
    ]);
    assert_one_line_error(
        &r,
        &[
            "train.csv",
            "MiB",
            "above the limit of 8192 MiB",
            "--max-memory",
        ],
    );
    assert!(!model.exists());
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "64",
        "--max-memory",
        "1k",
    ]);
    assert_one_line_error(&r, &["max_memory", "at least 1 MiB"]);
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--max-memory",
        "lots",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn huge_column_magnitudes_give_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let mut text = String::from("a,b,y\n");
    for i in 0..20 {
        let big = if i % 2 == 0 { 1e308 } else { -1e308 };
        text.push_str(&format!("{big:e},{i},{}\n", (i as f64).sin()));
    }
    let data = write(&dir, "huge.csv", &text);
    let model = dir.path().join("model.json");
    for method in ["evidence", "map-grid"] {
        let r = deelbo(&[
            "rff",
            "fit",
            "--data",
            s(&data),
            "--target",
            "y",
            "--model",
            s(&model),
            "--features",
            "32",
            "--method",
            method,
        ]);
        assert_one_line_error(&r, &["huge.csv", "input column 0", "too large"]);
    }
}

#[test]
fn a_model_file_with_non_finite_or_inconsistent_values_is_rejected() {
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "train.csv", &training_csv(12));
    let model = dir.path().join("model.json");
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "32",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = dir.path().join("p.csv");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "w.json",
            Box::new(|v| v["model"]["weights"][3] = serde_json::json!(123456.789)),
            "out of range",
        ),
        (
            "s.json",
            Box::new(|v| v["model"]["standardizer"]["x_std"][0] = serde_json::json!(-1.0)),
            "input scale",
        ),
        (
            "n.json",
            Box::new(|v| v["model"]["noise_variance"] = serde_json::json!(0.0)),
            "noise variance",
        ),
        (
            "r.json",
            Box::new(|v| v["model"]["features"] = serde_json::json!(31)),
            "weights",
        ),
    ];
    for (name, mutate, needle) in cases {
        let mut v = good.clone();
        mutate(&mut v);
        // 1e999 is not a finite f64: JSON can carry it, the reader must reject it.
        let p = write(&dir, name, &v.to_string().replace("123456.789", "1e999"));
        let r = deelbo(&[
            "rff",
            "predict",
            "--model",
            s(&p),
            "--data",
            s(&data),
            "--out",
            s(&out),
        ]);
        assert_one_line_error(&r, &[name, needle]);
    }
}

#[test]
fn bad_model_and_prediction_files_give_one_clear_line() {
    let dir = TempDir::new().unwrap();
    let data = write(&dir, "train.csv", &training_csv(12));
    let model = dir.path().join("model.json");
    let r = deelbo(&[
        "rff",
        "fit",
        "--data",
        s(&data),
        "--target",
        "y",
        "--model",
        s(&model),
        "--features",
        "32",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = dir.path().join("p.csv");
    let predict = |m: &Path, d: &Path| {
        deelbo(&[
            "rff",
            "predict",
            "--model",
            s(m),
            "--data",
            s(d),
            "--out",
            s(&out),
        ])
    };

    // A model file from another version.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    v["version"] = serde_json::json!(2);
    let old = write(&dir, "v2.json", &v.to_string());
    assert_one_line_error(
        &predict(&old, &data),
        &["v2.json", "version 2", "not supported"],
    );
    // Not a model file at all, or a missing one.
    let junk = write(&dir, "junk.json", "{\"hello\": 1}");
    assert_one_line_error(
        &predict(&junk, &data),
        &["junk.json", "not a deelbo model file"],
    );
    let garbage = write(&dir, "garbage.json", "not json");
    assert_one_line_error(&predict(&garbage, &data), &["garbage.json", "invalid JSON"]);
    assert_one_line_error(
        &predict(&dir.path().join("none.json"), &data),
        &["none.json", "cannot read"],
    );
    // Prediction data missing an input column, or with a bad cell in one.
    let no_b = write(&dir, "no_b.csv", "a,y\n1,2\n");
    assert_one_line_error(
        &predict(&model, &no_b),
        &["no_b.csv", "no column named 'b'"],
    );
    let bad = write(&dir, "bad.csv", "a,b\n1,2\n1,x\n");
    assert_one_line_error(&predict(&model, &bad), &["bad.csv", "line 3", "column 'b'"]);
    let nan = write(&dir, "nanp.csv", "a,b\n1,nan\n");
    assert_one_line_error(
        &predict(&model, &nan),
        &["nanp.csv", "line 2", "not a finite number"],
    );
    assert!(!out.exists());
}

#[test]
fn kappa_command_lists_the_rules() {
    let r = deelbo(&["kappa", "--params", "1024", "--examples", "20"]);
    assert_eq!(r.code, 0);
    for needle in ["51.2", "25.6", "plain ELBO", "D/N"] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }
    let r = deelbo(&["kappa", "--params", "10", "--examples", "100"]);
    assert!(r.stdout.contains("raised to 1"), "{}", r.stdout);
}

#[test]
fn demo_writes_the_table_json_and_figures() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("demo");
    let r = deelbo(&["demo", "--out", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "MAP + grid search",
        "DE-ELBO (kappa = D/2N)",
        "exact GP",
        "kappa = 1024",
        "test NLL",
    ] {
        assert!(r.stdout.contains(needle), "{needle}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(v["data"]["n"], 20);
    assert_eq!(v["methods"].as_array().unwrap().len(), 7);
    assert_eq!(v["kappa_sweep"].as_array().unwrap().len(), 6);
    for stem in ["methods", "kappa_sweep"] {
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 20_000, "{stem}.png is {} bytes", png.len());
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("κ") == (stem == "kappa_sweep"));
    }
}

#[test]
fn finetune_and_experiment_reject_bad_input_before_training() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("out");
    // Unknown method: a usage error.
    let r = deelbo(&["finetune", "--method", "ridge", "--out", s(&out)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("map-grid"), "{}", r.stderr);
    // N too small for the grid search's validation split: one line naming the parameter.
    let r = deelbo(&[
        "finetune",
        "--method",
        "map-grid",
        "--n",
        "3",
        "--out",
        s(&out),
    ]);
    assert_one_line_error(&r, &["n = 3"]);
    // An unknown architecture is a usage error naming the valid ones.
    let r = deelbo(&[
        "finetune",
        "--method",
        "de-elbo",
        "--arch",
        "resnet",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("mlp or conv"), "{}", r.stderr);
    let r = deelbo(&["experiment", "transfer", "--arch", "vit", "--out", s(&out)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // The PTYL protocol validates N like the others, before any pretraining.
    let r = deelbo(&[
        "finetune",
        "--method",
        "de-elbo-ptyl",
        "--arch",
        "conv",
        "--n",
        "4",
        "--out",
        s(&out),
    ]);
    assert_one_line_error(&r, &["n = 4"]);
    // --threads 0 is a usage error.
    let r = deelbo(&["experiment", "transfer", "--threads", "0", "--out", s(&out)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // A corrupt checkpoint log is reported with its line, not trained over.
    std::fs::create_dir_all(&out).unwrap();
    write(&dir, "out/runs.jsonl", "not json\n{\"also\": \"bad\"}\n");
    let r = deelbo(&[
        "experiment",
        "transfer",
        "--quick",
        "--resume",
        "--out",
        s(&out),
    ]);
    assert_one_line_error(&r, &["runs.jsonl", "line 1"]);
    assert!(!out.join("pretrained-mlp.safetensors").exists());
    assert!(!out.join("pretrained-conv.safetensors").exists());
}
