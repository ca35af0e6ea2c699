//! The simulator's Markdown table and hand-written SVG plot.

use std::fmt::Write as _;

use super::{Algo, RunResult, Scenario};

/// One Markdown row per controller × scenario.
#[must_use]
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | controller | goodput % | p99 / minRTT | to ideal (windows) | recovery (windows) | stuck at min | spread % | creep | limit / ideal |\n",
    );
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for r in results {
        let to_ideal = r.to_ideal.map_or("never".to_owned(), |w| w.to_string());
        let recovery = match (r.has_recovery, r.recovery) {
            (false, _) => "-".to_owned(),
            (true, None) => "never".to_owned(),
            (true, Some(w)) => w.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.2} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            r.scenario,
            r.algo.name(),
            r.goodput_pct,
            r.p99_ratio,
            to_ideal,
            recovery,
            if r.stuck_at_min { "yes" } else { "no" },
            100.0 * r.spread,
            r.creep,
            r.limit_over_ideal,
        );
    }
    out
}

const COLOURS: [&str; 7] = [
    "#d62728", "#ff9896", "#f7b6d2", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
];

fn colour(algo: Algo) -> &'static str {
    let i = Algo::ALL.iter().position(|&a| a == algo).unwrap_or(0);
    COLOURS.get(i).copied().unwrap_or("black")
}

/// Limit and mean latency over time, one row of two panels per scenario.
#[must_use]
pub fn svg(results: &[RunResult], algos: &[Algo]) -> String {
    let scenarios = Scenario::all();
    let (pw, ph) = (520.0, 150.0);
    let row_h = ph + 60.0;
    let w = 2.0 * pw + 160.0;
    let h = 60.0 + row_h * scenarios.len() as f64 + 40.0;
    let mut out = String::new();
    crate::cli::svg_start(
        &mut out,
        (w, h),
        11,
        22.0,
        "adaptive-sim: concurrency limit and mean latency per 100 ms window (50 servers, 10 ms service)",
    );
    for (row, scenario) in scenarios.iter().enumerate() {
        let top = 60.0 + row as f64 * row_h;
        let rows: Vec<&RunResult> = algos
            .iter()
            .filter_map(|&a| {
                results
                    .iter()
                    .find(|r| r.algo == a && r.scenario == scenario.name)
            })
            .collect();
        let ideal_max = rows
            .iter()
            .flat_map(|r| r.windows.iter().map(|w| w.ideal))
            .fold(1.0, f64::max);
        // The limit panel is scaled to 3x the ideal so a runaway controller does not flatten
        // the others; values above are drawn at the top edge.
        let limit_cap = 3.0 * ideal_max;
        panel(
            &mut out,
            &rows,
            60.0,
            top,
            (pw, ph),
            &format!("{}: limit (ideal dashed)", scenario.name),
            limit_cap,
            |w| Some(f64::from(w.limit)),
            Some(|w: &super::WindowStats| w.ideal),
        );
        panel(
            &mut out,
            &rows,
            120.0 + pw,
            top,
            (pw, ph),
            &format!("{}: mean latency (ms)", scenario.name),
            50.0,
            |w| w.mean_latency_ms,
            None,
        );
    }
    for (i, &algo) in algos.iter().enumerate() {
        let x = 60.0 + i as f64 * 150.0;
        let y = h - 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{y}">{}</text>"#,
            y - 4.0,
            x + 20.0,
            y - 4.0,
            colour(algo),
            x + 24.0,
            algo.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    rows: &[&RunResult],
    x0: f64,
    top: f64,
    (pw, ph): (f64, f64),
    title: &str,
    y_max: f64,
    value: fn(&super::WindowStats) -> Option<f64>,
    reference: Option<fn(&super::WindowStats) -> f64>,
) {
    let n = rows
        .iter()
        .map(|r| r.windows.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{x0}" y="{}">{title}</text>"##,
        top - 6.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{y_max:.0}</text><text x="{}" y="{}" text-anchor="end">0</text><text x="{}" y="{}" text-anchor="end">{n} windows</text>"#,
        x0 - 4.0,
        top + 10.0,
        x0 - 4.0,
        top + ph,
        x0 + pw,
        top + ph + 14.0
    );
    let point = |i: usize, v: f64| {
        let x = x0 + pw * i as f64 / n;
        let y = top + ph - ph * (v / y_max).clamp(0.0, 1.0);
        format!("{x:.1},{y:.1} ")
    };
    if let (Some(reference), Some(first)) = (reference, rows.first()) {
        let mut pts = String::new();
        for (i, w) in first.windows.iter().enumerate() {
            pts.push_str(&point(i, reference(w)));
        }
        let _ = writeln!(
            out,
            r##"<polyline points="{pts}" fill="none" stroke="#444" stroke-dasharray="4 3"/>"##
        );
    }
    for r in rows {
        let mut pts = String::new();
        for (i, w) in r.windows.iter().enumerate() {
            if let Some(v) = value(w) {
                pts.push_str(&point(i, v));
            }
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            colour(r.algo)
        );
    }
}
