#!/usr/bin/env python3
"""Side by side on the same splits: `deelbo rff fit/predict` (its defaults) and scikit-learn's
GaussianProcessRegressor (ConstantKernel * RBF(ARD) + WhiteKernel, normalize_y, 2 restarts, on
standardized inputs). Prints test RMSE, test NLL and wall time of each, and the ratios.

Setup (once):
    cargo build --release -p deelbo-cli
    cargo run --release -p deelbo-rff --example 02_real_data   # writes target/rff-real-data/*.csv
    pip install scikit-learn
Run:
    python3 deelbo-bench/scripts/rff_vs_sklearn.py [set ...]   # default: every set found

Targets of issue 8: deelbo at least 5x faster than the GP on diabetes (331 rows x 10 columns)
and at least 20x faster on friedman1-1500 (1500 x 10), at RMSE <= 1.05x and NLL <= GP + 0.05.
"""

import csv
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.preprocessing import StandardScaler

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "target", "rff-real-data")
DEELBO = os.path.join(ROOT, "target", "release", "deelbo")


def read(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0].keys() if c != "y"]
    x = np.array([[float(r[c]) for c in cols] for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    return x, y


def metrics(y, mean, std):
    rmse = math.sqrt(float(np.mean((y - mean) ** 2)))
    var = std**2
    nll = float(np.mean(0.5 * np.log(2 * math.pi * var) + (y - mean) ** 2 / (2 * var)))
    return rmse, nll


def run_deelbo(name):
    train = os.path.join(DATA, f"{name}_train.csv")
    test = os.path.join(DATA, f"{name}_test.csv")
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m.json")
        pred = os.path.join(tmp, "p.csv")
        t = time.perf_counter()
        subprocess.run([DEELBO, "rff", "fit", "--data", train, "--target", "y", "--model", model],
                       check=True, capture_output=True)
        subprocess.run([DEELBO, "rff", "predict", "--model", model, "--data", test, "--out", pred],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - t
        with open(pred) as f:
            rows = list(csv.DictReader(f))
    mean = np.array([float(r["mean"]) for r in rows])
    std = np.array([float(r["std"]) for r in rows])
    return mean, std, seconds


def run_gp(xtr, ytr, xte):
    t = time.perf_counter()
    scaler = StandardScaler().fit(xtr)
    d = xtr.shape[1]
    kernel = ConstantKernel(1.0) * RBF(length_scale=np.ones(d)) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2,
                                  random_state=0)
    gp.fit(scaler.transform(xtr), ytr)
    mean, std = gp.predict(scaler.transform(xte), return_std=True)
    return mean, std, time.perf_counter() - t


def main():
    if not os.path.exists(DEELBO):
        sys.exit(f"build deelbo first: cargo build --release -p deelbo-cli ({DEELBO} missing)")
    names = sys.argv[1:] or sorted(
        f[: -len("_train.csv")] for f in os.listdir(DATA) if f.endswith("_train.csv"))
    print(f"{'set':<16}{'N':>6}{'d':>4}  {'deelbo RMSE':>12}{'GP RMSE':>10}{'ratio':>7}"
          f"  {'deelbo NLL':>11}{'GP NLL':>9}{'gap':>8}  {'deelbo s':>9}{'GP s':>9}{'speed-up':>9}")
    for name in names:
        xtr, ytr = read(os.path.join(DATA, f"{name}_train.csv"))
        xte, yte = read(os.path.join(DATA, f"{name}_test.csv"))
        dm, ds, dt = run_deelbo(name)
        gm, gs, gt = run_gp(xtr, ytr, xte)
        dr, dn = metrics(yte, dm, ds)
        gr, gn = metrics(yte, gm, gs)
        print(f"{name:<16}{len(ytr):>6}{xtr.shape[1]:>4}  {dr:>12.4f}{gr:>10.4f}{dr / gr:>7.3f}"
              f"  {dn:>11.3f}{gn:>9.3f}{dn - gn:>+8.3f}  {dt:>9.2f}{gt:>9.2f}{gt / dt:>8.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
