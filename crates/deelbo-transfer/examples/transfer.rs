//! Run the transfer-learning experiment and print its table.
//!
//! ```text
//! cargo run --release -p deelbo-transfer --example transfer -- [--quick] [--out DIR] [--resume]
//! ```
//!
//! Writes `transfer.json`, `table.txt`, `transfer.svg`, `transfer.png`, the checkpoint
//! `runs.jsonl` and the cached `pretrained.safetensors` into DIR (default `transfer-out`).
//!
//! On a small or shared machine set `RAYON_NUM_THREADS=1`: candle's CPU kernels otherwise use a
//! thread per core, and on 2 oversubscribed cores that made single runs 2–20x slower.

use anyhow::{Context, bail};
use deelbo_transfer::{BarProgress, TransferConfig, format_table, run_experiment};

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut resume = false;
    let mut out = String::from("transfer-out");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--resume" => resume = true,
            "--out" => out = args.next().context("--out needs a directory")?,
            other => bail!("unknown argument {other:?} (expected --quick, --out DIR, --resume)"),
        }
    }
    let mut config = if quick {
        TransferConfig::quick(&out)
    } else {
        TransferConfig::full(&out)
    };
    config.resume = resume;
    let report = run_experiment(&config, &mut BarProgress::new())?;
    println!("{}", format_table(&report.rows));
    println!(
        "pretrained source accuracy {:.3} ({}), {} runs restored from checkpoints",
        report.pretrain.source_accuracy,
        if report.pretrained_reused {
            "cached"
        } else {
            "trained now"
        },
        report.restored_runs
    );
    println!(
        "wrote {}, {}, {}, {}",
        report.files.json.display(),
        report.files.table.display(),
        report.files.svg.display(),
        report.files.png.display()
    );
    Ok(())
}
