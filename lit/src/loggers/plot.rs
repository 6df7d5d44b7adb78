//! `metrics.svg`: one small chart per logged metric, value against step.

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
    let (width, height) = (PANEL_W * COLUMNS.min(panels) as f64, PANEL_H * rows_n as f64);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (name, points)) in series.iter().enumerate() {
        let (ox, oy) = ((i % COLUMNS) as f64 * PANEL_W, (i / COLUMNS) as f64 * PANEL_H);
        let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
        let (pw, ph) = (PANEL_W - MARGIN - 12.0, PANEL_H - MARGIN - 24.0);
        let px = |x: f64| ox + MARGIN + (x - x0) / xs * pw;
        let py = |y: f64| oy + 24.0 + ph - (y - y0) / ys * ph;
        let _ =
            writeln!(out, r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#, ox + MARGIN, oy + 16.0, escape(name));
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>"##,
            ox + MARGIN,
            oy + 24.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            ox + MARGIN - 4.0,
            py(y1) + 4.0,
            label(y1)
        );
        let _ =
            writeln!(out, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, ox + MARGIN - 4.0, py(y0), label(y0));
        let _ = writeln!(out, r#"<text x="{}" y="{}">{}</text>"#, px(x0), oy + PANEL_H - 6.0, label(x0));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">step {}</text>"#,
            px(x1),
            oy + PANEL_H - 6.0,
            label(x1)
        );
        if points.len() == 1 {
            let _ =
                writeln!(out, r##"<circle cx="{}" cy="{}" r="3" fill="#1f77b4"/>"##, px(points[0].0), py(points[0].1));
        } else {
            let coords: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
                coords.join(" ")
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
