//! `outbound_loss` / `inbound_ack_loss`: what this namespace sends is sent again. Either the
//! segments are lost (dropped here on the way out, or on the path), or, when only the timers
//! re-send while the peer's segments for these flows are dropped on the way in, the ACKs are.

use std::collections::BTreeMap;

use netprobe_common::vocab::{Direction, Layer, RetransmitKind, Severity};
use serde_json::json;

use super::{cpus_of, dropped_at, fix_for, layer_fix, Namespace};
use crate::{
    findings::{rows::FlowLoss, Finding},
    fixes::Condition,
    model::tally::DropKey,
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
    // What a netfilter hook refuses on the way out of this host, TCP learns at once (-EPERM):
    // a first send is sent again as new data, a retransmit counted and refused is
    // `retransmits_fail_locally`'s. Neither is what the retransmits recover.
    let local: Vec<_> = ns
        .tcp_drops(Direction::Egress)
        .into_iter()
        .filter(|(key, _, _)| key.layer != Layer::Netfilter)
        .collect();
    let acks = ack_drops(ns, &outbound);
    // Fast retransmits mean the peer's SACKs arrived: then data was lost on the way out,
    // whatever else was dropped on the way in.
    let fast = outbound.iter().any(|f| {
        f.retransmits
            .get(&RetransmitKind::Fast)
            .is_some_and(|n| *n > 0)
    });
    let ack_loss = local.is_empty() && !acks.is_empty() && !fast;
    let (where_, fix, layer) = match (local.first(), acks.first().filter(|_| ack_loss)) {
        (Some((key, tcp, _)), _) => (
            dropped_at(key, *tcp, &here),
            layer_fix(key.layer, &key.reason, ns.live),
            key.layer,
        ),
        (None, Some((key, n))) => (
            format!(
                "the peer's ACKs are dropped on their way into {here} at the {} layer ({}, {n} drops): the timers re-send what the peer may already have",
                key.layer.name(),
                key.reason
            ),
            layer_fix(key.layer, &key.reason, ns.live),
            key.layer,
        ),
        (None, None) => (
            format!("not dropped in {here} on the way out: lost on the path or at the peer's input"),
            fix_for(Condition::LostOnThePath, ns.live),
            Layer::Unknown,
        ),
    };
    let kinds = kinds_of(&outbound);
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
            "segments sent from {here} {}: {} retransmitted segments ({}); {where_}",
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
                .join(", ")
        ),
        evidence: json!({
            "events": {"retransmits_by_kind": kinds},
            "counters": ns.counters(&[("Tcp", "RetransSegs"), ("TcpExt", "TCPTimeouts"),
                                      ("TcpExt", "TCPFastRetrans"), ("TcpExt", "TCPLossProbes")]),
        }),
        fix,
    })
}

/// The peer's segments for these flows (its ACKs), dropped on their way in here, by group:
/// the timers then re-send data the peer may well have.
fn ack_drops<'a>(ns: &'a Namespace, outbound: &[&FlowLoss]) -> Vec<(&'a DropKey, u64)> {
    ns.tcp_drops(Direction::Ingress)
        .into_iter()
        .map(|(key, _, group)| {
            let n = outbound
                .iter()
                .map(|f| group.on_the_wire(&f.flow.reversed()))
                .sum::<u64>();
            (key, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
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
