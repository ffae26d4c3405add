use std::{collections::BTreeMap, fs};

use super::*;
use crate::monitor::{
    columns::{Drops, Severity},
    counters::LinkState,
};

fn interval(iteration: u64, softirq: u64, notes: &[&str]) -> Interval {
    let mut drops = Drops::default();
    drops.add(Column::Softirq, softirq);
    Interval {
        timestamp: "2026-02-03 11:23:50".into(),
        iteration,
        interface: "eth0".into(),
        drops,
        severity: Severity::of(softirq, 100),
        seconds: 5.0004,
        late: None,
        periods: 1,
        jumps: Vec::new(),
        unavailable: BTreeMap::new(),
        link: LinkState::default(),
        nic: Default::default(),
        notes: notes.iter().map(|n| n.to_string()).collect(),
        kernel: None,
    }
}

/// A log path in a directory of its own, removed with the guard.
struct TempLog {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn temp(name: &str) -> TempLog {
    let dir = std::env::temp_dir().join(format!("netprobe-csvlog-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    TempLog {
        path: dir.join(name),
        dir,
    }
}

#[test]
fn rows_in_both_layouts() {
    let i = interval(124, 45, &["late by 1.2 s", "eth0 went down, then up"]);
    assert_eq!(
        row(&i, Layout::Script),
        "2026-02-03 11:23:50,124,eth0,45,0,0,0,0,45,0,0,0,0,0,0,WARN\n"
    );
    // Notes with a comma are quoted: the 16 script columns stay where awk expects them.
    // Counters only: the eBPF headline columns are empty.
    assert_eq!(
        row(&i, Layout::Netprobe),
        "2026-02-03 11:23:50,124,eth0,45,0,0,0,0,45,0,0,0,0,0,0,WARN,5.000,,,,\"late by 1.2 s; eth0 went down, then up\"\n"
    );
    assert_eq!(
        row(&i, Layout::NetprobeV1),
        "2026-02-03 11:23:50,124,eth0,45,0,0,0,0,45,0,0,0,0,0,0,WARN,5.000,\"late by 1.2 s; eth0 went down, then up\"\n"
    );
}

#[test]
fn the_ebpf_headline_fills_its_columns() {
    use crate::model::classify::{Direction, DropRole, Layer};
    use crate::monitor::kernel_side::attribution::{Attribution, DropRow};
    let row_of = |reason: &str, cpu, count| DropRow {
        reason: reason.into(),
        layer: Layer::Socket,
        direction: Direction::Ingress,
        role: DropRole::Loss,
        cpu,
        interface: None,
        own_netns: true,
        netns: 1,
        location: "udp_queue_rcv_one_skb+0x1".into(),
        count,
    };
    let mut i = interval(7, 0, &[]);
    i.kernel = Some(Attribution {
        drops: vec![
            row_of("SOCKET_RCVBUFF", 1, 40),
            row_of("NO_SOCKET", 0, 30),
            row_of("NO_SOCKET", 1, 20),
        ],
        retrans_segs: 12,
        ..Attribution::default()
    });
    // NO_SOCKET has the most drops (50); CPU 1 dropped the most (60).
    assert_eq!(
        row(&i, Layout::Netprobe),
        "2026-02-03 11:23:50,7,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK,5.000,12,NO_SOCKET,1,\n"
    );
}

/// A log an earlier netprobe started (its columns after `severity` were `interval_s,notes`)
/// is continued in its own layout, never mixed with the new one.
#[test]
fn an_earlier_netprobe_log_is_continued_in_its_layout() {
    let tmp = temp("v1.csv");
    let path = tmp.path.clone();
    fs::write(
        &path,
        format!(
            "{}\n2026-02-03 11:23:50,9,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK,5.000,\n",
            Layout::NetprobeV1.header()
        ),
    )
    .unwrap();
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!((last, log.layout()), (9, Layout::NetprobeV1));
    log.write(&interval(10, 0, &[]));
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with(",OK,5.000,\n"), "{text}");
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn a_new_log_gets_the_header_and_a_continued_log_its_next_iteration() {
    let tmp = temp("new.csv");
    let path = tmp.path.clone();
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!((last, log.layout()), (0, Layout::Netprobe));
    log.write(&interval(1, 0, &[]));
    log.write(&interval(2, 3, &["a, b"]));
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("{SCRIPT_HEADER},interval_s,retrans_segs,top_drop_reason,top_drop_cpu,notes")
    );
    assert_eq!(lines.len(), 3);
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!(last, 2);
    log.write(&interval(3, 0, &[]));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("timestamp,").count(), 1, "one header: {text}");
    assert!(text.lines().last().unwrap().contains(",3,eth0,"));
}

#[test]
fn the_script_s_own_log_is_continued_in_its_16_columns() {
    let tmp = temp("script.csv");
    let path = tmp.path.clone();
    fs::write(
        &path,
        format!("{SCRIPT_HEADER}\n2026-02-01 00:00:05,41,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK\n2026-02-01 00:00:10,42,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK\n"),
    )
    .unwrap();
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!((last, log.layout()), (42, Layout::Script));
    log.write(&interval(43, 7, &["late"]));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().last().unwrap(),
        "2026-02-03 11:23:50,43,eth0,7,0,0,0,0,7,0,0,0,0,0,0,WARN"
    );
}

#[test]
fn another_header_is_refused_and_left_untouched() {
    let tmp = temp("other.csv");
    let path = tmp.path.clone();
    fs::write(&path, "time,drops\n1,2\n").unwrap();
    let err = CsvLog::open(&path).err().expect("refused");
    assert!(matches!(err, LogError::Header { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"time,drops\"") && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "time,drops\n1,2\n");
    // A header with a column moved between the script's columns is another header too.
    let moved = SCRIPT_HEADER.replace("severity", "interval_s,severity");
    fs::write(&path, format!("{moved}\n")).unwrap();
    assert!(matches!(CsvLog::open(&path), Err(LogError::Header { .. })));
}

#[test]
fn a_torn_last_row_is_passed_over_and_the_next_row_starts_on_its_own_line() {
    let tail = format!("{SCRIPT_HEADER}\n2026-02-01 00:00:05,9,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK\n2026-02-01 00:00:10,10,eth0,0,0,0");
    assert_eq!(last_iteration(tail.as_bytes()), Some(9));
    // A tail cut mid-row at the front, as the last 64 KiB of a long log is.
    assert_eq!(
        last_iteration(
            b"0,0,OK\n2026-02-01 00:00:05,77,eth0,0,0,0,0,0,0,0,0,0,0,0,0,CRIT,5.000,\n"
        ),
        Some(77)
    );
    assert_eq!(last_iteration(SCRIPT_HEADER.as_bytes()), None);
}

#[test]
fn reopen_after_rotation_starts_a_new_file_with_the_header() {
    let tmp = temp("rotated.csv");
    let path = tmp.path.clone();
    let (mut log, _) = CsvLog::open(&path).unwrap();
    log.write(&interval(1, 0, &[]));
    let rotated = path.with_extension("csv.1");
    fs::rename(&path, &rotated).unwrap();
    log.write(&interval(2, 0, &[]));
    log.reopen();
    log.write(&interval(3, 0, &[]));
    let old = fs::read_to_string(&rotated).unwrap();
    let new = fs::read_to_string(&path).unwrap();
    assert_eq!(old.lines().count(), 3, "{old}");
    assert_eq!(new.lines().count(), 2, "{new}");
    assert!(new.starts_with("timestamp,") && new.contains(",3,eth0,"));
}

#[test]
fn a_write_that_fails_is_reported_and_the_path_tried_again() {
    let tmp = temp("full.csv");
    let path = tmp.path.clone();
    let (mut log, _) = CsvLog::open(&path).unwrap();
    log.write(&interval(1, 0, &[]));
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    log.file = Some(OpenOptions::new().write(true).open("/dev/full").unwrap());
    log.write(&interval(2, 0, &[]));
    assert!(log.failing() && log.file.is_none(), "the failure is noted");
    log.write(&interval(3, 0, &[]));
    let text = fs::read_to_string(&path).unwrap();
    let iterations: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    // Row 2 is lost (and was reported), row 3 went to the path opened again.
    assert_eq!(iterations, ["1", "3"], "{text}");
    assert!(!log.failing());
}

#[test]
fn a_log_torn_by_a_crash_is_continued_on_a_new_line() {
    let tmp = temp("crashed.csv");
    let path = tmp.path.clone();
    fs::write(
        &path,
        format!("{SCRIPT_HEADER},{NETPROBE_COLUMNS}\n2026-02-01 00:00:05,7,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK,5.000,\n2026-02-01 00:00:10,8,et"),
    )
    .unwrap();
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!(last, 7);
    log.write(&interval(8, 0, &[]));
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[2], "2026-02-01 00:00:10,8,et", "{text}");
    assert_eq!(
        lines[3],
        row(&interval(8, 0, &[]), Layout::Netprobe).trim_end()
    );
}

#[test]
fn a_header_cut_short_is_written_again_whole() {
    let tmp = temp("torn-header.csv");
    let path = tmp.path.clone();
    fs::write(&path, "timestamp,iteration,inter").unwrap();
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!((last, log.layout()), (0, Layout::Netprobe));
    log.write(&interval(1, 0, &[]));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(
            "{SCRIPT_HEADER},{NETPROBE_COLUMNS}\n{}",
            row(&interval(1, 0, &[]), Layout::Netprobe)
        )
    );
    // A first line that is no prefix of a header is still another header.
    fs::write(&path, "time,drops").unwrap();
    assert!(matches!(CsvLog::open(&path), Err(LogError::Header { .. })));
}
