//! One interval of the monitor: its drops by column, severity and everything that makes it
//! unusual (late, a counter that jumped, the interface gone or back), from two samples.

use std::{collections::BTreeMap, time::Duration};

use super::{
    columns::{Column, Drops, Severity},
    counters::{LinkState, Sample},
    delta::{self, Jump},
    kernel_side::Attribution,
    links::{self, NicInterval},
    schedule::Timing,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub timestamp: String,
    pub iteration: u64,
    pub interface: String,
    pub drops: Drops,
    pub severity: Severity,
    /// Measured length, on the monotonic clock.
    pub seconds: f64,
    /// How late the sample was, when late enough to say (see `Timing::is_late`).
    pub late: Option<Duration>,
    /// Periods this interval spans (more than 1 only when late).
    pub periods: u64,
    pub jumps: Vec<(Column, Jump)>,
    /// Columns this interval could not have, with the reason (their value is 0).
    pub unavailable: BTreeMap<Column, String>,
    pub link: LinkState,
    /// Whose NIC counters the NIC columns are, and each device's share (a bond's slaves).
    pub nic: NicInterval,
    /// Everything unusual, in words: the console, the CSV `notes` and the JSON carry them.
    pub notes: Vec<String>,
    /// What the eBPF side saw in the interval (root only; `None`: counters only).
    pub kernel: Option<Attribution>,
}

/// What the caller knows about the interval besides the two samples.
pub struct Context<'a> {
    pub timestamp: String,
    pub iteration: u64,
    pub interface: &'a str,
    pub threshold: u64,
    pub period: Duration,
    pub timing: Timing,
    /// Set on the last, shortened interval of a stop by signal.
    pub stopped_by: Option<&'static str>,
}

pub fn build(before: &Sample, after: &Sample, cx: Context<'_>) -> Interval {
    let deltas = delta::between(&before.readings, &after.readings);
    let late = cx.timing.is_late(cx.period).then_some(cx.timing.late);
    let mut notes = Vec::new();
    if let Some(late) = late {
        notes.push(late_note(late, cx.timing.periods));
    }
    if let Some(signal) = cx.stopped_by {
        notes.push(format!("partial interval: stopped by {signal}"));
    }
    notes.extend(link_notes(cx.interface, &before.link, &after.link));
    let (nic, nic_notes) = links::interval(&before.nic, &after.nic);
    notes.extend(nic_notes);
    for (column, jump) in &deltas.jumps {
        notes.push(match jump {
            Jump::Wrapped => format!("{} counter wrapped at 2^32 (counted across)", column.name()),
            Jump::Reset => format!("{} counter restarted (counted from 0)", column.name()),
        });
    }
    for problem in &after.problems {
        notes.push(format!("unreadable: {problem}"));
    }
    let total = deltas.drops.total();
    Interval {
        timestamp: cx.timestamp,
        iteration: cx.iteration,
        interface: cx.interface.to_string(),
        drops: deltas.drops,
        severity: Severity::of(total, cx.threshold),
        seconds: after.at.duration_since(before.at).as_secs_f64(),
        late,
        periods: cx.timing.periods,
        jumps: deltas.jumps,
        unavailable: after.readings.unavailable.clone(),
        link: after.link.clone(),
        nic,
        notes,
        kernel: None,
    }
}

fn late_note(late: Duration, periods: u64) -> String {
    let secs = late.as_secs_f64();
    if periods > 1 {
        format!("late by {secs:.1} s: one row for {periods} intervals")
    } else {
        format!("late by {secs:.1} s")
    }
}

/// The interface's changes between two samples, in words.
pub fn link_notes(name: &str, before: &LinkState, after: &LinkState) -> Vec<String> {
    match (before.ifindex, after.ifindex) {
        (Some(_), None) => vec![match &after.renamed_to {
            Some(new) => {
                format!("{name} renamed to {new}: its columns are 0 until {name} exists again")
            }
            None => format!("{name} removed: its columns are 0 until it exists again"),
        }],
        (None, None) => vec![format!("{name} absent")],
        (None, Some(index)) => vec![format!(
            "{name} appeared (ifindex {index}): its counters start from here"
        )],
        (Some(old), Some(new)) if old != new => vec![format!(
            "{name} recreated (ifindex {old} → {new}): its counters start from here"
        )],
        (Some(_), Some(_)) => match (before.is_up(), after.is_up()) {
            (true, false) => vec![format!(
                "{name} went {}",
                after.operstate.as_deref().unwrap_or("down")
            )],
            (false, true) => vec![format!("{name} came up")],
            (false, false) => vec![format!(
                "{name} is {}",
                after.operstate.as_deref().unwrap_or("down")
            )],
            (true, true) => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::monitor::delta::Readings;

    fn link(ifindex: Option<u32>, state: &str) -> LinkState {
        LinkState {
            ifindex,
            operstate: ifindex.map(|_| state.to_string()),
            renamed_to: None,
        }
    }

    #[test]
    fn interface_changes_are_said() {
        let up = link(Some(4), "up");
        assert!(link_notes("eth0", &up, &up).is_empty());
        assert_eq!(
            link_notes("eth0", &up, &link(Some(4), "down")),
            vec!["eth0 went down"]
        );
        assert_eq!(
            link_notes("eth0", &link(Some(4), "down"), &up),
            vec!["eth0 came up"]
        );
        assert_eq!(
            link_notes("eth0", &up, &link(Some(9), "up")),
            vec!["eth0 recreated (ifindex 4 → 9): its counters start from here"]
        );
        let mut renamed = link(None, "");
        renamed.renamed_to = Some("wan0".into());
        assert_eq!(
            link_notes("eth0", &up, &renamed),
            vec!["eth0 renamed to wan0: its columns are 0 until eth0 exists again"]
        );
        assert_eq!(
            link_notes("eth0", &up, &link(None, "")),
            vec!["eth0 removed: its columns are 0 until it exists again"]
        );
    }

    fn sample(at: Instant, link: LinkState, softirq: u64) -> Sample {
        let mut readings = Readings::default();
        readings.set(Column::Softirq, "cpu0", softirq);
        Sample {
            at,
            link,
            readings,
            nic: Default::default(),
            time_squeeze: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn a_late_interval_with_a_wrap_says_both() {
        let t0 = Instant::now();
        let before = sample(t0, link(Some(2), "up"), u32::MAX as u64 - 1);
        let after = sample(t0 + Duration::from_secs(12), link(Some(2), "up"), 43);
        let interval = build(
            &before,
            &after,
            Context {
                timestamp: "2026-02-03 11:23:50".into(),
                iteration: 124,
                interface: "eth0",
                threshold: 100,
                period: Duration::from_secs(5),
                timing: Timing {
                    late: Duration::from_secs(7),
                    periods: 2,
                },
                stopped_by: None,
            },
        );
        assert_eq!(interval.drops.get(Column::Softirq), 45);
        assert_eq!(interval.severity, Severity::Warn);
        assert_eq!(interval.seconds, 12.0);
        assert_eq!(
            interval.notes,
            vec![
                "late by 7.0 s: one row for 2 intervals",
                "softirq counter wrapped at 2^32 (counted across)"
            ]
        );
    }
}
