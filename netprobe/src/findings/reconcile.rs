//! Reconciliation: every number netprobe counts beside the kernel counter that counts the same
//! thing over the same window. A row is either an equality the two sides must keep, or a bound
//! (events ≤ counter) where the kernel also counts something else; either way it says whether
//! the relation holds, and when an input is missing (a hook inactive on this kernel or turned
//! off, a filter, invocations the kernel skipped) it says so instead of asserting it.

use serde::Serialize;

use netprobe_common::vocab::RetransmitKind;

use super::Inputs;
use crate::{
    kernel::loader::{
        catalogue::{
            DROP_HOOK, LOSS_PROBE_HOOK, RECEIVE_HOOK, RETRANSMIT_HOOK, RTO_TIMER_HOOK,
            SOCK_STATE_HOOK, SOFTIRQ_ENTRY_HOOK, SOFTIRQ_EXIT_HOOK, STATE_PROCESS_HOOK,
            SYNACK_HOOK,
        },
        OUTCOMES_CLASSIFIED,
    },
    model::window::{ReceiveFlow, RetransmitFlow, Window},
};

/// How the two sides of a row relate when nothing is missing.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same thing counted twice: events = counter.
    Equal,
    /// The counter also counts something the events do not: events ≤ counter.
    AtMost,
}

impl Relation {
    fn holds(self, events: u64, counters: u64) -> bool {
        match self {
            Relation::Equal => events == counters,
            Relation::AtMost => events <= counters,
        }
    }
}

/// One number counted on both sides over the same window.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Reconciliation {
    pub what: &'static str,
    pub events: u64,
    pub counter: String,
    pub counters: u64,
    /// `equal` or `at_most` (events ≤ counter).
    pub relation: Relation,
    /// The relation is guaranteed: nothing kept events out of netprobe's side.
    pub must_match: bool,
    /// Whether the relation holds (equality, or the bound).
    pub matches: bool,
    /// Why the relation is not guaranteed in this run, when `must_match` is false for a row
    /// that would otherwise be exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_exact_because: Option<String>,
    pub note: String,
}

/// Hooks whose events feed a row.
const RETRANSMIT_HOOKS: &[&str] = &[RETRANSMIT_HOOK.id];
const SYN_HOOKS: &[&str] = &[RETRANSMIT_HOOK.id, SYNACK_HOOK.id];
const RECEIVE_HOOKS: &[&str] = &[RECEIVE_HOOK.id];
/// The retransmit programs and the function hooks that name their kinds (prefixes).
const RETRANSMIT_PROGRAMS: &[&str] = &[
    RETRANSMIT_HOOK.program,
    SYNACK_HOOK.program,
    LOSS_PROBE_HOOK.program_prefix,
    RTO_TIMER_HOOK.program_prefix,
];
/// Which retransmits are the RTO timer's own is exact only with the timer hooked: without it
/// they are told by the TIMER softirq, and a timer the kernel deferred to the socket owner
/// (`tcp_release_cb`, common under bulk sends) runs in process context.
const TIMER_SPLIT_HOOKS: &[&str] = &[RETRANSMIT_HOOK.id, RTO_TIMER_HOOK.id];
const RECEIVE_PROGRAMS: &[&str] = &[RECEIVE_HOOK.program];
/// Duplicates: on established sockets from tcp_probe, after a FIN from their drops.
const DUPLICATE_HOOKS: &[&str] = &[RECEIVE_HOOK.id, DROP_HOOK.id];
const DUPLICATE_PROGRAMS: &[&str] = &[
    RECEIVE_HOOK.program,
    DROP_HOOK.program,
    STATE_PROCESS_HOOK.program_prefix,
];

/// What a row is built from.
struct Row<'a> {
    what: &'static str,
    events: u64,
    counter: &'a str,
    counters: u64,
    relation: Relation,
    hooks: &'a [&'a str],
    programs: &'a [&'a str],
    /// Why the row is not exact for a reason its hooks and programs do not show, if any.
    unseen: Option<String>,
    note: &'a str,
}

/// Why a row fed by `hooks` and `programs` cannot be held to its relation, if anything.
fn missing_input(s: &Window, filtered: bool, hooks: &[&str], programs: &[&str]) -> Option<String> {
    for name in hooks {
        match s.hooks.iter().find(|h| h.hook == *name) {
            Some(h) if h.active => {}
            Some(h) => return Some(format!("hook {name} is inactive: {}", h.detail)),
            None => return Some(format!("hook {name} is not known to this netprobe")),
        }
    }
    if filtered {
        return Some("trace filters exclude some events; the counters count all".into());
    }
    let skipped: u64 = s
        .kernel_skipped
        .iter()
        .filter(|(p, _)| programs.iter().any(|want| p.starts_with(want)))
        .map(|(_, n)| n)
        .sum();
    (skipped > 0).then(|| {
        format!("the kernel skipped {skipped} invocations of these hooks (another BPF program was running on that CPU)")
    })
}

fn build_row(inputs: &Inputs, row: Row) -> Reconciliation {
    let not_exact_because =
        missing_input(inputs.window, inputs.filtered, row.hooks, row.programs).or(row.unseen);
    Reconciliation {
        what: row.what,
        events: row.events,
        counter: row.counter.to_string(),
        counters: row.counters,
        relation: row.relation,
        must_match: not_exact_because.is_none(),
        matches: row.relation.holds(row.events, row.counters),
        not_exact_because,
        note: row.note.to_string(),
    }
}

/// Every row of the bundle, in a fixed order.
pub fn reconcile(inputs: &Inputs) -> Vec<Reconciliation> {
    let own = inputs.own_netns;
    let w = inputs.window;
    let retransmits: Vec<&RetransmitFlow> = w
        .retransmits
        .flows
        .iter()
        .filter(|f| f.flow.netns == own)
        .collect();
    let received: Vec<&ReceiveFlow> = w
        .received
        .flows
        .iter()
        .filter(|f| f.flow.netns == own)
        .collect();
    let mut rows = retransmit_rows(inputs, &retransmits);
    rows.splice(1..1, receive_rows(inputs, &received));
    rows.push(backlog_row(inputs));
    rows.push(net_rx_row(inputs));
    rows
}

fn receive_rows(inputs: &Inputs, received: &[&ReceiveFlow]) -> Vec<Reconciliation> {
    let d = |group, field| inputs.delta(group, field);
    vec![
        duplicates_row(inputs, received),
        build_row(inputs, Row {
            what: "out-of-order segments received (this namespace)",
            events: received.iter().map(|f| f.counts.out_of_order).sum(),
            counter: "TcpExt TCPOFOQueue + TCPOFODrop",
            counters: d("TcpExt", "TCPOFOQueue") + d("TcpExt", "TCPOFODrop"),
            relation: Relation::Equal,
            hooks: RECEIVE_HOOKS,
            programs: RECEIVE_PROGRAMS,
            unseen: None,
            note: "the same segments on established sockets (segments beyond the receive window are counted by netprobe only)",
        }),
    ]
}

/// Duplicates: `tcp_probe` sees them on established sockets; after a FIN (FIN-WAIT,
/// CLOSE-WAIT, CLOSING, LAST-ACK) `tcp_data_queue` drops them as TCP_OLD_DATA, counting each
/// in DelayedACKLost as it does, so those drops are the rest of the same segments.
fn duplicates_row(inputs: &Inputs, received: &[&ReceiveFlow]) -> Reconciliation {
    let established: u64 = received.iter().map(|f| f.counts.duplicate).sum();
    let late = inputs
        .drops
        .late_duplicates
        .get(&inputs.own_netns)
        .copied()
        .unwrap_or(0);
    let lost_drops = inputs.window.events.drop.lost;
    let unseen = if !inputs.drops.links_flows() {
        Some("count mode: duplicates arriving after a FIN (FIN-WAIT, CLOSE-WAIT), which the kernel also counts, are told from streamed drops (their socket's state), and none is streamed".to_string())
    } else if !inputs.drops_name_their_socket {
        Some("this kernel's kfree_skb has no rx_sk argument, and tcp_rcv_state_process is not hooked: duplicates arriving after a FIN (FIN-WAIT, CLOSE-WAIT), which the kernel also counts, name no socket".to_string())
    } else if lost_drops > 0 {
        Some(format!("{lost_drops} drop events were lost (ring buffer full): duplicates arriving after a FIN are counted from the stream"))
    } else {
        None
    };
    build_row(inputs, Row {
        what: "duplicate segments received (this namespace)",
        events: established + late,
        counter: "TcpExt DelayedACKLost",
        counters: inputs.delta("TcpExt", "DelayedACKLost"),
        relation: Relation::Equal,
        hooks: DUPLICATE_HOOKS,
        programs: DUPLICATE_PROGRAMS,
        unseen,
        note: "the same segments: tcp_probe's duplicates on established sockets, and the TCP_OLD_DATA drops of sockets past a FIN",
    })
}

/// Whether failed retransmit attempts are seen and classified by outcome on this kernel: its
/// tracepoint fires for them (6.17+) and the socket-state hook gives each socket's count (the
/// hook is attached on every kernel, for handshakes: the retransmit hook's detail says which).
fn outcomes_classified(w: &Window) -> bool {
    let hook_active = |id: &str| w.hooks.iter().any(|h| h.hook == id && h.active);
    hook_active(SOCK_STATE_HOOK.id)
        && w.hooks.iter().any(|h| {
            h.hook == RETRANSMIT_HOOK.id && h.active && h.detail.contains(OUTCOMES_CLASSIFIED)
        })
}

/// Why the rows that count failed attempts are not exact, when they are not.
fn unclassified_failures(flows: &[&RetransmitFlow]) -> Option<String> {
    let unclassified: u64 = flows.iter().map(|f| f.failed.unclassified.count).sum();
    (unclassified > 0).then(|| format!("{unclassified} failed attempts could not be told counted or not (their sockets retransmitted before the trace began, or one of their attempts was missed)"))
}

/// RetransSegs: the segments sent again plus those counted before a failure on the way out.
/// Kernels before 6.17 fire the tracepoint only for what was sent: their failures' segments
/// are the kernel's TCPRetransFail, taken off the counter.
fn retransmit_segs_row<'a>(inputs: &Inputs, flows: &[&RetransmitFlow]) -> Row<'a> {
    let d = |group, field| inputs.delta(group, field);
    let sent: u64 = flows.iter().map(|f| f.segs).sum();
    let failed: u64 = flows.iter().map(|f| f.failed.after_counted.segs).sum();
    let unclassified = unclassified_failures(flows);
    let row = |counter, counters, note| Row {
        what: "retransmitted segments (this namespace)",
        events: sent + failed,
        counter,
        counters,
        relation: Relation::Equal,
        hooks: RETRANSMIT_HOOKS,
        programs: RETRANSMIT_PROGRAMS,
        unseen: unclassified.clone(),
        note,
    };
    if outcomes_classified(inputs.window) {
        row("Tcp RetransSegs", d("Tcp", "RetransSegs"),
            "the same segments: tcp_skb_pcount of every retransmit sent, and of every attempt that failed after the kernel counted it (outcome failed_after_counted)")
    } else {
        row("Tcp RetransSegs − TcpExt TCPRetransFail", d("Tcp", "RetransSegs").saturating_sub(d("TcpExt", "TCPRetransFail")),
            "the same segments: tcp_skb_pcount of every retransmit sent; this kernel's tracepoint does not fire for attempts that fail after being counted (before Linux 6.17), whose segments TCPRetransFail counts")
    }
}

/// TCPRetransFail: the segments of counted attempts that failed, but for `-EBUSY` ones.
fn retransmit_fail_row<'a>(inputs: &Inputs, flows: &[&RetransmitFlow]) -> Row<'a> {
    let failed: u64 = flows
        .iter()
        .map(|f| f.failed.after_counted.segs - f.failed.busy_segs)
        .sum();
    let unseen = if outcomes_classified(inputs.window) {
        unclassified_failures(flows)
    } else {
        Some("this kernel's tcp_retransmit_skb tracepoint fires only for sent retransmits (no err before Linux 6.17), or the socket-state hook is inactive: failed attempts are not seen".into())
    };
    Row {
        what: "refused retransmitted segments (this namespace)",
        events: failed,
        counter: "TcpExt TCPRetransFail",
        counters: inputs.delta("TcpExt", "TCPRetransFail"),
        relation: Relation::Equal,
        hooks: RETRANSMIT_HOOKS,
        programs: RETRANSMIT_PROGRAMS,
        unseen,
        note: "the same segments: refused in this host's own egress path (netfilter, qdisc, no buffer) after RetransSegs counted them; -EBUSY ones are left out on both sides",
    }
}

/// Retransmit totals beside Tcp/TcpExt of the same namespace: exact where the kernel counts
/// the same segments, a bound where it also counts something else.
fn retransmit_rows(inputs: &Inputs, flows: &[&RetransmitFlow]) -> Vec<Reconciliation> {
    let d = |group, field| inputs.delta(group, field);
    let failed_syns: u64 = flows
        .iter()
        .map(|f| {
            f.failed
                .kinds
                .get(&RetransmitKind::Syn)
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let kinds = inputs.window.kinds_in(inputs.own_netns);
    let kind = |k: RetransmitKind| kinds.get(&k).copied().unwrap_or_default();
    let events_of = |k: RetransmitKind| kind(k).count;
    let (fast, rto) = (kind(RetransmitKind::Fast), kind(RetransmitKind::Rto));
    let exact = |what, events, counter, counters, note| Row {
        what,
        events,
        counter,
        counters,
        relation: Relation::Equal,
        hooks: RETRANSMIT_HOOKS,
        programs: RETRANSMIT_PROGRAMS,
        unseen: None,
        note,
    };
    let bound = |what, events, counter, counters, note| Row {
        relation: Relation::AtMost,
        ..exact(what, events, counter, counters, note)
    };
    let rows = [
        retransmit_segs_row(inputs, flows),
        exact("fast-retransmitted segments (Recovery)", fast.segs, "TcpExt TCPFastRetrans", d("TcpExt", "TCPFastRetrans"),
            "the same segments: retransmitted from the queue outside the Loss state"),
        Row {
            hooks: TIMER_SPLIT_HOOKS,
            ..exact("slow-start retransmitted segments after an RTO", rto.segs - rto.timer_segs, "TcpExt TCPSlowStartRetrans", d("TcpExt", "TCPSlowStartRetrans"),
                "the same segments: retransmitted from the queue in the Loss state, after the timer's own")
        },
        bound("RTO timer retransmits", rto.timer, "TcpExt TCPTimeouts", d("TcpExt", "TCPTimeouts"),
            "the kernel also counts timeouts that retransmit nothing (events ≤ counter)"),
        bound("tail-loss probe retransmits", events_of(RetransmitKind::Tlp), "TcpExt TCPLossProbes", d("TcpExt", "TCPLossProbes"),
            "the kernel also counts probes that send new data instead (events ≤ counter)"),
        Row {
            hooks: SYN_HOOKS,
            unseen: unclassified_failures(flows),
            ..exact("SYN and SYN-ACK retransmits", events_of(RetransmitKind::Syn) + events_of(RetransmitKind::Synack) + failed_syns, "TcpExt TCPSynRetrans", d("TcpExt", "TCPSynRetrans"),
                "the same retransmits: SYN (client) and SYN-ACK (server) sent, and SYNs that failed after being counted")
        },
        retransmit_fail_row(inputs, flows),
    ];
    rows.into_iter().map(|row| build_row(inputs, row)).collect()
}

fn backlog_row(inputs: &Inputs) -> Reconciliation {
    let b = &inputs.window.backlog;
    Reconciliation {
        what: "input backlog drops (all CPUs)",
        events: b.drop_events,
        counter: "softnet_stat dropped".into(),
        counters: b.softnet_dropped,
        relation: Relation::Equal,
        must_match: b.not_exact_because.is_none(),
        matches: b.drop_events == b.softnet_dropped,
        not_exact_because: b.not_exact_because.clone(),
        note: "the same drops, counted on the enqueuing CPU (events) and on the overflowing CPU (softnet_stat)".into(),
    }
}

fn net_rx_row(inputs: &Inputs) -> Reconciliation {
    let traced_runs: u64 = inputs.window.cpus.iter().map(|c| c.net_rx_runs).sum();
    let kernel_runs: u64 = inputs
        .net_rx_now
        .iter()
        .zip(inputs.net_rx_before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    // Host-wide and unfiltered (the trace filters do not apply to these hooks). The counter
    // was read before the hooks were attached and after their totals were read, and the
    // kernel counts a run as it begins: every run traced (begun and ended while attached) is
    // in its delta, and so are the runs under way at either edge, which are not traced.
    let hooks = [SOFTIRQ_ENTRY_HOOK.id, SOFTIRQ_EXIT_HOOK.id];
    let not_exact_because = missing_input(inputs.window, false, &hooks, &[]);
    let relation = Relation::AtMost;
    Reconciliation {
        what: "NET_RX softirq runs (all CPUs)",
        events: traced_runs,
        counter: "/proc/softirqs NET_RX".into(),
        counters: kernel_runs,
        relation,
        must_match: not_exact_because.is_none(),
        matches: relation.holds(traced_runs, kernel_runs),
        not_exact_because,
        note: "the same runs, but for those under way while the hooks were attached or their totals read, which the counter also counts (events ≤ counter)".into(),
    }
}
