//! The trace window as typed totals: the kernel maps' exact counts (per flow, per reason, per
//! CPU) set beside what reached userspace, built once per summary or bundle. The summary's
//! JSON and text and the findings are views of this.

use std::collections::BTreeMap;

use netprobe_common::{
    vocab::RetransmitKind, ReceiveTotals, COUNTER_DROP_LOST, COUNTER_DROP_SAMPLED_OUT,
    COUNTER_DROP_SEEN, COUNTER_DROP_SITE_TABLE_FULL, COUNTER_FLOW_TABLE_FULL,
    COUNTER_NON_NETWORK_TABLE_FULL, COUNTER_REASON_TABLE_FULL, COUNTER_RECEIVE_LOST,
    COUNTER_RECEIVE_SEEN, COUNTER_RECEIVE_TABLE_FULL, COUNTER_RETRANSMIT_LOST,
    COUNTER_RETRANSMIT_SEEN,
};

pub use super::retransmits::{
    Attempts, FailedAttempts, HandshakeEnd, Handshakes, KindCounts, RetransmitFlow, Retransmits,
};
use super::{
    flow::{Family, Flow},
    non_network::NonNetwork,
    owners::Owner,
    retransmits::retransmits,
    sites::SiteDrops,
    storms::Sampling,
};
use crate::kernel::{
    btf::DropReasons,
    kallsyms::Symbolizer,
    loader::{catalogue::SOCK_STATE_HOOK, HookStatus, KernelTotals, DROP_PROGRAM},
};

/// Events received by the agent, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    pub retransmits: u64,
    pub drops: u64,
    pub receives: u64,
    pub decode_errors: u64,
}

/// How the trace ran: each event streamed, or only counted in the kernel (`trace --count`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Stream,
    /// No event crosses to userspace: drops are counted per site, retransmits and received
    /// segments per flow, all read from the kernel's maps.
    Count,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Count => "count",
        }
    }
}

/// softnet_stat per-CPU deltas over the trace window: (time_squeeze, dropped) by CPU id.
pub type SoftnetDeltas = BTreeMap<usize, (u64, u64)>;

/// Out-of-sequence data on a receive path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveCounts {
    /// Segments wholly received before: the peer re-sent data we had.
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

impl ReceiveCounts {
    pub fn all_duplicates(&self) -> u64 {
        self.duplicate + self.duplicate_partial
    }

    fn weight(&self) -> u64 {
        self.all_duplicates() + self.fills_hole + self.holes
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveFlow {
    /// The socket's view: the receiving end first, the peer second.
    pub flow: Flow,
    pub family: Option<Family>,
    pub counts: ReceiveCounts,
    pub owner: Option<Owner>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Receives {
    /// Established sockets (`tcp_probe`, exact from the kernel's per-flow table).
    pub totals: ReceiveCounts,
    /// Duplicates that arrived after a FIN (FIN-WAIT, CLOSE-WAIT…), which `tcp_probe` does
    /// not see: the TCP_OLD_DATA / TCP_OLD_SEQUENCE drops of those sockets, from the stream.
    pub duplicates_after_fin: u64,
    /// Busiest first.
    pub flows: Vec<ReceiveFlow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: String,
    pub code: u32,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuCount {
    pub cpu: usize,
    pub count: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drops {
    pub total: u64,
    pub by_reason: Vec<ReasonCount>,
    pub by_cpu: Vec<CpuCount>,
}

/// For one kind: `counted` (kernel, exact) = `streamed` + `lost`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindAccounting {
    pub counted: u64,
    pub streamed: u64,
    pub lost: u64,
    /// Counted but deliberately not streamed: drops of a site over its rate (storm sampling).
    pub sampled_out: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
    /// Count mode: drops counted by reason only, their site not fitting the site table.
    pub drop_site_table_full: u64,
    /// Receive-path segments missing from the per-flow receive totals (table full).
    pub receive_table_full: u64,
    /// Non-network frees missing from their per-(reason, location) totals (table full).
    pub non_network_table_full: u64,
}

impl EventAccounting {
    /// Events counted in the kernel that never reached the stream (ring buffer full).
    pub fn lost(&self) -> u64 {
        self.retransmit.lost + self.drop.lost + self.receive.lost
    }
}

/// Receive processing on one CPU.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CpuWork {
    pub cpu: usize,
    /// NET_RX softirq runs that began and ended inside the window.
    pub net_rx_runs: u64,
    pub net_rx_total_ns: u64,
    pub net_rx_max_ns: u64,
    pub napi_polls: u64,
    /// NAPI polls that used their whole budget.
    pub napi_full_budget: u64,
    /// softnet_stat's time_squeeze delta over the same window.
    pub time_squeeze: u64,
    /// softnet_stat's dropped delta over the same window (input backlog full).
    pub backlog_dropped: u64,
    pub napi: Vec<NapiDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NapiDevice {
    /// Device name; `(no_device)` is the per-CPU backlog (RPS, netif_rx, veth).
    pub dev: String,
    pub polls: u64,
    pub full_budget: u64,
    pub packets: u64,
}

/// Input-backlog drops from both sides: softnet_stat counts a drop against the CPU whose
/// backlog overflowed, the drop event fires on the CPU that tried to enqueue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// CPU_BACKLOG drops counted in the kernel (exact, whatever the stream lost).
    pub drop_events: u64,
    /// softnet_stat `dropped` growth over the same window, all CPUs.
    pub softnet_dropped: u64,
    /// Why the two need not agree; `None` when they count the same drops exactly.
    pub not_exact_because: Option<String>,
    pub overflowing_cpus: Vec<CpuCount>,
    pub enqueuing_cpus: Vec<CpuCount>,
}

/// Everything the kernel maps and the agent counted over the window.
#[derive(Debug, Clone)]
pub struct Window {
    pub mode: Mode,
    pub duration_ms: u64,
    pub hooks: Vec<HookStatus>,
    pub retransmits: Retransmits,
    pub received: Receives,
    pub drops: Drops,
    /// Frees that are not network drops (unix-domain, netlink… skbs): apart from the drops.
    pub non_network: NonNetwork,
    /// Drop sites whose storms were sampled: every drop counted, a sample streamed.
    pub sampled: Sampling,
    pub events: EventAccounting,
    /// Program invocations the kernel skipped (`recursion_misses`), by program.
    pub kernel_skipped: BTreeMap<&'static str, u64>,
    /// CPUs with activity only.
    pub cpus: Vec<CpuWork>,
    pub backlog: Backlog,
    /// Count mode: the drops by site (reason, function, device, namespace), busiest first;
    /// empty in stream mode, whose drops are the events themselves.
    pub drop_sites: Vec<SiteDrops>,
}

/// What the agent knows about the window beside the kernel's totals.
pub struct WindowInputs<'a> {
    pub mode: Mode,
    pub streamed: Streamed,
    pub hooks: Vec<HookStatus>,
    pub reasons: &'a DropReasons,
    /// Names the locations of non-network frees, as those of drop events.
    pub symbols: &'a Symbolizer,
    /// softnet_stat growth over the window.
    pub softnet: &'a SoftnetDeltas,
    /// Trace filters were set: counter-side totals then cover more than the events do.
    pub filtered: bool,
    pub duration_ms: u64,
    /// (program, recursion misses).
    pub kernel_skipped: Vec<(&'static str, u64)>,
    /// Duplicates after a FIN, from the tally of the streamed drops (all namespaces).
    pub duplicates_after_fin: u64,
}

#[cfg(test)]
impl<'a> WindowInputs<'a> {
    /// A quiet one-second window with no hooks, streamed events or skipped invocations: the
    /// base the tests change a field or two of.
    pub fn quiet(reasons: &'a DropReasons, softnet: &'a SoftnetDeltas) -> Self {
        static NO_SYMBOLS: Symbolizer = Symbolizer::EMPTY;
        WindowInputs {
            mode: Mode::Stream,
            streamed: Streamed::default(),
            hooks: Vec::new(),
            reasons,
            symbols: &NO_SYMBOLS,
            softnet,
            filtered: false,
            duration_ms: 1000,
            kernel_skipped: Vec::new(),
            duplicates_after_fin: 0,
        }
    }
}

impl Window {
    pub fn build(
        totals: &KernelTotals,
        inputs: WindowInputs,
        owner_of: &mut dyn FnMut(u64) -> Option<Owner>,
    ) -> Self {
        let drop_hook_skipped = inputs
            .kernel_skipped
            .iter()
            .filter(|(program, _)| program.starts_with(DROP_PROGRAM))
            .map(|(_, n)| n)
            .sum();
        let received = Receives {
            duplicates_after_fin: inputs.duplicates_after_fin,
            ..receives(totals, owner_of)
        };
        let drops = drops(totals, inputs.reasons);
        let events = match inputs.mode {
            Mode::Stream => accounting(totals, inputs.streamed),
            Mode::Count => counted_only(totals, drops.total, &received.totals),
        };
        Window {
            mode: inputs.mode,
            duration_ms: inputs.duration_ms,
            retransmits: retransmits(totals, handshakes_seen(&inputs.hooks), owner_of),
            received,
            drops,
            non_network: NonNetwork::build(&totals.non_network, inputs.reasons, inputs.symbols),
            sampled: Sampling::build(
                &totals.sites,
                &totals.sampled_out,
                inputs.reasons,
                inputs.symbols,
            ),
            events,
            cpus: cpu_work(totals, inputs.softnet),
            backlog: backlog(
                totals,
                inputs.reasons,
                inputs.softnet,
                inputs.filtered,
                drop_hook_skipped,
            ),
            kernel_skipped: inputs.kernel_skipped.into_iter().collect(),
            hooks: inputs.hooks,
            drop_sites: Vec::new(),
        }
    }

    /// Retransmits summed over the flows of one network namespace, by kind.
    pub fn kinds_in(&self, netns: u32) -> BTreeMap<RetransmitKind, KindCounts> {
        let mut sum: BTreeMap<RetransmitKind, KindCounts> = BTreeMap::new();
        for f in self
            .retransmits
            .flows
            .iter()
            .filter(|f| f.flow.netns == netns)
        {
            for (kind, counts) in &f.kinds {
                sum.entry(*kind).or_default().add(counts);
            }
        }
        sum
    }
}

/// Whether the socket-state hook, which sees handshakes end, was active.
fn handshakes_seen(hooks: &[HookStatus]) -> bool {
    hooks
        .iter()
        .any(|h| h.hook == SOCK_STATE_HOOK.id && h.active)
}

fn receives(totals: &KernelTotals, owner_of: &mut dyn FnMut(u64) -> Option<Owner>) -> Receives {
    let mut all = ReceiveTotals::default();
    let mut flows = Vec::new();
    for (key, t) in &totals.receive_flows {
        all.add(t);
        flows.push(ReceiveFlow {
            flow: Flow::from_raw(key.netns, &key.flow, true),
            family: Family::from_raw(key.flow.family),
            counts: t.into(),
            owner: owner_of(t.sock_ino),
        });
    }
    flows.sort_by(|a, b| {
        b.counts
            .weight()
            .cmp(&a.counts.weight())
            .then(a.flow.src.port.cmp(&b.flow.src.port))
    });
    Receives {
        totals: (&all).into(),
        duplicates_after_fin: 0,
        flows,
    }
}

fn drops(totals: &KernelTotals, reasons: &DropReasons) -> Drops {
    let mut drops = Drops::default();
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
    drops.by_cpu = nonzero_cpus(&per_cpu);
    drops
}

fn nonzero_cpus(per_cpu: &[u64]) -> Vec<CpuCount> {
    per_cpu
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(cpu, count)| CpuCount { cpu, count: *count })
        .collect()
}

fn accounting(totals: &KernelTotals, streamed: Streamed) -> EventAccounting {
    let kind = |seen, streamed, lost| KindAccounting {
        counted: totals.counter(seen),
        streamed,
        lost: totals.counter(lost),
        sampled_out: 0,
    };
    EventAccounting {
        retransmit: kind(
            COUNTER_RETRANSMIT_SEEN,
            streamed.retransmits,
            COUNTER_RETRANSMIT_LOST,
        ),
        drop: KindAccounting {
            sampled_out: totals.counter(COUNTER_DROP_SAMPLED_OUT),
            ..kind(COUNTER_DROP_SEEN, streamed.drops, COUNTER_DROP_LOST)
        },
        receive: kind(
            COUNTER_RECEIVE_SEEN,
            streamed.receives,
            COUNTER_RECEIVE_LOST,
        ),
        receive_table_full: totals.counter(COUNTER_RECEIVE_TABLE_FULL),
        decode_errors: streamed.decode_errors,
        flow_table_full: totals.counter(COUNTER_FLOW_TABLE_FULL),
        reason_table_full: totals.counter(COUNTER_REASON_TABLE_FULL),
        drop_site_table_full: totals.counter(COUNTER_DROP_SITE_TABLE_FULL),
        non_network_table_full: totals.counter(COUNTER_NON_NETWORK_TABLE_FULL),
    }
}

/// Count mode's accounting: what the kernel counted, of which nothing is streamed by design
/// (and so nothing lost). Drops are the sites' counts (the drop hook bumps no per-event
/// counter there); received events the segments a stream would have reported (duplicates,
/// filled holes, holes opened).
fn counted_only(totals: &KernelTotals, drops: u64, received: &ReceiveCounts) -> EventAccounting {
    let counted = |counted| KindAccounting {
        counted,
        streamed: 0,
        lost: 0,
        sampled_out: 0,
    };
    EventAccounting {
        retransmit: counted(totals.counter(COUNTER_RETRANSMIT_SEEN)),
        drop: counted(drops),
        receive: counted(received.all_duplicates() + received.fills_hole + received.holes),
        ..accounting(totals, Streamed::default())
    }
}

fn cpu_work(totals: &KernelTotals, softnet: &SoftnetDeltas) -> Vec<CpuWork> {
    let ncpu = totals
        .net_rx
        .len()
        .max(totals.napi.iter().map(|(_, v)| v.len()).max().unwrap_or(0))
        .max(softnet.keys().next_back().map(|c| c + 1).unwrap_or(0));
    let mut out = Vec::new();
    for cpu in 0..ncpu {
        let net_rx = totals.net_rx.get(cpu).copied().unwrap_or_default();
        let (time_squeeze, backlog_dropped) = softnet.get(&cpu).copied().unwrap_or((0, 0));
        let mut work = CpuWork {
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
            work.napi_polls += t.polls;
            work.napi_full_budget += t.full_budget;
            work.napi.push(NapiDevice {
                dev: dev.clone(),
                polls: t.polls,
                full_budget: t.full_budget,
                packets: t.work,
            });
        }
        if work.net_rx_runs + work.napi_polls + time_squeeze + backlog_dropped > 0 {
            out.push(work);
        }
    }
    out
}

fn backlog(
    totals: &KernelTotals,
    reasons: &DropReasons,
    softnet: &SoftnetDeltas,
    filtered: bool,
    drop_hook_skipped: u64,
) -> Backlog {
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
    Backlog {
        drop_events: per_cpu.iter().sum(),
        softnet_dropped: softnet.values().map(|(_, dropped)| dropped).sum(),
        not_exact_because,
        overflowing_cpus: softnet
            .iter()
            .filter(|(_, (_, dropped))| *dropped > 0)
            .map(|(cpu, (_, dropped))| CpuCount {
                cpu: *cpu,
                count: *dropped,
            })
            .collect(),
        enqueuing_cpus: nonzero_cpus(&per_cpu),
    }
}
