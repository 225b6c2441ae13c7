//! The experiment's outputs: the per-(architecture, N) table, `transfer.json`, and the figure of
//! test accuracy against cumulative wall time per method (SVG and PNG, drawn by
//! `deelbo_report::LineFigure` with its bundled font; no system fonts); tables laid out by
//! `deelbo_report::render_table`. Rows and summaries come from
//! [`crate::results`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use deelbo_report::{LineFigure, LinePanel, Series, render_table};

use crate::checkpoint::{RunRecord, Stage};
use crate::config::Method;
use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::results::{JSON_FILE, ResultRow, Summary, summarize, write_rows_json};

/// File name of the printed table.
pub const TABLE_FILE: &str = "table.txt";
/// File stem of the figure (`transfer.svg`, `transfer.png`).
pub const FIGURE_STEM: &str = "transfer";

/// The files [`write_outputs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFiles {
    /// `transfer.json`.
    pub json: PathBuf,
    /// `table.txt`.
    pub table: PathBuf,
    /// `transfer.svg`.
    pub svg: PathBuf,
    /// `transfer.png`.
    pub png: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io {
        action,
        path,
        source,
    }
}

fn fmt_opt(v: Option<f64>, sci: bool) -> String {
    match v {
        Some(x) if sci => format!("{x:.2e}"),
        Some(x) => format!("{x:.1}"),
        None => "-".to_string(),
    }
}

/// The column headers of one block of [`format_table`].
const HEADER: [&str; 13] = [
    "method", "kappa", "test acc", "NLL", "pred acc", "pred NLL", "lambda", "M_bb/D", "tau",
    "sigma", "runs", "wall s", "cpu s",
];

/// The table: one block per (architecture, N) with, per method, kappa, test accuracy (mean ±
/// sd over seeds) and NLL of the posterior mean, accuracy and NLL of the S-sample predictive,
/// learned lambda, tau, sigma and the backbone's `M_b/D_b`, runs per protocol and mean wall and
/// CPU seconds per protocol, then the ratios of the grid search's times to the DE-ELBO's. Each
/// block is laid out by `deelbo_report::render_table`.
pub fn format_table(rows: &[ResultRow]) -> String {
    let summaries = summarize(rows);
    let mut out = String::new();
    let mut blocks: Vec<(Architecture, usize)> = summaries.iter().map(|s| (s.arch, s.n)).collect();
    blocks.dedup();
    for (arch, n) in blocks {
        let block: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.arch == arch && s.n == n)
            .collect();
        let seeds = block.iter().map(|s| s.seeds).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "{arch}, N = {n}  ({seeds} seed{}; mean over seeds, ± sample sd; pred = S-sample predictive)",
            if seeds == 1 { "" } else { "s" },
        );
        let cells: Vec<Vec<String>> = block
            .iter()
            .map(|s| {
                vec![
                    s.method.name().to_string(),
                    fmt_opt(s.kappa, false),
                    format!("{:.3} ± {:.3}", s.accuracy, s.accuracy_sd),
                    format!("{:.3}", s.nll),
                    fmt_fixed(s.predictive_accuracy),
                    fmt_fixed(s.predictive_nll),
                    fmt_opt(s.lambda, true),
                    fmt_opt(s.backbone_distance, true),
                    fmt_opt(s.tau, true),
                    fmt_opt(s.sigma, true),
                    s.runs.to_string(),
                    format!("{:.1}", s.seconds),
                    fmt_opt(s.cpu_seconds, false),
                ]
            })
            .collect();
        out.push_str(&render_table(&HEADER, &cells));
        let grid = block.iter().find(|s| s.method == Method::MapGrid);
        for de in block
            .iter()
            .filter(|s| matches!(s.method, Method::DeElbo | Method::DeElboPtyl))
        {
            if let Some(g) = grid {
                let cpu = match (g.cpu_seconds, de.cpu_seconds) {
                    (Some(a), Some(b)) => format!("{:.1}x", a / b),
                    _ => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "grid / {} time: wall {:.1}x, cpu {cpu}; accuracy {} - grid: {:+.3}",
                    de.method.name(),
                    g.seconds / de.seconds,
                    de.method.name(),
                    de.accuracy - g.accuracy
                );
            }
        }
        out.push('\n');
    }
    out
}

fn fmt_fixed(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{x:.3}"),
        None => "-".to_string(),
    }
}

/// One method's curve for one (architecture, N): after each training run of the protocol
/// (averaged over seeds),
/// the cumulative wall seconds the protocol has paid ([`RunRecord::protocol_seconds`]) and the
/// test accuracy of the model it would select so far (grid: best validation NLL so far, the
/// final point is the retrain on all N; ELBOs: lowest final training loss so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The network.
    pub arch: Architecture,
    /// N.
    pub n: usize,
    /// Method.
    pub method: Method,
    /// `(cumulative seconds, test accuracy)` per run index.
    pub points: Vec<(f64, f64)>,
}

/// The curves of [`Curve`] for every (N, method) in `records`.
pub fn accuracy_time_curves(records: &[RunRecord]) -> Vec<Curve> {
    let mut groups: BTreeMap<(Architecture, usize, Method), BTreeMap<u64, Vec<&RunRecord>>> =
        BTreeMap::new();
    for r in records {
        groups
            .entry((r.arch, r.n, r.method))
            .or_default()
            .entry(r.seed)
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((arch, n, method), seeds) in groups {
        let mut per_seed: Vec<Vec<Option<(f64, f64)>>> = Vec::new();
        for (_, mut rs) in seeds {
            rs.sort_by_key(|r| r.index);
            let mut t = 0.0;
            let mut best: Option<(f64, f64)> = None; // (criterion, accuracy)
            let mut pts = Vec::new();
            for r in rs {
                t += r.protocol_seconds().0;
                if let Some(o) = &r.outcome {
                    match r.stage {
                        Stage::Retrain { .. } => best = Some((f64::NEG_INFINITY, o.test.accuracy)),
                        Stage::Grid { .. } | Stage::Lr { .. } => {
                            let c = match r.stage {
                                Stage::Grid { .. } => o.validation.map(|v| v.nll),
                                _ => Some(o.final_train_loss),
                            };
                            if let Some(c) = c.filter(|c| c.is_finite())
                                && best.is_none_or(|(b, _)| c < b)
                            {
                                best = Some((c, o.test.accuracy));
                            }
                        }
                    }
                }
                pts.push(best.map(|(_, a)| (t, a)));
            }
            per_seed.push(pts);
        }
        let len = per_seed.iter().map(|p| p.len()).min().unwrap_or(0);
        let points = (0..len)
            .filter_map(|i| {
                let vals: Option<Vec<(f64, f64)>> = per_seed.iter().map(|p| p[i]).collect();
                vals.map(|v| {
                    let k = v.len() as f64;
                    (
                        v.iter().map(|p| p.0).sum::<f64>() / k,
                        v.iter().map(|p| p.1).sum::<f64>() / k,
                    )
                })
            })
            .collect();
        out.push(Curve {
            arch,
            n,
            method,
            points,
        });
    }
    out
}

fn color(method: Method) -> (u8, u8, u8) {
    match method {
        Method::MapGrid => (31, 119, 180),
        Method::Elbo => (214, 39, 40),
        Method::DeElbo => (44, 160, 44),
        Method::DeElboPtyl => (148, 103, 189),
    }
}

/// The figure of [`accuracy_time_curves`]: one panel per (architecture, N), left to right, log
/// time axis, the accuracy axis from just below the lowest point to 1.
pub fn figure(curves: &[Curve]) -> LineFigure {
    let mut cells: Vec<(Architecture, usize)> = curves.iter().map(|c| (c.arch, c.n)).collect();
    cells.sort_unstable();
    cells.dedup();
    let panels = cells
        .into_iter()
        .map(|(arch, n)| {
            let cs: Vec<&Curve> = curves
                .iter()
                .filter(|c| c.n == n && c.arch == arch)
                .collect();
            let low = cs
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.1))
                .filter(|a| a.is_finite())
                .fold(1.0f64, f64::min);
            LinePanel {
                title: format!("{arch}, N = {n}"),
                x_desc: "cumulative wall time (s, log scale)".to_string(),
                y_desc: "test accuracy".to_string(),
                x_log: true,
                y_range: Some(((((low - 0.05) * 10.0).floor() / 10.0).max(0.0), 1.0)),
                series: cs
                    .iter()
                    .map(|c| Series {
                        label: c.method.name().to_string(),
                        color: color(c.method),
                        points: c.points.clone(),
                        mark_last: true,
                    })
                    .collect(),
            }
        })
        .collect();
    LineFigure {
        title: "Digits 5-9 fine-tuning: test accuracy vs cumulative wall time".to_string(),
        panels,
        panel_size: (520, 420),
    }
}

/// Draw the figure from `records` ([`figure`] of [`accuracy_time_curves`]) to `<stem>.svg` and
/// `<stem>.png` with `deelbo_report::LineFigure` (the bundled font, registered there once);
/// returns both paths.
pub fn write_figure(records: &[RunRecord], stem: &Path) -> Result<Vec<PathBuf>> {
    Ok(figure(&accuracy_time_curves(records)).save(stem)?)
}

/// Write `transfer.json`, `table.txt`, `transfer.svg` and `transfer.png` into `dir`.
pub fn write_outputs(dir: &Path, rows: &[ResultRow], records: &[RunRecord]) -> Result<OutputFiles> {
    let files = OutputFiles {
        json: dir.join(JSON_FILE),
        table: dir.join(TABLE_FILE),
        svg: dir.join(FIGURE_STEM).with_extension("svg"),
        png: dir.join(FIGURE_STEM).with_extension("png"),
    };
    write_rows_json(&files.json, rows)?;
    std::fs::write(&files.table, format_table(rows)).map_err(io("writing", &files.table))?;
    write_figure(records, &dir.join(FIGURE_STEM))?;
    Ok(files)
}
