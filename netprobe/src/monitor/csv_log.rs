//! The CSV log: the script's 16 columns first, netprobe's own after `severity` (so that
//! `$16=="CRIT"` keeps working). An existing log with the same header is continued, its
//! iteration numbers too; any other header is refused. SIGHUP reopens the path (logrotate
//! without copytruncate). A write that fails is reported at most once a minute (health.rs),
//! and the monitoring goes on; a row is in the file whole or not at all.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use super::{columns::Column, interval::Interval};
use health::Health;

mod health;

/// The script's header, column for column.
pub const SCRIPT_HEADER: &str = "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity";
/// What netprobe adds after `severity`: the measured interval, the eBPF side's headline
/// (empty without it: counters only), and what made the interval unusual.
pub const NETPROBE_COLUMNS: &str = "interval_s,retrans_segs,top_drop_reason,top_drop_cpu,notes";
/// The columns netprobe added before the eBPF headline: such a log is continued as it is.
const NETPROBE_V1_COLUMNS: &str = "interval_s,notes";

/// Which header a log has: netprobe writes its own to a new log, and continues one the
/// script started in the script's 16 columns, or an earlier netprobe in its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Script,
    NetprobeV1,
    Netprobe,
}

impl Layout {
    pub fn header(self) -> String {
        match self {
            Layout::Script => SCRIPT_HEADER.to_string(),
            Layout::NetprobeV1 => format!("{SCRIPT_HEADER},{NETPROBE_V1_COLUMNS}"),
            Layout::Netprobe => format!("{SCRIPT_HEADER},{NETPROBE_COLUMNS}"),
        }
    }

    fn of(header: &str) -> Option<Layout> {
        [Layout::Netprobe, Layout::NetprobeV1, Layout::Script]
            .into_iter()
            .find(|l| l.header() == header.trim_end_matches(['\r', '\n']))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("log {path}: another header ({found:?}), not the monitor's: give another log file or move this one away")]
    Header { path: PathBuf, found: String },
}

/// One row of `interval` in `layout`, newline included.
pub fn row(interval: &Interval, layout: Layout) -> String {
    let mut fields = vec![
        interval.timestamp.clone(),
        interval.iteration.to_string(),
        interval.interface.clone(),
        interval.drops.total().to_string(),
    ];
    fields.extend(
        Column::ALL
            .iter()
            .map(|c| interval.drops.get(*c).to_string()),
    );
    fields.push(interval.severity.name().to_string());
    if layout != Layout::Script {
        fields.push(format!("{:.3}", interval.seconds));
    }
    if layout == Layout::Netprobe {
        let kernel = interval.kernel.as_ref();
        fields.push(kernel.map_or(String::new(), |k| k.retrans_segs.to_string()));
        let top_reason = kernel.and_then(|k| k.top_drop_reason());
        fields.push(top_reason.map_or(String::new(), |(reason, _)| reason.to_string()));
        let top_cpu = kernel.and_then(|k| k.top_drop_cpu());
        fields.push(top_cpu.map_or(String::new(), |(cpu, _)| cpu.to_string()));
    }
    if layout != Layout::Script {
        fields.push(interval.notes.join("; "));
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing strings into memory cannot fail.
    let _ = writer.write_record(&fields);
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The last iteration number of a log's tail: the last row that parses (a torn last line,
/// from a crash or a full disk, is passed over).
pub fn last_iteration(tail: &[u8]) -> Option<u64> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(tail)
        .records()
        .flatten()
        .filter(|r| r.len() >= 16 && matches!(&r[15], "OK" | "WARN" | "CRIT"))
        .filter_map(|r| r[1].parse().ok())
        .last()
}

pub struct CsvLog {
    path: PathBuf,
    layout: Layout,
    file: Option<File>,
    /// The file does not end with a newline (a crash tore its last row): the next row starts
    /// on a new line. Read from the file each time it is opened.
    torn: bool,
    health: Health,
}

impl LogError {
    /// What went wrong, without the path (a log's lines name it once, first).
    fn cause(&self) -> String {
        match self {
            LogError::Io { error, .. } => error.to_string(),
            LogError::Header { found, .. } => {
                format!("another header ({found:?}), not the monitor's")
            }
        }
    }
}

/// An opened log: its file, layout and last iteration, and whether it ends mid-line.
struct Opened {
    file: File,
    layout: Layout,
    last: u64,
    torn: bool,
}

/// Opens `path` for appending: a new or empty file gets netprobe's header; an existing one
/// must have netprobe's or the script's.
fn open_checked(path: &Path, layout: Option<Layout>) -> Result<Opened, LogError> {
    let io = |error| LogError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let mut header = String::new();
    BufReader::new((&file).take(4096))
        .read_line(&mut header)
        .map_err(io)?;
    if header.is_empty() || is_torn_header(&header) {
        let layout = layout.unwrap_or(Layout::Netprobe);
        write_header(&mut file, layout).map_err(io)?;
        return Ok(Opened {
            file,
            layout,
            last: 0,
            torn: false,
        });
    }
    let found = Layout::of(&header).filter(|l| layout.is_none_or(|want| want == *l));
    let Some(found) = found else {
        return Err(LogError::Header {
            path: path.to_path_buf(),
            found: header.trim_end().chars().take(200).collect(),
        });
    };
    let end = file.seek(SeekFrom::End(0)).map_err(io)?;
    file.seek(SeekFrom::Start(end.saturating_sub(64 << 10)))
        .map_err(io)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io)?;
    Ok(Opened {
        file,
        layout: found,
        last: last_iteration(&tail).unwrap_or(0),
        torn: tail.last().is_some_and(|b| *b != b'\n'),
    })
}

/// A file that holds only the start of a header (or the header without its newline): a
/// header write that a full disk cut short, written again whole.
fn is_torn_header(first_line: &str) -> bool {
    !first_line.ends_with('\n')
        && [Layout::Netprobe, Layout::Script]
            .iter()
            .any(|l| l.header().starts_with(first_line))
}

/// The header, whole or not at all: a write cut short is taken back so that the next try
/// (the next row) starts from an empty file rather than refusing a broken header for good.
fn write_header(file: &mut File, layout: Layout) -> io::Result<()> {
    file.set_len(0)?;
    let result = file.write_all(format!("{}\n", layout.header()).as_bytes());
    if result.is_err() {
        let _ = file.set_len(0);
    }
    result
}

impl CsvLog {
    /// Opens the log at start: any failure here is the command's error. Returns the log and
    /// the iteration its next row continues from.
    pub fn open(path: &Path) -> Result<(Self, u64), LogError> {
        let opened = open_checked(path, None)?;
        let log = Self {
            path: path.to_path_buf(),
            layout: opened.layout,
            file: Some(opened.file),
            torn: opened.torn,
            health: Health::default(),
        };
        Ok((log, opened.last))
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The last row (or reopening) failed and no row was written since.
    pub fn failing(&self) -> bool {
        self.health.failing()
    }

    /// SIGHUP: close the file and open the path anew (logrotate moved the old one away).
    pub fn reopen(&mut self) {
        self.file = None;
        if let Err(e) = self.ensure_open() {
            let line = self.health.failed(Instant::now(), None, &e.cause());
            self.say(line);
        }
    }

    fn ensure_open(&mut self) -> Result<&mut File, LogError> {
        if self.file.is_none() {
            let opened = open_checked(&self.path, Some(self.layout))?;
            self.torn = opened.torn;
            self.file = Some(opened.file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Appends the interval's row; a failure is reported (once a minute) and not fatal.
    pub fn write(&mut self, interval: &Interval) {
        let text = row(interval, self.layout);
        let now = Instant::now();
        let line = match self.append(text.as_bytes()) {
            Ok(()) => self.health.written(now, interval.iteration),
            Err(cause) => {
                // The handle may point at a file that is gone or broken: the path is opened
                // again at the next row.
                self.file = None;
                self.health.failed(now, Some(interval.iteration), &cause)
            }
        };
        self.say(line);
    }

    /// Appends `row` whole or not at all: a write cut short (a full disk) is truncated away,
    /// so that no torn row stays in the file for the next one to run into. Should that fail
    /// too, the file is opened again at the next row and, ending mid-line, gets a newline
    /// first.
    fn append(&mut self, row: &[u8]) -> Result<(), String> {
        self.ensure_open().map_err(|e| e.cause())?;
        let file = self.file.as_mut().expect("opened above");
        let start = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(row.len() + 1);
        if self.torn {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(row);
        match write_counting(file, &bytes) {
            Ok(()) => {
                self.torn = false;
                Ok(())
            }
            Err((written, e)) => {
                if written > 0 {
                    let _ = file.set_len(start);
                }
                Err(e.to_string())
            }
        }
    }

    fn say(&self, line: Option<String>) {
        if let Some(line) = line {
            eprintln!("netprobe: log {}: {line}", self.path.display());
        }
    }
}

/// Writes all of `bytes`; on failure, how many bytes made it (a torn row) and the error.
fn write_counting(file: &mut File, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
