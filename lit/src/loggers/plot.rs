//! `metrics.svg`: one small chart per logged metric, value against step; and single charts (the
//! learning-rate finder's loss against learning rate).

use std::collections::BTreeMap;
use std::fmt::Write;

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 220.0;
const COLUMNS: usize = 3;
const MARGIN: f64 = 44.0;

fn label(v: f64) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.2e}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One chart: a line through `points` (x, y), with a title, the name of the x axis, and a point
/// to mark.
pub(crate) struct Chart<'a> {
    pub(crate) title: &'a str,
    /// Written before the x axis's largest value (`step 120`).
    pub(crate) x_name: &'a str,
    pub(crate) points: &'a [(f64, f64)],
    /// Whether x is drawn on a log scale (then points with x ≤ 0 are left out).
    pub(crate) log_x: bool,
    /// A point marked with a red dot.
    pub(crate) marker: Option<(f64, f64)>,
}

/// An SVG document of one chart.
pub(crate) fn chart_svg(chart: &Chart<'_>) -> String {
    let mut out = header(PANEL_W, PANEL_H);
    draw(&mut out, (0.0, 0.0), chart);
    out.push_str("</svg>\n");
    out
}

fn header(width: f64, height: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    out
}

/// An SVG document plotting every metric of `rows` (except `epoch` and `step`) against `step`.
pub(crate) fn svg(rows: &[BTreeMap<String, f64>]) -> String {
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows {
        let Some(&step) = row.get("step") else { continue };
        for (key, &value) in row {
            if key != "step" && key != "epoch" && value.is_finite() {
                series.entry(key.as_str()).or_default().push((step, value));
            }
        }
    }
    let panels = series.len().max(1);
    let rows_n = panels.div_ceil(COLUMNS);
    let mut out = header(PANEL_W * COLUMNS.min(panels) as f64, PANEL_H * rows_n as f64);
    for (i, (name, points)) in series.iter().enumerate() {
        let origin = ((i % COLUMNS) as f64 * PANEL_W, (i / COLUMNS) as f64 * PANEL_H);
        draw(&mut out, origin, &Chart { title: name, x_name: "step", points, log_x: false, marker: None });
    }
    out.push_str("</svg>\n");
    out
}

/// Draws `chart` in the panel whose top-left corner is `(ox, oy)`.
fn draw(out: &mut String, (ox, oy): (f64, f64), chart: &Chart<'_>) {
    let tx = |x: f64| if chart.log_x { x.log10() } else { x };
    let untx = |x: f64| if chart.log_x { 10f64.powf(x) } else { x };
    let points: Vec<(f64, f64)> = chart
        .points
        .iter()
        .filter(|&&(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || x > 0.0))
        .map(|&(x, y)| (tx(x), y))
        .collect();
    if points.is_empty() {
        return;
    }
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let (pw, ph) = (PANEL_W - MARGIN - 12.0, PANEL_H - MARGIN - 24.0);
    let px = |x: f64| ox + MARGIN + (x - x0) / xs * pw;
    let py = |y: f64| oy + 24.0 + ph - (y - y0) / ys * ph;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#,
        ox + MARGIN,
        oy + 16.0,
        escape(chart.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>"##,
        ox + MARGIN,
        oy + 24.0
    );
    let _ =
        writeln!(out, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, ox + MARGIN - 4.0, py(y1) + 4.0, label(y1));
    let _ = writeln!(out, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, ox + MARGIN - 4.0, py(y0), label(y0));
    let _ = writeln!(out, r#"<text x="{}" y="{}">{}</text>"#, px(x0), oy + PANEL_H - 6.0, label(untx(x0)));
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{} {}</text>"#,
        px(x1),
        oy + PANEL_H - 6.0,
        escape(chart.x_name),
        label(untx(x1))
    );
    if points.len() == 1 {
        let _ = writeln!(out, r##"<circle cx="{}" cy="{}" r="3" fill="#1f77b4"/>"##, px(points[0].0), py(points[0].1));
    } else {
        let coords: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            coords.join(" ")
        );
    }
    if let Some((x, y)) = chart.marker.filter(|&(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || x > 0.0)) {
        let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="red"/>"#, px(tx(x)), py(y));
    }
}
