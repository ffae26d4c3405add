//! `inbound_loss`: holes in what peers sent, filled by their retransmits. Where the segments
//! died: drops of those flows' segments wherever netprobe saw them, else a drop on the way into
//! this namespace, or (none here) the path before it. Holes filled by late originals (the
//! re-sent copies arriving as duplicates after them) are `reordering`'s.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::json;

use super::{
    bracketed, cause_lines, cpus_of, dropped_at, fix_for, layer_fix, linked, place, Namespace,
};
use crate::{findings::Finding, fixes::Condition, model::flow::Flow};

pub(super) fn finding(ns: &Namespace) -> Option<Finding> {
    let inbound: Vec<_> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.inbound_loss())
        .collect();
    if inbound.is_empty() {
        return None;
    }
    let here = ns.here();
    let local = ns.tcp_drops(Direction::Ingress);
    let dropped_here: u64 = local.iter().map(|(_, tcp, _)| tcp).sum();
    let segments = linked(&inbound, |f| &f.received_dropped);
    let unlinked = ns.unlinked_drops(|_| true);
    let (where_, fix, layer) = match (segments.first(), local.first()) {
        (Some(d), _) => (
            format!("the peer's segments were dropped {}", place(d, ns)),
            layer_fix(d.key.layer, &d.key.reason, ns.live),
            d.key.layer,
        ),
        (None, Some((key, tcp, _))) => (
            dropped_at(key, *tcp, &here),
            layer_fix(key.layer, &key.reason, ns.live),
            key.layer,
        ),
        (None, None) => ns.unlinked_cause(&unlinked).unwrap_or_else(|| {
            (
                format!(
                    "not dropped in {here}: lost before it arrived (path, or the peer's egress)"
                ),
                fix_for(Condition::LostBeforeArrival, ns.live),
                Layer::Unknown,
            )
        }),
    };
    let causes = cause_lines(ns, &inbound, |f| {
        let lead = format!(
            "{} re-sent segments of {}",
            f.peer_fills_hole,
            f.flow.reversed()
        );
        (lead, "its segments", f.received_dropped.as_slice())
    });
    let fills: u64 = inbound.iter().map(|f| f.peer_fills_hole).sum();
    let holes: u64 = inbound.iter().map(|f| f.holes).sum();
    Some(Finding {
        id: "inbound_loss".into(),
        severity: Severity::Warning,
        netns: ns.netns,
        source: "events+counters",
        direction: Direction::Ingress,
        layer,
        cpus: cpus_of(&local),
        // As the lost segments travelled: from the peer.
        flows: ns.printed(&inbound, |f: &Flow| f.reversed()),
        summary: format!(
            "packets on their way into {here} are lost: {holes} holes opened and {fills} re-sent segments filled them; {where_}{}",
            bracketed(&causes)
        ),
        evidence: json!({
            "events": {"fills_hole": fills, "holes": holes, "dropped_here_ingress": dropped_here, "causes": causes},
            "counters": ns.counters(&[("TcpExt", "TCPOFOQueue")]),
            "steering": ns.steering_text,
        }),
        fix,
    })
}
