//! Prints GB/s of the fused and naive steps, the fraction of the device-to-device copy bandwidth
//! the fused forward reaches, and the fused/naive speedups, on the CPU and (when there is a CUDA
//! driver) the GPU. Optionally writes the measurements as JSON for `scripts/torch_eager.py`.
//!
//! `cargo run --release -p deelbo-bench --bin deelbo-bench-report -- [--sizes 1e5,2.5e7]
//!  [--reps N] [--no-cpu] [--json out.json]`

use anyhow::{Context, Result, bail};
use deelbo_bench::{Measurement, cpu_threads, data, median_seconds, size_label};
use deelbo_core::NoiseKey;
use deelbo_core::fused::{
    self, BACKWARD_BYTES_PER_WEIGHT, BACKWARD_SGD_BYTES_PER_WEIGHT, FORWARD_BYTES_PER_WEIGHT,
    KlGradScales, Scale, SgdMomentum, naive,
};
use deelbo_cuda::{DeviceParamBlock, DeviceScale, ForwardKernel, NaiveStep, device_or_skip};

struct Options {
    sizes: Vec<usize>,
    reps: usize,
    cpu: bool,
    json: Option<String>,
}

fn parse_size(s: &str) -> Result<usize> {
    let v: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("bad size {s:?} (expected e.g. 1e6 or 25000000)"))?;
    if !(1.0..=2e9).contains(&v) {
        bail!("size {s} out of range 1 ..= 2e9");
    }
    Ok(v.round() as usize)
}

fn options() -> Result<Options> {
    let mut o = Options {
        sizes: deelbo_bench::FULL_SIZES.to_vec(),
        reps: 20,
        cpu: true,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => {
                let v = args.next().context("--sizes needs a value")?;
                o.sizes = v.split(',').map(parse_size).collect::<Result<_>>()?;
            }
            "--reps" => {
                o.reps = args
                    .next()
                    .context("--reps needs a value")?
                    .parse()
                    .context("--reps must be a positive integer")?;
            }
            "--no-cpu" => o.cpu = false,
            "--json" => o.json = Some(args.next().context("--json needs a path")?),
            "--bench" => {} // tolerated, as passed by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "deelbo-bench-report [--sizes 1e5,1e6,1e7,2.5e7] [--reps 20] [--no-cpu] \
                     [--json out.json]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(o)
}

fn m(device: &str, pass: &str, variant: &str, len: usize, seconds: f64, bpw: usize) -> Measurement {
    Measurement {
        device: device.to_string(),
        pass: pass.to_string(),
        variant: variant.to_string(),
        len,
        seconds,
        bytes: bpw * len,
    }
}

fn cpu(o: &Options, out: &mut Vec<Measurement>) -> Result<()> {
    let threads = cpu_threads();
    let reps = o.reps.clamp(1, 5);
    println!("\n== CPU ({threads} threads) ==");
    println!(
        "{:>7} {:>22} {:>12} {:>10}",
        "D", "variant", "ms/call", "GB/s"
    );
    let kl = KlGradScales {
        inv_kappa_n: 1e-5,
        variance: 0.01,
    };
    for &d in &o.sizes {
        let mv = data(d, 1, 0.1);
        let mu = data(d, 2, 0.1);
        let g = data(d, 3, 1e-3);
        let mut w = vec![0.0f32; d];
        let mut gm = vec![0.0f32; d];
        let key = NoiseKey::new(1, 0);
        let iso = Scale::Isotropic(0.01);
        let f = median_seconds(1, reps, || {
            fused::forward(&mv, Some(&mu), iso, key, 0, &mut w, threads)?;
            Ok(())
        })?;
        let n = median_seconds(1, reps, || {
            naive::forward(&mv, Some(&mu), iso, key, 0, &mut w)?;
            Ok(())
        })?;
        let fb = median_seconds(1, reps, || {
            fused::backward(&mv, Some(&mu), iso, key, 0, &g, kl, &mut gm, None, threads)?;
            Ok(())
        })?;
        let rows = [
            m("cpu", "forward", "fused", d, f, FORWARD_BYTES_PER_WEIGHT),
            m("cpu", "forward", "naive", d, n, FORWARD_BYTES_PER_WEIGHT),
            m("cpu", "backward", "fused", d, fb, BACKWARD_BYTES_PER_WEIGHT),
        ];
        for r in &rows {
            println!(
                "{:>7} {:>22} {:>12.3} {:>10.2}",
                size_label(d),
                format!("{} {}", r.pass, r.variant),
                r.seconds * 1e3,
                r.gbps()
            );
        }
        println!(
            "{:>7} forward fused/naive speedup: {:.2}x",
            size_label(d),
            n / f
        );
        out.extend(rows);
    }
    Ok(())
}

fn gpu(o: &Options, out: &mut Vec<Measurement>) -> Result<()> {
    let Some(dev) = device_or_skip("GPU report")? else {
        return Ok(());
    };
    println!(
        "\n== GPU: {} (compute capability {:?}) ==",
        dev.name(),
        dev.compute_capability()
    );
    println!(
        "{:>7} {:>28} {:>12} {:>10} {:>10}",
        "D", "variant", "us/call", "GB/s", "of copy"
    );
    let kl = KlGradScales {
        inv_kappa_n: 1e-5,
        variance: 0.01,
    };
    let sgd = SgdMomentum {
        lr: 1e-3,
        momentum: 0.9,
    };
    let key = NoiseKey::new(1, 0);
    let iso = DeviceScale::Isotropic(0.01);
    for &d in &o.sizes {
        let mut block = DeviceParamBlock::new(&dev, &data(d, 1, 0.1), Some(&data(d, 2, 0.1)), 0)?;
        let mut naive_step = NaiveStep::new(&dev, d)?;
        let g = dev.upload(&data(d, 3, 1e-3))?;
        let mut gm = dev.zeros(d)?;
        let copy_len = (FORWARD_BYTES_PER_WEIGHT * d / 8).max(1);
        let src = dev.zeros(copy_len)?;
        let mut dst = dev.zeros(copy_len)?;
        // Queued calls: `batch` launches back to back, then one synchronization; per-call time.
        let batch = 10usize;
        let queued = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            let t = median_seconds(2, o.reps, || {
                for _ in 0..batch {
                    f()?;
                }
                dev.synchronize()?;
                Ok(())
            })?;
            Ok(t / batch as f64)
        };
        let copy = queued(&mut || Ok(dev.copy(&src, &mut dst)?))?;
        let fq = queued(&mut || Ok(block.enqueue_forward(iso, key)?))?;
        let pq =
            queued(&mut || Ok(block.enqueue_forward_with(ForwardKernel::Prefetch, iso, key)?))?;
        let f = median_seconds(2, o.reps, || {
            block.forward(iso, key)?;
            Ok(())
        })?;
        let p = median_seconds(2, o.reps, || {
            block.forward_with(ForwardKernel::Prefetch, iso, key)?;
            Ok(())
        })?;
        let n = median_seconds(2, o.reps, || {
            naive_step.forward(&mut block, 0.01, key)?;
            Ok(())
        })?;
        let fb = median_seconds(2, o.reps, || {
            block.backward(iso, key, &g, kl, &mut gm, None)?;
            Ok(())
        })?;
        let nb = median_seconds(2, o.reps, || {
            naive_step.backward(0.01, &g, kl, &mut gm)?;
            Ok(())
        })?;
        let fs = median_seconds(2, o.reps, || {
            block.backward_sgd(iso, key, &g, kl, sgd, None)?;
            Ok(())
        })?;
        let ns = median_seconds(2, o.reps, || {
            naive_step.backward(0.01, &g, kl, &mut gm)?;
            naive_step.sgd_step(&mut block, &gm, sgd)?;
            dev.synchronize()?;
            Ok(())
        })?;
        let rows = [
            m(
                "gpu",
                "copy",
                "copy_same_bytes",
                d,
                copy,
                FORWARD_BYTES_PER_WEIGHT,
            ),
            m(
                "gpu",
                "forward",
                "fused_queued",
                d,
                fq,
                FORWARD_BYTES_PER_WEIGHT,
            ),
            m(
                "gpu",
                "forward",
                "fused_prefetch_queued",
                d,
                pq,
                FORWARD_BYTES_PER_WEIGHT,
            ),
            m("gpu", "forward", "fused", d, f, FORWARD_BYTES_PER_WEIGHT),
            m(
                "gpu",
                "forward",
                "fused_prefetch",
                d,
                p,
                FORWARD_BYTES_PER_WEIGHT,
            ),
            m("gpu", "forward", "naive", d, n, FORWARD_BYTES_PER_WEIGHT),
            m("gpu", "backward", "fused", d, fb, BACKWARD_BYTES_PER_WEIGHT),
            m("gpu", "backward", "naive", d, nb, BACKWARD_BYTES_PER_WEIGHT),
            m(
                "gpu",
                "backward_sgd",
                "fused",
                d,
                fs,
                BACKWARD_SGD_BYTES_PER_WEIGHT,
            ),
            m(
                "gpu",
                "backward_sgd",
                "naive",
                d,
                ns,
                BACKWARD_SGD_BYTES_PER_WEIGHT,
            ),
        ];
        let copy_gbps = rows[0].gbps();
        for r in &rows {
            println!(
                "{:>7} {:>28} {:>12.1} {:>10.1} {:>9.1}%",
                size_label(d),
                format!("{} {}", r.pass, r.variant),
                r.seconds * 1e6,
                r.gbps(),
                100.0 * r.gbps() / copy_gbps
            );
        }
        println!(
            "{:>7} fused forward (queued) at {:.1}% of copy bandwidth (prefetch kernel {:.1}%); \
             fused/naive speedup: forward {:.2}x (prefetch {:.2}x), backward {:.2}x, \
             backward+sgd {:.2}x",
            size_label(d),
            100.0 * copy / fq,
            100.0 * copy / pq,
            n / f,
            n / p,
            nb / fb,
            ns / fs
        );
        out.extend(rows);
    }
    Ok(())
}

fn main() -> Result<()> {
    let o = options()?;
    let mut out = Vec::new();
    if o.cpu {
        cpu(&o, &mut out)?;
    }
    gpu(&o, &mut out)?;
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {path}"))?;
        println!("\nwrote {} measurements to {path}", out.len());
    }
    Ok(())
}
