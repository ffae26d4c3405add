//! `connect_failures`: connections from this namespace whose SYNs were sent again and whose
//! handshake never completed: it failed (SYN_SENT → CLOSE: timed out, refused, given up) or is
//! still waiting at the bundle's time. Where the SYNs die, when netprobe saw them dropped
//! (the drop tally, any namespace: a netfilter rule at the server's input, …); the listener,
//! when it is in netprobe's own namespace. A handshake that completed after a retransmitted
//! SYN is a delay, not a failure: it is not here (its flow says `handshake: completed`).
//!
//! Counted over every flow of the namespace, not only the bundle's top ones: the numbers are
//! the kernel's per-flow totals, and the SYN retransmits are what TcpExt TCPSynRetrans counts.

use std::collections::BTreeMap;

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::{json, Value};

use super::{fix_for, layer_fix};
use crate::{
    findings::{rows::FlowLoss, Finding, Inputs},
    fixes::{Condition, LiveValues},
    model::{flow::Flow, window::HandshakeEnd},
    report::sockets::Listener,
};

/// One place SYNs of the failing flows were dropped: namespace, layer, reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SynDrops {
    netns: u32,
    layer: Layer,
    reason: String,
}

/// The findings of every namespace whose connections failed, from all its flows.
pub(super) fn findings(inputs: &Inputs, live: &LiveValues, all: &[FlowLoss]) -> Vec<Finding> {
    let mut by_netns: BTreeMap<u32, Vec<&FlowLoss>> = BTreeMap::new();
    for f in all.iter().filter(|f| f.syn_retransmits() > 0) {
        by_netns.entry(f.flow.netns).or_default().push(f);
    }
    by_netns
        .into_iter()
        .filter_map(|(netns, flows)| finding(inputs, live, netns, &flows))
        .collect()
}

fn finding(inputs: &Inputs, live: &LiveValues, netns: u32, flows: &[&FlowLoss]) -> Option<Finding> {
    let unfinished = |end| {
        flows
            .iter()
            .copied()
            .filter(move |f| f.handshake_end() == Some(end))
    };
    let failing: Vec<&FlowLoss> = unfinished(HandshakeEnd::Failed)
        .chain(unfinished(HandshakeEnd::Pending))
        .collect();
    if failing.is_empty() {
        return None;
    }
    let failed: u64 = failing.iter().map(|f| f.handshakes.failed).sum();
    let pending = unfinished(HandshakeEnd::Pending).count();
    let completed_late = unfinished(HandshakeEnd::Completed).count();
    let syns: u64 = failing.iter().map(|f| f.syn_retransmits()).sum();
    let drops = syn_drops(inputs, &failing);
    let listener = (netns == inputs.own_netns)
        .then(|| local_listener(inputs, &failing[0].flow))
        .flatten();
    let here = if netns == inputs.own_netns {
        "this namespace".to_string()
    } else {
        format!("netns {netns}")
    };
    let (layer, where_, fix) = cause(&drops, listener, live);
    let mut printed: Vec<String> = failing.iter().map(|f| f.flow.to_string()).collect();
    printed.sort();
    printed.truncate(inputs.top);
    Some(Finding {
        id: "connect_failures".into(),
        severity: if failed > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        netns,
        source: "events+counters",
        direction: Direction::Egress,
        layer,
        cpus: Vec::new(),
        flows: printed,
        summary: format!(
            "{} connections from {here} never completed their handshake: {failed} attempts failed, {pending} still waiting (SYN_SENT), after {syns} SYN retransmits; {where_}",
            failing.len()
        ),
        evidence: json!({
            "events": {
                "flows": failing.len(),
                "failed": failed,
                "pending": pending,
                "syn_retransmits": syns,
                "completed_after_retransmit": completed_late,
                "syn_drops": drops.iter().map(|(d, n)| json!({
                    "netns": d.netns, "layer": d.layer.name(), "reason": d.reason, "drops": n,
                })).collect::<Vec<_>>(),
                "listener": listener.map(listener_json),
            },
            "counters": counters(inputs, netns),
        }),
        fix,
    })
}

/// Drops of the failing flows' SYNs as they travelled (client → server), in any namespace,
/// by where they happened; most first.
fn syn_drops(inputs: &Inputs, failing: &[&FlowLoss]) -> Vec<(SynDrops, u64)> {
    let mut out: BTreeMap<SynDrops, u64> = BTreeMap::new();
    for (key, group) in &inputs.drops.groups {
        for (dropped, n) in &group.flows {
            let ours = failing
                .iter()
                .any(|f| f.flow.src == dropped.src && f.flow.dst == dropped.dst);
            if ours {
                let at = SynDrops {
                    netns: dropped.netns,
                    layer: key.layer,
                    reason: key.reason.to_string(),
                };
                *out.entry(at).or_default() += n;
            }
        }
    }
    let mut out: Vec<(SynDrops, u64)> = out.into_iter().collect();
    out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    out
}

/// The listener the SYNs were sent to, when it is in netprobe's own namespace (the report's
/// sockets): its port, accept queue and owner.
fn local_listener<'a>(inputs: &'a Inputs, to: &Flow) -> Option<&'a Listener> {
    let sockets = inputs.report.sockets.as_ref()?;
    let port = to.dst.port?;
    let addr = to.dst.addr.to_string();
    sockets.listeners.iter().find(|l| {
        l.port == port && (l.addr == addr || l.addr == "0.0.0.0" || l.addr == "::" || l.addr == "*")
    })
}

fn listener_json(l: &Listener) -> Value {
    json!({
        "addr": l.addr, "port": l.port, "accept_queue": l.accept_queue,
        "accept_queue_max": l.accept_queue_max, "owners": l.owners,
    })
}

/// The layer, where the SYNs die, and the fix that follows: the drops seen first, then a full
/// listener here, else the peer or the path.
fn cause(
    drops: &[(SynDrops, u64)],
    listener: Option<&Listener>,
    live: &LiveValues,
) -> (Layer, String, String) {
    if let Some((at, n)) = drops.first() {
        let fix = if at.reason.contains("LISTEN_OVERFLOW") {
            fix_for(Condition::ListenOverflow, live)
        } else {
            layer_fix(at.layer, &at.reason, live)
        };
        let where_ = format!(
            "the SYNs are dropped in netns {} at the {} layer ({}, {n} drops)",
            at.netns,
            at.layer.name(),
            at.reason
        );
        return (at.layer, where_, fix);
    }
    // The kernel refuses a SYN when the queue holds more than its limit (sk_acceptq_is_full).
    if let Some(l) = listener.filter(|l| l.accept_queue > l.accept_queue_max) {
        let owner = l
            .owners
            .first()
            .map(|o| format!("{} (pid {})", o.comm, o.pid))
            .unwrap_or_else(|| format!("the listener on port {}", l.port));
        let where_ = format!(
            "no drop of them seen; the listener on port {} ({owner}) has a full accept queue ({}/{})",
            l.port, l.accept_queue, l.accept_queue_max
        );
        let fix = fix_for(
            Condition::AcceptQueueFull {
                owner: &owner,
                limit: l.accept_queue_max,
            },
            live,
        );
        return (Layer::Socket, where_, fix);
    }
    let where_ = "no drop of them seen on this host: unanswered by the peer (a full accept queue drops SYNs without a trace) or lost on the path".to_string();
    (
        Layer::Unknown,
        where_,
        fix_for(Condition::HandshakeUnanswered, live),
    )
}

/// The counters' side, in netprobe's own namespace only.
fn counters(inputs: &Inputs, netns: u32) -> Value {
    if netns != inputs.own_netns {
        return json!(format!(
            "not read: netns {netns} is not netprobe's own (run netprobe inside it for its counters)"
        ));
    }
    // Not Tcp AttemptFails: it counts only the attempts the kernel itself ends (timeout,
    // reset), not those their owner gives up, and attempts that never retransmitted.
    json!({
        "TcpExt.TCPSynRetrans": inputs.delta("TcpExt", "TCPSynRetrans"),
        "TcpExt.TCPTimeouts": inputs.delta("TcpExt", "TCPTimeouts"),
    })
}
