//! `ack_loss_or_spurious_retransmits`: the peer re-sent data already received, so the ACKs
//! did not reach it (or it was too quick to re-send). Duplicates that followed holes filled by
//! the late originals, with none of our ACKs seen dropped, are `reordering`'s.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::json;

use super::{cause_lines, fix_for, Namespace};
use crate::{findings::Finding, fixes::Condition, model::flow::Flow};

pub(super) fn finding(ns: &Namespace) -> Option<Finding> {
    let dup_flows: Vec<_> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.peer_duplicate > 0 && !(f.peer_reordered() && f.sent_dropped.is_empty()))
        .collect();
    if dup_flows.is_empty() {
        return None;
    }
    let here = ns.here();
    let duplicates: u64 = dup_flows.iter().map(|f| f.peer_duplicate).sum();
    let causes = cause_lines(ns, &dup_flows, |f| {
        let lead = format!("{} duplicates of {}", f.peer_duplicate, f.flow.reversed());
        (lead, "our ACKs", f.sent_dropped.as_slice())
    });
    Some(Finding {
        id: "ack_loss_or_spurious_retransmits".into(),
        severity: Severity::Warning,
        netns: ns.netns,
        source: "events+counters",
        direction: Direction::Egress,
        layer: Layer::Tcp,
        cpus: Vec::new(),
        flows: ns.printed(&dup_flows, |f: &Flow| f.reversed()),
        summary: format!(
            "peers re-sent {duplicates} segments {here} already had: its ACKs are lost on the way out, or the peer retransmits too early"
        ),
        evidence: json!({
            "events": {"duplicate": duplicates, "causes": causes},
            "counters": ns.counters(&[("TcpExt", "DelayedACKLost")]),
        }),
        fix: fix_for(Condition::AckLossOrSpuriousRetransmits, ns.live),
    })
}
