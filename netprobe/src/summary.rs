//! The end-of-trace summary: exact totals from the kernel maps, set beside what reached
//! userspace, so that lost events are always counted and shown.

use std::fmt::Write as _;

use netprobe_common::{
    COUNTER_DROP_LOST, COUNTER_DROP_SEEN, COUNTER_FLOW_TABLE_FULL, COUNTER_REASON_TABLE_FULL,
    COUNTER_RETRANSMIT_LOST, COUNTER_RETRANSMIT_SEEN,
};
use serde::Serialize;

use crate::{
    btf::DropReasons,
    loader::{HookStatus, KernelTotals},
    output::{addr, family_name},
};

/// Events received by the agent, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    pub retransmits: u64,
    pub drops: u64,
    pub decode_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct SummaryJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_ms: u64,
    pub hooks: Vec<HookStatus>,
    pub retransmits: RetransmitSummary,
    pub drops: DropSummary,
    pub events: EventAccounting,
    /// Events counted in the kernel that never reached the stream (ring buffer full).
    pub events_lost: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct RetransmitSummary {
    pub sent: u64,
    pub failed: u64,
    pub segs: u64,
    pub bytes: u64,
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

#[derive(Debug, Serialize)]
pub struct CpuCount {
    pub cpu: usize,
    pub count: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct EventAccounting {
    pub retransmit: KindAccounting,
    pub drop: KindAccounting,
    pub decode_errors: u64,
    /// Retransmits missing from the per-flow totals because the flow table was full.
    pub flow_table_full: u64,
    /// Drops missing from the per-reason totals because the reason table was full.
    pub reason_table_full: u64,
}

/// For one kind: `counted` (kernel, exact) = `streamed` + `lost`.
#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct KindAccounting {
    pub counted: u64,
    pub streamed: u64,
    pub lost: u64,
}

pub fn build(
    totals: &KernelTotals,
    streamed: Streamed,
    hooks: Vec<HookStatus>,
    reasons: &DropReasons,
    duration_ms: u64,
) -> SummaryJson {
    let mut retransmits = RetransmitSummary::default();
    for (key, t) in &totals.flows {
        retransmits.sent += t.sent;
        retransmits.failed += t.failed;
        retransmits.segs += t.segs;
        retransmits.bytes += t.bytes;
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
        decode_errors: streamed.decode_errors,
        flow_table_full: totals.counter(COUNTER_FLOW_TABLE_FULL),
        reason_table_full: totals.counter(COUNTER_REASON_TABLE_FULL),
    };
    SummaryJson {
        kind: "summary",
        duration_ms,
        hooks,
        events_lost: events.retransmit.lost + events.drop.lost,
        retransmits,
        drops,
        events,
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
            "retransmits: {} sent ({} segments, {} bytes), {} failed attempts, {} flows",
            r.sent,
            r.segs,
            r.bytes,
            r.failed,
            r.flows.len()
        );
        for f in r.flows.iter().take(top) {
            let endpoint = |addr: &str, port: u16| {
                if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                }
            };
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
        if e.decode_errors > 0 {
            let _ = writeln!(out, "WARNING: {} records did not decode", e.decode_errors);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_common::{Flow, FlowKey, RetransmitTotals, AF_INET};

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
                },
            )],
            reasons: vec![(12, vec![4, 3]), (3, vec![0, 3])],
        };
        let reasons = DropReasons::from_pairs(&[(12, "NETFILTER_DROP"), (3, "NO_SOCKET")], &[]);
        let s = build(
            &totals,
            Streamed {
                retransmits: 10,
                drops: 9,
                decode_errors: 0,
            },
            vec![],
            &reasons,
            1500,
        );
        assert_eq!(
            (s.retransmits.sent, s.retransmits.failed, s.retransmits.segs),
            (11, 1, 13)
        );
        assert_eq!(s.retransmits.flows[0].saddr, "198.18.0.1");
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
