//! The console lines, as the script printed them: one line per interval, then one per
//! non-zero column, the last with `└─`. What makes an interval unusual follows on its line.

use std::fmt::Write as _;

use super::{
    columns::{Column, Severity},
    interval::Interval,
};
use crate::report::render::Style;

fn badge(severity: Severity) -> (&'static str, &'static str) {
    // (symbol, ANSI colour)
    match severity {
        Severity::Ok => ("✓", "32"),
        Severity::Warn => ("⚠", "33"),
        Severity::Crit => ("✗", "1;31"),
    }
}

fn paint(style: &Style, code: &str, text: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The interval's lines, each ending in a newline.
pub fn lines(interval: &Interval, style: &Style) -> String {
    let (symbol, colour) = badge(interval.severity);
    let mut out = format!(
        "[{}] #{:04} | {} | Drops: {}",
        interval.timestamp,
        interval.iteration,
        paint(style, colour, &format!("{symbol} {}", interval.severity)),
        interval.drops.total()
    );
    if !interval.notes.is_empty() {
        let _ = write!(out, " | {}", interval.notes.join("; "));
    }
    out.push('\n');
    let shown: Vec<(Column, u64)> = interval.drops.non_zero().collect();
    for (i, (column, value)) in shown.iter().enumerate() {
        let branch = if i + 1 == shown.len() {
            "└─"
        } else {
            "├─"
        };
        let aside = if column.is_loss() {
            ""
        } else {
            " (merged to save memory, not lost)"
        };
        let _ = writeln!(out, "  {branch} {}: {value}{aside}", column.label());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::monitor::{columns::Drops, counters::LinkState};

    fn interval(drops: &[(Column, u64)], severity: Severity, notes: &[&str]) -> Interval {
        let mut d = Drops::default();
        for (c, v) in drops {
            d.add(*c, *v);
        }
        Interval {
            timestamp: "2026-02-03 11:23:50".into(),
            iteration: 124,
            interface: "eth0".into(),
            drops: d,
            severity,
            seconds: 5.0,
            late: None::<Duration>,
            periods: 1,
            jumps: Vec::new(),
            unavailable: BTreeMap::new(),
            link: LinkState::default(),
            nic: Default::default(),
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn the_script_s_lines() {
        let plain = Style { color: false };
        let i = interval(&[(Column::Softirq, 45)], Severity::Warn, &[]);
        assert_eq!(
            lines(&i, &plain),
            "[2026-02-03 11:23:50] #0124 | ⚠ WARN | Drops: 45\n  └─ Softirq Dropped: 45\n"
        );
        let i = interval(
            &[(Column::Qdisc, 100), (Column::UdpRcvbuf, 20)],
            Severity::Crit,
            &["late by 1.2 s"],
        );
        assert_eq!(
            lines(&i, &plain),
            "[2026-02-03 11:23:50] #0124 | ✗ CRIT | Drops: 120 | late by 1.2 s\n  ├─ Qdisc Dropped: 100\n  └─ UDP Rcvbuf Errors: 20\n"
        );
        let i = interval(&[], Severity::Ok, &[]);
        assert_eq!(
            lines(&i, &plain),
            "[2026-02-03 11:23:50] #0124 | ✓ OK | Drops: 0\n"
        );
    }

    #[test]
    fn colour_only_when_asked_and_collapsed_is_not_called_lost() {
        let i = interval(&[(Column::TcpCollapsed, 7)], Severity::Ok, &[]);
        let coloured = lines(&i, &Style { color: true });
        assert!(coloured.contains("\x1b[32m✓ OK\x1b[0m"), "{coloured}");
        assert!(
            coloured.ends_with("  └─ TCP Collapsed: 7 (merged to save memory, not lost)\n"),
            "{coloured}"
        );
        assert!(!lines(&i, &Style { color: false }).contains('\x1b'));
    }
}
