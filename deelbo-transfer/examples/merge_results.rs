//! Merge the results of experiment runs made in separate output directories (e.g. one process
//! per architecture, `deelbo experiment transfer --arch mlp --out A` and `--arch conv --out B`)
//! into one table, `transfer.json` and figure:
//!
//! ```text
//! cargo run --release -p deelbo-transfer --example merge_results -- OUT A B
//! ```
//!
//! Rows and run records are concatenated as they are (nothing is recomputed).

use std::path::PathBuf;

use deelbo_transfer::checkpoint::{RUNS_FILE, read_records};
use deelbo_transfer::results::JSON_FILE;
use deelbo_transfer::{format_table, read_rows_json, write_outputs};

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, inputs)) = args.split_first() else {
        anyhow::bail!("usage: merge_results OUT DIR...");
    };
    let mut rows = Vec::new();
    let mut records = Vec::new();
    for dir in inputs {
        rows.extend(read_rows_json(&dir.join(JSON_FILE))?);
        records.extend(read_records(&dir.join(RUNS_FILE))?);
    }
    std::fs::create_dir_all(out)?;
    let files = write_outputs(out, &rows, &records)?;
    print!("{}", format_table(&rows));
    println!("wrote {}", files.table.display());
    Ok(())
}
