//! `netprobe analyze LOGFILE…`: the offline analysis of `netprobe monitor`'s CSV logs
//! (rotated, gzip-compressed or not): how many intervals had drops, which categories, the
//! worst intervals, when in the day, the last intervals; text, JSON, or a chart (SVG or PNG).
//! Userspace only, no privilege needed.

pub mod chart;
pub mod json;
pub mod parse;
pub mod raster;
pub mod render;
pub mod summary;
#[cfg(test)]
mod test_log;

use std::{
    io,
    path::{Path, PathBuf},
};

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
    #[error("chart {path}: give a .svg or a .png file name (the format follows it)", path = path.display())]
    ChartFormat { path: PathBuf },
    #[error("chart {path}: {error}", path = path.display())]
    ChartRender {
        path: PathBuf,
        error: raster::RasterError,
    },
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
    let format = options.chart.as_deref().map(ChartFormat::of).transpose()?;
    let log = read_logs(&options.files)?;
    let summary = summarize(&log.rows);
    if let (Some(path), Some(format)) = (&options.chart, format) {
        write_chart(path, format, &log, options.threshold)?;
    }
    Ok(if options.json {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(&json::to_json(&log, &summary)).unwrap_or_default() + "\n"
    } else {
        render::text(&log, &summary)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChartFormat {
    Svg,
    Png,
}

impl ChartFormat {
    fn of(path: &Path) -> Result<ChartFormat, AnalyzeError> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extension.eq_ignore_ascii_case("svg") {
            Ok(ChartFormat::Svg)
        } else if extension.eq_ignore_ascii_case("png") {
            Ok(ChartFormat::Png)
        } else {
            Err(AnalyzeError::ChartFormat {
                path: path.to_path_buf(),
            })
        }
    }
}

/// One drawing (chart.rs's SVG), rasterised for a PNG.
fn write_chart(
    path: &Path,
    format: ChartFormat,
    log: &Log,
    threshold: u64,
) -> Result<(), AnalyzeError> {
    let svg = chart::svg(&log.rows, threshold);
    let bytes = match format {
        ChartFormat::Svg => svg.into_bytes(),
        ChartFormat::Png => {
            let png = raster::png(&svg).map_err(|error| AnalyzeError::ChartRender {
                path: path.to_path_buf(),
                error,
            })?;
            if png.font.is_none() {
                eprintln!(
                    "netprobe: chart {}: no font on this system: drawn without its labels (install one, e.g. fonts-dejavu-core, or use .svg)",
                    path.display()
                );
            }
            png.bytes
        }
    };
    std::fs::write(path, bytes).map_err(|error| AnalyzeError::ChartWrite {
        path: path.to_path_buf(),
        error,
    })
}
