//! `netprobe analyze LOGFILE…`: the offline analysis of `netprobe monitor`'s CSV logs
//! (rotated, gzip-compressed or not): how many intervals had drops, which categories, the
//! worst intervals, when in the day, the last intervals; text, JSON, or an SVG chart.
//! Userspace only, no privilege needed.

pub mod chart;
pub mod json;
pub mod parse;
pub mod render;
pub mod summary;
#[cfg(test)]
mod test_log;

use std::{io, path::PathBuf};

pub use parse::{read_logs, Log};
pub use summary::{summarize, Summary};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{path}: {error}", path = path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("{path}: reading: {error}", path = path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{path}: another header ({found:?}), not netprobe monitor's CSV log", path = path.display())]
    Header { path: PathBuf, found: String },
    #[error("chart {path}: {error}", path = path.display())]
    ChartWrite { path: PathBuf, error: io::Error },
    #[error("chart {path}: only .svg charts are drawn (PNG is not in this version: convert the SVG, e.g. `rsvg-convert -o out.png chart.svg`)", path = path.display())]
    ChartFormat { path: PathBuf },
}

pub struct AnalyzeOptions {
    pub files: Vec<PathBuf>,
    pub json: bool,
    pub chart: Option<PathBuf>,
    /// Drops per interval from which the monitor calls it CRIT: the chart's line.
    pub threshold: u64,
}

/// Reads the logs, writes the chart if asked, and returns the text (or JSON) to print.
pub fn run(options: &AnalyzeOptions) -> Result<String, AnalyzeError> {
    // Refused before reading half a million rows for nothing.
    if let Some(path) = &options.chart {
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if !svg {
            return Err(AnalyzeError::ChartFormat { path: path.clone() });
        }
    }
    let log = read_logs(&options.files)?;
    let summary = summarize(&log.rows);
    if let Some(path) = &options.chart {
        std::fs::write(path, chart::svg(&log.rows, options.threshold)).map_err(|error| {
            AnalyzeError::ChartWrite {
                path: path.clone(),
                error,
            }
        })?;
    }
    Ok(if options.json {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(&json::to_json(&log, &summary)).unwrap_or_default() + "\n"
    } else {
        render::text(&log, &summary)
    })
}
