//! The analysis of a log's rows: counts, totals per column, the worst intervals, drops by hour
//! of day, the last intervals, severities. One pass over the rows, bounded memory beside them.

use super::parse::Row;
use crate::monitor::columns::{Drops, Severity};

/// How many of the worst intervals are kept.
pub const WORST: usize = 10;
/// How many of the last intervals are kept.
pub const LAST: usize = 20;

/// Intervals and their drops in one hour of the day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourTotals {
    pub intervals: u64,
    pub with_drops: u64,
    pub drops: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub intervals: u64,
    pub with_drops: u64,
    /// Drops as the monitor defines `total_drops` (every loss column, not `tcp_collapsed`).
    pub total_drops: u64,
    /// Per column, `tcp_collapsed` included (shown apart: not a loss).
    pub columns: Drops,
    pub ok: u64,
    pub warn: u64,
    pub crit: u64,
    /// Rows whose written `total_drops` was not the sum of their loss columns (a log written
    /// by another tool, or edited).
    pub total_disagrees: u64,
    /// Hour of day (local time, from the timestamp text) 0–23.
    pub by_hour: [HourTotals; 24],
    /// The most drops first; among equals, the earlier interval first.
    pub worst: Vec<Row>,
    /// In log order, the last one last.
    pub last: Vec<Row>,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
}

impl Summary {
    /// Percentage of intervals with at least one drop (0 with no interval).
    pub fn with_drops_percent(&self) -> f64 {
        if self.intervals == 0 {
            0.0
        } else {
            self.with_drops as f64 * 100.0 / self.intervals as f64
        }
    }
}

pub fn summarize(rows: &[Row]) -> Summary {
    let mut summary = Summary::default();
    // Indices of the worst rows so far, the most drops first.
    let mut worst: Vec<usize> = Vec::with_capacity(WORST + 1);
    for (index, row) in rows.iter().enumerate() {
        let total = row.total();
        summary.intervals += 1;
        summary.total_drops = summary.total_drops.saturating_add(total);
        for (column, value) in row.drops.non_zero() {
            summary.columns.add(column, value);
        }
        match row.severity {
            Severity::Ok => summary.ok += 1,
            Severity::Warn => summary.warn += 1,
            Severity::Crit => summary.crit += 1,
        }
        summary.total_disagrees += u64::from(row.total_disagrees);
        let hour = &mut summary.by_hour[row.hour()];
        hour.intervals += 1;
        hour.drops = hour.drops.saturating_add(total);
        if total > 0 {
            summary.with_drops += 1;
            hour.with_drops += 1;
            keep_if_worst(&mut worst, rows, index, total);
        }
    }
    summary.worst = worst.into_iter().map(|i| rows[i].clone()).collect();
    summary.last = rows[rows.len().saturating_sub(LAST)..].to_vec();
    summary.first_timestamp = rows.first().map(|r| r.timestamp().to_string());
    summary.last_timestamp = rows.last().map(|r| r.timestamp().to_string());
    summary
}

/// Inserts `index` into `worst` (sorted by drops, descending, stable) when it ranks in the
/// first [`WORST`]. Most rows are beaten by the last kept one and cost one comparison.
fn keep_if_worst(worst: &mut Vec<usize>, rows: &[Row], index: usize, total: u64) {
    if worst.len() == WORST && rows[worst[WORST - 1]].total() >= total {
        return;
    }
    let at = worst.partition_point(|i| rows[*i].total() >= total);
    worst.insert(at, index);
    worst.truncate(WORST);
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
