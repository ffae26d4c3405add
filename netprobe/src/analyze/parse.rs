//! Reading `netprobe monitor`'s CSV logs: one or more files in the order given (rotated logs
//! oldest first), each plain or gzip-compressed (told by its magic bytes, not its name). The
//! header must be the monitor's 16 columns, the columns netprobe adds after `severity` are
//! allowed and ignored. A row that does not parse is skipped and counted with its file and
//! line, never fatal: a log torn by a crash or a full disk still gets analysed.

use std::{
    borrow::Cow,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;

use super::AnalyzeError;
use crate::monitor::{
    columns::{Column, Drops, Severity},
    csv_log::SCRIPT_HEADER,
};

/// The fields of the monitor's header (the script's 16 columns).
const FIXED_FIELDS: usize = 16;
/// Where the drop columns start: after timestamp, iteration, interface, total_drops.
const FIRST_DROP_FIELD: usize = 4;
const SEVERITY_FIELD: usize = FIXED_FIELDS - 1;
/// How many malformed lines are listed; the rest are only counted.
pub const MALFORMED_LISTED: usize = 20;
/// `%Y-%m-%d %H:%M:%S`, as the monitor writes it.
const TIMESTAMP_LEN: usize = 19;

/// One interval of the log: what the report and the chart need, no allocation per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `%Y-%m-%d %H:%M:%S`, local time, checked when read.
    timestamp: [u8; TIMESTAMP_LEN],
    pub iteration: u64,
    pub drops: Drops,
    pub severity: Severity,
    /// The row's own `total_drops` disagreed with the sum of its loss columns.
    pub total_disagrees: bool,
}

impl Row {
    pub fn timestamp(&self) -> &str {
        // Checked to be ASCII digits and separators when read.
        std::str::from_utf8(&self.timestamp).unwrap_or("")
    }

    /// The hour of day of the timestamp (local time, as written).
    pub fn hour(&self) -> usize {
        usize::from(self.timestamp[11] - b'0') * 10 + usize::from(self.timestamp[12] - b'0')
    }

    /// Drops as the monitor defines them: every loss column, not `tcp_collapsed`.
    pub fn total(&self) -> u64 {
        self.drops.total()
    }

    /// The loss column with the most drops (the first in CSV order on a tie), if any.
    pub fn biggest(&self) -> Option<(Column, u64)> {
        self.drops
            .non_zero()
            .filter(|(c, _)| c.is_loss())
            .fold(None, |best, (c, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((c, v)),
            })
    }
}

/// A line skipped: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

/// The lines skipped over all files: the first [`MALFORMED_LISTED`] and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Malformed {
    pub count: u64,
    pub first: Vec<MalformedLine>,
}

impl Malformed {
    fn record(&mut self, file: &Path, line: u64, reason: String) {
        self.count += 1;
        if self.first.len() < MALFORMED_LISTED {
            self.first.push(MalformedLine {
                file: file.to_path_buf(),
                line,
                reason,
            });
        }
    }
}

/// One file read: how many rows it gave and whether it was compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub path: PathBuf,
    pub gzip: bool,
    pub rows: u64,
    pub malformed: u64,
}

/// Every file's rows, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub rows: Vec<Row>,
    pub files: Vec<FileRead>,
    pub malformed: Malformed,
}

/// Reads `paths` in order. A missing or unreadable file, a broken gzip stream or another
/// header is an error; a malformed row is not.
pub fn read_logs(paths: &[PathBuf]) -> Result<Log, AnalyzeError> {
    let mut log = Log::default();
    for path in paths {
        let file = File::open(path).map_err(|error| AnalyzeError::Open {
            path: path.clone(),
            error,
        })?;
        let (reader, gzip) = decompressed(file).map_err(|error| AnalyzeError::Read {
            path: path.clone(),
            error,
        })?;
        read_one(reader, path, gzip, &mut log)?;
    }
    Ok(log)
}

/// The file's text: gunzipped when it starts with gzip's magic bytes.
fn decompressed(file: File) -> io::Result<(Box<dyn BufRead>, bool)> {
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        // Multi-member: `cat a.gz b.gz` is a valid gzip file too.
        Ok((
            Box::new(BufReader::with_capacity(
                256 << 10,
                MultiGzDecoder::new(reader),
            )),
            true,
        ))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Reads one file's text (already decompressed) into `log`, a line at a time: the monitor
/// writes one row per line (its `notes` hold no newline), so a torn row, even one cut inside
/// a quoted field, costs that line only instead of swallowing the rows after it.
pub fn read_one(
    mut reader: impl BufRead,
    path: &Path,
    gzip: bool,
    log: &mut Log,
) -> Result<(), AnalyzeError> {
    let (rows_before, malformed_before) = (log.rows.len(), log.malformed.count);
    let mut buffer = Vec::with_capacity(256);
    let mut line_number = 0u64;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|error| AnalyzeError::Read {
                path: path.to_path_buf(),
                error,
            })?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let line = trim_line_end(&buffer);
        let fields = split_fields(line);
        // An empty file (logrotate's `create` before the first row) has no header yet.
        if line_number == 1 {
            check_header(&fields, path)?;
            continue;
        }
        match parse_row(&fields) {
            Ok(row) => log.rows.push(row),
            Err(reason) => log.malformed.record(path, line_number, reason),
        }
    }
    log.files.push(FileRead {
        path: path.to_path_buf(),
        gzip,
        rows: (log.rows.len() - rows_before) as u64,
        malformed: log.malformed.count - malformed_before,
    });
    Ok(())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The fields of one CSV line. The monitor quotes a field only when it holds a comma or a
/// quote (`notes`): such lines go through the `csv` crate, the others are split on commas
/// directly, which is what keeps half a million rows well under a second.
fn split_fields(line: &[u8]) -> Vec<Cow<'_, [u8]>> {
    if !line.contains(&b'"') {
        return line.split(|b| *b == b',').map(Cow::Borrowed).collect();
    }
    let mut record = csv::ByteRecord::new();
    let parsed = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line)
        .read_byte_record(&mut record);
    match parsed {
        Ok(true) => record.iter().map(|f| Cow::Owned(f.to_vec())).collect(),
        // An unterminated quote (a torn row) and the like: not a row.
        _ => Vec::new(),
    }
}

fn check_header(fields: &[Cow<'_, [u8]>], path: &Path) -> Result<(), AnalyzeError> {
    let expected = SCRIPT_HEADER.split(',');
    let matches = fields.len() >= FIXED_FIELDS
        && fields
            .iter()
            .zip(expected)
            .all(|(found, want)| found.as_ref() == want.as_bytes());
    if matches {
        return Ok(());
    }
    let found: Vec<_> = fields.iter().map(|f| String::from_utf8_lossy(f)).collect();
    Err(AnalyzeError::Header {
        path: path.to_path_buf(),
        found: found.join(",").chars().take(200).collect(),
    })
}

/// One data row, or why it is not one.
fn parse_row(record: &[Cow<'_, [u8]>]) -> Result<Row, String> {
    if record.len() < FIXED_FIELDS {
        return Err(format!(
            "{} fields, the monitor's rows have at least {FIXED_FIELDS}",
            record.len()
        ));
    }
    let timestamp = parse_timestamp(&record[0])?;
    let number = |index: usize| {
        parse_u64(&record[index]).ok_or_else(|| {
            let name = SCRIPT_HEADER.split(',').nth(index).unwrap_or("?");
            format!(
                "{name}: {:?} is not a count",
                String::from_utf8_lossy(&record[index])
            )
        })
    };
    let iteration = number(1)?;
    let written_total = number(3)?;
    let mut drops = Drops::default();
    for column in Column::ALL {
        drops.add(column, number(FIRST_DROP_FIELD + column.index())?);
    }
    let severity = match record[SEVERITY_FIELD].as_ref() {
        b"OK" => Severity::Ok,
        b"WARN" => Severity::Warn,
        b"CRIT" => Severity::Crit,
        other => {
            return Err(format!(
                "severity: {:?} is not OK, WARN or CRIT",
                String::from_utf8_lossy(other)
            ))
        }
    };
    Ok(Row {
        timestamp,
        iteration,
        total_disagrees: written_total != drops.total(),
        drops,
        severity,
    })
}

/// `YYYY-MM-DD HH:MM:SS` with an hour below 24.
fn parse_timestamp(field: &[u8]) -> Result<[u8; TIMESTAMP_LEN], String> {
    let shape_ok = field.len() == TIMESTAMP_LEN
        && field.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b' ',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        })
        && (field[11] - b'0') * 10 + (field[12] - b'0') < 24;
    if !shape_ok {
        return Err(format!(
            "timestamp: {:?} is not YYYY-MM-DD HH:MM:SS",
            String::from_utf8_lossy(field)
        ));
    }
    let mut timestamp = [0; TIMESTAMP_LEN];
    timestamp.copy_from_slice(field);
    Ok(timestamp)
}

/// A decimal count; faster than going through `str` for half a million rows.
fn parse_u64(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |n, b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
