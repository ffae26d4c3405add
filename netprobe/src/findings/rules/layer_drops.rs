//! `drops_<layer>_<reason>`: every other layer that dropped packets, host-wide (the
//! namespaces are in the evidence).

use netprobe_common::vocab::{Layer, Severity};
use serde_json::json;

use super::{layer_fix, top_flows};
use crate::{
    findings::{Finding, Inputs},
    fixes::LiveValues,
    model::classify::{role_of, DropRole},
};

/// Reasons that are not loss: TCP discarding data it already has and sockets' teardown
/// (`classify::role_of`), and the kernel's "no reason given" frees. Those of unix-domain sockets no longer get here (the kernel
/// counts them apart, as non-network), but NOT_SPECIFIED stays: its IP packets are mostly
/// ones nobody was meant to take, e.g. IPv6 multicast to groups a namespace never joined
/// (`ip6_mc_input`: every new interface's MLD reports and router solicitations, a dozen per
/// demo run). They stay drop events and in the totals; as a finding they would be routine
/// dressed as a warning.
const NOT_SPECIFIED: &str = "NOT_SPECIFIED";

pub(super) fn findings(inputs: &Inputs, live: &LiveValues) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, g) in &inputs.drops.groups {
        // Backlog drops have their own finding, with both sides' counts.
        if key.layer == Layer::Backlog
            || &*key.reason == NOT_SPECIFIED
            || role_of(&key.reason) != DropRole::Loss
        {
            continue;
        }
        let netns: Vec<u32> = g.netns.keys().copied().collect();
        let reason = &key.reason;
        out.push(Finding {
            id: format!("drops_{}_{}", key.layer.name(), reason.to_lowercase()),
            severity: Severity::Warning,
            netns: if netns.len() == 1 { netns[0] } else { 0 },
            source: "events",
            direction: key.direction,
            layer: key.layer,
            cpus: g.cpus.keys().map(|c| *c as usize).collect(),
            flows: top_flows(g.flows.iter().map(|(f, n)| (f, *n)), inputs.top),
            summary: format!(
                "{} packets dropped ({reason}) at the {} layer",
                g.count,
                key.layer.name()
            ),
            evidence: json!({"events": {"drops": g.count, "reason": &**reason, "netns": netns}}),
            fix: layer_fix(key.layer, reason, live),
        });
    }
    out
}
