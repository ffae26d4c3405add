//! `--chart FILE.svg`: drops over time, stacked by loss column, with the CRIT threshold as a
//! horizontal line. Written by hand: a few hundred bytes of SVG per column need no plotting
//! library. The rows are bucketed to at most [`MAX_POINTS`]; each point is the worst interval
//! of its bucket, so that peaks stay visible and stay comparable with the per-interval
//! threshold (an average would hide a CRIT interval among quiet ones).

use std::fmt::Write as _;

use super::parse::Row;
use crate::monitor::columns::Column;

pub const MAX_POINTS: usize = 1000;
const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// One colour per loss column, in the CSV's order.
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The loss columns stacked (`tcp_collapsed` is not a loss: not drawn).
fn stacked_columns() -> impl Iterator<Item = Column> {
    Column::ALL.into_iter().filter(|c| c.is_loss())
}

/// The worst row of each of at most `max` buckets of consecutive rows.
pub fn buckets(rows: &[Row], max: usize) -> Vec<&Row> {
    let count = rows.len().min(max);
    (0..count)
        .filter_map(|b| {
            let (start, end) = (b * rows.len() / count, (b + 1) * rows.len() / count);
            // max_by_key keeps the last of equals: reversed, the first.
            rows[start..end].iter().rev().max_by_key(|r| r.total())
        })
        .collect()
}

struct Frame {
    points: usize,
    y_max: f64,
}

impl Frame {
    fn x(&self, index: usize) -> f64 {
        let span = (self.points.max(2) - 1) as f64;
        LEFT + (WIDTH - LEFT - RIGHT) * index as f64 / span
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / self.y_max
    }
}

pub fn svg(rows: &[Row], threshold: u64) -> String {
    let points = buckets(rows, MAX_POINTS);
    let peak = points.iter().map(|r| r.total()).max().unwrap_or(0);
    let frame = Frame {
        points: points.len(),
        y_max: (peak.max(threshold) as f64 * 1.1).max(1.0),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="16">Drops per interval, stacked by category ({} intervals; each point the worst of its bucket)</text>"#,
        rows.len()
    );
    areas(&mut out, &points, &frame);
    axes(&mut out, &points, &frame);
    threshold_line(&mut out, threshold, &frame);
    legend(&mut out);
    out.push_str("</svg>\n");
    out
}

/// One closed path per loss column: along the top of its band, back along the bottom.
fn areas(out: &mut String, points: &[&Row], frame: &Frame) {
    if points.is_empty() {
        return;
    }
    let mut below = vec![0u64; points.len()];
    for (column, colour) in stacked_columns().zip(COLOURS) {
        let above: Vec<u64> = points
            .iter()
            .zip(&below)
            .map(|(r, b)| b + r.drops.get(column))
            .collect();
        let mut d = String::new();
        for (i, v) in above.iter().enumerate() {
            let op = if i == 0 { 'M' } else { 'L' };
            let _ = write!(d, "{op}{:.1},{:.1} ", frame.x(i), frame.y(*v as f64));
        }
        for (i, v) in below.iter().enumerate().rev() {
            let _ = write!(d, "L{:.1},{:.1} ", frame.x(i), frame.y(*v as f64));
        }
        d.push('Z');
        let _ = writeln!(
            out,
            r#"<path class="category" data-category="{}" d="{d}" fill="{colour}" fill-opacity="0.85" stroke="none"/>"#,
            column.name()
        );
        below = above;
    }
}

fn axes(out: &mut String, points: &[&Row], frame: &Frame) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    let _ = writeln!(
        out,
        r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>
<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#
    );
    for step in 0..=4 {
        let value = frame.y_max * f64::from(step) / 4.0;
        let y = frame.y(value);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{value:.0}</text>"#,
            x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">drops per interval</text>"#,
        (y0 + y1) / 2.0
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let middle = points[points.len() / 2];
        for (index, row, anchor) in [
            (0, first, "start"),
            (points.len() / 2, &middle, "middle"),
            (points.len() - 1, last, "end"),
        ] {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                frame.x(index),
                y0 + 18.0,
                row.timestamp()
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (local, as logged)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 40.0
    );
}

fn threshold_line(out: &mut String, threshold: u64, frame: &Frame) {
    let y = frame.y(threshold as f64);
    let _ = writeln!(
        out,
        r#"<line class="threshold" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="red" stroke-width="1.5" stroke-dasharray="6,4"/>
<text x="{:.1}" y="{:.1}" fill="red">CRIT ≥ {threshold}</text>"#,
        WIDTH - RIGHT,
        WIDTH - RIGHT + 6.0,
        y + 4.0
    );
}

fn legend(out: &mut String) {
    for (i, (column, colour)) in stacked_columns().zip(COLOURS).enumerate() {
        let y = TOP + 30.0 + 20.0 * i as f64;
        let x = WIDTH - RIGHT + 70.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 10.0,
            x + 18.0,
            column.name()
        );
    }
}

#[cfg(test)]
#[path = "chart_tests.rs"]
mod tests;
