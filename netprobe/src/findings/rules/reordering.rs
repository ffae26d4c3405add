//! `reordering`: segments arrive out of order and nothing is lost. On the sending side the
//! peer reports most re-sent segments as already received (D-SACK): the retransmits were
//! spurious. On the receiving side the holes are filled by the late originals, and the peer's
//! re-sent copies arrive after them as duplicates. Either way no loss finding is made for the
//! flow (unless its packets were seen dropped), and this one says what the reordering costs.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::json;

use super::{fix_for, Namespace};
use crate::{
    findings::{rows::FlowLoss, Finding},
    fixes::Condition,
    model::flow::Flow,
};

pub(super) fn finding(ns: &Namespace) -> Option<Finding> {
    // Sending side: what this end re-sent, the peer already had.
    let sent: Vec<&FlowLoss> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.mostly_spurious() && f.sent_dropped.is_empty())
        .collect();
    // Receiving side: what the peer re-sent, this end already had.
    let received: Vec<&FlowLoss> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.peer_reordered() && f.received_dropped.is_empty())
        .collect();
    if sent.is_empty() && received.is_empty() {
        return None;
    }
    let here = ns.here();
    let sum = |flows: &[&FlowLoss], of: fn(&FlowLoss) -> u64| flows.iter().map(|f| of(f)).sum();
    let retransmitted: u64 = sum(&sent, |f| f.retransmitted_segs);
    let dsacked: u64 = sum(&sent, |f| f.dsacked_segs);
    let seen: u64 = sum(&sent, |f| f.reordering_seen);
    let holes: u64 = sum(&received, |f| f.holes);
    let fills: u64 = sum(&received, |f| f.peer_fills_hole);
    let duplicates: u64 = sum(&received, |f| f.peer_duplicate);
    let mut parts = Vec::new();
    if !sent.is_empty() {
        parts.push(format!(
            "of {retransmitted} segments {here} sent again, the peers reported {dsacked} as already received (D-SACK: spurious retransmits), and its sockets detected reordering {seen} times"
        ));
    }
    if !received.is_empty() {
        parts.push(format!(
            "{holes} holes opened in what peers sent to {here} were filled {fills} times, and {duplicates} of the peers' re-sent segments then arrived as duplicates (spurious retransmits)"
        ));
    }
    let mut flows = ns.printed(&sent, |f| *f);
    flows.extend(ns.printed(&received, |f: &Flow| f.reversed()));
    Some(Finding {
        id: "reordering".into(),
        severity: Severity::Warning,
        netns: ns.netns,
        source: "events+counters",
        direction: if sent.is_empty() {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        layer: Layer::Unknown,
        cpus: Vec::new(),
        flows,
        summary: format!(
            "segments are reordered, not lost: {}; what it costs is the spurious retransmits and the congestion-window cuts they caused (TCPDSACKUndo: the cuts TCP undid)",
            parts.join("; ")
        ),
        evidence: json!({
            "events": {
                "retransmitted_segs": retransmitted,
                "dsacked_segs": dsacked,
                "reordering_seen": seen,
                "holes": holes,
                "fills_hole": fills,
                "duplicate": duplicates,
            },
            "counters": ns.counters(&[
                ("TcpExt", "TCPDSACKRecvSegs"),
                ("TcpExt", "TCPDSACKRecv"),
                ("TcpExt", "TCPDSACKUndo"),
                ("TcpExt", "TCPSACKReorder"),
                ("TcpExt", "TCPTSReorder"),
                ("TcpExt", "TCPSpuriousRtxHostQueues"),
                ("TcpExt", "TCPDSACKOldSent"),
            ]),
        }),
        fix: fix_for(Condition::Reordering, ns.live),
    })
}
