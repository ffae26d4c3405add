//! `--json`: one NDJSON object per interval. The serde types here are the contract
//! (docs/monitor.md), kept apart from the domain's `Interval`.

use serde::Serialize;

use super::{
    columns::{Column, Drops},
    interval::Interval,
    kernel_side::json::KernelJson,
    links::NicSourceJson,
};

#[derive(Debug, Serialize)]
pub struct IntervalJson<'a> {
    pub kind: &'static str,
    pub timestamp: &'a str,
    pub iteration: u64,
    pub interface: &'a str,
    /// Measured on the monotonic clock.
    pub interval_s: f64,
    /// How late the sample was, when late enough to say; else null.
    pub late_s: Option<f64>,
    /// Scheduled intervals this row spans (1 unless late).
    pub periods: u64,
    pub total_drops: u64,
    pub severity: &'static str,
    pub drops: DropsJson,
    /// Columns this device or kernel cannot have (their value is 0), with the reason.
    pub unavailable: Vec<UnavailableJson<'a>>,
    /// Counters that went backwards in this interval: `wrapped` or `reset`.
    pub counter_jumps: Vec<JumpJson>,
    pub link: LinkJson<'a>,
    /// A bond's slaves or the device under a VLAN, whose NIC counters the NIC columns are,
    /// each with its share (links.rs); null for the interface's own.
    pub nic_source: Option<NicSourceJson<'a>>,
    pub notes: &'a [String],
    /// The eBPF side's attribution (root); null when counting only.
    pub kernel: Option<KernelJson<'a>>,
}

/// The columns, in the CSV's order.
#[derive(Debug, Serialize)]
pub struct DropsJson {
    pub nic_rx: u64,
    pub nic_tx: u64,
    pub nic_missed: u64,
    pub qdisc: u64,
    pub softirq: u64,
    pub syn_queue: u64,
    pub accept_queue: u64,
    pub tcp_pruned: u64,
    pub tcp_collapsed: u64,
    pub udp_rcvbuf: u64,
    pub udp_sndbuf: u64,
}

impl From<&Drops> for DropsJson {
    fn from(d: &Drops) -> Self {
        Self {
            nic_rx: d.get(Column::NicRx),
            nic_tx: d.get(Column::NicTx),
            nic_missed: d.get(Column::NicMissed),
            qdisc: d.get(Column::Qdisc),
            softirq: d.get(Column::Softirq),
            syn_queue: d.get(Column::SynQueue),
            accept_queue: d.get(Column::AcceptQueue),
            tcp_pruned: d.get(Column::TcpPruned),
            tcp_collapsed: d.get(Column::TcpCollapsed),
            udp_rcvbuf: d.get(Column::UdpRcvbuf),
            udp_sndbuf: d.get(Column::UdpSndbuf),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UnavailableJson<'a> {
    pub column: &'static str,
    pub reason: &'a str,
}

#[derive(Debug, Serialize)]
pub struct JumpJson {
    pub column: &'static str,
    pub jump: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LinkJson<'a> {
    /// False when no interface has the name now.
    pub present: bool,
    pub ifindex: Option<u32>,
    pub operstate: Option<&'a str>,
    pub renamed_to: Option<&'a str>,
}

impl<'a> From<&'a Interval> for IntervalJson<'a> {
    fn from(i: &'a Interval) -> Self {
        Self {
            kind: "monitor_interval",
            timestamp: &i.timestamp,
            iteration: i.iteration,
            interface: &i.interface,
            interval_s: (i.seconds * 1000.0).round() / 1000.0,
            late_s: i.late.map(|l| (l.as_secs_f64() * 1000.0).round() / 1000.0),
            periods: i.periods,
            total_drops: i.drops.total(),
            severity: i.severity.name(),
            drops: (&i.drops).into(),
            unavailable: i
                .unavailable
                .iter()
                .map(|(c, reason)| UnavailableJson {
                    column: c.name(),
                    reason,
                })
                .collect(),
            counter_jumps: i
                .jumps
                .iter()
                .map(|(c, j)| JumpJson {
                    column: c.name(),
                    jump: j.name(),
                })
                .collect(),
            link: LinkJson {
                present: i.link.ifindex.is_some(),
                ifindex: i.link.ifindex,
                operstate: i.link.operstate.as_deref(),
                renamed_to: i.link.renamed_to.as_deref(),
            },
            nic_source: i.nic.json(),
            notes: &i.notes,
            kernel: i.kernel.as_ref().map(KernelJson::from),
        }
    }
}
