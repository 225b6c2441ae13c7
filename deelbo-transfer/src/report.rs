//! The experiment's outputs: the per-N table, `transfer.json`, and the figure of test accuracy
//! against cumulative wall time per method (SVG and PNG, text drawn with the embedded DejaVu
//! Sans font; no system fonts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{RunRecord, Stage};
use crate::config::Method;
use crate::error::{Result, TransferError};
use crate::experiment::ResultRow;

/// File name of the result rows.
pub const JSON_FILE: &str = "transfer.json";
/// File name of the printed table.
pub const TABLE_FILE: &str = "table.txt";
/// File name of the SVG figure.
pub const SVG_FILE: &str = "transfer.svg";
/// File name of the PNG figure.
pub const PNG_FILE: &str = "transfer.png";

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

/// Write `rows` as a pretty-printed JSON list to `path`.
pub fn write_rows_json(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let text = serde_json::to_string_pretty(rows).map_err(|source| TransferError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(io("writing", path))
}

/// Read rows written by [`write_rows_json`].
pub fn read_rows_json(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    serde_json::from_str(&text).map_err(|source| TransferError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn opt_mean(v: &[Option<f64>]) -> Option<f64> {
    let xs: Vec<f64> = v.iter().flatten().copied().collect();
    (xs.len() == v.len() && !xs.is_empty()).then(|| mean(&xs))
}

/// Per-(N, method) summary over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// N.
    pub n: usize,
    /// Method.
    pub method: Method,
    /// Number of seeds.
    pub seeds: usize,
    /// Kappa (mean over seeds; the same for every seed).
    pub kappa: Option<f64>,
    /// Mean test accuracy.
    pub accuracy: f64,
    /// Sample standard deviation of the test accuracy over seeds.
    pub accuracy_sd: f64,
    /// Mean test NLL.
    pub nll: f64,
    /// Mean learned lambda.
    pub lambda: Option<f64>,
    /// Mean learned tau.
    pub tau: Option<f64>,
    /// Training runs per protocol.
    pub runs: usize,
    /// Mean wall seconds per protocol.
    pub seconds: f64,
    /// Mean process CPU seconds per protocol (when every row has it).
    pub cpu_seconds: Option<f64>,
}

/// Summaries of `rows` per (N, method), ordered by N then method.
pub fn summarize(rows: &[ResultRow]) -> Vec<Summary> {
    let mut groups: BTreeMap<(usize, Method), Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.n, r.method)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((n, method), rs)| {
            let acc: Vec<f64> = rs.iter().map(|r| r.test_accuracy).collect();
            Summary {
                n,
                method,
                seeds: rs.len(),
                kappa: opt_mean(&rs.iter().map(|r| r.kappa).collect::<Vec<_>>()),
                accuracy: mean(&acc),
                accuracy_sd: sd(&acc),
                nll: mean(&rs.iter().map(|r| r.test_nll).collect::<Vec<_>>()),
                lambda: opt_mean(&rs.iter().map(|r| r.lambda).collect::<Vec<_>>()),
                tau: opt_mean(&rs.iter().map(|r| r.tau).collect::<Vec<_>>()),
                runs: rs.iter().map(|r| r.runs).max().unwrap_or(0),
                seconds: mean(&rs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
                cpu_seconds: opt_mean(&rs.iter().map(|r| r.cpu_seconds).collect::<Vec<_>>()),
            }
        })
        .collect()
}

fn fmt_opt(v: Option<f64>, sci: bool) -> String {
    match v {
        Some(x) if sci => format!("{x:.2e}"),
        Some(x) => format!("{x:.1}"),
        None => "-".to_string(),
    }
}

/// The table: one block per N with, per method, kappa, test accuracy (mean ± sd over seeds),
/// test NLL, learned lambda and tau, runs per protocol and mean wall and CPU seconds per
/// protocol, then the ratios of the grid search's times to the DE-ELBO's.
pub fn format_table(rows: &[ResultRow]) -> String {
    let summaries = summarize(rows);
    let mut out = String::new();
    let mut sizes: Vec<usize> = summaries.iter().map(|s| s.n).collect();
    sizes.dedup();
    for n in sizes {
        let block: Vec<&Summary> = summaries.iter().filter(|s| s.n == n).collect();
        let seeds = block.iter().map(|s| s.seeds).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "N = {n}  ({seeds} seed{}; mean over seeds, ± sample sd)",
            if seeds == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "{:<9} {:>8} {:>15} {:>9} {:>9} {:>9} {:>5} {:>10} {:>10}",
            "method", "kappa", "test acc", "test NLL", "lambda", "tau", "runs", "wall s", "cpu s"
        );
        for s in &block {
            let _ = writeln!(
                out,
                "{:<9} {:>8} {:>7.3} ± {:<5.3} {:>9.3} {:>9} {:>9} {:>5} {:>10.1} {:>10}",
                s.method.name(),
                fmt_opt(s.kappa, false),
                s.accuracy,
                s.accuracy_sd,
                s.nll,
                fmt_opt(s.lambda, true),
                fmt_opt(s.tau, true),
                s.runs,
                s.seconds,
                fmt_opt(s.cpu_seconds, false)
            );
        }
        let grid = block.iter().find(|s| s.method == Method::MapGrid);
        let de = block.iter().find(|s| s.method == Method::DeElbo);
        if let (Some(g), Some(d)) = (grid, de) {
            let cpu = match (g.cpu_seconds, d.cpu_seconds) {
                (Some(a), Some(b)) => format!("{:.1}x", a / b),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "grid / de-elbo time: wall {:.1}x, cpu {cpu}; accuracy de-elbo - grid: {:+.3}",
                g.seconds / d.seconds,
                d.accuracy - g.accuracy
            );
        }
        out.push('\n');
    }
    out
}

/// One method's curve for one N: after each training run of the protocol (averaged over seeds),
/// the cumulative wall seconds and the test accuracy of the model the protocol would select so
/// far (grid: best validation NLL so far, the final point is the retrain on all N; ELBOs: lowest
/// final training loss so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// N.
    pub n: usize,
    /// Method.
    pub method: Method,
    /// `(cumulative seconds, test accuracy)` per run index.
    pub points: Vec<(f64, f64)>,
}

/// The curves of [`Curve`] for every (N, method) in `records`.
pub fn accuracy_time_curves(records: &[RunRecord]) -> Vec<Curve> {
    let mut groups: BTreeMap<(usize, Method), BTreeMap<u64, Vec<&RunRecord>>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.n, r.method))
            .or_default()
            .entry(r.seed)
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((n, method), seeds) in groups {
        let mut per_seed: Vec<Vec<Option<(f64, f64)>>> = Vec::new();
        for (_, mut rs) in seeds {
            rs.sort_by_key(|r| r.index);
            let mut t = 0.0;
            let mut best: Option<(f64, f64)> = None; // (criterion, accuracy)
            let mut pts = Vec::new();
            for r in rs {
                t += r.seconds;
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
        out.push(Curve { n, method, points });
    }
    out
}

/// Register the embedded DejaVu Sans as plotters' `sans-serif` (once per process).
fn register_fonts() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                dejavu::sans::regular(),
            )
            .map_err(|_| "the embedded DejaVu Sans font is invalid".to_string())?;
            plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
                .map_err(|_| "the embedded DejaVu Sans Bold font is invalid".to_string())
        })
        .clone()
}

fn color(method: Method) -> RGBColor {
    match method {
        Method::MapGrid => RGBColor(31, 119, 180),
        Method::Elbo => RGBColor(214, 39, 40),
        Method::DeElbo => RGBColor(44, 160, 44),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    curves: &[Curve],
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |err: &dyn std::fmt::Display| err.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root
        .titled(
            "Digits 5-9 fine-tuning: test accuracy vs cumulative wall time",
            ("sans-serif", 18),
        )
        .map_err(|x| e(&x))?;
    let mut sizes: Vec<usize> = curves.iter().map(|c| c.n).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let panels = root.split_evenly((1, sizes.len().max(1)));
    for (panel, &n) in panels.iter().zip(&sizes) {
        let cs: Vec<&Curve> = curves.iter().filter(|c| c.n == n).collect();
        let pts = cs.iter().flat_map(|c| c.points.iter());
        let (mut t0, mut t1, mut a0) = (f64::INFINITY, 0.0f64, 1.0f64);
        for &(t, a) in pts {
            t0 = t0.min(t);
            t1 = t1.max(t);
            a0 = a0.min(a);
        }
        if !t0.is_finite() || t1 <= 0.0 {
            continue;
        }
        let t0 = (t0 * 0.7).max(1e-3);
        let t1 = t1 * 1.5;
        let a0 = ((a0 - 0.05) * 10.0).floor() / 10.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("N = {n}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((t0..t1).log_scale(), a0.max(0.0)..1.0)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("cumulative wall time (s, log scale)")
            .y_desc("test accuracy")
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .x_label_formatter(&|x| {
                if *x >= 10.0 {
                    format!("{x:.0}")
                } else if *x >= 1.0 {
                    format!("{x:.1}")
                } else {
                    format!("{x:.2}")
                }
            })
            .draw()
            .map_err(|x| e(&x))?;
        for c in cs {
            let col = color(c.method);
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    col.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(c.method.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2))
                });
            if let Some(&last) = c.points.last() {
                chart
                    .draw_series(std::iter::once(Circle::new(last, 5, col.filled())))
                    .map_err(|x| e(&x))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

/// Draw the figure from `records` ([`accuracy_time_curves`]; one panel per N, log time axis,
/// mean over seeds) to an SVG and a PNG file.
pub fn write_figure(records: &[RunRecord], svg: &Path, png: &Path) -> Result<()> {
    let curves = accuracy_time_curves(records);
    let panels = curves
        .iter()
        .map(|c| c.n)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1) as u32;
    let size = (520 * panels.max(2), 440);
    let plot_err = |path: &Path| {
        let path = path.to_path_buf();
        move |reason: String| TransferError::Plot { path, reason }
    };
    register_fonts().map_err(plot_err(svg))?;
    draw(SVGBackend::new(svg, size).into_drawing_area(), &curves).map_err(plot_err(svg))?;
    draw(BitMapBackend::new(png, size).into_drawing_area(), &curves).map_err(plot_err(png))?;
    Ok(())
}

/// Write `transfer.json`, `table.txt`, `transfer.svg` and `transfer.png` into `dir`.
pub fn write_outputs(dir: &Path, rows: &[ResultRow], records: &[RunRecord]) -> Result<OutputFiles> {
    let files = OutputFiles {
        json: dir.join(JSON_FILE),
        table: dir.join(TABLE_FILE),
        svg: dir.join(SVG_FILE),
        png: dir.join(PNG_FILE),
    };
    write_rows_json(&files.json, rows)?;
    std::fs::write(&files.table, format_table(rows)).map_err(io("writing", &files.table))?;
    write_figure(records, &files.svg, &files.png)?;
    Ok(files)
}
