#!/usr/bin/env python3
"""PyTorch CPU baseline of the DE-ELBO step, in place, at the sizes and thread count of a
deelbo-bench-report run, and the ratio PyTorch / deelbo fused for each pass.

Every tensor is allocated once; each pass is the in-place sequence an eager framework runs:

    forward       eps.normal_(); torch.add(m, eps, alpha=sigma, out=w);
                  torch.sub(m, mu, out=diff); M = torch.dot(diff, diff).item()
    noise         eps.normal_()
    backward      torch.dot(g, eps).item(); torch.add(g, diff, alpha=c, out=gm)
    backward_sgd  backward, then u.mul_(beta).add_(gm); m.sub_(u, alpha=lr)
    ceiling       torch.add(m, mu, out=w)   (read 2, write 1: the forward's traffic)

PyTorch's backward reads the stored eps where deelbo's regenerates it, so the backward rows
alone favour PyTorch; the "step" row (forward + backward + SGD) compares like with like.

The passes are timed round-robin, repetition by repetition (as the Rust harness does), and
reported as medians. PyTorch is an optional comparison, never a dependency of the build or
the tests: without it the script says "skipped" and exits 0.

    python3 deelbo-bench/scripts/torch_cpu.py --deelbo-json report.json [--reps 15] [--json out]
    python3 deelbo-bench/scripts/torch_cpu.py --sizes 2.5e7 --threads 2
"""

import argparse
import json
import statistics
import sys
import time


def parse_sizes(text):
    return [int(round(float(s))) for s in text.split(",") if s.strip()]


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deelbo-json", help="JSON written by deelbo-bench-report --json "
                    "(its CPU sizes and thread count are used)")
    ap.add_argument("--sizes", help="comma-separated D (default: those of --deelbo-json)")
    ap.add_argument("--threads", type=int, help="default: that of --deelbo-json, else all")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", help="write the PyTorch timings and ratios here")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed (pip install torch)")
        return 0

    deelbo = {}
    threads = args.threads
    sizes = parse_sizes(args.sizes) if args.sizes else []
    if args.deelbo_json:
        with open(args.deelbo_json) as f:
            for r in json.load(f):
                if r["device"] != "cpu":
                    continue
                deelbo[(r["pass"], r["variant"], r["len"])] = r["seconds"]
                if threads is None and r.get("threads"):
                    threads = r["threads"]
                if not args.sizes and r["len"] not in sizes:
                    sizes.append(r["len"])
    if not sizes:
        sizes = [25_000_000]
    if threads is None:
        threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load_average()}")

    sigma, c, lr, beta = 0.01, 1e-3, 1e-3, 0.9
    results = []
    for d in sizes:
        gen = torch.Generator().manual_seed(0)
        m = 0.1 * torch.randn(d, generator=gen)
        mu = 0.1 * torch.randn(d, generator=gen)
        g = 1e-3 * torch.randn(d, generator=gen)
        u = torch.zeros(d)
        w, eps, diff, gm = (torch.empty(d) for _ in range(4))

        def ceiling():
            torch.add(m, mu, out=w)

        def noise():
            eps.normal_()

        def forward():
            eps.normal_()
            torch.add(m, eps, alpha=sigma, out=w)
            torch.sub(m, mu, out=diff)
            return torch.dot(diff, diff).item()

        def backward():
            dot = torch.dot(g, eps).item()
            torch.add(g, diff, alpha=c, out=gm)
            return dot

        def backward_sgd():
            backward()
            u.mul_(beta).add_(gm)
            m.sub_(u, alpha=lr)

        passes = [("forward", "ceiling", ceiling), ("forward", "fused", forward),
                  ("noise", "noise", noise), ("backward", "fused", backward),
                  ("backward_sgd", "fused", backward_sgd)]
        with torch.no_grad():
            for _, _, fn in passes:
                fn()
            times = {name: [] for name in passes}
            for _ in range(max(args.reps, 1)):
                for p in passes:
                    t = time.perf_counter()
                    p[2]()
                    times[p].append(time.perf_counter() - t)
        print(f"\nD = {d}")
        print(f"{'pass':>14} {'torch ms':>10} {'deelbo ms':>10} {'torch/deelbo':>13}  deelbo row")
        for (pass_, kind, _), t in times.items():
            t = statistics.median(t)
            if kind == "ceiling":
                key = ("forward", "ceiling_regular", d)
                label = "ceiling_regular"
            elif kind == "noise":
                # deelbo's fastest noise path (the one its fused step uses).
                rows = sorted((s, v) for (p, v, n), s in deelbo.items()
                              if p == "noise" and n == d)
                label = rows[0][1] if rows else "noise"
                key = ("noise", label, d)
            else:
                key = (pass_, "fused", d)
                label = "fused"
            ours = deelbo.get(key)
            ratio = t / ours if ours else None
            print(f"{pass_ + ' ' + kind:>14} {t * 1e3:10.2f} "
                  f"{(ours * 1e3 if ours else float('nan')):10.2f} "
                  f"{(ratio if ratio else float('nan')):13.2f}  {label}")
            results.append({"len": d, "pass": pass_, "kind": kind, "threads": threads,
                            "torch_seconds": t, "deelbo_row": label,
                            "deelbo_seconds": ours, "torch_over_deelbo": ratio})
        # A whole step: PyTorch stores eps in the forward and reads it back in the backward;
        # deelbo regenerates it, so only the sum of the two passes compares like with like.
        med = {(p, k): statistics.median(t) for (p, k, _), t in times.items()}
        t_step = med[("forward", "fused")] + med[("backward_sgd", "fused")]
        f_ours = deelbo.get(("forward", "fused", d))
        s_ours = deelbo.get(("backward_sgd", "fused", d))
        ours = f_ours + s_ours if f_ours and s_ours else None
        ratio = t_step / ours if ours else None
        print(f"{'step fwd+bwd+sgd':>14} {t_step * 1e3:10.2f} "
              f"{(ours * 1e3 if ours else float('nan')):10.2f} "
              f"{(ratio if ratio else float('nan')):13.2f}  fused forward + backward_sgd")
        results.append({"len": d, "pass": "step", "kind": "forward+backward_sgd",
                        "threads": threads, "torch_seconds": t_step,
                        "deelbo_row": "fused forward + fused backward_sgd",
                        "deelbo_seconds": ours, "torch_over_deelbo": ratio})
        fwd = next((r for r in results if r["len"] == d and r["pass"] == "forward"
                    and r["kind"] == "fused"), None)
        if fwd and fwd["torch_over_deelbo"]:
            verdict = "met" if fwd["torch_over_deelbo"] >= 5 else "MISSED"
            print(f"fused forward {fwd['torch_over_deelbo']:.2f}x faster than PyTorch CPU in "
                  f"place (target >= 5x: {verdict})")
        del m, mu, g, u, w, eps, diff, gm
    print(f"load average at the end {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
