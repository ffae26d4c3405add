//! `outbound_loss` / `inbound_ack_loss`: what this namespace sends is sent again. Either the
//! segments are lost (dropped where netprobe saw it, here on the way out, or on the path), or,
//! when only the timers re-send while the peer's segments for these flows are dropped, the
//! ACKs are. Flows whose retransmits the peer mostly already had are `reordering`'s.

use std::collections::BTreeMap;

use netprobe_common::vocab::{Direction, Layer, RetransmitKind, Severity};
use serde_json::json;

use super::{
    bracketed, cause_lines, cpus_of, dropped_at, fix_for, layer_fix, linked, place, Namespace,
    TcpDrops,
};
use crate::{
    findings::{rows::FlowLoss, Finding},
    fixes::Condition,
    model::tally::LinkedDrops,
};

pub(super) fn finding(ns: &Namespace) -> Option<Finding> {
    let outbound: Vec<&FlowLoss> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.outbound_loss())
        .collect();
    if outbound.is_empty() {
        return None;
    }
    let here = ns.here();
    // The flows' own segments, seen dropped anywhere: the cause, named.
    let segments = linked(&outbound, |f| &f.sent_dropped);
    // What a netfilter hook refuses on the way out of this host, TCP learns at once (-EPERM):
    // a first send is sent again as new data, a retransmit counted and refused is
    // `retransmits_fail_locally`'s. Neither is what the retransmits recover.
    let local: Vec<_> = ns
        .tcp_drops(Direction::Egress)
        .into_iter()
        .filter(|(key, _, _)| key.layer != Layer::Netfilter)
        .collect();
    // The peer's segments for these flows (its ACKs), seen dropped anywhere.
    let acks = linked(&outbound, |f| &f.received_dropped);
    // Fast retransmits mean the peer's SACKs arrived: then data was lost on the way out,
    // whatever else was dropped on the way in.
    let fast = outbound.iter().any(|f| {
        f.retransmits
            .get(&RetransmitKind::Fast)
            .is_some_and(|n| *n > 0)
    });
    let ack_loss = segments.is_empty() && local.is_empty() && !acks.is_empty() && !fast;
    let (where_, fix, layer) = where_lost(ns, &segments, &local, &acks, ack_loss);
    let kinds = kinds_of(&outbound);
    let causes = cause_lines(ns, &outbound, |f| {
        let lead = format!(
            "{} retransmitted segments of {}",
            f.retransmitted_segs, f.flow
        );
        if ack_loss {
            (lead, "the peer's ACKs", f.received_dropped.as_slice())
        } else {
            (lead, "its segments", f.sent_dropped.as_slice())
        }
    });
    Some(Finding {
        id: if ack_loss {
            "inbound_ack_loss"
        } else {
            "outbound_loss"
        }
        .into(),
        severity: Severity::Warning,
        netns: ns.netns,
        source: "events+counters",
        direction: if ack_loss {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        layer,
        cpus: cpus_of(&local),
        flows: ns.printed(&outbound, |f| *f),
        summary: format!(
            "segments sent from {here} {}: {} retransmitted segments ({}); {where_}{}",
            if ack_loss {
                "are sent again"
            } else {
                "are lost"
            },
            outbound.iter().map(|f| f.retransmitted_segs).sum::<u64>(),
            kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            bracketed(&causes)
        ),
        evidence: json!({
            "events": {"retransmits_by_kind": kinds, "causes": causes},
            "counters": ns.counters(&[("Tcp", "RetransSegs"), ("TcpExt", "TCPTimeouts"),
                                      ("TcpExt", "TCPFastRetrans"), ("TcpExt", "TCPLossProbes")]),
        }),
        fix,
    })
}

/// Where the segments were lost, its fix and layer: the flows' own segments seen dropped, a
/// drop on the way out of this namespace, the peer's ACKs, (count mode) what the window
/// dropped, or the path.
fn where_lost(
    ns: &Namespace,
    segments: &[LinkedDrops],
    local: &[TcpDrops],
    acks: &[LinkedDrops],
    ack_loss: bool,
) -> (String, String, Layer) {
    // Count mode: no drop is linked; what the window dropped, but the namespace's own
    // OUTPUT refusals (new data sent again, not retransmits: `rows::link_drops`).
    let unlinked = ns.unlinked_drops(|d| {
        !(d.netns == ns.netns
            && d.key.direction == Direction::Egress
            && d.key.layer == Layer::Netfilter)
    });
    if let Some(d) = segments.first() {
        (
            format!("its segments were dropped {}", place(d, ns)),
            layer_fix(d.key.layer, &d.key.reason, ns.live),
            d.key.layer,
        )
    } else if let Some((key, tcp, _)) = local.first() {
        (
            dropped_at(key, *tcp, &ns.here()),
            layer_fix(key.layer, &key.reason, ns.live),
            key.layer,
        )
    } else if let Some(d) = acks.first().filter(|_| ack_loss) {
        (
            format!(
                "the peer's ACKs were dropped {}: the timers re-send what the peer may already have",
                place(d, ns)
            ),
            layer_fix(d.key.layer, &d.key.reason, ns.live),
            d.key.layer,
        )
    } else if let Some(cause) = ns.unlinked_cause(&unlinked) {
        cause
    } else {
        (
            format!(
                "not dropped in {} on the way out: lost on the path or at the peer's input",
                ns.here()
            ),
            fix_for(Condition::LostOnThePath, ns.live),
            Layer::Unknown,
        )
    }
}

/// The flows' retransmits summed by kind, by the kinds' names.
fn kinds_of(flows: &[&FlowLoss]) -> BTreeMap<&'static str, u64> {
    let mut kinds = BTreeMap::new();
    for f in flows {
        for (k, n) in &f.retransmits {
            *kinds.entry(k.name()).or_default() += n;
        }
    }
    kinds
}
