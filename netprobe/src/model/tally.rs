//! Drops tallied from the stream, or in count mode from the kernel's per-site counts.
//! Classification needs each drop's location and device, which the kernel's per-reason table
//! does not keep, so the findings' view of where drops happened is this tally of classified
//! drops: events one by one, or sites (reason, function, device, namespace) with their counts.

use std::{collections::BTreeMap, sync::Arc};

use netprobe_common::vocab::{Direction, Layer};

use super::{
    classify::{role_of, DropRole},
    event::Drop,
    flow::{Endpoint, Flow},
    sites::SiteDrops,
};

/// A group of drops: the same direction, layer and reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DropKey {
    pub direction: Direction,
    pub layer: Layer,
    pub reason: Arc<str>,
}

#[derive(Debug, Default, Clone)]
pub struct DropGroup {
    pub count: u64,
    /// Of which TCP segments, by the namespace they were dropped in.
    pub tcp_by_netns: BTreeMap<u32, u64>,
    pub cpus: BTreeMap<u32, u64>,
    /// Flows as the packets travelled → count.
    pub flows: BTreeMap<Flow, u64>,
    pub netns: BTreeMap<u32, u64>,
}

impl DropGroup {
    /// Drops of packets travelling `src > dst`, whatever namespace the drop was seen in (a
    /// packet without socket or device has none).
    pub fn on_the_wire(&self, flow: &Flow) -> u64 {
        self.flows
            .iter()
            .filter(|(f, _)| f.src == flow.src && f.dst == flow.dst)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Drops of one flow's packets in one namespace, of one group: what explains that flow's loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedDrops {
    pub key: DropKey,
    /// The namespace the packets were dropped in (0: neither device nor socket named one).
    pub netns: u32,
    pub count: u64,
}

/// The same end of a flow, a dual-stack socket's v4-mapped address matching the IPv4 one of
/// the packet.
fn same_end(a: &Endpoint, b: &Endpoint) -> bool {
    a.port == b.port && a.addr.to_canonical() == b.addr.to_canonical()
}

/// What a tally was made of, which decides what it can say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum TallySource {
    /// Streamed drop events: each with its packet's flow, protocol and socket state.
    #[default]
    Events,
    /// Count mode's per-site counts (`trace --count`): exact, but a site has no packet
    /// headers, so no flows, no TCP share and no socket state.
    Sites,
}

#[derive(Debug, Default, Clone)]
pub struct DropTally {
    pub source: TallySource,
    pub groups: BTreeMap<DropKey, DropGroup>,
    /// Old data dropped on sockets past ESTABLISHED, by namespace: duplicates the kernel
    /// counts in DelayedACKLost where `tcp_probe` (established sockets only) does not see them.
    pub late_duplicates: BTreeMap<u32, u64>,
}

/// The drop reasons of a segment TCP already had, each counted in DelayedACKLost as it is
/// dropped: TCP_OLD_DATA (`tcp_data_queue`: wholly before rcv_nxt), TCP_OLD_SEQUENCE
/// (`tcp_validate_incoming`: before the last advertised window, answered by
/// `tcp_send_dupack`). A pure ACK that old counts in neither; one arriving after a FIN is
/// all but impossible, its sequence being the peer's latest. Linux 6.1 names the second
/// TCP_INVALID_SEQUENCE, with the segments beyond the window: the kernel side marks which
/// are old (`Drop::old_sequence`).
pub const OLD_DATA: &[&str] = &["TCP_OLD_DATA", "TCP_OLD_SEQUENCE"];

impl DropTally {
    /// Count mode's tally: every site's exact counts, grouped as the stream's events are (the
    /// same classification: `SiteNames` applies it to each site).
    pub fn from_sites(sites: &[SiteDrops]) -> Self {
        let mut tally = DropTally {
            source: TallySource::Sites,
            ..Default::default()
        };
        for s in sites {
            let key = DropKey {
                direction: s.site.direction,
                layer: s.site.layer,
                reason: Arc::from(s.site.reason.as_str()),
            };
            let group = tally.counted_at(key, s.netns, s.total());
            for (cpu, n) in s.per_cpu.iter().enumerate().filter(|(_, n)| **n > 0) {
                *group.cpus.entry(cpu as u32).or_default() += n;
            }
        }
        tally
    }

    /// Whether drops can be joined with the flows that lost them (streamed events only).
    pub fn links_flows(&self) -> bool {
        self.source == TallySource::Events
    }

    /// Every group of loss drops by the namespace it was dropped in, most first: the drops
    /// that may explain a flow's loss when they cannot be linked to it (count mode).
    pub fn losses_by_netns(&self) -> Vec<LinkedDrops> {
        let mut out: Vec<LinkedDrops> = self
            .groups
            .iter()
            .filter(|(key, _)| role_of(&key.reason) == DropRole::Loss)
            .flat_map(|(key, group)| {
                group.netns.iter().map(|(netns, count)| LinkedDrops {
                    key: key.clone(),
                    netns: *netns,
                    count: *count,
                })
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        out
    }

    /// Drops of packets travelling `flow.src > flow.dst`, in any namespace, whose reason is a
    /// loss: a socket's teardown and TCP discarding what it already had explain no loss. Most
    /// first.
    pub fn losses_of(&self, flow: &Flow) -> Vec<LinkedDrops> {
        let mut linked: Vec<LinkedDrops> = Vec::new();
        let groups = self
            .groups
            .iter()
            .filter(|(key, _)| role_of(&key.reason) == DropRole::Loss);
        for (key, group) in groups {
            let mut by_netns: BTreeMap<u32, u64> = BTreeMap::new();
            for (f, n) in &group.flows {
                if same_end(&f.src, &flow.src) && same_end(&f.dst, &flow.dst) {
                    *by_netns.entry(f.netns).or_default() += n;
                }
            }
            linked.extend(by_netns.into_iter().map(|(netns, count)| LinkedDrops {
                key: key.clone(),
                netns,
                count,
            }));
        }
        linked.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        linked
    }

    /// Counts drops the kernel counted at one site but did not stream (storm sampling): in
    /// their group and namespace; their flows and CPUs are those of the site's streamed
    /// sample, already counted.
    pub fn add_counted_only(&mut self, key: DropKey, netns: u32, count: u64) {
        if count > 0 {
            self.counted_at(key, netns, count);
        }
    }

    /// Adds `count` drops of namespace `netns` to group `key`, which it returns: drops known
    /// from a site's count, not from events (no flows).
    fn counted_at(&mut self, key: DropKey, netns: u32, count: u64) -> &mut DropGroup {
        let group = self.groups.entry(key).or_default();
        group.count += count;
        *group.netns.entry(netns).or_default() += count;
        group
    }

    /// Counts one classified drop.
    pub fn add(&mut self, drop: &Drop) {
        let key = DropKey {
            direction: drop.direction,
            layer: drop.layer,
            reason: drop.reason.clone(),
        };
        let group = self.groups.entry(key).or_default();
        group.count += 1;
        if drop.is_tcp() {
            *group.tcp_by_netns.entry(drop.netns).or_default() += 1;
        }
        *group.cpus.entry(drop.at.cpu).or_default() += 1;
        if let Some(flow) = drop.flow {
            *group.flows.entry(flow).or_default() += 1;
        }
        *group.netns.entry(drop.netns).or_default() += 1;
        let old = OLD_DATA.contains(&&*drop.reason) || drop.old_sequence;
        if drop.is_tcp() && old && drop.on_a_closing_socket() {
            *self.late_duplicates.entry(drop.netns).or_default() += 1;
        }
    }
}
