//! Prints, for each block size `D`: on the CPU, at one thread count for every row, the
//! in-process memory ceilings, the fused forward (every instruction-set path), backward and
//! backward + SGD, the eager multi-pass version on the same threads and the noise generator
//! alone, as medians, GB/s of each pass's traffic and fractions of the ceiling; on the GPU (when
//! there is a CUDA driver) the fused and naive kernels against a device-to-device copy. `--json`
//! writes every row for `scripts/torch_cpu.py` and `scripts/torch_eager.py`.
//!
//! `cargo run --release -p deelbo-bench --bin deelbo-bench-report -- [--sizes 1e5,2.5e7]
//!  [--reps N] [--threads N] [--no-cpu] [--no-gpu] [--json out.json]`

use anyhow::{Context, Result, bail};
use deelbo_bench::stream::{self, Stores};
use deelbo_bench::{
    Measurement, cpu_threads, data, eager, load_average, median, median_seconds, size_label,
};
use deelbo_core::NoiseKey;
use deelbo_core::fused::{
    self, BACKWARD_BYTES_PER_WEIGHT, BACKWARD_SGD_BYTES_PER_WEIGHT, FORWARD_BYTES_PER_WEIGHT,
    KlGradScales, SampleStores, Scale, SgdMomentum,
};
use deelbo_core::{InstructionSet, fill_normals_on};
use deelbo_cuda::{DeviceParamBlock, DeviceScale, ForwardKernel, NaiveStep, device_or_skip};

struct Options {
    sizes: Vec<usize>,
    reps: usize,
    threads: usize,
    cpu: bool,
    gpu: bool,
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
        threads: cpu_threads(),
        cpu: true,
        gpu: true,
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
            "--threads" => {
                o.threads = args
                    .next()
                    .context("--threads needs a value")?
                    .parse()
                    .context("--threads must be a positive integer")?;
                if o.threads == 0 {
                    bail!("--threads must be at least 1");
                }
            }
            "--no-cpu" => o.cpu = false,
            "--no-gpu" => o.gpu = false,
            "--json" => o.json = Some(args.next().context("--json needs a path")?),
            "--bench" => {} // tolerated, as passed by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "deelbo-bench-report [--sizes 1e5,1e6,1e7,2.5e7] [--reps 20] [--threads N] \
                     [--no-cpu] [--no-gpu] [--json out.json]"
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
        threads: None,
        of_ceiling: None,
        len,
        seconds,
        bytes: bpw * len,
    }
}

/// One CPU row: what it measures, its traffic per weight, and the timed call.
struct Row<'a> {
    pass: &'static str,
    variant: String,
    bytes_per_weight: usize,
    run: Box<dyn FnMut() -> Result<()> + 'a>,
}

/// The buffers of one CPU size.
struct CpuData {
    m: Vec<f32>,
    mu: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    w: Vec<f32>,
    gm: Vec<f32>,
    scratch: Vec<f32>,
    tape: eager::Tape,
}

fn cpu(o: &Options, out: &mut Vec<Measurement>) -> Result<()> {
    let threads = o.threads;
    let paths = InstructionSet::available();
    let detected = InstructionSet::detected();
    println!(
        "\n== CPU: {threads} threads for every row; noise paths {:?} (fused uses {}); \
         load average {} ==",
        paths.iter().map(|p| p.name()).collect::<Vec<_>>(),
        detected.name(),
        load_average().map_or("n/a".to_string(), |l| format!("{l:.2}"))
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
    let sigma = 0.01f32;
    let iso = Scale::Isotropic(sigma);
    for &d in &o.sizes {
        let mut x = CpuData {
            m: data(d, 1, 0.1),
            mu: data(d, 2, 0.1),
            g: data(d, 3, 1e-3),
            u: data(d, 4, 1e-3),
            w: vec![0.0; d],
            gm: vec![0.0; d],
            scratch: vec![0.0; d],
            tape: eager::Tape::new(d),
        };
        check_agreement(&mut x, key, sigma, kl, threads)?;
        let load_before = load_average();
        let medians = time_rows(o.reps, cpu_rows(&mut x, &paths, key, iso, kl, sgd, threads))?;
        let load_after = load_average();
        print_cpu(d, threads, &medians, load_before, load_after, out);
    }
    Ok(())
}

/// The eager and fused forward/backward produce the same `w` and `d loss/d m` bits, and `M`
/// agrees to the rounding of the stored `f32` difference (a wrong harness fails here).
fn check_agreement(
    x: &mut CpuData,
    key: NoiseKey,
    sigma: f32,
    kl: KlGradScales,
    threads: usize,
) -> Result<()> {
    let st = fused::forward(
        &x.m,
        Some(&x.mu),
        Scale::Isotropic(sigma),
        key,
        0,
        &mut x.w,
        threads,
    )?;
    let big_m = eager::forward(
        &x.m,
        &x.mu,
        sigma,
        key,
        &mut x.scratch,
        &mut x.tape,
        threads,
    );
    if x.w != x.scratch {
        bail!("eager and fused forward samples differ");
    }
    if (big_m - st.sq_dist).abs() > 1e-6 * st.sq_dist {
        bail!("eager M {big_m} vs fused M {}", st.sq_dist);
    }
    let b = fused::backward(
        &x.m,
        Some(&x.mu),
        Scale::Isotropic(sigma),
        key,
        0,
        &x.g,
        kl,
        &mut x.gm,
        None,
        threads,
    )?;
    let dot = eager::backward(&x.g, &mut x.tape, kl, &mut x.scratch, threads);
    if (dot - b.noise_dot).abs() > 1e-9 * x.g.iter().map(|v| v.abs() as f64).sum::<f64>() {
        bail!("eager sum g eps {dot} vs fused {}", b.noise_dot);
    }
    // The gradients differ only where f32 (m - mu) rounds: compare against the fused formula
    // on the eager path's own stored difference instead.
    let (c, _, _) = kl.f32_constants();
    if (0..x.g.len()).any(|i| x.scratch[i].to_bits() != (x.g[i] + c * x.tape.diff[i]).to_bits()) {
        bail!("eager mean gradient is not g + c diff");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cpu_rows<'a>(
    x: &'a mut CpuData,
    paths: &[InstructionSet],
    key: NoiseKey,
    iso: Scale<'static>,
    kl: KlGradScales,
    sgd: SgdMomentum,
    threads: usize,
) -> Vec<Row<'a>> {
    // Shared inputs and per-row outputs: the closures borrow disjoint buffers.
    let CpuData {
        m,
        mu,
        g,
        u,
        w,
        gm,
        scratch,
        tape,
    } = x;
    let (m, mu, g) = (&*m, &*mu, &*g);
    // The SGD rows update their own copies of the means and the momentum.
    let m_sgd = std::cell::RefCell::new(m.clone());
    let u = std::cell::RefCell::new(u);
    let w = std::cell::RefCell::new(w);
    let gm = std::cell::RefCell::new(gm);
    let scratch = std::cell::RefCell::new(scratch);
    let tape = std::cell::RefCell::new(tape);
    let cells = std::rc::Rc::new((m_sgd, u, w, gm, scratch, tape));
    let mut rows: Vec<Row<'a>> = Vec::new();
    let row = |pass, variant: &str, bpw, run: Box<dyn FnMut() -> Result<()> + 'a>| Row {
        pass,
        variant: variant.to_string(),
        bytes_per_weight: bpw,
        run,
    };
    for stores in [Stores::Regular, Stores::Streaming] {
        let c = cells.clone();
        rows.push(row(
            "forward",
            &format!("ceiling_{}", stores.name()),
            FORWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                stream::read2_write1(m, mu, &mut c.2.borrow_mut(), threads, stores);
                Ok(())
            }),
        ));
    }
    for &isa in paths {
        let c = cells.clone();
        rows.push(row(
            "forward",
            &format!("fused_{}", isa.name()),
            FORWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                fused::forward_on(
                    isa,
                    m,
                    Some(mu),
                    iso,
                    key,
                    0,
                    &mut c.2.borrow_mut(),
                    threads,
                )?;
                Ok(())
            }),
        ));
    }
    // The detected path with each way of writing `w` forced (the `fused_*` rows above use
    // `SampleStores::Auto`: streaming from `fused::STREAMING_STORE_MIN_LEN` weights on).
    let detected = InstructionSet::detected();
    for stores in [SampleStores::Regular, SampleStores::Streaming] {
        let c = cells.clone();
        let name = match stores {
            SampleStores::Regular => "regular",
            _ => "streaming",
        };
        rows.push(row(
            "forward",
            &format!("fused_{}_{name}", detected.name()),
            FORWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                fused::forward_with_stores(
                    detected,
                    stores,
                    m,
                    Some(mu),
                    iso,
                    key,
                    0,
                    &mut c.2.borrow_mut(),
                    threads,
                )?;
                Ok(())
            }),
        ));
    }
    let sigma = match iso {
        Scale::Isotropic(s) => s,
        Scale::Diagonal(_) => 0.01,
    };
    {
        let c = cells.clone();
        rows.push(row(
            "forward",
            "eager",
            FORWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut w = c.2.borrow_mut();
                let mut tape = c.5.borrow_mut();
                eager::forward(m, mu, sigma, key, &mut w, &mut tape, threads);
                Ok(())
            }),
        ));
    }
    for &isa in paths {
        let c = cells.clone();
        rows.push(row(
            "noise",
            &format!("noise_{}", isa.name()),
            FORWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut eps = c.4.borrow_mut();
                let len = eps.len();
                stream::for_each_range(len, threads, [&mut eps[..]], |s, _, [e]| {
                    fill_normals_on(isa, key, s as u64, e)
                });
                Ok(())
            }),
        ));
    }
    for stores in [Stores::Regular, Stores::Streaming] {
        let c = cells.clone();
        rows.push(row(
            "backward",
            &format!("ceiling_{}", stores.name()),
            BACKWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                stream::read3_write1(g, m, mu, &mut c.3.borrow_mut(), threads, stores);
                Ok(())
            }),
        ));
    }
    {
        let c = cells.clone();
        rows.push(row(
            "backward",
            "fused",
            BACKWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut gm = c.3.borrow_mut();
                fused::backward(m, Some(mu), iso, key, 0, g, kl, &mut gm, None, threads)?;
                Ok(())
            }),
        ));
        let c = cells.clone();
        rows.push(row(
            "backward",
            "eager",
            BACKWARD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut gm = c.3.borrow_mut();
                let mut tape = c.5.borrow_mut();
                eager::backward(g, &mut tape, kl, &mut gm, threads);
                Ok(())
            }),
        ));
    }
    {
        let c = cells.clone();
        rows.push(row(
            "backward_sgd",
            "ceiling_regular",
            BACKWARD_SGD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut x = c.0.borrow_mut();
                let mut y = c.1.borrow_mut();
                stream::read4_write2(g, mu, &mut x, &mut y, threads);
                Ok(())
            }),
        ));
        let c = cells.clone();
        rows.push(row(
            "backward_sgd",
            "fused",
            BACKWARD_SGD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut ms = c.0.borrow_mut();
                let mut us = c.1.borrow_mut();
                fused::backward_sgd(
                    &mut ms,
                    &mut us,
                    Some(mu),
                    iso,
                    key,
                    0,
                    g,
                    kl,
                    sgd,
                    None,
                    threads,
                )?;
                Ok(())
            }),
        ));
        let c = cells;
        rows.push(row(
            "backward_sgd",
            "eager",
            BACKWARD_SGD_BYTES_PER_WEIGHT,
            Box::new(move || {
                let mut gm = c.3.borrow_mut();
                let mut tape = c.5.borrow_mut();
                let mut ms = c.0.borrow_mut();
                let mut us = c.1.borrow_mut();
                eager::backward(g, &mut tape, kl, &mut gm, threads);
                eager::sgd_step(&mut ms, &mut us, &gm, sgd, threads);
                Ok(())
            }),
        ));
    }
    rows
}

/// Times every row once per repetition, rows interleaved (so slow drift in the machine's load
/// touches every row alike), after one untimed warm-up call each. Returns
/// `(pass, variant, bytes per weight, median seconds)`.
fn time_rows(reps: usize, mut rows: Vec<Row<'_>>) -> Result<Vec<(String, String, usize, f64)>> {
    for r in &mut rows {
        (r.run)()?;
    }
    let mut times = vec![Vec::with_capacity(reps); rows.len()];
    for _ in 0..reps.max(1) {
        for (r, t) in rows.iter_mut().zip(&mut times) {
            let start = std::time::Instant::now();
            (r.run)()?;
            t.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(rows
        .iter()
        .zip(times)
        .map(|(r, t)| {
            (
                r.pass.to_string(),
                r.variant.clone(),
                r.bytes_per_weight,
                median(t),
            )
        })
        .collect())
}

fn print_cpu(
    d: usize,
    threads: usize,
    medians: &[(String, String, usize, f64)],
    load_before: Option<f64>,
    load_after: Option<f64>,
    out: &mut Vec<Measurement>,
) {
    // The ceiling of a pass: the faster of its regular- and streaming-store kernels. The noise
    // rows are compared with the forward's ceiling (the pass they would have to hide in).
    let ceiling = |pass: &str| {
        let pass = if pass == "noise" { "forward" } else { pass };
        medians
            .iter()
            .filter(|(p, v, _, _)| p == pass && v.starts_with("ceiling"))
            .map(|r| r.3)
            .fold(f64::INFINITY, f64::min)
    };
    let load = |l: Option<f64>| l.map_or("n/a".to_string(), |l| format!("{l:.2}"));
    println!(
        "\nD = {}  ({threads} threads; load average {} before, {} after)",
        size_label(d),
        load(load_before),
        load(load_after)
    );
    println!(
        "{:>14} {:>22} {:>10} {:>9} {:>11}",
        "pass", "variant", "ms", "GB/s", "of ceiling"
    );
    for (pass, variant, bpw, t) in medians {
        let mut row = m("cpu", pass, variant, d, *t, *bpw);
        row.threads = Some(threads);
        row.of_ceiling = Some(ceiling(pass) / t);
        println!(
            "{:>14} {:>22} {:>10.3} {:>9.2} {:>11.3}",
            pass,
            variant,
            t * 1e3,
            row.gbps(),
            ceiling(pass) / t
        );
        out.push(row);
    }
    let get = |pass: &str, variant: &str| {
        medians
            .iter()
            .find(|r| r.0 == pass && r.1 == variant)
            .map_or(f64::NAN, |r| r.3)
    };
    let detected = InstructionSet::detected();
    let fwd = get("forward", &format!("fused_{}", detected.name()));
    // The detected path's forward is also recorded as plain `fused` (what scripts compare).
    let mut alias = m("cpu", "forward", "fused", d, fwd, FORWARD_BYTES_PER_WEIGHT);
    alias.threads = Some(threads);
    alias.of_ceiling = Some(ceiling("forward") / fwd);
    out.push(alias);
    let verdict = |x: f64, target: f64| if x >= target { "met" } else { "MISSED" };
    let f_frac = ceiling("forward") / fwd;
    let b_frac = ceiling("backward") / get("backward", "fused");
    let s_frac = ceiling("backward_sgd") / get("backward_sgd", "fused");
    println!(
        "{:>7} fused forward ({}) at {:.2} of its ceiling (target >= 0.5: {}); backward {:.2} \
         ({}); backward + SGD {:.2} ({}); fused/eager on the same threads: forward {:.2}x, \
         backward {:.2}x, backward + SGD {:.2}x",
        size_label(d),
        detected.name(),
        f_frac,
        verdict(f_frac, 0.5),
        b_frac,
        verdict(b_frac, 0.5),
        s_frac,
        verdict(s_frac, 0.5),
        get("forward", "eager") / fwd,
        get("backward", "eager") / get("backward", "fused"),
        get("backward_sgd", "eager") / get("backward_sgd", "fused"),
    );
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
    if o.gpu {
        gpu(&o, &mut out)?;
    }
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {path}"))?;
        println!("\nwrote {} measurements to {path}", out.len());
    }
    Ok(())
}
