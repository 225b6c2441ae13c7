//! Friedman #1 (10 inputs, 5 relevant, noise std 1) as CSV for the scale runs of the README:
//! `N` training rows and 10 000 test rows, streamed to disk (no `N`-sized buffer).
//!
//! Run: `cargo run --release -p deelbo-rff --example 03_scale_data -- 1000000 target/scale`
//! then `deelbo rff fit --data target/scale/train.csv --target y --model m.json`.

use std::io::Write as _;

use deelbo_core::{NoiseKey, normal_at, uniform_at};

fn write(path: &std::path::Path, n: usize, seed: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "x0,x1,x2,x3,x4,x5,x6,x7,x8,x9,y")?;
    let (kx, ke) = (NoiseKey::new(seed, 11), NoiseKey::new(seed, 21));
    let mut line = String::with_capacity(256);
    for i in 0..n {
        let x: Vec<f64> = (0..10)
            .map(|k| uniform_at(kx, (i * 10 + k) as u64))
            .collect();
        let y = 10.0 * (std::f64::consts::PI * x[0] * x[1]).sin()
            + 20.0 * (x[2] - 0.5).powi(2)
            + 10.0 * x[3]
            + 5.0 * x[4]
            + f64::from(normal_at(ke, i as u64));
        line.clear();
        for v in &x {
            line.push_str(&format!("{v:.6},"));
        }
        line.push_str(&format!("{y:.6}\n"));
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(2)
            .unwrap_or_else(|| "target/scale".into()),
    );
    std::fs::create_dir_all(&dir)?;
    write(&dir.join("train.csv"), n, 7)?;
    write(&dir.join("test.csv"), 10_000, 8)?;
    eprintln!(
        "wrote {n} training and 10000 test rows to {}",
        dir.display()
    );
    Ok(())
}
