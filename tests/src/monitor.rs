//! `netprobe monitor` run inside a namespace, its CSV rows read back, and the kernel counters
//! its columns must equal (docs/monitor.md).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{netprobe_bin, steer_rx_to_cpu1, Link, Netns, SysctlGuard};

/// The columns that count drops, in the CSV's order (`tcp_collapsed` is shown, not a drop).
pub const LOSS_COLUMNS: [&str; 10] = [
    "nic_rx",
    "nic_tx",
    "nic_missed",
    "qdisc",
    "softirq",
    "syn_queue",
    "accept_queue",
    "tcp_pruned",
    "udp_rcvbuf",
    "udp_sndbuf",
];

/// A running `netprobe monitor`, started inside a namespace.
pub struct Monitor {
    child: Child,
    /// The start line: printed once the baseline sample is taken.
    pub started: String,
    stderr: JoinHandle<String>,
    /// stderr's lines after the start line, as they come.
    stderr_lines: mpsc::Receiver<String>,
    stdout: JoinHandle<String>,
}

/// How a monitor run ended.
pub struct MonitorRun {
    pub status: ExitStatus,
    pub stdout: String,
    /// Everything after the start line.
    pub stderr: String,
}

impl Monitor {
    /// Starts `netprobe monitor <args>` in `ns` and waits for its start line: whatever the
    /// test does from then on falls inside the monitored intervals.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::spawn(Self::command(ns, args))
    }

    /// `netprobe monitor <args>` in `ns`, not started yet: for a test that sets its
    /// environment.
    pub fn command(ns: &Netns, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name])
            .arg(netprobe_bin())
            .arg("monitor")
            .args(args);
        command
    }

    /// Starts `command` (a monitor, or a wrapper that runs one) with its output piped and
    /// waits for the start line.
    pub fn spawn(mut command: Command) -> Self {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netprobe monitor");
        Self::attach(child)
    }

    /// Takes over a child started with its output piped: reads its start line (waiting for
    /// it) and collects the rest.
    pub fn attach(mut child: Child) -> Self {
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut started = String::new();
        stderr.read_line(&mut started).unwrap();
        assert!(
            started.starts_with("netprobe monitor: "),
            "no start line: {started:?}"
        );
        let mut stdout = child.stdout.take().unwrap();
        let (lines_tx, stderr_lines) = mpsc::channel();
        Self {
            child,
            started,
            stderr: thread::spawn(move || {
                let mut all = String::new();
                for line in stderr.lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line.clone());
                    all.push_str(&line);
                    all.push('\n');
                }
                all
            }),
            stderr_lines,
            stdout: thread::spawn(move || {
                let mut s = String::new();
                let _ = stdout.read_to_string(&mut s);
                s
            }),
        }
    }

    /// Waits up to `timeout` for a stderr line containing `text` (lines before it are passed
    /// over: they are in the run's stderr all the same).
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// `ip netns exec` execs netprobe: this is netprobe's own pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn wait(mut self) -> MonitorRun {
        let status = self.child.wait().unwrap();
        MonitorRun {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// A log's rows, each by column name (the header first, checked to be the monitor's).
pub fn log_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    log_text_rows(&text)
}

/// The rows of a log's text: every line must be a whole row, with every column.
pub fn log_text_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(
        header[..16].join(","),
        "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity"
    );
    lines
        .map(|line| {
            // Notes may be quoted and hold commas; they are the last column.
            let (fields, notes) = match line.split_once(",\"") {
                Some((fields, notes)) => (fields, Some(notes.trim_end_matches('"'))),
                None => (line, None),
            };
            let mut values: Vec<String> = fields.split(',').map(String::from).collect();
            if let Some(notes) = notes {
                values.push(notes.to_string());
            }
            assert_eq!(values.len(), header.len(), "{line}");
            header.iter().map(|h| h.to_string()).zip(values).collect()
        })
        .collect()
}

/// A numeric column of a row.
pub fn cell(row: &BTreeMap<String, String>, column: &str) -> u64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column} in {row:?}"))
}

/// A column summed over rows.
pub fn column_sum(rows: &[BTreeMap<String, String>], column: &str) -> u64 {
    rows.iter().map(|r| cell(r, column)).sum()
}

/// Every row is whole: total_drops is the sum of the loss columns and the severity follows
/// from it (default threshold 100).
pub fn check_rows_consistent(rows: &[BTreeMap<String, String>]) {
    for row in rows {
        let total: u64 = LOSS_COLUMNS.iter().map(|c| cell(row, c)).sum();
        assert_eq!(cell(row, "total_drops"), total, "{row:?}");
        let severity = match total {
            0 => "OK",
            1..=99 => "WARN",
            _ => "CRIT",
        };
        assert_eq!(row["severity"], severity, "{row:?}");
    }
}

/// Every column but `moved` (and those in `also`) is 0 in every row.
pub fn check_only_moved(rows: &[BTreeMap<String, String>], moved: &str, also: &[&str]) {
    for column in LOSS_COLUMNS.iter().chain(&["tcp_collapsed"]) {
        if *column != moved && !also.contains(column) {
            assert_eq!(column_sum(rows, column), 0, "{column} moved: {rows:#?}");
        }
    }
}

/// A link whose b side's input backlog overflows under a flood from CPU 0
/// (`udp_flood_from_cpu0`): RPS steers b's input to CPU 1, neighbours are static (no ARP to
/// lose), and netdev_max_backlog is 8 while the guard lives.
pub fn backlog_overflow_link(tag: &str, subnet: u8) -> (Link, SysctlGuard) {
    assert!(
        std::thread::available_parallelism().unwrap().get() >= 2,
        "needs two CPUs"
    );
    let link = Link::new(tag, subnet);
    link.static_neighbours();
    steer_rx_to_cpu1(&link.b);
    let backlog = SysctlGuard::set("net.core.netdev_max_backlog", "8");
    (link, backlog)
}

/// softnet_stat's dropped, summed over CPUs: host-wide, like the `softirq` column.
pub fn softnet_dropped() -> u64 {
    fs::read_to_string("/proc/net/softnet_stat")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .sum()
}

impl Netns {
    /// A counter of /proc/net/snmp6 (`Udp6RcvbufErrors`) in this namespace.
    pub fn snmp6(&self, field: &'static str) -> u64 {
        self.run(move || {
            let text = fs::read_to_string("/proc/thread-self/net/snmp6").unwrap_or_default();
            text.lines()
                .find_map(|l| {
                    let mut parts = l.split_whitespace();
                    (parts.next() == Some(field)).then(|| parts.next()?.parse().ok())?
                })
                .unwrap_or(0)
        })
    }

    /// Every counter of /proc/net/snmp and netstat a column reads, in this namespace.
    pub fn monitor_counters(&self) -> BTreeMap<&'static str, u64> {
        let snmp = |g, f| self.snmp(g, f);
        let netstat = |g, f| self.netstat(g, f);
        BTreeMap::from([
            ("syn_queue", netstat("TcpExt", "TCPReqQFullDrop")),
            ("accept_queue", netstat("TcpExt", "ListenOverflows")),
            ("tcp_pruned", netstat("TcpExt", "RcvPruned")),
            ("tcp_collapsed", netstat("TcpExt", "TCPRcvCollapsed")),
            (
                "udp_rcvbuf",
                snmp("Udp", "RcvbufErrors") + self.snmp6("Udp6RcvbufErrors"),
            ),
            (
                "udp_sndbuf",
                snmp("Udp", "SndbufErrors") + self.snmp6("Udp6SndbufErrors"),
            ),
            ("softirq", softnet_dropped()),
        ])
    }
}

/// A log's rows: each column by name.
pub type Row = BTreeMap<String, String>;

/// Waits for a monitor run with `--count rows` and judges it as every scenario does: it ended
/// well and wrote exactly `rows` rows that add up. Returns the run, its rows, and how far the
/// namespace's counters moved since `before` (read at once, over the same span).
pub fn finish(
    monitor: Monitor,
    ns: &Netns,
    before: &BTreeMap<&'static str, u64>,
    log: &Path,
    rows: usize,
) -> (MonitorRun, Vec<Row>, BTreeMap<&'static str, u64>) {
    let run = monitor.wait();
    let kernel = counter_deltas(before, &ns.monitor_counters());
    assert!(run.status.success(), "{}", run.stderr);
    let written = log_rows(log);
    assert_eq!(written.len(), rows, "{written:#?}");
    check_rows_consistent(&written);
    (run, written, kernel)
}

/// Each counter's growth between two readings of `monitor_counters`.
pub fn counter_deltas(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    before.iter().map(|(k, v)| (*k, after[k] - v)).collect()
}

/// A log path for one test, removed first (with its rotated sibling).
pub fn fresh_log(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("np-monitor-{tag}-{}.csv", std::process::id()));
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(path.with_extension("csv.1"));
    path
}
