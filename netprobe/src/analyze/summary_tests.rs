use super::*;
use crate::{
    analyze::{parse::read_one, test_log::known_log, Log},
    monitor::columns::Column,
};

fn known_summary() -> Summary {
    let mut log = Log::default();
    read_one(
        known_log().as_bytes(),
        std::path::Path::new("t"),
        false,
        &mut log,
    )
    .unwrap();
    summarize(&log.rows)
}

#[test]
fn counts_and_totals() {
    let s = known_summary();
    assert_eq!(s.intervals, 100);
    // Multiples of 4 (25) or of 10 (10), multiples of 20 counted once (5).
    assert_eq!(s.with_drops, 30);
    assert_eq!(s.with_drops_percent(), 30.0);
    assert_eq!(s.columns.get(Column::Softirq), 1300);
    assert_eq!(s.columns.get(Column::UdpRcvbuf), 10);
    assert_eq!(s.columns.get(Column::TcpCollapsed), 140);
    assert_eq!(s.columns.get(Column::NicRx), 0);
    assert_eq!(s.total_drops, 1310);
    assert_eq!((s.ok, s.warn, s.crit), (70, 29, 1));
    assert_eq!(s.total_disagrees, 0);
    assert_eq!(s.first_timestamp.as_deref(), Some("2026-02-03 00:00:00"));
    assert_eq!(s.last_timestamp.as_deref(), Some("2026-02-03 19:04:00"));
}

#[test]
fn worst_intervals() {
    let s = known_summary();
    let worst: Vec<(u64, u64)> = s.worst.iter().map(|r| (r.iteration, r.total())).collect();
    assert_eq!(
        worst,
        vec![
            (100, 101),
            (96, 96),
            (92, 92),
            (88, 88),
            (84, 84),
            (80, 81),
            (76, 76),
            (72, 72),
            (68, 68),
            (64, 64)
        ]
    );
}

#[test]
fn worst_intervals_keep_the_earlier_of_equals() {
    let mut log = Log::default();
    let text = crate::analyze::test_log::header()
        + &(1..=15)
            .map(|i| {
                let mut d = crate::monitor::columns::Drops::default();
                d.add(Column::Qdisc, if i == 15 { 9 } else { 5 });
                crate::analyze::test_log::monitor_row("2026-02-03 10:00:00", i, d, &[])
            })
            .collect::<String>();
    read_one(text.as_bytes(), std::path::Path::new("t"), false, &mut log).unwrap();
    let worst: Vec<u64> = summarize(&log.rows)
        .worst
        .iter()
        .map(|r| r.iteration)
        .collect();
    assert_eq!(worst, vec![15, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn drops_by_hour() {
    let s = known_summary();
    // Hour h holds intervals 5h+1 ..= 5h+5.
    let hour = |h: usize| {
        let t = s.by_hour[h];
        (t.intervals, t.with_drops, t.drops)
    };
    assert_eq!(hour(0), (5, 1, 4)); // #4
    assert_eq!(hour(1), (5, 2, 8 + 1)); // #8, #10 (udp 1)
    assert_eq!(hour(19), (5, 2, 96 + 100 + 1)); // #96, #100
    assert_eq!(hour(20), (0, 0, 0));
    assert_eq!(s.by_hour.iter().map(|h| h.drops).sum::<u64>(), 1310);
    assert_eq!(s.by_hour.iter().map(|h| h.intervals).sum::<u64>(), 100);
}

#[test]
fn last_intervals() {
    let s = known_summary();
    let last: Vec<u64> = s.last.iter().map(|r| r.iteration).collect();
    assert_eq!(last, (81..=100).collect::<Vec<_>>());
}

#[test]
fn no_rows() {
    let s = summarize(&[]);
    assert_eq!(s.intervals, 0);
    assert_eq!(s.with_drops_percent(), 0.0);
    assert!(s.worst.is_empty() && s.last.is_empty() && s.first_timestamp.is_none());
}
