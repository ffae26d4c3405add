//! `{"type":"summary"}`: the trace window's exact totals from the kernel maps, set beside what
//! reached userspace, so that lost events are always counted and shown. Serde types built
//! from `model::window`, never the model itself; `text` is the same window for people.

mod sampled;
mod sites;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;
pub use sites::SiteJson;
pub use text::text;

use crate::{
    kernel::loader::HookStatus,
    model::{
        non_network::NonNetwork,
        owners::Owner,
        window::{
            self, Attempts, Backlog, CpuWork, FailedAttempts, KindAccounting, KindCounts, Mode,
            ReceiveCounts, ReceiveFlow, RetransmitFlow, Window,
        },
    },
};

#[derive(Debug, Serialize)]
pub struct SummaryJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `stream` (every event on a line of its own) or `count` (`--count`: counted in the
    /// kernel only, no event lines).
    pub mode: &'static str,
    /// What this mode cannot say, in words (count mode: nothing streamed, drops not linked
    /// to flows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub duration_ms: u64,
    pub hooks: &'a [HookStatus],
    pub retransmits: RetransmitSummary<'a>,
    /// The incoming direction: what peers sent again, and holes in what they sent.
    pub received: ReceiveSummary<'a>,
    pub drops: DropSummary<'a>,
    /// Frees that are not network drops (unix-domain, netlink… skbs): not in `drops`, not
    /// streamed, not in the findings; counted here so that nothing is hidden.
    pub non_network: NonNetworkSummary<'a>,
    /// Drop sites whose storms were sampled (`--max-rate`, or the reader behind).
    pub sampled: sampled::SampledSummary<'a>,
    pub events: EventAccounting,
    /// Events counted in the kernel that never reached the stream (ring buffer full).
    pub events_lost: u64,
    /// Program invocations the kernel skipped (`recursion_misses`: the hook fired in an
    /// interrupt that had interrupted another BPF program on that CPU). Neither counted nor
    /// streamed: the one loss netprobe cannot recover, so it is reported by program.
    pub kernel_skipped: &'a BTreeMap<&'static str, u64>,
    /// Receive processing per CPU (host-wide; filters do not apply), CPUs with activity only.
    pub cpus: Vec<CpuSummary<'a>>,
    /// Input-backlog drops from both sides: the CPUs that tried to enqueue (drop events) and
    /// the CPUs whose backlog overflowed (softnet_stat).
    pub backlog: BacklogSummary<'a>,
}

/// softnet_stat counts a backlog drop against the CPU whose backlog overflowed; the drop
/// event fires on the CPU that tried to enqueue (they differ under RPS/RFS steering).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BacklogSummary<'a> {
    /// CPU_BACKLOG drops counted in the kernel (exact, whatever the stream lost).
    pub drop_events: u64,
    /// softnet_stat `dropped` growth over the same window, all CPUs.
    pub softnet_dropped: u64,
    /// The two count the same drops: they agree exactly unless something below kept a drop
    /// out of the kernel-side count.
    pub must_match: bool,
    /// Why they need not agree, when `must_match` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_exact_because: Option<&'a str>,
    pub overflowing_cpus: Vec<CpuCount>,
    pub enqueuing_cpus: Vec<CpuCount>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CpuSummary<'a> {
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
    pub napi: Vec<NapiDevice<'a>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NapiDevice<'a> {
    /// Device name; `(no_device)` is the per-CPU backlog (RPS, netif_rx, veth).
    pub dev: &'a str,
    pub polls: u64,
    pub full_budget: u64,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct RetransmitSummary<'a> {
    pub sent: u64,
    /// Attempts that did not go out, whatever their outcome.
    pub failed: u64,
    pub segs: u64,
    pub bytes: u64,
    /// Attempts and segments by outcome: `sent` + `failed_after_counted` segments are what
    /// RetransSegs counts.
    pub outcomes: OutcomesJson,
    /// All flows' sent retransmits by kind (exact, from the kernel's flow table).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Busiest first.
    pub flows: Vec<FlowRetransmits<'a>>,
}

#[derive(Debug, Serialize)]
pub struct FlowRetransmits<'a> {
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
    pub outcomes: OutcomesJson,
    /// Sent retransmits by kind; kinds with none are left out.
    pub kinds: BTreeMap<&'static str, u64>,
    /// Per kind: segments sent, and what of it came from the TIMER softirq (what TcpExt
    /// tells apart: an RTO's own retransmit vs the slow-start ones after it).
    pub kind_detail: BTreeMap<&'static str, KindDetail>,
    /// Segments the peer reported as already received (D-SACK) since the flow's first attempt:
    /// spurious retransmits, read from the socket at each attempt.
    pub dsacked_segs: u64,
    /// Times the socket detected reordering over the same span.
    pub reordering_seen: u64,
    /// The process owning the flow's socket, when it can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a Owner>,
    /// How the handshake ended, for a flow that sent its SYN or SYN-ACK again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<HandshakeJson>,
}

/// `{end, completed, failed}`: `end` is `failed` (SYN_SENT/SYN_RECV → CLOSE), `pending` (not
/// decided at the summary's time) or `completed`; the counts are the socket's transitions.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeJson {
    pub end: &'static str,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindDetail {
    /// Segments of successful retransmits.
    pub segs: u64,
    /// Retransmits sent from the TIMER softirq, and their segments.
    pub timer: u64,
    pub timer_segs: u64,
}

/// Retransmit attempts of one outcome and the segments in their skbs.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttemptsJson {
    pub attempts: u64,
    pub segs: u64,
}

impl From<&Attempts> for AttemptsJson {
    fn from(a: &Attempts) -> Self {
        AttemptsJson {
            attempts: a.count,
            segs: a.segs,
        }
    }
}

/// Retransmit attempts by outcome (`RetransmitOutcome`'s names).
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct OutcomesJson {
    pub sent: AttemptsJson,
    /// Counted in RetransSegs, then refused in this host's own egress path.
    pub failed_after_counted: FailedCountedJson,
    /// Given up before anything was counted (still queued, zero window, no memory or route).
    pub aborted: AttemptsJson,
    /// Failed on a socket whose count before the attempt is unknown.
    pub unclassified: AttemptsJson,
}

#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct FailedCountedJson {
    pub attempts: u64,
    pub segs: u64,
    /// Of those segments, the `-EBUSY` ones, which TCPRetransFail leaves out.
    pub busy_segs: u64,
    /// Attempts by what refused them (`netfilter`, `qdisc`, `no_buffer`, `other`).
    pub by_cause: BTreeMap<&'static str, u64>,
    pub by_kind: BTreeMap<&'static str, u64>,
}

impl OutcomesJson {
    fn new(sent: u64, segs: u64, failed: &FailedAttempts) -> Self {
        OutcomesJson {
            sent: AttemptsJson {
                attempts: sent,
                segs,
            },
            failed_after_counted: FailedCountedJson {
                attempts: failed.after_counted.count,
                segs: failed.after_counted.segs,
                busy_segs: failed.busy_segs,
                by_cause: failed.causes.iter().map(|(c, n)| (c.name(), *n)).collect(),
                by_kind: failed.kinds.iter().map(|(k, n)| (k.name(), *n)).collect(),
            },
            aborted: (&failed.aborted).into(),
            unclassified: (&failed.unclassified).into(),
        }
    }
}

/// Counts of out-of-sequence data on a receive path.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveCountsJson {
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

/// Out-of-sequence data on established sockets' receive path (exact, from the kernel's
/// per-flow receive table).
#[derive(Debug, Serialize)]
pub struct ReceiveSummary<'a> {
    /// On established sockets.
    #[serde(flatten)]
    pub totals: ReceiveCountsJson,
    /// Duplicates that arrived after a FIN (FIN-WAIT, CLOSE-WAIT…), counted from the
    /// streamed drops of those sockets (`tcp_probe` sees established sockets only).
    pub duplicate_after_fin: u64,
    /// Busiest first.
    pub flows: Vec<FlowReceives<'a>>,
}

#[derive(Debug, Serialize)]
pub struct FlowReceives<'a> {
    pub netns: u32,
    pub family: &'static str,
    /// The receiving socket's end.
    pub saddr: String,
    pub sport: u16,
    /// The peer.
    pub daddr: String,
    pub dport: u16,
    #[serde(flatten)]
    pub counts: ReceiveCountsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a Owner>,
}

#[derive(Debug, Serialize)]
pub struct DropSummary<'a> {
    pub total: u64,
    pub by_reason: Vec<ReasonCount<'a>>,
    pub by_cpu: Vec<CpuCount>,
    /// Count mode: by site (reason, function, layer, direction, namespace, interface), with
    /// the CPUs, busiest first. Stream mode's sites are its drop events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_site: Option<Vec<SiteJson<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount<'a> {
    pub reason: &'a str,
    pub code: u32,
    pub count: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NonNetworkSummary<'a> {
    pub total: u64,
    /// By reason and location, most frees first.
    pub by_reason: Vec<NonNetworkSiteJson<'a>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NonNetworkSiteJson<'a> {
    pub reason: &'a str,
    pub code: u32,
    /// `symbol+0xoff` of the freeing function.
    pub location: &'a str,
    pub count: u64,
}

impl<'a> NonNetworkSummary<'a> {
    fn new(n: &'a NonNetwork) -> Self {
        NonNetworkSummary {
            total: n.total,
            by_reason: n
                .by_site
                .iter()
                .map(|s| NonNetworkSiteJson {
                    reason: &s.reason,
                    code: s.code,
                    location: &s.location,
                    count: s.count,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CpuCount {
    pub cpu: usize,
    pub count: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct EventAccounting {
    pub retransmit: KindAccountingJson,
    pub drop: KindAccountingJson,
    /// peer_retransmit and ooo events.
    pub receive: KindAccountingJson,
    pub decode_errors: u64,
    /// Retransmits missing from the per-flow totals because the flow table was full.
    pub flow_table_full: u64,
    /// Drops missing from the per-reason totals because the reason table was full.
    pub reason_table_full: u64,
    /// Count mode: drops counted by reason only, their site not fitting the site table.
    pub drop_site_table_full: u64,
    /// Receive-path segments missing from the per-flow receive totals (table full).
    pub receive_table_full: u64,
    /// Non-network frees missing from `non_network`'s totals (table full).
    pub non_network_table_full: u64,
}

/// For one kind: `counted` (kernel, exact) = `streamed` + `lost` + `sampled_out`. Count
/// mode streams nothing by design: only `counted` is there.
#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct KindAccountingJson {
    pub counted: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streamed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Drops deliberately not streamed: their site was over its rate (storm sampling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_out: Option<u64>,
}

impl<'a> SummaryJson<'a> {
    pub fn new(w: &'a Window) -> Self {
        let r = &w.retransmits;
        SummaryJson {
            kind: "summary",
            mode: w.mode.name(),
            notes: crate::trace::count::notes(w),
            duration_ms: w.duration_ms,
            hooks: &w.hooks,
            retransmits: RetransmitSummary {
                sent: r.sent,
                failed: r.failed.count(),
                segs: r.segs,
                bytes: r.bytes,
                outcomes: OutcomesJson::new(r.sent, r.segs, &r.failed),
                by_kind: r.by_kind.iter().map(|(k, n)| (k.name(), *n)).collect(),
                flows: r.flows.iter().map(FlowRetransmits::new).collect(),
            },
            received: ReceiveSummary {
                totals: (&w.received.totals).into(),
                duplicate_after_fin: w.received.duplicates_after_fin,
                flows: w.received.flows.iter().map(FlowReceives::new).collect(),
            },
            drops: DropSummary {
                total: w.drops.total,
                by_reason: w
                    .drops
                    .by_reason
                    .iter()
                    .map(|d| ReasonCount {
                        reason: &d.reason,
                        code: d.code,
                        count: d.count,
                    })
                    .collect(),
                by_cpu: cpu_counts(&w.drops.by_cpu),
                by_site: (w.mode == Mode::Count)
                    .then(|| w.drop_sites.iter().map(SiteJson::new).collect()),
            },
            non_network: NonNetworkSummary::new(&w.non_network),
            sampled: sampled::SampledSummary::new(&w.sampled),
            events: EventAccounting::new(&w.events, w.mode),
            events_lost: w.events.lost(),
            kernel_skipped: &w.kernel_skipped,
            cpus: w.cpus.iter().map(CpuSummary::new).collect(),
            backlog: BacklogSummary::new(&w.backlog),
        }
    }
}

fn cpu_counts(cpus: &[window::CpuCount]) -> Vec<CpuCount> {
    cpus.iter()
        .map(|c| CpuCount {
            cpu: c.cpu,
            count: c.count,
        })
        .collect()
}

impl<'a> BacklogSummary<'a> {
    fn new(b: &'a Backlog) -> Self {
        BacklogSummary {
            drop_events: b.drop_events,
            softnet_dropped: b.softnet_dropped,
            must_match: b.not_exact_because.is_none(),
            not_exact_because: b.not_exact_because.as_deref(),
            overflowing_cpus: cpu_counts(&b.overflowing_cpus),
            enqueuing_cpus: cpu_counts(&b.enqueuing_cpus),
        }
    }
}

impl<'a> CpuSummary<'a> {
    fn new(c: &'a CpuWork) -> Self {
        CpuSummary {
            cpu: c.cpu,
            net_rx_runs: c.net_rx_runs,
            net_rx_total_ns: c.net_rx_total_ns,
            net_rx_max_ns: c.net_rx_max_ns,
            napi_polls: c.napi_polls,
            napi_full_budget: c.napi_full_budget,
            time_squeeze: c.time_squeeze,
            backlog_dropped: c.backlog_dropped,
            napi: c
                .napi
                .iter()
                .map(|n| NapiDevice {
                    dev: &n.dev,
                    polls: n.polls,
                    full_budget: n.full_budget,
                    packets: n.packets,
                })
                .collect(),
        }
    }
}

impl<'a> FlowRetransmits<'a> {
    fn new(f: &'a RetransmitFlow) -> Self {
        FlowRetransmits {
            netns: f.flow.netns,
            family: f.family.map(|f| f.name()).unwrap_or("unknown"),
            saddr: f.flow.src.addr.to_string(),
            sport: f.flow.src.port.unwrap_or(0),
            daddr: f.flow.dst.addr.to_string(),
            dport: f.flow.dst.port.unwrap_or(0),
            sent: f.sent,
            failed: f.failed.count(),
            segs: f.segs,
            bytes: f.bytes,
            outcomes: OutcomesJson::new(f.sent, f.segs, &f.failed),
            kinds: f.kinds.iter().map(|(k, c)| (k.name(), c.count)).collect(),
            kind_detail: f
                .kinds
                .iter()
                .map(|(k, c)| (k.name(), KindDetail::from(c)))
                .collect(),
            dsacked_segs: f.dsacked_segs,
            reordering_seen: f.reordering_seen,
            owner: f.owner.as_ref(),
            handshake: f.handshake_end().map(|end| HandshakeJson {
                end: end.name(),
                completed: f.handshakes.completed,
                failed: f.handshakes.failed,
            }),
        }
    }
}

impl From<&KindCounts> for KindDetail {
    fn from(c: &KindCounts) -> Self {
        KindDetail {
            segs: c.segs,
            timer: c.timer,
            timer_segs: c.timer_segs,
        }
    }
}

impl<'a> FlowReceives<'a> {
    fn new(f: &'a ReceiveFlow) -> Self {
        FlowReceives {
            netns: f.flow.netns,
            family: f.family.map(|f| f.name()).unwrap_or("unknown"),
            saddr: f.flow.src.addr.to_string(),
            sport: f.flow.src.port.unwrap_or(0),
            daddr: f.flow.dst.addr.to_string(),
            dport: f.flow.dst.port.unwrap_or(0),
            counts: (&f.counts).into(),
            owner: f.owner.as_ref(),
        }
    }
}

impl From<&ReceiveCounts> for ReceiveCountsJson {
    fn from(c: &ReceiveCounts) -> Self {
        ReceiveCountsJson {
            duplicate: c.duplicate,
            duplicate_partial: c.duplicate_partial,
            duplicate_bytes: c.duplicate_bytes,
            fills_hole: c.fills_hole,
            fills_hole_bytes: c.fills_hole_bytes,
            out_of_order: c.out_of_order,
            holes: c.holes,
            hole_bytes: c.hole_bytes,
        }
    }
}

impl EventAccounting {
    fn new(e: &window::EventAccounting, mode: Mode) -> Self {
        let streams = mode == Mode::Stream;
        let kind = |k: &KindAccounting| KindAccountingJson {
            counted: k.counted,
            streamed: streams.then_some(k.streamed),
            lost: streams.then_some(k.lost),
            sampled_out: streams.then_some(k.sampled_out),
        };
        EventAccounting {
            retransmit: kind(&e.retransmit),
            drop: kind(&e.drop),
            receive: kind(&e.receive),
            decode_errors: e.decode_errors,
            flow_table_full: e.flow_table_full,
            reason_table_full: e.reason_table_full,
            drop_site_table_full: e.drop_site_table_full,
            receive_table_full: e.receive_table_full,
            non_network_table_full: e.non_network_table_full,
        }
    }
}
