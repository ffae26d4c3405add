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
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netprobe-csvlog-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    path
}

#[test]
fn rows_in_both_layouts() {
    let i = interval(124, 45, &["late by 1.2 s", "eth0 went down, then up"]);
    assert_eq!(
        row(&i, Layout::Script),
        "2026-02-03 11:23:50,124,eth0,45,0,0,0,0,45,0,0,0,0,0,0,WARN\n"
    );
    // Notes with a comma are quoted: the 16 script columns stay where awk expects them.
    assert_eq!(
        row(&i, Layout::Netprobe),
        "2026-02-03 11:23:50,124,eth0,45,0,0,0,0,45,0,0,0,0,0,0,WARN,5.000,\"late by 1.2 s; eth0 went down, then up\"\n"
    );
}

#[test]
fn a_new_log_gets_the_header_and_a_continued_log_its_next_iteration() {
    let path = temp("new.csv");
    let (mut log, last) = CsvLog::open(&path).unwrap();
    assert_eq!((last, log.layout()), (0, Layout::Netprobe));
    log.write(&interval(1, 0, &[]));
    log.write(&interval(2, 3, &["a, b"]));
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("{SCRIPT_HEADER},interval_s,notes"));
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
    let path = temp("script.csv");
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
    let path = temp("other.csv");
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
    let path = temp("rotated.csv");
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
fn failures_are_reported_once_a_minute() {
    let mut t = Throttle::default();
    let t0 = Instant::now();
    assert_eq!(t.due(t0), Some(0));
    assert_eq!(t.due(t0 + Duration::from_secs(5)), None);
    assert_eq!(t.due(t0 + Duration::from_secs(59)), None);
    assert_eq!(t.due(t0 + Duration::from_secs(60)), Some(2));
    assert_eq!(t.due(t0 + Duration::from_secs(61)), None);
}

#[test]
fn a_write_that_fails_is_reported_and_the_path_tried_again() {
    let path = temp("full.csv");
    let (mut log, _) = CsvLog::open(&path).unwrap();
    log.write(&interval(1, 0, &[]));
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    log.file = Some(OpenOptions::new().write(true).open("/dev/full").unwrap());
    log.write(&interval(2, 0, &[]));
    assert!(log.failing && log.file.is_none(), "the failure is noted");
    log.write(&interval(3, 0, &[]));
    let text = fs::read_to_string(&path).unwrap();
    let iterations: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    // Row 2 is lost (and was reported), row 3 went to the path opened again.
    assert_eq!(iterations, ["1", "3"], "{text}");
    assert!(!log.failing);
}
