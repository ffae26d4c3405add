//! The end-of-trace summary: exact totals from the kernel maps, set beside what reached
//! userspace, so that lost events are always counted and shown.

use std::{collections::BTreeMap, fmt::Write as _};

use netprobe_common::{
    ReceiveTotals, RetransmitTotals, COUNTER_DROP_LOST, COUNTER_DROP_SEEN, COUNTER_FLOW_TABLE_FULL,
    COUNTER_REASON_TABLE_FULL, COUNTER_RECEIVE_LOST, COUNTER_RECEIVE_SEEN,
    COUNTER_RECEIVE_TABLE_FULL, COUNTER_RETRANSMIT_LOST, COUNTER_RETRANSMIT_SEEN,
};
use serde::Serialize;

use crate::{
    kernel::btf::DropReasons,
    kernel::loader::{HookStatus, KernelTotals, DROP_PROGRAM},
    model::owners::Owner,
    trace::output::{addr, endpoint, family_name, kind_name},
};

/// Events received by the agent, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    pub retransmits: u64,
    pub drops: u64,
    pub receives: u64,
    pub decode_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct SummaryJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_ms: u64,
    pub hooks: Vec<HookStatus>,
    pub retransmits: RetransmitSummary,
    /// The incoming direction: what peers sent again, and holes in what they sent.
    pub received: ReceiveSummary,
    pub drops: DropSummary,
    pub events: EventAccounting,
    /// Events counted in the kernel that never reached the stream (ring buffer full).
    pub events_lost: u64,
    /// Program invocations the kernel skipped (`recursion_misses`: the hook fired in an
    /// interrupt that had interrupted another BPF program on that CPU). Neither counted nor
    /// streamed: the one loss netprobe cannot recover, so it is reported by program.
    pub kernel_skipped: BTreeMap<&'static str, u64>,
    /// Receive processing per CPU (host-wide; filters do not apply), CPUs with activity only.
    pub cpus: Vec<CpuSummary>,
    /// Input-backlog drops from both sides: the CPUs that tried to enqueue (drop events) and
    /// the CPUs whose backlog overflowed (softnet_stat).
    pub backlog: BacklogSummary,
}

/// softnet_stat counts a backlog drop against the CPU whose backlog overflowed; the drop
/// event fires on the CPU that tried to enqueue (they differ under RPS/RFS steering).
#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct BacklogSummary {
    /// CPU_BACKLOG drops counted in the kernel (exact, whatever the stream lost).
    pub drop_events: u64,
    /// softnet_stat `dropped` growth over the same window, all CPUs.
    pub softnet_dropped: u64,
    /// The two count the same drops: they agree exactly unless something below kept a drop
    /// out of the kernel-side count.
    pub must_match: bool,
    /// Why they need not agree, when `must_match` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_exact_because: Option<String>,
    pub overflowing_cpus: Vec<CpuCount>,
    pub enqueuing_cpus: Vec<CpuCount>,
}

fn backlog_summary(
    totals: &KernelTotals,
    reasons: &DropReasons,
    softnet: &SoftnetDeltas,
    filtered: bool,
    drop_hook_skipped: u64,
) -> BacklogSummary {
    // Each of these keeps some CPU_BACKLOG drops out of the per-reason table while
    // softnet_stat still counts them.
    let not_exact_because = if !reasons.recorded() {
        Some("this kernel records no drop reasons (before Linux 5.17): the kernel-side counts cannot tell backlog drops from others".to_string())
    } else if filtered {
        Some("trace filters exclude some drops; softnet_stat counts all".to_string())
    } else if drop_hook_skipped > 0 {
        Some(format!(
            "the kernel skipped the drop hook {drop_hook_skipped} times (another BPF program was running on that CPU)"
        ))
    } else if totals.counter(COUNTER_REASON_TABLE_FULL) > 0 {
        Some(format!(
            "{} drops missing from the per-reason table",
            totals.counter(COUNTER_REASON_TABLE_FULL)
        ))
    } else {
        None
    };
    let code = reasons.value("CPU_BACKLOG");
    let per_cpu: Vec<u64> = totals
        .reasons
        .iter()
        .find(|(reason, _)| Some(*reason) == code)
        .map(|(_, counts)| counts.clone())
        .unwrap_or_default();
    BacklogSummary {
        drop_events: per_cpu.iter().sum(),
        softnet_dropped: softnet.values().map(|(_, dropped)| dropped).sum(),
        must_match: not_exact_because.is_none(),
        not_exact_because,
        overflowing_cpus: softnet
            .iter()
            .filter(|(_, (_, dropped))| *dropped > 0)
            .map(|(cpu, (_, dropped))| CpuCount {
                cpu: *cpu,
                count: *dropped,
            })
            .collect(),
        enqueuing_cpus: per_cpu
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(cpu, count)| CpuCount { cpu, count: *count })
            .collect(),
    }
}

#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct CpuSummary {
    pub cpu: usize,
    /// NET_RX softirq runs that began and ended inside the window.
    pub net_rx_runs: u64,
    pub net_rx_total_ns: u64,
    pub net_rx_max_ns: u64,
    pub napi_polls: u64,
    /// NAPI polls that used their whole budget.
    pub napi_full_budget: u64,
    /// softnet_stat's time_squeeze delta over the same window (NET_RX out of budget or time).
    pub time_squeeze: u64,
    /// softnet_stat's dropped delta over the same window (input backlog full).
    pub backlog_dropped: u64,
    pub napi: Vec<NapiDevice>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NapiDevice {
    /// Device name; `(no_device)` is the per-CPU backlog (RPS, netif_rx, veth).
    pub dev: String,
    pub polls: u64,
    pub full_budget: u64,
    pub packets: u64,
}

/// softnet_stat per-CPU deltas over the trace window: (time_squeeze, dropped) by CPU id.
pub type SoftnetDeltas = std::collections::BTreeMap<usize, (u64, u64)>;

fn cpu_summaries(totals: &KernelTotals, softnet: &SoftnetDeltas) -> Vec<CpuSummary> {
    let ncpu = totals
        .net_rx
        .len()
        .max(totals.napi.iter().map(|(_, v)| v.len()).max().unwrap_or(0))
        .max(softnet.keys().next_back().map(|c| c + 1).unwrap_or(0));
    let mut out = Vec::new();
    for cpu in 0..ncpu {
        let net_rx = totals.net_rx.get(cpu).copied().unwrap_or_default();
        let (time_squeeze, backlog_dropped) = softnet.get(&cpu).copied().unwrap_or((0, 0));
        let mut summary = CpuSummary {
            cpu,
            net_rx_runs: net_rx.runs,
            net_rx_total_ns: net_rx.total_ns,
            net_rx_max_ns: net_rx.max_ns,
            time_squeeze,
            backlog_dropped,
            ..Default::default()
        };
        for (dev, per_cpu) in &totals.napi {
            let t = per_cpu.get(cpu).copied().unwrap_or_default();
            if t.polls == 0 {
                continue;
            }
            summary.napi_polls += t.polls;
            summary.napi_full_budget += t.full_budget;
            summary.napi.push(NapiDevice {
                dev: dev.clone(),
                polls: t.polls,
                full_budget: t.full_budget,
                packets: t.work,
            });
        }
        if summary.net_rx_runs + summary.napi_polls + time_squeeze + backlog_dropped > 0 {
            out.push(summary);
        }
    }
    out
}

#[derive(Debug, Serialize, Default)]
pub struct RetransmitSummary {
    pub sent: u64,
    pub failed: u64,
    pub segs: u64,
    pub bytes: u64,
    /// All flows' retransmits by kind (exact, from the kernel's flow table).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Busiest first.
    pub flows: Vec<FlowRetransmits>,
}

#[derive(Debug, Serialize)]
pub struct FlowRetransmits {
    pub netns: u32,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub sent: u64,
    pub failed: u64,
    pub segs: u64,
    pub bytes: u64,
    /// Retransmits (sent and failed) by kind; kinds with none are left out.
    pub kinds: BTreeMap<&'static str, u64>,
    /// Per kind: segments sent, and what of it came from the TIMER softirq (what TcpExt
    /// tells apart: an RTO's own retransmit vs the slow-start ones after it).
    pub kind_detail: BTreeMap<&'static str, KindDetail>,
    /// The process owning the flow's socket, when it can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindDetail {
    /// Segments of successful retransmits.
    pub segs: u64,
    /// Retransmits (sent and failed) from the TIMER softirq, and their segments.
    pub timer: u64,
    pub timer_segs: u64,
}

fn kind_details(t: &RetransmitTotals) -> BTreeMap<&'static str, KindDetail> {
    (0..8)
        .filter(|&k| t.kinds[k] > 0)
        .map(|k| {
            (
                kind_name(k as u8),
                KindDetail {
                    segs: t.kind_segs[k] as u64,
                    timer: t.timer_kinds[k] as u64,
                    timer_segs: t.timer_segs[k] as u64,
                },
            )
        })
        .collect()
}

fn kind_counts(kinds: &[u32; 8]) -> BTreeMap<&'static str, u64> {
    kinds
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| (kind_name(kind as u8), *n as u64))
        .collect()
}

/// Counts of out-of-sequence data on a receive path.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveCounts {
    /// Segments wholly received before: the peer re-sent data we had (a spurious
    /// retransmit, or our ACK lost on the way out).
    pub duplicate: u64,
    /// Segments partly received before.
    pub duplicate_partial: u64,
    pub duplicate_bytes: u64,
    /// Re-sent data that filled a hole: loss on the way in (or reordering).
    pub fills_hole: u64,
    pub fills_hole_bytes: u64,
    /// Segments that arrived beyond the next expected byte.
    pub out_of_order: u64,
    /// Holes opened, and the bytes missing in front of them when they opened.
    pub holes: u64,
    pub hole_bytes: u64,
}

impl From<&ReceiveTotals> for ReceiveCounts {
    fn from(t: &ReceiveTotals) -> Self {
        Self {
            duplicate: t.duplicate,
            duplicate_partial: t.duplicate_partial,
            duplicate_bytes: t.duplicate_bytes,
            fills_hole: t.fills_hole,
            fills_hole_bytes: t.fills_hole_bytes,
            out_of_order: t.out_of_order,
            holes: t.holes,
            hole_bytes: t.hole_bytes,
        }
    }
}

/// Out-of-sequence data on established sockets' receive path (exact, from the kernel's
/// per-flow receive table).
#[derive(Debug, Serialize, Default, Clone)]
pub struct ReceiveSummary {
    #[serde(flatten)]
    pub totals: ReceiveCounts,
    /// Busiest first.
    pub flows: Vec<FlowReceives>,
}

#[derive(Debug, Serialize, Clone)]
pub struct FlowReceives {
    pub netns: u32,
    pub family: &'static str,
    /// The receiving socket's end.
    pub saddr: String,
    pub sport: u16,
    /// The peer.
    pub daddr: String,
    pub dport: u16,
    #[serde(flatten)]
    pub counts: ReceiveCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

fn receive_summary(
    totals: &KernelTotals,
    owner_of: &mut dyn FnMut(u64) -> Option<Owner>,
) -> ReceiveSummary {
    let mut all = ReceiveTotals::default();
    let mut flows = Vec::new();
    for (key, t) in &totals.receive_flows {
        all.add(t);
        flows.push(FlowReceives {
            netns: key.netns,
            family: family_name(key.flow.family).unwrap_or("unknown"),
            saddr: addr(key.flow.family, &key.flow.saddr).to_string(),
            sport: key.flow.sport,
            daddr: addr(key.flow.family, &key.flow.daddr).to_string(),
            dport: key.flow.dport,
            counts: t.into(),
            owner: owner_of(t.sock_ino),
        });
    }
    let weight = |f: &FlowReceives| {
        let c = &f.counts;
        c.duplicate + c.duplicate_partial + c.fills_hole + c.holes
    };
    flows.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.sport.cmp(&b.sport)));
    ReceiveSummary {
        totals: (&all).into(),
        flows,
    }
}

#[derive(Debug, Serialize, Default)]
pub struct DropSummary {
    pub total: u64,
    pub by_reason: Vec<ReasonCount>,
    pub by_cpu: Vec<CpuCount>,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub code: u32,
    pub count: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CpuCount {
    pub cpu: usize,
    pub count: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct EventAccounting {
    pub retransmit: KindAccounting,
    pub drop: KindAccounting,
    /// peer_retransmit and ooo events.
    pub receive: KindAccounting,
    pub decode_errors: u64,
    /// Retransmits missing from the per-flow totals because the flow table was full.
    pub flow_table_full: u64,
    /// Drops missing from the per-reason totals because the reason table was full.
    pub reason_table_full: u64,
    /// Receive-path segments missing from the per-flow receive totals (table full).
    pub receive_table_full: u64,
}

/// For one kind: `counted` (kernel, exact) = `streamed` + `lost`.
#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct KindAccounting {
    pub counted: u64,
    pub streamed: u64,
    pub lost: u64,
}

/// What the agent knows about the trace window beside the kernel's totals.
pub struct Window<'a> {
    pub streamed: Streamed,
    pub hooks: Vec<HookStatus>,
    pub reasons: &'a DropReasons,
    /// softnet_stat growth over the window.
    pub softnet: &'a SoftnetDeltas,
    /// Trace filters were set: counter-side totals then cover more than the events do.
    pub filtered: bool,
    pub duration_ms: u64,
    /// (program, recursion misses).
    pub kernel_skipped: Vec<(&'static str, u64)>,
}

pub fn build(
    totals: &KernelTotals,
    window: Window,
    owner_of: &mut dyn FnMut(u64) -> Option<Owner>,
) -> SummaryJson {
    let Window {
        streamed,
        hooks,
        reasons,
        softnet,
        filtered,
        duration_ms,
        kernel_skipped,
    } = window;
    let drop_hook_skipped = kernel_skipped
        .iter()
        .filter(|(program, _)| *program == DROP_PROGRAM)
        .map(|(_, n)| n)
        .sum();
    let mut retransmits = RetransmitSummary::default();
    for (key, t) in &totals.flows {
        retransmits.sent += t.sent;
        retransmits.failed += t.failed;
        retransmits.segs += t.segs;
        retransmits.bytes += t.bytes;
        for (kind, n) in kind_counts(&t.kinds) {
            *retransmits.by_kind.entry(kind).or_default() += n;
        }
        retransmits.flows.push(FlowRetransmits {
            netns: key.netns,
            family: family_name(key.flow.family).unwrap_or("unknown"),
            saddr: addr(key.flow.family, &key.flow.saddr).to_string(),
            sport: key.flow.sport,
            daddr: addr(key.flow.family, &key.flow.daddr).to_string(),
            dport: key.flow.dport,
            sent: t.sent,
            failed: t.failed,
            segs: t.segs,
            bytes: t.bytes,
            kinds: kind_counts(&t.kinds),
            kind_detail: kind_details(t),
            owner: owner_of(t.sock_ino),
        });
    }
    retransmits.flows.sort_by(|a, b| {
        (b.sent + b.failed)
            .cmp(&(a.sent + a.failed))
            .then(a.sport.cmp(&b.sport))
    });

    let mut drops = DropSummary::default();
    let mut per_cpu: Vec<u64> = Vec::new();
    for (code, counts) in &totals.reasons {
        let count: u64 = counts.iter().sum();
        drops.total += count;
        drops.by_reason.push(ReasonCount {
            reason: reasons.name(*code),
            code: *code,
            count,
        });
        if per_cpu.len() < counts.len() {
            per_cpu.resize(counts.len(), 0);
        }
        for (cpu, c) in counts.iter().enumerate() {
            per_cpu[cpu] += c;
        }
    }
    drops
        .by_reason
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    drops.by_cpu = per_cpu
        .into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .map(|(cpu, count)| CpuCount { cpu, count })
        .collect();

    let events = EventAccounting {
        retransmit: KindAccounting {
            counted: totals.counter(COUNTER_RETRANSMIT_SEEN),
            streamed: streamed.retransmits,
            lost: totals.counter(COUNTER_RETRANSMIT_LOST),
        },
        drop: KindAccounting {
            counted: totals.counter(COUNTER_DROP_SEEN),
            streamed: streamed.drops,
            lost: totals.counter(COUNTER_DROP_LOST),
        },
        receive: KindAccounting {
            counted: totals.counter(COUNTER_RECEIVE_SEEN),
            streamed: streamed.receives,
            lost: totals.counter(COUNTER_RECEIVE_LOST),
        },
        receive_table_full: totals.counter(COUNTER_RECEIVE_TABLE_FULL),
        decode_errors: streamed.decode_errors,
        flow_table_full: totals.counter(COUNTER_FLOW_TABLE_FULL),
        reason_table_full: totals.counter(COUNTER_REASON_TABLE_FULL),
    };
    SummaryJson {
        kind: "summary",
        duration_ms,
        hooks,
        events_lost: events.retransmit.lost + events.drop.lost + events.receive.lost,
        kernel_skipped: kernel_skipped.into_iter().collect(),
        retransmits,
        received: receive_summary(totals, owner_of),
        drops,
        events,
        cpus: cpu_summaries(totals, softnet),
        backlog: backlog_summary(totals, reasons, softnet, filtered, drop_hook_skipped),
    }
}

impl SummaryJson {
    /// The summary for people.
    pub fn text(&self, top: usize) -> String {
        let mut out = String::new();
        let r = &self.retransmits;
        let _ = writeln!(
            out,
            "\n== netprobe summary ({:.1} s) ==",
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "retransmits: {} sent ({} segments, {} bytes), {} failed attempts, {} flows; by kind: {}",
            r.sent,
            r.segs,
            r.bytes,
            r.failed,
            r.flows.len(),
            r.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        );
        for f in r.flows.iter().take(top) {
            let _ = writeln!(
                out,
                "  {:>8} sent {:>6} failed {:>8} segs  {} > {}  netns={}",
                f.sent,
                f.failed,
                f.segs,
                endpoint(&f.saddr, f.sport),
                endpoint(&f.daddr, f.dport),
                f.netns
            );
        }
        let rx = &self.received.totals;
        let _ = writeln!(
            out,
            "received out of sequence: {} duplicate ({} partial, {} bytes), {} filled holes ({} bytes), {} holes opened ({} bytes), {} out-of-order segments",
            rx.duplicate + rx.duplicate_partial,
            rx.duplicate_partial,
            rx.duplicate_bytes,
            rx.fills_hole,
            rx.fills_hole_bytes,
            rx.holes,
            rx.hole_bytes,
            rx.out_of_order
        );
        for f in self.received.flows.iter().take(top) {
            let _ = writeln!(
                out,
                "  {:>8} dup {:>6} fills {:>6} holes  {} > {}  netns={}",
                f.counts.duplicate + f.counts.duplicate_partial,
                f.counts.fills_hole,
                f.counts.holes,
                endpoint(&f.daddr, f.dport),
                endpoint(&f.saddr, f.sport),
                f.netns
            );
        }
        let _ = writeln!(out, "drops: {}", self.drops.total);
        for d in self.drops.by_reason.iter().take(top) {
            let _ = writeln!(out, "  {:>10}  {}", d.count, d.reason);
        }
        if !self.drops.by_cpu.is_empty() {
            let cpus: Vec<String> = self
                .drops
                .by_cpu
                .iter()
                .map(|c| format!("cpu{}={}", c.cpu, c.count))
                .collect();
            let _ = writeln!(out, "  by cpu: {}", cpus.join(" "));
        }
        for c in &self.cpus {
            let devices: Vec<String> = c
                .napi
                .iter()
                .map(|n| format!("{} {} polls/{} full", n.dev, n.polls, n.full_budget))
                .collect();
            let _ = writeln!(
                out,
                "cpu{}: NET_RX {} runs, {:.1} ms (max {} µs); NAPI {}; softnet time_squeeze +{}, backlog dropped +{}",
                c.cpu,
                c.net_rx_runs,
                c.net_rx_total_ns as f64 / 1e6,
                c.net_rx_max_ns / 1000,
                if devices.is_empty() { "-".to_string() } else { devices.join(", ") },
                c.time_squeeze,
                c.backlog_dropped
            );
        }
        let b = &self.backlog;
        if b.drop_events + b.softnet_dropped > 0 {
            let list = |cpus: &[CpuCount]| {
                cpus.iter()
                    .map(|c| format!("cpu{}={}", c.cpu, c.count))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                out,
                "backlog: {} drops (softnet_stat: {}); overflowed on {}; enqueued from {}{}",
                b.drop_events,
                b.softnet_dropped,
                list(&b.overflowing_cpus),
                list(&b.enqueuing_cpus),
                b.not_exact_because
                    .as_ref()
                    .map(|why| format!(" (not exact: {why})"))
                    .unwrap_or_default()
            );
        }
        let e = &self.events;
        if self.events_lost > 0 {
            let _ = writeln!(
                out,
                "WARNING: {} events lost (ring buffer full: {} retransmit, {} drop); totals above are exact, the stream is not. Raise --ring-size.",
                self.events_lost, e.retransmit.lost, e.drop.lost
            );
        } else {
            let _ = writeln!(out, "events: none lost");
        }
        if e.flow_table_full > 0 || e.reason_table_full > 0 {
            let _ = writeln!(
                out,
                "WARNING: kernel tables full: {} retransmits missing from per-flow totals, {} drops from per-reason totals",
                e.flow_table_full, e.reason_table_full
            );
        }
        let skipped: u64 = self.kernel_skipped.values().sum();
        if skipped > 0 {
            let which: Vec<String> = self
                .kernel_skipped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(p, n)| format!("{p} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "WARNING: the kernel skipped {skipped} hook invocations (another BPF program was running on that CPU): {}",
                which.join(", ")
            );
        }
        if e.decode_errors > 0 {
            let _ = writeln!(out, "WARNING: {} records did not decode", e.decode_errors);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_common::{Flow, FlowKey, ReceiveTotals, AF_INET};

    #[test]
    fn per_cpu_receive_work_beside_softnet() {
        use netprobe_common::{NapiTotals, NetRxTotals};
        let totals = KernelTotals {
            net_rx: vec![
                NetRxTotals {
                    runs: 10,
                    total_ns: 5_000_000,
                    max_ns: 900_000,
                },
                NetRxTotals::default(),
            ],
            napi: vec![
                (
                    "(no_device)".into(),
                    vec![
                        NapiTotals {
                            polls: 12,
                            full_budget: 2,
                            work: 300,
                        },
                        NapiTotals::default(),
                    ],
                ),
                (
                    "eth0".into(),
                    vec![
                        NapiTotals {
                            polls: 3,
                            full_budget: 0,
                            work: 9,
                        },
                        NapiTotals::default(),
                    ],
                ),
            ],
            ..Default::default()
        };
        let softnet: SoftnetDeltas = [(0, (1, 0)), (1, (0, 0)), (3, (0, 7))].into();
        let s = build(
            &totals,
            Window {
                streamed: Streamed::default(),
                hooks: vec![],
                reasons: &DropReasons::default(),
                softnet: &softnet,
                filtered: false,
                duration_ms: 10,
                kernel_skipped: Vec::new(),
            },
            &mut |_| None,
        );
        assert_eq!(
            s.cpus.len(),
            2,
            "idle CPU 1 and 2 left out, CPU 3 has backlog drops"
        );
        let c0 = &s.cpus[0];
        assert_eq!(
            (c0.net_rx_runs, c0.net_rx_total_ns, c0.net_rx_max_ns),
            (10, 5_000_000, 900_000)
        );
        assert_eq!(
            (c0.napi_polls, c0.napi_full_budget, c0.time_squeeze),
            (15, 2, 1)
        );
        assert_eq!(
            c0.napi[0],
            NapiDevice {
                dev: "(no_device)".into(),
                polls: 12,
                full_budget: 2,
                packets: 300
            }
        );
        assert_eq!((s.cpus[1].cpu, s.cpus[1].backlog_dropped), (3, 7));
        assert!(s.text(5).contains("cpu0: NET_RX 10 runs, 5.0 ms (max 900 µs); NAPI (no_device) 12 polls/2 full, eth0 3 polls/0 full; softnet time_squeeze +1"), "{}", s.text(5));
    }

    #[test]
    fn backlog_drops_from_both_sides() {
        let reasons = DropReasons::from_pairs(&[(71, "CPU_BACKLOG"), (3, "NO_SOCKET")], &[]);
        let totals = KernelTotals {
            reasons: vec![(71, vec![40, 0]), (3, vec![5, 5])],
            ..Default::default()
        };
        // Enqueued from CPU 0, overflowed on CPU 1.
        let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (3, 40))].into();
        let s = build(
            &totals,
            Window {
                streamed: Streamed::default(),
                hooks: vec![],
                reasons: &reasons,
                softnet: &softnet,
                filtered: false,
                duration_ms: 10,
                kernel_skipped: Vec::new(),
            },
            &mut |_| None,
        );
        assert_eq!(
            s.backlog,
            BacklogSummary {
                drop_events: 40,
                softnet_dropped: 40,
                must_match: true,
                not_exact_because: None,
                overflowing_cpus: vec![CpuCount { cpu: 1, count: 40 }],
                enqueuing_cpus: vec![CpuCount { cpu: 0, count: 40 }],
            }
        );
        assert!(s.text(5).contains("backlog: 40 drops (softnet_stat: 40); overflowed on cpu1=40; enqueued from cpu0=40"), "{}", s.text(5));

        // A skipped drop hook may have missed some of them: no longer an exact match.
        let skipped = build(
            &totals,
            Window {
                streamed: Streamed::default(),
                hooks: vec![],
                reasons: &reasons,
                softnet: &softnet,
                filtered: false,
                duration_ms: 10,
                kernel_skipped: vec![
                    (DROP_PROGRAM, 1),
                    (crate::kernel::loader::catalogue::NAPI_HOOK.program, 5),
                ],
            },
            &mut |_| None,
        );
        assert!(!skipped.backlog.must_match);
        assert_eq!(
            skipped.backlog.not_exact_because.as_deref(),
            Some("the kernel skipped the drop hook 1 times (another BPF program was running on that CPU)")
        );
        assert!(
            skipped.text(5).contains("not exact: the kernel skipped"),
            "{}",
            skipped.text(5)
        );
    }

    #[test]
    fn totals_by_flow_reason_and_cpu_with_loss() {
        let mut flow = Flow {
            family: AF_INET,
            sport: 40000,
            dport: 5001,
            ..Default::default()
        };
        flow.saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        let totals = KernelTotals {
            counters: vec![
                (COUNTER_RETRANSMIT_SEEN, "retransmit_seen", 12),
                (COUNTER_RETRANSMIT_LOST, "retransmit_lost", 2),
                (COUNTER_DROP_SEEN, "drop_seen", 10),
                (COUNTER_DROP_LOST, "drop_lost", 1),
            ],
            flows: vec![(
                FlowKey {
                    flow,
                    netns: 7,
                    _pad0: 0,
                },
                RetransmitTotals {
                    sent: 11,
                    failed: 1,
                    segs: 13,
                    bytes: 15000,
                    sock_ino: 99,
                    kinds: [0, 2, 9, 1, 0, 0, 0, 0],
                    kind_segs: [0, 2, 10, 1, 0, 0, 0, 0],
                    timer_kinds: [0, 1, 0, 1, 0, 0, 0, 0],
                    timer_segs: [0, 1, 0, 1, 0, 0, 0, 0],
                },
            )],
            reasons: vec![(12, vec![4, 3]), (3, vec![0, 3])],
            receive_flows: vec![(
                FlowKey {
                    flow: Flow {
                        sport: 5001,
                        dport: 40000,
                        ..flow
                    },
                    netns: 8,
                    _pad0: 0,
                },
                ReceiveTotals {
                    duplicate: 1,
                    fills_hole: 3,
                    fills_hole_bytes: 4344,
                    out_of_order: 9,
                    holes: 2,
                    hole_bytes: 2896,
                    sock_ino: 99,
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let reasons = DropReasons::from_pairs(&[(12, "NETFILTER_DROP"), (3, "NO_SOCKET")], &[]);
        let s = build(
            &totals,
            Window {
                streamed: Streamed {
                    retransmits: 10,
                    drops: 9,
                    receives: 4,
                    decode_errors: 0,
                },
                hooks: vec![],
                reasons: &reasons,
                softnet: &SoftnetDeltas::new(),
                filtered: false,
                duration_ms: 1500,
                kernel_skipped: vec![(DROP_PROGRAM, 0)],
            },
            &mut |ino| {
                (ino == 99).then(|| Owner {
                    pid: 5,
                    comm: "app".into(),
                })
            },
        );
        assert_eq!(
            (s.retransmits.sent, s.retransmits.failed, s.retransmits.segs),
            (11, 1, 13)
        );
        assert_eq!(s.retransmits.flows[0].saddr, "198.18.0.1");
        assert_eq!(
            s.retransmits.flows[0].kind_detail["rto"],
            KindDetail {
                segs: 2,
                timer: 1,
                timer_segs: 1
            }
        );
        assert_eq!(s.retransmits.flows[0].kind_detail["fast"].segs, 10);
        // The receive side: totals, the flow from the receiving socket, its owner.
        let r = &s.received;
        assert_eq!(
            (
                r.totals.duplicate,
                r.totals.fills_hole,
                r.totals.fills_hole_bytes,
                r.totals.out_of_order,
                r.totals.holes
            ),
            (1, 3, 4344, 9, 2)
        );
        assert_eq!(
            (
                r.flows[0].sport,
                r.flows[0].netns,
                r.flows[0].owner.as_ref().map(|o| o.pid)
            ),
            (5001, 8, Some(5))
        );
        assert_eq!(
            s.retransmits.flows[0].kinds,
            BTreeMap::from([("rto", 2), ("fast", 9), ("tlp", 1)])
        );
        assert_eq!(
            s.retransmits.by_kind,
            BTreeMap::from([("rto", 2), ("fast", 9), ("tlp", 1)])
        );
        assert_eq!(
            s.retransmits.flows[0].owner,
            Some(Owner {
                pid: 5,
                comm: "app".into()
            })
        );
        assert_eq!(s.drops.total, 10);
        assert_eq!(s.drops.by_reason[0].reason, "NETFILTER_DROP");
        assert_eq!(s.drops.by_reason[0].count, 7);
        assert_eq!(
            s.drops
                .by_cpu
                .iter()
                .map(|c| (c.cpu, c.count))
                .collect::<Vec<_>>(),
            vec![(0, 4), (1, 6)]
        );
        assert_eq!(
            s.events.retransmit,
            KindAccounting {
                counted: 12,
                streamed: 10,
                lost: 2
            }
        );
        assert_eq!(s.events_lost, 3);
        let text = s.text(5);
        assert!(text.contains("3 events lost"), "{text}");
        assert!(text.contains("11 sent (13 segments"), "{text}");
    }
}
