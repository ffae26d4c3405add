//! One interval's eBPF attribution: the growth of the in-kernel counts between two samples,
//! named. Drops by (reason, layer, direction, CPU, interface), retransmitted segments by kind
//! and by flow, the backlog's overflowing and enqueuing CPUs, NET_RX time per CPU.
//!
//! Scope: the kernel programs see every namespace. The drop rows are the host's (each says
//! whether it is in the monitor's own namespace); the headline (`top_drop_reason`,
//! `top_drop_cpu`, the kernel's drop count) and each column's detail are the monitor's
//! namespace, as its SNMP counters are; the backlog's two sides are host-wide, as
//! softnet_stat is. `retrans_segs` is the monitor's namespace, the same count as that
//! namespace's `Tcp RetransSegs`.

use std::collections::{BTreeMap, HashMap};

use netprobe_common::{vocab::RetransmitKind, FlowKey, RetransmitTotals};

use super::KernelSample;
use crate::model::sites::SiteNames;
use crate::{
    fixes::{self, Condition, LiveValues},
    model::classify::{Direction, DropRole, Layer},
    monitor::columns::Column,
};

/// Flows listed per interval, busiest first.
const TOP_FLOWS: usize = 5;

/// Drops at one site on one CPU in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DropRow {
    pub reason: String,
    pub layer: Layer,
    pub direction: Direction,
    pub role: DropRole,
    pub cpu: u32,
    /// `None`: no device (dropped before one was set, e.g. in the sender's OUTPUT chain).
    pub interface: Option<String>,
    /// In the monitor's own namespace.
    pub own_netns: bool,
    pub netns: u32,
    /// `function+0xoff` that freed the packet.
    pub location: String,
    pub count: u64,
}

/// Retransmitted segments of one flow in the interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSegs {
    /// `198.18.0.1:5001 > 198.18.0.2:40312`.
    pub flow: String,
    pub segs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuCount {
    pub cpu: u32,
    pub count: u64,
}

/// Input-backlog drops from both sides: the CPUs whose backlog overflowed (softnet_stat
/// `dropped`) and the CPUs that tried to enqueue (the drop hook fires there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub overflowed: Vec<CpuCount>,
    pub enqueued: Vec<CpuCount>,
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetRxCpu {
    pub cpu: u32,
    pub runs: u64,
    pub ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// Every (site, CPU) that dropped, busiest first.
    pub drops: Vec<DropRow>,
    /// Retransmitted segments in the monitor's namespace: what `Tcp RetransSegs` counts
    /// (sent, and counted then refused on the way out).
    pub retrans_segs: u64,
    /// Sent retransmitted segments by kind (`rto`, `fast`, `tlp`, `syn`, …), non-zero only.
    pub by_kind: Vec<(RetransmitKind, u64)>,
    pub top_flows: Vec<FlowSegs>,
    pub backlog: Option<Backlog>,
    /// NET_RX softirq work per CPU (CPUs that ran it).
    pub net_rx: Vec<NetRxCpu>,
    /// What the tables could not hold in this interval.
    pub notes: Vec<String>,
    /// Events no count holds, in this interval (see `KernelSample::events_lost`).
    pub events_lost: u64,
    /// Segments the peers retransmitted to the monitor's namespace, (duplicate, fills_hole):
    /// with the receive hook only (`--listen`).
    pub peer_retransmits: (u64, u64),
}

/// What `between` needs besides the two samples.
pub struct Context<'a> {
    pub own_netns: u32,
    /// softnet_stat `dropped` growth per CPU in the interval.
    pub softnet_dropped: &'a [CpuCount],
    /// For the fixes (netdev_max_backlog, CPUs).
    pub live: &'a LiveValues,
}

pub fn between(
    before: &KernelSample,
    after: &KernelSample,
    names: &mut SiteNames,
    cx: &Context,
) -> Attribution {
    let mut out = Attribution {
        drops: drop_rows(before, after, names, cx.own_netns),
        ..Attribution::default()
    };
    retransmits(before, after, cx.own_netns, &mut out);
    out.backlog = backlog(&out.drops, cx);
    out.net_rx = net_rx(before, after);
    out.events_lost = after.events_lost.saturating_sub(before.events_lost);
    out.peer_retransmits = peer_retransmits(before, after, cx.own_netns);
    for (what, full) in [
        (
            "drop sites (counted by reason only)",
            after.site_table_full.saturating_sub(before.site_table_full),
        ),
        (
            "retransmitting flows (not counted)",
            after.flow_table_full.saturating_sub(before.flow_table_full),
        ),
    ] {
        if full > 0 {
            out.notes.push(format!("kernel table full: {full} {what}"));
        }
    }
    out
}

/// The growth of each per-CPU count; an entry new in `after` counts from zero.
fn per_cpu_growth<'a>(
    before: Option<&'a Vec<u64>>,
    after: &'a [u64],
) -> impl Iterator<Item = (u32, u64)> + 'a {
    after.iter().enumerate().filter_map(move |(cpu, now)| {
        let then = before.and_then(|b| b.get(cpu)).copied().unwrap_or(0);
        let grew = now.saturating_sub(then);
        (grew > 0).then_some((cpu as u32, grew))
    })
}

fn drop_rows(
    before: &KernelSample,
    after: &KernelSample,
    names: &mut SiteNames,
    own_netns: u32,
) -> Vec<DropRow> {
    let mut rows = Vec::new();
    names.prepare(after.sites.keys());
    for (key, per_cpu) in &after.sites {
        let grew: Vec<(u32, u64)> = per_cpu_growth(before.sites.get(key), per_cpu).collect();
        if grew.is_empty() {
            continue;
        }
        // Named once per site, not once per CPU that dropped there.
        let site = names.site(key);
        let own = key.netns == own_netns;
        let interface = names.interface(key, own);
        for (cpu, count) in grew {
            rows.push(DropRow {
                reason: site.reason.clone(),
                layer: site.layer,
                direction: site.direction,
                role: site.role,
                cpu,
                interface: interface.clone(),
                own_netns: own,
                netns: key.netns,
                location: site.location.clone(),
                count,
            });
        }
    }
    // A site that did not fit the table is still counted by its reason.
    for (reason, per_cpu) in &after.reasons_only {
        let name = names.reason(*reason);
        let role = crate::model::classify::role_of(&name);
        for (cpu, count) in per_cpu_growth(before.reasons_only.get(reason), per_cpu) {
            rows.push(DropRow {
                reason: name.clone(),
                layer: Layer::Unknown,
                direction: Direction::Unknown,
                role,
                cpu,
                interface: None,
                own_netns: false,
                netns: 0,
                location: String::new(),
                count,
            });
        }
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    rows
}

/// What RetransSegs counts of one flow's totals.
fn counted_segs(t: &RetransmitTotals) -> u64 {
    t.segs + t.failed_counted_segs
}

fn retransmits(before: &KernelSample, after: &KernelSample, own_netns: u32, out: &mut Attribution) {
    let mut by_kind = [0u64; 8];
    let mut flows = Vec::new();
    for (key, now) in after.flows.iter().filter(|(k, _)| k.netns == own_netns) {
        let then = before.flows.get(key).copied().unwrap_or_default();
        let segs = counted_segs(now).saturating_sub(counted_segs(&then));
        if segs == 0 {
            continue;
        }
        out.retrans_segs += segs;
        for (kind, (n, t)) in by_kind
            .iter_mut()
            .zip(now.kind_segs.iter().zip(then.kind_segs))
        {
            *kind += u64::from(n.saturating_sub(t));
        }
        flows.push(FlowSegs {
            flow: flow_text(key),
            segs,
        });
    }
    out.by_kind = RetransmitKind::ALL
        .iter()
        .map(|kind| (*kind, by_kind[kind.id() as usize]))
        .filter(|(_, segs)| *segs > 0)
        .collect();
    flows.sort_by(|a, b| b.segs.cmp(&a.segs).then_with(|| a.flow.cmp(&b.flow)));
    flows.truncate(TOP_FLOWS);
    out.top_flows = flows;
}

/// Received segments that were sent before: wholly (`duplicate`, and partly: both count as
/// duplicates) or filling a hole, in the monitor's namespace.
fn peer_retransmits(before: &KernelSample, after: &KernelSample, own_netns: u32) -> (u64, u64) {
    let mut sums = (0, 0);
    for (key, now) in after.receive.iter().filter(|(k, _)| k.netns == own_netns) {
        let then = before.receive.get(key).copied().unwrap_or_default();
        let dup = |t: &netprobe_common::ReceiveTotals| t.duplicate + t.duplicate_partial;
        sums.0 += dup(now).saturating_sub(dup(&then));
        sums.1 += now.fills_hole.saturating_sub(then.fills_hole);
    }
    sums
}

fn flow_text(key: &FlowKey) -> String {
    crate::model::flow::Flow::from_raw(key.netns, &key.flow, true).to_string()
}

/// The backlog's two sides, when either dropped.
fn backlog(rows: &[DropRow], cx: &Context) -> Option<Backlog> {
    let mut enqueued: BTreeMap<u32, u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.layer == Layer::Backlog) {
        *enqueued.entry(row.cpu).or_default() += row.count;
    }
    if enqueued.is_empty() && cx.softnet_dropped.is_empty() {
        return None;
    }
    let enqueued: Vec<CpuCount> = enqueued
        .into_iter()
        .map(|(cpu, count)| CpuCount { cpu, count })
        .collect();
    let mut overflowed = cx.softnet_dropped.to_vec();
    overflowed.sort_by(|a, b| b.count.cmp(&a.count).then(a.cpu.cmp(&b.cpu)));
    // Steered from other CPUs (RPS/RFS): the steering is half the fix.
    let steered = enqueued
        .iter()
        .any(|e| overflowed.iter().all(|o| o.cpu != e.cpu));
    let condition = if steered {
        Condition::SteeredBacklogOverflow
    } else {
        Condition::BacklogOverflow
    };
    Some(Backlog {
        overflowed,
        enqueued,
        fix: fixes::fix(condition, cx.live).command,
    })
}

fn net_rx(before: &KernelSample, after: &KernelSample) -> Vec<NetRxCpu> {
    after
        .net_rx
        .iter()
        .enumerate()
        .filter_map(|(cpu, now)| {
            let then = before.net_rx.get(cpu).copied().unwrap_or_default();
            let runs = now.runs.saturating_sub(then.runs);
            let ns = now.total_ns.saturating_sub(then.total_ns);
            (runs > 0).then_some(NetRxCpu {
                cpu: cpu as u32,
                runs,
                ms: ns as f64 / 1e6,
            })
        })
        .collect()
}

impl Attribution {
    /// Drops in the monitor's namespace that are losses (not a socket's teardown, not TCP
    /// discarding what it had): what the headline and the columns' details are made of, in
    /// the same scope as the namespace's counters. (The backlog's detail is host-wide, as
    /// softnet_stat is.)
    fn losses(&self) -> impl Iterator<Item = &DropRow> {
        self.drops
            .iter()
            .filter(|r| r.role == DropRole::Loss && r.own_netns)
    }

    pub fn kernel_drops(&self) -> u64 {
        self.losses().map(|r| r.count).sum()
    }

    /// The reason with the most lost packets, and their count.
    pub fn top_drop_reason(&self) -> Option<(&str, u64)> {
        top(self.losses().map(|r| (r.reason.as_str(), r.count)))
    }

    /// The CPU the most lost packets were dropped on, and their count.
    pub fn top_drop_cpu(&self) -> Option<(u32, u64)> {
        top(self.losses().map(|r| (r.cpu, r.count)))
    }

    /// What the eBPF side says of a column's drops, for its console line.
    pub fn detail(&self, column: Column) -> Option<String> {
        if column == Column::Softirq {
            return self.backlog.as_ref().map(Backlog::describe);
        }
        let rows: Vec<&DropRow> = self.losses().filter(|r| feeds(column, r)).collect();
        let (reason, count) = top(rows.iter().map(|r| (r.reason.as_str(), r.count)))?;
        let cpus = cpu_list(
            rows.iter()
                .filter(|r| r.reason == reason)
                .map(|r| (r.cpu, r.count)),
        );
        Some(format!("{reason} {count} on {cpus}"))
    }
}

impl Backlog {
    fn describe(&self) -> String {
        let overflowed = cpu_list(self.overflowed.iter().map(|c| (c.cpu, c.count)));
        let enqueued = cpu_list(self.enqueued.iter().map(|c| (c.cpu, c.count)));
        match (self.overflowed.is_empty(), self.enqueued.is_empty()) {
            (false, false) => format!(
                "{overflowed} backlog full, enqueued from {enqueued}; fix: {}",
                self.fix
            ),
            (false, true) => format!("{overflowed} backlog full; fix: {}", self.fix),
            _ => format!("backlog drops enqueued from {enqueued}; fix: {}", self.fix),
        }
    }
}

/// Whether a drop row is one a column counts (by layer, reason and direction).
fn feeds(column: Column, row: &DropRow) -> bool {
    let reason = row.reason.as_str();
    match column {
        Column::NicRx | Column::NicMissed => {
            row.layer == Layer::Nic && row.direction != Direction::Egress
        }
        Column::NicTx => row.layer == Layer::Nic && row.direction == Direction::Egress,
        Column::Qdisc => row.layer == Layer::Qdisc,
        Column::Softirq => row.layer == Layer::Backlog,
        Column::SynQueue | Column::AcceptQueue => {
            reason.contains("LISTEN") || reason.contains("REQQ")
        }
        Column::TcpPruned => reason.contains("PRUNE") || reason == "PROTO_MEM",
        Column::TcpCollapsed => false,
        Column::UdpRcvbuf => reason == "SOCKET_RCVBUFF" || reason.starts_with("UDP_"),
        Column::UdpSndbuf => false,
    }
}

/// The largest entry of an aggregation by key (ties: the smallest key).
fn top<K: Ord + Copy>(items: impl Iterator<Item = (K, u64)>) -> Option<(K, u64)> {
    let mut sums: BTreeMap<K, u64> = BTreeMap::new();
    for (k, n) in items {
        *sums.entry(k).or_default() += n;
    }
    sums.into_iter()
        .filter(|(_, n)| *n > 0)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// `CPU 1` or `CPU 0 (300), CPU 1 (200)`, busiest first.
fn cpu_list(items: impl Iterator<Item = (u32, u64)>) -> String {
    let mut sums: HashMap<u32, u64> = HashMap::new();
    for (cpu, n) in items {
        *sums.entry(cpu).or_default() += n;
    }
    let mut cpus: Vec<(u32, u64)> = sums.into_iter().collect();
    cpus.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    match cpus.as_slice() {
        [(cpu, _)] => format!("CPU {cpu}"),
        _ => cpus
            .iter()
            .map(|(cpu, n)| format!("CPU {cpu} ({n})"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
#[path = "attribution_tests.rs"]
mod tests;
