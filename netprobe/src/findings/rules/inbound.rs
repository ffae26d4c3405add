//! `inbound_loss`: holes in what peers sent, filled by their retransmits. Where the segments
//! died: a drop on the way into this namespace, or (none here) the path before it.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::json;

use super::{cpus_of, dropped_at, fix_for, layer_fix, Namespace};
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
    let (where_, fix) = match local.first() {
        Some((key, tcp, _)) => (
            dropped_at(key, *tcp, &here),
            layer_fix(key.layer, &key.reason, ns.live),
        ),
        None => (
            format!("not dropped in {here}: lost before it arrived (path, or the peer's egress)"),
            fix_for(Condition::LostBeforeArrival, ns.live),
        ),
    };
    let fills: u64 = inbound.iter().map(|f| f.peer_fills_hole).sum();
    let holes: u64 = inbound.iter().map(|f| f.holes).sum();
    Some(Finding {
        id: "inbound_loss".into(),
        severity: Severity::Warning,
        netns: ns.netns,
        source: "events+counters",
        direction: Direction::Ingress,
        layer: local.first().map(|(key, _, _)| key.layer).unwrap_or(Layer::Unknown),
        cpus: cpus_of(&local),
        // As the lost segments travelled: from the peer.
        flows: ns.printed(&inbound, |f: &Flow| f.reversed()),
        summary: format!(
            "packets on their way into {here} are lost: {holes} holes opened and {fills} re-sent segments filled them; {where_}"
        ),
        evidence: json!({
            "events": {"fills_hole": fills, "holes": holes, "dropped_here_ingress": dropped_here},
            "counters": ns.counters(&[("TcpExt", "TCPOFOQueue")]),
            "steering": ns.steering_text,
        }),
        fix,
    })
}
