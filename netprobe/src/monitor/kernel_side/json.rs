//! The `kernel` object of `--json`'s interval: the eBPF attribution as a contract of its own
//! (docs/monitor.md), built from the domain's `Attribution`.

use serde::Serialize;

use super::attribution::{Attribution, CpuCount, DropRow};
use crate::model::classify::DropRole;

/// Drop rows listed per interval, busiest first (every row counts in the totals).
const DROP_ROWS_LISTED: usize = 20;

#[derive(Debug, Serialize)]
pub struct KernelJson<'a> {
    /// Lost packets the drop hook saw (host-wide; teardown and old-data discards left out).
    pub drops: u64,
    pub top_drop_reason: Option<&'a str>,
    pub top_drop_cpu: Option<u32>,
    /// By (reason, layer, direction, CPU, interface), busiest first, at most 20.
    pub drop_sites: Vec<DropJson<'a>>,
    /// How many (site, CPU) rows the interval had in all.
    pub drop_sites_total: usize,
    /// Retransmitted segments in the monitor's namespace (what `Tcp RetransSegs` counts).
    pub retrans_segs: u64,
    pub retrans_segs_by_kind: Vec<KindJson>,
    pub retransmitting_flows: Vec<FlowJson<'a>>,
    pub backlog: Option<BacklogJson<'a>>,
    pub net_rx: Vec<NetRxJson>,
    pub notes: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct DropJson<'a> {
    pub reason: &'a str,
    pub layer: &'static str,
    pub direction: &'static str,
    /// `loss`, `teardown` (a socket going away) or `already_received` (TCP's old data).
    pub role: &'static str,
    pub cpu: u32,
    pub interface: Option<&'a str>,
    /// Dropped in the monitor's own namespace.
    pub own_netns: bool,
    pub netns: u32,
    pub location: &'a str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct KindJson {
    pub kind: &'static str,
    pub segs: u64,
}

#[derive(Debug, Serialize)]
pub struct FlowJson<'a> {
    pub flow: &'a str,
    pub segs: u64,
}

#[derive(Debug, Serialize)]
pub struct CpuJson {
    pub cpu: u32,
    pub drops: u64,
}

#[derive(Debug, Serialize)]
pub struct BacklogJson<'a> {
    /// CPUs whose input backlog overflowed (softnet_stat `dropped`).
    pub overflowed: Vec<CpuJson>,
    /// CPUs that tried to enqueue the dropped packets (the drop hook).
    pub enqueued: Vec<CpuJson>,
    pub fix: &'a str,
}

#[derive(Debug, Serialize)]
pub struct NetRxJson {
    pub cpu: u32,
    pub runs: u64,
    pub ms: f64,
}

fn role_name(role: DropRole) -> &'static str {
    match role {
        DropRole::Loss => "loss",
        DropRole::Teardown => "teardown",
        DropRole::AlreadyReceived => "already_received",
    }
}

fn cpus(list: &[CpuCount]) -> Vec<CpuJson> {
    list.iter()
        .map(|c| CpuJson {
            cpu: c.cpu,
            drops: c.count,
        })
        .collect()
}

impl<'a> From<&'a DropRow> for DropJson<'a> {
    fn from(r: &'a DropRow) -> Self {
        Self {
            reason: &r.reason,
            layer: r.layer.name(),
            direction: r.direction.name(),
            role: role_name(r.role),
            cpu: r.cpu,
            interface: r.interface.as_deref(),
            own_netns: r.own_netns,
            netns: r.netns,
            location: &r.location,
            count: r.count,
        }
    }
}

impl<'a> From<&'a Attribution> for KernelJson<'a> {
    fn from(a: &'a Attribution) -> Self {
        Self {
            drops: a.kernel_drops(),
            top_drop_reason: a.top_drop_reason().map(|(reason, _)| reason),
            top_drop_cpu: a.top_drop_cpu().map(|(cpu, _)| cpu),
            drop_sites: a
                .drops
                .iter()
                .take(DROP_ROWS_LISTED)
                .map(Into::into)
                .collect(),
            drop_sites_total: a.drops.len(),
            retrans_segs: a.retrans_segs,
            retrans_segs_by_kind: a
                .by_kind
                .iter()
                .map(|(kind, segs)| KindJson {
                    kind: kind.name(),
                    segs: *segs,
                })
                .collect(),
            retransmitting_flows: a
                .top_flows
                .iter()
                .map(|f| FlowJson {
                    flow: &f.flow,
                    segs: f.segs,
                })
                .collect(),
            backlog: a.backlog.as_ref().map(|b| BacklogJson {
                overflowed: cpus(&b.overflowed),
                enqueued: cpus(&b.enqueued),
                fix: &b.fix,
            }),
            net_rx: a
                .net_rx
                .iter()
                .map(|n| NetRxJson {
                    cpu: n.cpu,
                    runs: n.runs,
                    ms: (n.ms * 1000.0).round() / 1000.0,
                })
                .collect(),
            notes: &a.notes,
        }
    }
}
