//! TCP: retransmits, listen-queue overflows, receive queues pruned for lack of memory.

use netprobe_common::vocab::{Direction, Layer};
use serde_json::{json, Value};

use super::{round, Context, Observation};
use crate::{
    fixes::Condition,
    report::{model::Finding, sockets::Listener},
};

pub(super) fn tcp_retransmits(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let retrans = rep.counter("Tcp", "RetransSegs");
    let out_segs = rep.counter("Tcp", "OutSegs");
    let rate = |field: &str| round(rep.counter("TcpExt", field).rate);
    // What the peers reported as already received was not lost: `tcp_reordering`'s. When that
    // is most of them, the rest cannot be called loss either: D-SACKs go unsent or ignored
    // (TCPDSACKIgnored*) and arrive after the window, so the difference is an upper bound.
    let spurious = spurious_rate(cx);
    let needed = if spurious * 2.0 >= retrans.rate && spurious > 0.0 {
        0.0
    } else {
        (retrans.rate - spurious).max(0.0)
    };
    cx.judge(Observation {
        id: "tcp_retransmits",
        layer: Layer::Tcp,
        direction: Direction::Unknown,
        value: needed,
        summary: format!(
            "TCP retransmits {:.0} segments/s ({:.2}% of segments sent) that the peers did not already have",
            needed,
            100.0 * needed / out_segs.rate.max(1.0)
        ),
        evidence: evidence! {
            "retrans_segs_per_s" => round(retrans.rate),
            "dsack_recv_segs_per_s" => round(spurious),
            "out_segs_per_s" => round(out_segs.rate),
            "timeouts_per_s" => rate("TCPTimeouts"),
            "loss_probes_per_s" => rate("TCPLossProbes"),
            "fast_retrans_per_s" => rate("TCPFastRetrans"),
            "slow_start_retrans_per_s" => rate("TCPSlowStartRetrans"),
            "syn_retrans_per_s" => rate("TCPSynRetrans"),
        },
        explanation: "Segments are being sent again and the peers did not report them as received twice (RetransSegs less TCPDSACKRecvSegs): something on the path (or this host) loses them. The counters say how often, not where.",
        condition: Condition::TcpRetransmits,
    })
    .into_iter()
    .collect()
}

/// Retransmitted segments per second the peers reported as received twice (D-SACK).
fn spurious_rate(cx: &Context) -> f64 {
    cx.report.counter("TcpExt", "TCPDSACKRecvSegs").rate
}

/// Retransmits the peers already had: reordering (or timers quicker than the path), not loss.
pub(super) fn tcp_reordering(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let spurious = spurious_rate(cx);
    let retrans = rep.counter("Tcp", "RetransSegs").rate;
    let rate = |field: &str| round(rep.counter("TcpExt", field).rate);
    cx.judge(Observation {
        id: "tcp_reordering",
        layer: Layer::Tcp,
        direction: Direction::Unknown,
        value: spurious,
        summary: format!(
            "TCP re-sent {spurious:.0} segments/s the peers already had ({:.0}% of {retrans:.0} retransmitted/s): reordering, not loss",
            100.0 * spurious / retrans.max(1.0)
        ),
        evidence: evidence! {
            "dsack_recv_segs_per_s" => round(spurious),
            "retrans_segs_per_s" => round(retrans),
            "dsack_undo_per_s" => rate("TCPDSACKUndo"),
            "sack_reorder_per_s" => rate("TCPSACKReorder"),
            "ts_reorder_per_s" => rate("TCPTSReorder"),
            "spurious_rtos_per_s" => rate("TCPSpuriousRTOs"),
        },
        explanation: "The peers report re-sent segments as received twice (D-SACK): the originals arrived late, out of order, and TCP re-sent them before they did. Nothing is lost; each spurious retransmit costs bandwidth and may cut the congestion window until TCP undoes it.",
        condition: Condition::Reordering,
    })
    .into_iter()
    .collect()
}

pub(super) fn listen_overflows(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let overflows = rep.counter("TcpExt", "ListenOverflows");
    // Full now, or refused handshakes in the window (the listener's own drop counter): a
    // queue that overflowed and drained between the samples is named too. Most drops first.
    let mut full: Vec<&Listener> = rep
        .sockets
        .iter()
        .flat_map(|s| s.listeners.iter())
        .filter(|l| l.overflowed())
        .collect();
    full.sort_by_key(|l| std::cmp::Reverse(l.drops));
    let rows: Vec<Value> = full.iter().map(|l| listener_row(l)).collect();
    let summary = match full.first() {
        Some(l) => format!(
            "{:.0} connections/s dropped at full listen queues; {} refused {} in the window (accept queue {}/{}, limited by {})",
            overflows.rate,
            l.who(),
            l.drops.unwrap_or(0),
            l.accept_queue,
            l.accept_queue_max,
            l.limited_by.unwrap_or("unknown")
        ),
        None => format!("{:.0} connections/s dropped at full listen queues", overflows.rate),
    };
    cx.judge(Observation {
        id: "listen_overflows",
        layer: Layer::Tcp,
        direction: Direction::Unknown,
        value: overflows.rate,
        summary,
        evidence: evidence! {"listen_overflows_per_s" => round(overflows.rate), "listen_drops_per_s" => round(rep.counter("TcpExt", "ListenDrops").rate), "somaxconn" => rep.sysctl_number("net.core.somaxconn"), "full_listeners" => rows},
        explanation: "A listener's accept queue is full: the application does not accept() as fast as connections complete, so the kernel drops the handshake's final ACK and clients retry after a timeout.",
        condition: Condition::ListenOverflow,
    })
    .into_iter()
    .collect()
}

/// A listener as `full_listeners` lists it: the first fields as they always were, then its
/// drops in the window and what limits it.
fn listener_row(l: &Listener) -> Value {
    json!({
        "port": l.port,
        "accept_queue": l.accept_queue,
        "max": l.accept_queue_max,
        "owners": l.owners,
        "addr": l.addr,
        "drops": l.drops,
        "drops_total": l.drops_total,
        "limited_by": l.limited_by,
        "somaxconn": l.somaxconn,
    })
}

pub(super) fn tcp_rcvbuf_pruned(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let rate = |field: &str| rep.counter("TcpExt", field).rate;
    let pruned = rate("RcvPruned") + rate("OfoPruned");
    let rmem = rep
        .sysctls
        .get("net.ipv4.tcp_rmem")
        .cloned()
        .unwrap_or_default();
    cx.judge(Observation {
        id: "tcp_rcvbuf_pruned",
        layer: Layer::Tcp,
        direction: Direction::Unknown,
        value: pruned,
        summary: format!("TCP pruned {pruned:.1} receive queues/s (data dropped for lack of receive memory)"),
        evidence: evidence! {
            "rcv_pruned_per_s" => round(rate("RcvPruned")),
            "ofo_pruned_per_s" => round(rate("OfoPruned")),
            "prune_called_per_s" => round(rate("PruneCalled")),
            "rcv_collapsed_per_s" => round(rate("TCPRcvCollapsed")),
            "tcp_rmem" => rmem,
        },
        explanation: "Sockets' receive buffers are full (the application reads too slowly or tcp_rmem is too small): the kernel collapses and finally prunes queued data, which the sender must retransmit.",
        condition: Condition::TcpRcvbufPruned,
    })
    .into_iter()
    .collect()
}
