//! The rules that turn the window into findings, one per file. Flow rules run once per
//! network namespace: "this host" is a namespace, and only netprobe's own has its counters
//! beside the events.

mod backlog;
mod connect_failures;
mod duplicates;
mod inbound;
mod layer_drops;
mod local_failures;
mod napi;
mod outbound;
mod reordering;

use std::collections::BTreeMap;

use netprobe_common::vocab::{Direction, Layer};
use serde_json::{json, Value};

use super::{rows::FlowLoss, Finding, Inputs, Steering};
use crate::{
    fixes::{self, Condition, LiveValues},
    model::{
        flow::Flow,
        tally::{DropGroup, DropKey, DropTally, LinkedDrops},
    },
};

/// `flows` are the bundle's top flows, `all_flows` every flow (the rules that count flows).
pub(super) fn event_findings(
    inputs: &Inputs,
    live: &LiveValues,
    flows: &[FlowLoss],
    all_flows: &[FlowLoss],
    steering: &[Steering],
) -> Vec<Finding> {
    let steering_text: Vec<String> = steering.iter().map(|st| st.summary.clone()).collect();
    let mut namespaces: Vec<u32> = flows.iter().map(|f| f.flow.netns).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut out = Vec::new();
    for netns in namespaces {
        let ns = Namespace {
            inputs,
            live,
            netns,
            flows: flows.iter().filter(|f| f.flow.netns == netns).collect(),
            steering_text: &steering_text,
        };
        out.extend(inbound::finding(&ns));
        out.extend(outbound::finding(&ns));
        out.extend(local_failures::finding(&ns));
        out.extend(duplicates::finding(&ns));
        out.extend(reordering::finding(&ns));
    }
    out.extend(connect_failures::findings(inputs, live, all_flows));
    out.extend(backlog::finding(inputs, live, &steering_text));
    out.extend(layer_drops::findings(inputs, live));
    out.extend(napi::finding(inputs, live));
    out
}

/// What the flow rules of one namespace read.
struct Namespace<'a> {
    inputs: &'a Inputs<'a>,
    live: &'a LiveValues,
    netns: u32,
    flows: Vec<&'a FlowLoss>,
    steering_text: &'a [String],
}

impl Namespace<'_> {
    fn is_own(&self) -> bool {
        self.netns == self.inputs.own_netns
    }

    /// How the findings name the host they are about.
    fn here(&self) -> String {
        if self.is_own() {
            "this namespace".to_string()
        } else {
            format!("netns {}", self.netns)
        }
    }

    /// The counters' side of the evidence: read only in netprobe's own namespace.
    fn counters(&self, fields: &[(&str, &str)]) -> Value {
        if !self.is_own() {
            return json!(format!(
                "not read: netns {} is not netprobe's own (run netprobe inside it for its counters)",
                self.netns
            ));
        }
        let map = fields
            .iter()
            .map(|(group, field)| {
                (
                    format!("{group}.{field}"),
                    json!(self.inputs.delta(group, field)),
                )
            })
            .collect();
        Value::Object(map)
    }

    /// TCP drops in this namespace in a direction (see [`tcp_drops_in`]).
    fn tcp_drops(&self, direction: Direction) -> Vec<TcpDrops<'_>> {
        tcp_drops_in(self.inputs.drops, direction, self.netns)
    }

    /// Count mode, where drops cannot be linked to the flows that lost them: the loss drops
    /// of the window, in any namespace, that can explain a TCP flow's loss (`keep` leaves out
    /// more), most first. Empty when drops are linked (stream mode).
    fn unlinked_drops(&self, keep: impl Fn(&LinkedDrops) -> bool) -> Vec<LinkedDrops> {
        if self.inputs.drops.links_flows() {
            return Vec::new();
        }
        self.inputs
            .drops
            .losses_by_netns()
            .into_iter()
            .filter(|d| can_explain_tcp_loss(d) && keep(d))
            .collect()
    }

    /// Count mode's cause of a loss: what the window dropped that can explain it, said to
    /// be that and not the flow's own drops. (where, fix, layer) of the busiest, or `None`.
    fn unlinked_cause(&self, unlinked: &[LinkedDrops]) -> Option<(String, String, Layer)> {
        let busiest = unlinked.first()?;
        let places: Vec<String> = unlinked.iter().take(3).map(|d| place(d, self)).collect();
        Some((
            format!(
                "dropped in this window {} (count mode does not link drops to flows: streaming mode names each flow's own drops)",
                places.join(" and ")
            ),
            layer_fix(busiest.key.layer, &busiest.key.reason, self.live),
            busiest.key.layer,
        ))
    }

    /// The flows of `flows`, printed as their packets travel, `top` of them.
    fn printed(&self, flows: &[&FlowLoss], as_sent: impl Fn(&Flow) -> Flow) -> Vec<String> {
        flows
            .iter()
            .take(self.inputs.top)
            .map(|f| as_sent(&f.flow).to_string())
            .collect()
    }
}

/// The drops of the flows' packets on one side (`side`: what each flow sent, or received),
/// summed by group and namespace, most first.
fn linked<'a>(
    flows: &[&'a FlowLoss],
    side: impl Fn(&'a FlowLoss) -> &'a Vec<LinkedDrops>,
) -> Vec<LinkedDrops> {
    let mut sums: BTreeMap<(DropKey, u32), u64> = BTreeMap::new();
    for d in flows.iter().flat_map(|f| side(f)) {
        *sums.entry((d.key.clone(), d.netns)).or_default() += d.count;
    }
    let mut out: Vec<LinkedDrops> = sums
        .into_iter()
        .map(|((key, netns), count)| LinkedDrops { key, netns, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    out
}

/// Where linked drops happened, for a summary: "by the netfilter layer (NETFILTER_DROP, 4
/// drops) on the way in, in netns 4026532239".
fn place(d: &LinkedDrops, ns: &Namespace) -> String {
    let way = match d.key.direction {
        Direction::Ingress => " on the way in,",
        Direction::Egress => " on the way out,",
        Direction::Local => " locally,",
        Direction::Unknown => "",
    };
    let netns = match d.netns {
        0 => "in a namespace the drop did not name".to_string(),
        n if n == ns.netns => format!("in {}", ns.here()),
        n if n == ns.inputs.own_netns => "in netprobe's own namespace".to_string(),
        n => format!("in netns {n}"),
    };
    format!(
        "by the {} layer ({}, {} drops){way} {netns}",
        d.key.layer.name(),
        d.key.reason,
        d.count
    )
}

/// One line per flow whose packets were seen dropped, `top` of them: "4 retransmitted
/// segments of A > B ← its segments dropped by the netfilter layer (…) in netns N".
/// `head` gives each flow's (leading text, what was dropped, the drops).
fn cause_lines<'a>(
    ns: &Namespace,
    flows: &[&'a FlowLoss],
    head: impl Fn(&'a FlowLoss) -> (String, &'static str, &'a [LinkedDrops]),
) -> Vec<String> {
    flows
        .iter()
        .map(|f| head(f))
        .filter(|(_, _, drops)| !drops.is_empty())
        .take(ns.inputs.top)
        .map(|(lead, what, drops)| {
            let places: Vec<String> = drops.iter().take(3).map(|d| place(d, ns)).collect();
            format!("{lead} ← {what} dropped {}", places.join(" and "))
        })
        .collect()
}

/// A summary's tail naming the causes: " [line; line]", or nothing.
fn bracketed(causes: &[String]) -> String {
    if causes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", causes.join("; "))
    }
}

/// Whether drops of this kind can be where a TCP flow's segments were lost: not TCP's own
/// discards (the consequence of loss), not UDP's, not a packet no socket wanted or a UDP
/// socket's full buffer (a live TCP flow has its socket), not the kernel's unnamed frees.
fn can_explain_tcp_loss(d: &LinkedDrops) -> bool {
    const NOT_TCP_LOSS: &[&str] = &["NO_SOCKET", "SOCKET_RCVBUFF", "NOT_SPECIFIED"];
    !matches!(d.key.layer, Layer::Tcp | Layer::Udp) && !NOT_TCP_LOSS.contains(&&*d.key.reason)
}

/// One group of TCP drops: its key, how many were TCP segments in the namespace, the group.
type TcpDrops<'a> = (&'a DropKey, u64, &'a DropGroup);

/// The fix for drops at a layer, from the one table of fixes.
fn layer_fix(layer: Layer, reason: &str, live: &LiveValues) -> String {
    fixes::fix(Condition::for_drop(layer, reason), live).command
}

/// The fix for a condition, from the one table of fixes.
fn fix_for(condition: Condition, live: &LiveValues) -> String {
    fixes::fix(condition, live).command
}

/// Flows by count, busiest first, `top` of them, printed.
fn top_flows<'a>(flows: impl Iterator<Item = (&'a Flow, u64)>, top: usize) -> Vec<String> {
    let mut v: Vec<(String, u64)> = flows.map(|(f, n)| (f.to_string(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(top).map(|(f, _)| f).collect()
}

/// Drops of TCP segments on this host in a direction, busiest first, leaving out TCP's own
/// discards (duplicates, out-of-window), which are the consequence of loss, not loss.
fn tcp_drops_in(drops: &DropTally, direction: Direction, netns: u32) -> Vec<TcpDrops<'_>> {
    let mut groups: Vec<TcpDrops> = drops
        .groups
        .iter()
        .filter(|(key, _)| key.direction == direction && key.layer != Layer::Tcp)
        .filter_map(|(key, g)| {
            let tcp = g.tcp_by_netns.get(&netns).copied().unwrap_or(0);
            (tcp > 0).then_some((key, tcp, g))
        })
        .collect();
    groups.sort_by_key(|(_, tcp, _)| std::cmp::Reverse(*tcp));
    groups
}

fn cpus_of(groups: &[TcpDrops]) -> Vec<usize> {
    let mut cpus: Vec<usize> = groups
        .iter()
        .flat_map(|(_, _, g)| g.cpus.keys().map(|c| *c as usize))
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Where the drops of a direction happened, for a summary: the busiest group's layer.
fn dropped_at(key: &DropKey, tcp: u64, here: &str) -> String {
    format!(
        "dropped in {here} at the {} layer ({}, {tcp} TCP drops)",
        key.layer.name(),
        key.reason
    )
}
