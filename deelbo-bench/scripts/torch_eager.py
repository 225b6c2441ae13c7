#!/usr/bin/env python3
"""PyTorch eager baseline of the DE-ELBO sample + KL step, on the same GPU as deelbo-cuda.

Forward, as the public PyTorch code does it (one kernel per operation):
    eps = torch.randn_like(m); w = m + sigma * eps; M = (m - mu).pow(2).sum()
Backward through autograd of  loss = (g * w).sum() + c * M  (g stands in for the model's
d loss/d w; c = 1/(2 kappa N v*) makes dloss/dm = g + (m - mu)/(kappa N v*)), i.e. the same
gradients the fused deelbo backward produces.

Prints the median time per call for D in the chosen sizes and, given the JSON written by
`deelbo-bench-report --json FILE`, the ratio PyTorch eager / deelbo fused for the same D.

    python3 deelbo-bench/scripts/torch_eager.py --sizes 1e5,1e6,1e7,2.5e7 \
        [--deelbo-json report.json] [--reps 50]
"""

import argparse
import json
import statistics
import sys


def parse_sizes(text):
    return [int(round(float(s))) for s in text.split(",") if s.strip()]


def timed(torch, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6,1e7,2.5e7")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--deelbo-json", help="JSON written by deelbo-bench-report --json")
    ap.add_argument("--json", help="write the PyTorch timings here")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed (pip install torch)")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA device visible to PyTorch")
        return 0

    deelbo = {}
    if args.deelbo_json:
        with open(args.deelbo_json) as f:
            for r in json.load(f):
                if r["device"] == "gpu":
                    deelbo[(r["pass"], r["variant"], r["len"])] = r["seconds"]

    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}  torch {torch.__version__}")
    print(f"{'D':>10} {'pass':>18} {'torch us':>10} {'deelbo us':>10} {'torch/deelbo':>13}")
    results = []
    for d in parse_sizes(args.sizes):
        gen = torch.Generator(device=dev).manual_seed(0)
        m = (0.1 * torch.randn(d, device=dev, generator=gen)).requires_grad_(True)
        mu = 0.1 * torch.randn(d, device=dev, generator=gen)
        g = 1e-3 * torch.randn(d, device=dev, generator=gen)
        sigma = torch.tensor(0.01, device=dev, requires_grad=True)
        c = 1e-3

        def forward():
            with torch.no_grad():
                eps = torch.randn_like(m)
                w = m + sigma * eps
                big_m = (m - mu).pow(2).sum()
                # .item() is the readback a training loop needs to form v* (like deelbo's).
                return w, big_m.item()

        def forward_backward():
            m.grad = None
            sigma.grad = None
            eps = torch.randn_like(m)
            w = m + sigma * eps
            big_m = (m - mu).pow(2).sum()
            loss = (g * w).sum() + c * big_m
            loss.backward()
            return sigma.grad.item()

        t_fwd = timed(torch, forward, args.reps)
        t_step = timed(torch, forward_backward, args.reps)
        rows = [("forward", t_fwd, deelbo.get(("forward", "fused", d))),
                ("forward+backward", t_step,
                 (deelbo[("forward", "fused", d)] + deelbo[("backward", "fused", d)])
                 if ("forward", "fused", d) in deelbo and ("backward", "fused", d) in deelbo
                 else None)]
        for name, t, ours in rows:
            ratio = f"{t / ours:13.2f}" if ours else f"{'-':>13}"
            ours_us = f"{ours * 1e6:10.1f}" if ours else f"{'-':>10}"
            print(f"{d:>10} {name:>18} {t * 1e6:10.1f} {ours_us} {ratio}")
            results.append({"len": d, "pass": name, "torch_seconds": t,
                            "deelbo_seconds": ours})
        del m, mu, g
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
