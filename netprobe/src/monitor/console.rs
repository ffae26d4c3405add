//! The console lines, as the script printed them: one line per interval, then one per
//! non-zero column, the last with `└─`. What makes an interval unusual follows on its line.

use std::fmt::Write as _;

use super::{columns::Severity, interval::Interval, kernel_side::Attribution};
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
    let kernel = interval.kernel.as_ref();
    let mut subs: Vec<String> = interval
        .drops
        .non_zero()
        .map(|(column, value)| {
            let aside = if column.is_loss() {
                ""
            } else {
                " (merged to save memory, not lost)"
            };
            let detail = kernel
                .and_then(|k| k.detail(column))
                .map_or(String::new(), |d| format!(" — {d}"));
            format!("{}: {value}{aside}{detail}", column.label())
        })
        .collect();
    if let Some(kernel) = kernel {
        subs.extend(kernel_lines(kernel));
    }
    for (i, sub) in subs.iter().enumerate() {
        let branch = if i + 1 == subs.len() {
            "└─"
        } else {
            "├─"
        };
        let _ = writeln!(out, "  {branch} {sub}");
    }
    out
}

/// What the eBPF side adds beyond the columns: every lost packet the kernel dropped (also
/// those no counter column has, such as a firewall's), and the retransmitted segments.
fn kernel_lines(kernel: &Attribution) -> Vec<String> {
    let mut lines = Vec::new();
    if let (Some((reason, count)), Some((cpu, _))) =
        (kernel.top_drop_reason(), kernel.top_drop_cpu())
    {
        lines.push(format!(
            "Kernel Drops: {} (top {reason} {count}; most on CPU {cpu})",
            kernel.kernel_drops()
        ));
    }
    if kernel.retrans_segs > 0 {
        let kinds: Vec<String> = kernel
            .by_kind
            .iter()
            .map(|(kind, segs)| format!("{} {segs}", kind.name()))
            .collect();
        let flow = kernel
            .top_flows
            .first()
            .map_or(String::new(), |f| format!("; top {} {}", f.flow, f.segs));
        lines.push(format!(
            "TCP Retransmitted: {} ({}){flow}",
            kernel.retrans_segs,
            kinds.join(", ")
        ));
    }
    lines.extend(kernel.notes.iter().cloned());
    lines
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::model::classify::{Direction, DropRole, Layer};
    use crate::monitor::{
        columns::{Column, Drops},
        counters::LinkState,
        kernel_side::attribution::{Backlog, CpuCount, DropRow, FlowSegs},
    };
    use netprobe_common::vocab::RetransmitKind;

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
            kernel: None,
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

    /// With the eBPF side: the softirq line names both CPUs and the fix, and two lines follow
    /// for every lost packet the kernel dropped and the retransmitted segments.
    #[test]
    fn kernel_lines_name_reason_cpus_and_kinds() {
        let mut i = interval(&[(Column::Softirq, 500)], Severity::Crit, &[]);
        i.kernel = Some(Attribution {
            drops: vec![DropRow {
                reason: "CPU_BACKLOG".into(),
                layer: Layer::Backlog,
                direction: Direction::Ingress,
                role: DropRole::Loss,
                cpu: 0,
                interface: Some("eth0".into()),
                own_netns: true,
                netns: 1,
                location: "enqueue_to_backlog+0x2a".into(),
                count: 500,
            }],
            retrans_segs: 12,
            by_kind: vec![(RetransmitKind::Rto, 2), (RetransmitKind::Fast, 10)],
            top_flows: vec![FlowSegs {
                flow: "198.18.0.1:40000 > 198.18.0.2:5001".into(),
                segs: 12,
            }],
            backlog: Some(Backlog {
                overflowed: vec![CpuCount { cpu: 1, count: 500 }],
                enqueued: vec![CpuCount { cpu: 0, count: 500 }],
                fix: "sysctl -w net.core.netdev_max_backlog=1000".into(),
            }),
            ..Attribution::default()
        });
        assert_eq!(
            lines(&i, &Style { color: false }),
            "[2026-02-03 11:23:50] #0124 | ✗ CRIT | Drops: 500\n\
             \x20 ├─ Softirq Dropped: 500 — CPU 1 backlog full, enqueued from CPU 0; fix: sysctl -w net.core.netdev_max_backlog=1000\n\
             \x20 ├─ Kernel Drops: 500 (top CPU_BACKLOG 500; most on CPU 0)\n\
             \x20 └─ TCP Retransmitted: 12 (rto 2, fast 10); top 198.18.0.1:40000 > 198.18.0.2:5001 12\n"
        );
    }
}
