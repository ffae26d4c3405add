//! `netprobe analyze --json`: one object, serde types apart from the analysis's own.

use serde::Serialize;

use super::{
    parse::{FileRead, Log, Row},
    summary::Summary,
};
use crate::monitor::json::DropsJson;

#[derive(Debug, Serialize)]
pub struct AnalysisJson {
    pub kind: &'static str,
    pub files: Vec<FileJson>,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub intervals: u64,
    pub intervals_with_drops: u64,
    pub intervals_with_drops_percent: f64,
    /// Every loss column summed (`tcp_collapsed` is not a loss).
    pub total_drops: u64,
    /// Per column, in the CSV's order (`tcp_collapsed` included), as the monitor's `drops`.
    pub drops_by_category: DropsJson,
    pub severity: SeverityJson,
    pub total_drops_disagree: u64,
    pub by_hour: Vec<HourJson>,
    pub worst_intervals: Vec<IntervalJson>,
    pub last_intervals: Vec<IntervalJson>,
    pub malformed: MalformedJson,
}

#[derive(Debug, Serialize)]
pub struct FileJson {
    pub path: String,
    pub gzip: bool,
    pub rows: u64,
    pub malformed: u64,
}

#[derive(Debug, Serialize)]
pub struct SeverityJson {
    #[serde(rename = "OK")]
    pub ok: u64,
    #[serde(rename = "WARN")]
    pub warn: u64,
    #[serde(rename = "CRIT")]
    pub crit: u64,
}

#[derive(Debug, Serialize)]
pub struct HourJson {
    pub hour: usize,
    pub intervals: u64,
    pub intervals_with_drops: u64,
    pub drops: u64,
}

#[derive(Debug, Serialize)]
pub struct IntervalJson {
    pub timestamp: String,
    pub iteration: u64,
    pub total_drops: u64,
    pub severity: &'static str,
    /// The loss column with the most drops, `null` without drops.
    pub biggest_category: Option<&'static str>,
    pub biggest_drops: u64,
}

#[derive(Debug, Serialize)]
pub struct MalformedJson {
    pub count: u64,
    pub first: Vec<MalformedLineJson>,
}

#[derive(Debug, Serialize)]
pub struct MalformedLineJson {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl From<&Row> for IntervalJson {
    fn from(row: &Row) -> Self {
        let biggest = row.biggest();
        Self {
            timestamp: row.timestamp().to_string(),
            iteration: row.iteration,
            total_drops: row.total(),
            severity: row.severity.name(),
            biggest_category: biggest.map(|(c, _)| c.name()),
            biggest_drops: biggest.map_or(0, |(_, v)| v),
        }
    }
}

impl From<&FileRead> for FileJson {
    fn from(file: &FileRead) -> Self {
        Self {
            path: file.path.display().to_string(),
            gzip: file.gzip,
            rows: file.rows,
            malformed: file.malformed,
        }
    }
}

pub fn to_json(log: &Log, summary: &Summary) -> AnalysisJson {
    AnalysisJson {
        kind: "monitor_analysis",
        files: log.files.iter().map(FileJson::from).collect(),
        first_timestamp: summary.first_timestamp.clone(),
        last_timestamp: summary.last_timestamp.clone(),
        intervals: summary.intervals,
        intervals_with_drops: summary.with_drops,
        intervals_with_drops_percent: (summary.with_drops_percent() * 100.0).round() / 100.0,
        total_drops: summary.total_drops,
        drops_by_category: (&summary.columns).into(),
        severity: SeverityJson {
            ok: summary.ok,
            warn: summary.warn,
            crit: summary.crit,
        },
        total_drops_disagree: summary.total_disagrees,
        by_hour: summary
            .by_hour
            .iter()
            .enumerate()
            .map(|(hour, h)| HourJson {
                hour,
                intervals: h.intervals,
                intervals_with_drops: h.with_drops,
                drops: h.drops,
            })
            .collect(),
        worst_intervals: summary.worst.iter().map(IntervalJson::from).collect(),
        last_intervals: summary.last.iter().map(IntervalJson::from).collect(),
        malformed: MalformedJson {
            count: log.malformed.count,
            first: log
                .malformed
                .first
                .iter()
                .map(|m| MalformedLineJson {
                    file: m.file.display().to_string(),
                    line: m.line,
                    reason: m.reason.clone(),
                })
                .collect(),
        },
    }
}
