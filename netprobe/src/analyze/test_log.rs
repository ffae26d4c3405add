//! Logs for the tests, written by the monitor's own row writer (so that the analysis is
//! tested against what the monitor really writes), with known answers.

use std::{collections::BTreeMap, path::PathBuf};

use crate::monitor::{
    columns::{Column, Drops, Severity},
    counters::LinkState,
    csv_log::{row, Layout},
    interval::Interval,
};

/// The monitor's CSV row of one interval (netprobe's layout, `notes` included).
pub fn monitor_row(timestamp: &str, iteration: u64, drops: Drops, notes: &[&str]) -> String {
    let interval = Interval {
        timestamp: timestamp.into(),
        iteration,
        interface: "eth0".into(),
        drops,
        severity: Severity::of(drops.total(), 100),
        seconds: 5.0,
        late: None,
        periods: 1,
        jumps: Vec::new(),
        unavailable: BTreeMap::new(),
        link: LinkState::default(),
        nic: Default::default(),
        notes: notes.iter().map(|n| n.to_string()).collect(),
        kernel: None,
    };
    row(&interval, Layout::Netprobe)
}

/// The known log: 100 intervals, 5 per hour from 00:00 (hours 0–19), interval `i` (1-based)
/// with `softirq = i` when `i` is a multiple of 4, `udp_rcvbuf = 1` when a multiple of 10 and
/// `tcp_collapsed = 7` (not a loss) when a multiple of 5. Answers worked out by hand in the
/// tests: 30 intervals with drops, 1310 drops (softirq 1300, udp_rcvbuf 10), 140 collapsed,
/// 1 CRIT (#100, 101 drops), 29 WARN, 70 OK.
pub fn known_rows(first: u64, last: u64) -> String {
    let mut text = String::new();
    for i in first..=last {
        let mut drops = Drops::default();
        if i % 4 == 0 {
            drops.add(Column::Softirq, i);
        }
        if i % 10 == 0 {
            drops.add(Column::UdpRcvbuf, 1);
        }
        if i % 5 == 0 {
            drops.add(Column::TcpCollapsed, 7);
        }
        let hour = (i - 1) / 5;
        let minute = (i - 1) % 5;
        let timestamp = format!("2026-02-03 {hour:02}:{minute:02}:00");
        // A note with a comma: the monitor quotes it.
        let notes: &[&str] = if i == 50 {
            &["late by 1.3 s, one row"]
        } else {
            &[]
        };
        text.push_str(&monitor_row(&timestamp, i, drops, notes));
    }
    text
}

pub fn header() -> String {
    Layout::Netprobe.header() + "\n"
}

pub fn known_log() -> String {
    header() + &known_rows(1, 100)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netprobe-analyze-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
