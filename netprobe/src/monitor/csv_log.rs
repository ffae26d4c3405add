//! The CSV log: the script's 16 columns first, netprobe's own after `severity` (so that
//! `$16=="CRIT"` keeps working). An existing log with the same header is continued, its
//! iteration numbers too; any other header is refused. SIGHUP reopens the path (logrotate
//! without copytruncate). A write that fails is reported at most once a minute, and the
//! monitoring goes on.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{columns::Column, interval::Interval};

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

/// At most one report a minute; how many were held back in between.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub const EVERY: Duration = Duration::from_secs(60);

    /// `Some(held back since the last report)` when a report is due now.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

pub struct CsvLog {
    path: PathBuf,
    layout: Layout,
    file: Option<File>,
    /// A failed write left part of a row: the next write starts on a new line.
    torn: bool,
    throttle: Throttle,
    failing: bool,
}

/// Opens `path` for appending: a new or empty file gets netprobe's header; an existing one
/// must have netprobe's or the script's. Returns the file, its layout and its last iteration.
fn open_checked(path: &Path, layout: Option<Layout>) -> Result<(File, Layout, u64), LogError> {
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
    if header.is_empty() {
        let layout = layout.unwrap_or(Layout::Netprobe);
        file.write_all(format!("{}\n", layout.header()).as_bytes())
            .map_err(io)?;
        return Ok((file, layout, 0));
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
    Ok((file, found, last_iteration(&tail).unwrap_or(0)))
}

impl CsvLog {
    /// Opens the log at start: any failure here is the command's error. Returns the log and
    /// the iteration its next row continues from.
    pub fn open(path: &Path) -> Result<(Self, u64), LogError> {
        let (file, layout, last) = open_checked(path, None)?;
        let log = Self {
            path: path.to_path_buf(),
            layout,
            file: Some(file),
            torn: false,
            throttle: Throttle::default(),
            failing: false,
        };
        Ok((log, last))
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// SIGHUP: close the file and open the path anew (logrotate moved the old one away).
    pub fn reopen(&mut self) {
        self.file = None;
        self.torn = false;
        if let Err(e) = self.ensure_open() {
            self.report(&e.to_string(), None);
        }
    }

    fn ensure_open(&mut self) -> Result<&mut File, LogError> {
        if self.file.is_none() {
            let (file, _, _) = open_checked(&self.path, Some(self.layout))?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Appends the interval's row; a failure is reported (once a minute) and not fatal.
    pub fn write(&mut self, interval: &Interval) {
        let mut text = row(interval, self.layout);
        if self.torn {
            text.insert(0, '\n');
        }
        let path = self.path.display().to_string();
        let result = match self.ensure_open() {
            Err(e) => Err((false, e.to_string())),
            Ok(file) => write_counting(file, text.as_bytes())
                .map_err(|(written, e)| (written > 0, format!("log {path}: {e}"))),
        };
        match result {
            Ok(()) => {
                self.torn = false;
                if std::mem::take(&mut self.failing) {
                    eprintln!(
                        "netprobe: log {}: writing again from #{:04}",
                        self.path.display(),
                        interval.iteration
                    );
                }
            }
            Err((torn, message)) => {
                self.torn |= torn;
                // The handle may point at a file that is gone or broken: try the path again
                // next time.
                self.file = None;
                self.report(&message, Some(interval.iteration));
            }
        }
    }

    fn report(&mut self, message: &str, iteration: Option<u64>) {
        self.failing = true;
        if let Some(held) = self.throttle.due(Instant::now()) {
            let lost = iteration.map_or(String::new(), |i| format!(": row #{i:04} not written"));
            let held = if held > 0 {
                format!(" ({held} more failures since the last report)")
            } else {
                String::new()
            };
            eprintln!("netprobe: {message}{lost}{held}; monitoring goes on");
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
