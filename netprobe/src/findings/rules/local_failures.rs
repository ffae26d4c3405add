//! `retransmits_fail_locally`: retransmits this namespace counted (RetransSegs, TCPRetransFail)
//! and then refused to send itself: a netfilter rule in its OUTPUT path, a full qdisc, no
//! buffer. The segments never reached the wire; the layer is what `tcp_transmit_skb` returned,
//! and the drops at that layer on the way out are the same segments seen by the drop hook.

use netprobe_common::vocab::{Direction, EgressFailure, Severity};
use serde_json::json;

use super::{fix_for, layer_fix, Namespace};
use crate::{
    findings::{rows::FlowLoss, Finding},
    fixes::Condition,
};

pub(super) fn finding(ns: &Namespace) -> Option<Finding> {
    let failing: Vec<&FlowLoss> = ns
        .flows
        .iter()
        .copied()
        .filter(|f| f.failed.after_counted.count > 0)
        .collect();
    let mut causes = std::collections::BTreeMap::<EgressFailure, u64>::new();
    for f in &failing {
        for (cause, n) in &f.failed.causes {
            *causes.entry(*cause).or_default() += n;
        }
    }
    let (cause, _) = causes
        .iter()
        .max_by_key(|(c, n)| (**n, std::cmp::Reverse(**c)))?;
    let layer = cause.layer();
    let attempts: u64 = failing.iter().map(|f| f.failed.after_counted.count).sum();
    let segs: u64 = failing.iter().map(|f| f.failed.after_counted.segs).sum();
    // This namespace's drops on the way out at that layer: the refused segments themselves.
    let drops: Vec<_> = ns
        .tcp_drops(Direction::Egress)
        .into_iter()
        .filter(|(key, _, _)| key.layer == layer)
        .collect();
    let drop_count: u64 = drops.iter().map(|(_, tcp, _)| tcp).sum();
    let fix = match drops.first() {
        Some((key, _, _)) => layer_fix(key.layer, &key.reason, ns.live),
        None => match cause {
            EgressFailure::Netfilter => fix_for(Condition::FirewallDrops, ns.live),
            EgressFailure::Qdisc => fix_for(Condition::QdiscDrops { qdisc: None }, ns.live),
            _ => fix_for(Condition::for_drop(layer, cause.name()), ns.live),
        },
    };
    let by_cause: Vec<String> = causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    Some(Finding {
        id: "retransmits_fail_locally".into(),
        severity: Severity::Critical,
        netns: ns.netns,
        source: "events+counters",
        direction: Direction::Egress,
        layer,
        cpus: super::cpus_of(&drops),
        flows: ns.printed(&failing, |f| *f),
        summary: format!(
            "{attempts} retransmits ({segs} segments) were refused by {} itself at the {} layer ({}), after the kernel counted them: they never left; {drop_count} TCP drops on the way out at that layer",
            ns.here(),
            layer.name(),
            by_cause.join(", ")
        ),
        evidence: json!({
            "events": {
                "failed_after_counted": attempts,
                "segs": segs,
                "by_cause": causes.iter().map(|(c, n)| (c.name(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                "egress_drops": drops.iter().map(|(key, tcp, _)| json!({"reason": &*key.reason, "layer": key.layer.name(), "tcp_drops": tcp})).collect::<Vec<_>>(),
            },
            "counters": ns.counters(&[("Tcp", "RetransSegs"), ("TcpExt", "TCPRetransFail")]),
        }),
        fix,
    })
}
