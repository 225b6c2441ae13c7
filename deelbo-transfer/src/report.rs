//! The experiment's outputs: the per-(architecture, N) table, `transfer.json`, and the figure of
//! test accuracy against cumulative wall time per method (SVG and PNG, text drawn with the
//! embedded DejaVu Sans font; no system fonts). Rows and summaries come from
//! [`crate::results`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::checkpoint::{RunRecord, Stage};
use crate::config::Method;
use crate::error::{Result, TransferError};
use crate::models::Architecture;
use crate::results::{JSON_FILE, ResultRow, Summary, summarize, write_rows_json};

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

fn fmt_opt(v: Option<f64>, sci: bool) -> String {
    match v {
        Some(x) if sci => format!("{x:.2e}"),
        Some(x) => format!("{x:.1}"),
        None => "-".to_string(),
    }
}

/// The table: one block per (architecture, N) with, per method, kappa, test accuracy (mean ±
/// sd over seeds) and NLL of the posterior mean, accuracy and NLL of the S-sample predictive,
/// learned lambda, tau, sigma and the backbone's `M_b/D_b`, runs per protocol and mean wall and
/// CPU seconds per protocol, then the ratios of the grid search's times to the DE-ELBO's.
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
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>4} {:>8} {:>8}",
            "method",
            "kappa",
            "test acc",
            "NLL",
            "pred acc",
            "pred NLL",
            "lambda",
            "M_bb/D",
            "tau",
            "sigma",
            "runs",
            "wall s",
            "cpu s"
        );
        for s in &block {
            let _ = writeln!(
                out,
                "{:<12} {:>7} {:>6.3} ± {:<5.3} {:>7.3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>4} {:>8.1} {:>8}",
                s.method.name(),
                fmt_opt(s.kappa, false),
                s.accuracy,
                s.accuracy_sd,
                s.nll,
                fmt_fixed(s.predictive_accuracy),
                fmt_fixed(s.predictive_nll),
                fmt_opt(s.lambda, true),
                fmt_opt(s.backbone_distance, true),
                fmt_opt(s.tau, true),
                fmt_opt(s.sigma, true),
                s.runs,
                s.seconds,
                fmt_opt(s.cpu_seconds, false)
            );
        }
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
/// the cumulative wall seconds and the test accuracy of the model the protocol would select so
/// far (grid: best validation NLL so far, the final point is the retrain on all N; ELBOs: lowest
/// final training loss so far).
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
        out.push(Curve {
            arch,
            n,
            method,
            points,
        });
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
        Method::DeElboPtyl => RGBColor(148, 103, 189),
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
    let mut archs: Vec<Architecture> = curves.iter().map(|c| c.arch).collect();
    archs.sort_unstable();
    archs.dedup();
    let cells: Vec<(Architecture, usize)> = archs
        .iter()
        .flat_map(|&a| sizes.iter().map(move |&n| (a, n)))
        .collect();
    let panels = root.split_evenly((archs.len().max(1), sizes.len().max(1)));
    for (panel, &(arch, n)) in panels.iter().zip(&cells) {
        let cs: Vec<&Curve> = curves
            .iter()
            .filter(|c| c.n == n && c.arch == arch)
            .collect();
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
            .caption(format!("{arch}, N = {n}"), ("sans-serif", 18))
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

/// Draw the figure from `records` ([`accuracy_time_curves`]; one panel per (architecture, N),
/// log time axis, mean over seeds) to an SVG and a PNG file.
pub fn write_figure(records: &[RunRecord], svg: &Path, png: &Path) -> Result<()> {
    let curves = accuracy_time_curves(records);
    let count = |f: &dyn Fn(&Curve) -> String| {
        curves
            .iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            .max(1) as u32
    };
    let cols = count(&|c| c.n.to_string());
    let rows = count(&|c| c.arch.name().to_string());
    let size = (520 * cols.max(2), 30 + 420 * rows);
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
