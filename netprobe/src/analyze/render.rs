//! `netprobe analyze`'s text: sections of aligned tables, for people.

use std::fmt::Write as _;

use super::{
    parse::{Log, Row},
    summary::Summary,
};
use crate::monitor::columns::Column;

pub fn text(log: &Log, summary: &Summary) -> String {
    let mut out = String::new();
    overview(&mut out, log, summary);
    categories(&mut out, summary);
    intervals(&mut out, "Top 10 worst intervals", &summary.worst);
    by_hour(&mut out, summary);
    intervals(&mut out, "Last 20 intervals", &summary.last);
    malformed(&mut out, log);
    out
}

fn overview(out: &mut String, log: &Log, summary: &Summary) {
    let _ = writeln!(out, "Files");
    for file in &log.files {
        let _ = writeln!(
            out,
            "  {}{}: {} rows, {} malformed",
            file.path.display(),
            if file.gzip { " (gzip)" } else { "" },
            file.rows,
            file.malformed
        );
    }
    if let (Some(first), Some(last)) = (&summary.first_timestamp, &summary.last_timestamp) {
        let _ = writeln!(out, "Span                  {first} → {last}");
    }
    let _ = writeln!(out, "Total intervals       {}", summary.intervals);
    let _ = writeln!(
        out,
        "Intervals with drops  {} ({:.2}%)",
        summary.with_drops,
        summary.with_drops_percent()
    );
    let _ = writeln!(out, "Total drops           {}", summary.total_drops);
    let _ = writeln!(
        out,
        "Severity              OK {}  WARN {}  CRIT {}",
        summary.ok, summary.warn, summary.crit
    );
    if summary.total_disagrees > 0 {
        let _ = writeln!(
            out,
            "Note: {} rows' total_drops differ from the sum of their loss columns; the sum is used",
            summary.total_disagrees
        );
    }
}

fn categories(out: &mut String, summary: &Summary) {
    let _ = writeln!(out, "\nDrops by category");
    for column in Column::ALL {
        let value = summary.columns.get(column);
        let share = if summary.total_drops > 0 && column.is_loss() {
            format!(
                "{:>6.2}%",
                value as f64 * 100.0 / summary.total_drops as f64
            )
        } else {
            String::new()
        };
        let note = if column.is_loss() {
            ""
        } else {
            "  (merged to save memory, not lost; not in the total)"
        };
        let _ = writeln!(out, "  {:<14} {value:>14} {share:>7}{note}", column.name());
    }
}

fn intervals(out: &mut String, title: &str, rows: &[Row]) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<19} {:>10} {:>12} {:<8} biggest category",
        "timestamp", "iteration", "drops", "severity"
    );
    for row in rows {
        let biggest = row
            .biggest()
            .map_or(String::from("-"), |(c, v)| format!("{} {v}", c.name()));
        let _ = writeln!(
            out,
            "  {:<19} {:>10} {:>12} {:<8} {biggest}",
            row.timestamp(),
            row.iteration,
            row.total(),
            row.severity.name()
        );
    }
}

fn by_hour(out: &mut String, summary: &Summary) {
    let _ = writeln!(out, "\nDrops by hour of day (local time of the log)");
    let _ = writeln!(
        out,
        "  {:<5} {:>10} {:>12} {:>14}",
        "hour", "intervals", "with drops", "drops"
    );
    for (hour, h) in summary.by_hour.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {hour:02}    {:>10} {:>12} {:>14}",
            h.intervals, h.with_drops, h.drops
        );
    }
}

fn malformed(out: &mut String, log: &Log) {
    let m = &log.malformed;
    let _ = writeln!(out, "\nMalformed lines skipped: {}", m.count);
    for line in &m.first {
        let _ = writeln!(
            out,
            "  {}:{}: {}",
            line.file.display(),
            line.line,
            line.reason
        );
    }
    if m.count > m.first.len() as u64 {
        let _ = writeln!(out, "  … and {} more", m.count - m.first.len() as u64);
    }
}
