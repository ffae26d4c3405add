//! The bundle's tables: each flow's loss in both directions, and each CPU's receive work.

use std::collections::BTreeMap;

use netprobe_common::vocab::RetransmitKind;
use serde::Serialize;

use super::{Inputs, Steering};
use crate::model::{
    cpuset::CpuSet,
    flow::Flow,
    owners::Owner,
    tally::{DropTally, LinkedDrops},
    window::{FailedAttempts, HandshakeEnd, Handshakes, Window},
};

/// A flow's loss as this host saw it: what it re-sent, and what its peer re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLoss {
    /// The socket's view: this host's end, then the peer's.
    pub flow: Flow,
    pub owner: Option<Owner>,
    pub retransmits: BTreeMap<RetransmitKind, u64>,
    pub retransmitted_segs: u64,
    /// Retransmit attempts that did not go out, by outcome.
    pub failed: FailedAttempts,
    pub peer_duplicate: u64,
    pub peer_fills_hole: u64,
    pub holes: u64,
    /// Of the retransmitted segments, those the peer reported as already received (D-SACK).
    pub dsacked_segs: u64,
    /// Times this end's socket detected reordering while it retransmitted.
    pub reordering_seen: u64,
    /// Drops of the packets this end sent, and of those the peer sent, in any namespace
    /// netprobe sees, teardown and TCP's discards of what it had left out: the cause of the
    /// loss in each direction, when netprobe saw it.
    pub sent_dropped: Vec<LinkedDrops>,
    pub received_dropped: Vec<LinkedDrops>,
    /// How its handshakes ended, when it retransmitted a SYN or SYN-ACK.
    pub handshakes: Handshakes,
    /// The peer's own end of the flow is on this host (another namespace netprobe sees), and
    /// its socket reports most of what it re-sent as received twice (D-SACK): its re-sent
    /// segments that filled holes here followed late originals.
    pub peer_resent_spuriously: bool,
}

impl FlowLoss {
    fn new(flow: Flow, owner: Option<Owner>) -> Self {
        FlowLoss {
            flow,
            owner,
            retransmits: BTreeMap::new(),
            retransmitted_segs: 0,
            failed: FailedAttempts::default(),
            peer_duplicate: 0,
            peer_fills_hole: 0,
            holes: 0,
            dsacked_segs: 0,
            reordering_seen: 0,
            sent_dropped: Vec::new(),
            received_dropped: Vec::new(),
            handshakes: Handshakes::default(),
            peer_resent_spuriously: false,
        }
    }

    /// SYNs sent again, as TCPSynRetrans counts them: sent, or counted and then refused.
    pub fn syn_retransmits(&self) -> u64 {
        let sent = self.retransmits.get(&RetransmitKind::Syn).copied();
        let failed = self.failed.kinds.get(&RetransmitKind::Syn).copied();
        sent.unwrap_or(0) + failed.unwrap_or(0)
    }

    /// SYN-ACKs sent again (they fire the tracepoint only when sent).
    pub fn synack_retransmits(&self) -> u64 {
        let sent = self.retransmits.get(&RetransmitKind::Synack).copied();
        sent.unwrap_or(0)
    }

    /// Where its handshake stands, when it had to send its SYN or SYN-ACK again.
    pub fn handshake_end(&self) -> Option<HandshakeEnd> {
        (self.syn_retransmits() + self.synack_retransmits() > 0)
            .then(|| HandshakeEnd::of(&self.handshakes))
    }

    /// The peer reported at least half of what this end re-sent as already received: the
    /// retransmits were spurious (reordering, or timers quicker than the path), not loss.
    pub fn mostly_spurious(&self) -> bool {
        self.retransmitted_segs > 0 && self.dsacked_segs * 2 >= self.retransmitted_segs
    }

    /// At least half as many of the peer's re-sent segments arrived as duplicates as filled
    /// holes: the holes were mostly filled by the late originals, the re-sent copies
    /// following them. Reordering on the way in, not loss.
    /// The peer's own socket saying its retransmits were mostly D-SACKed, when netprobe sees
    /// it, settles the same question from the other end: a late original reaching this end
    /// before the copy leaves no duplicate here, so the receiver's own count can fall short.
    pub fn peer_reordered(&self) -> bool {
        self.peer_fills_hole > 0
            && (self.peer_duplicate * 2 >= self.peer_fills_hole || self.peer_resent_spuriously)
    }

    /// Retransmits that mean data (or its ACK) was lost on the way out: loss-signalling
    /// kinds, not mostly spurious unless drops of what this end sent were seen.
    pub fn outbound_loss(&self) -> bool {
        let signalled = self
            .retransmits
            .iter()
            .any(|(k, n)| k.signals_loss() && *n > 0);
        signalled && (!self.mostly_spurious() || !self.sent_dropped.is_empty())
    }

    /// Holes in what the peer sent, or its re-sent data filling them, unless the peer's
    /// segments were reordered (and none seen dropped).
    pub fn inbound_loss(&self) -> bool {
        self.peer_fills_hole + self.holes > 0
            && (!self.peer_reordered() || !self.received_dropped.is_empty())
    }

    /// Out-of-order delivery without loss, in either direction.
    pub fn reordered(&self) -> bool {
        (self.mostly_spurious() && self.sent_dropped.is_empty())
            || (self.peer_reordered() && self.received_dropped.is_empty())
    }

    pub fn losing_direction(&self) -> &'static str {
        match (self.outbound_loss(), self.inbound_loss()) {
            (true, true) => "both",
            (true, false) => "outbound",
            (false, true) => "inbound",
            (false, false) if self.reordered() => "none (reordering)",
            (false, false) if self.peer_duplicate > 0 => "outbound (our ACKs) or spurious",
            // The SYN (or SYN-ACK) is what was sent again: the handshake lost it, or its answer.
            _ => match self.handshake_end() {
                Some(HandshakeEnd::Failed | HandshakeEnd::Pending | HandshakeEnd::Unknown) => {
                    "outbound (handshake)"
                }
                Some(HandshakeEnd::Completed) => "outbound (handshake, completed)",
                None => "none",
            },
        }
    }

    fn weight(&self) -> u64 {
        self.retransmitted_segs + self.peer_duplicate + self.peer_fills_hole + self.holes
    }
}

#[derive(Debug, Serialize, Clone)]
pub struct FlowRow {
    pub netns: u32,
    /// This host's end, then the peer's.
    pub local: String,
    pub remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// What we sent again (by kind) and the segments.
    pub retransmits: BTreeMap<&'static str, u64>,
    pub retransmitted_segs: u64,
    /// Of the retransmitted segments, those the peer reported as already received (D-SACK).
    pub dsacked_segs: u64,
    pub reordering_seen: u64,
    /// What the peer sent again, and holes, as this host received it.
    pub peer_duplicate: u64,
    pub peer_fills_hole: u64,
    pub holes: u64,
    /// The flow's packets netprobe saw dropped (either direction, any namespace), the
    /// teardown and TCP's discards of what it had left out.
    pub drops: Vec<LinkedDropRow>,
    /// The direction that loses packets, as far as this flow shows.
    pub losing_direction: &'static str,
    /// How a handshake whose SYN or SYN-ACK was sent again ended: `failed`, `pending` (not
    /// decided at the bundle's time) or `completed`; absent for other flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<&'static str>,
}

#[derive(Debug, Serialize, Clone)]
pub struct LinkedDropRow {
    /// `sent`: packets this end sent; `received`: packets the peer sent.
    pub packets: &'static str,
    pub netns: u32,
    pub direction: &'static str,
    pub layer: &'static str,
    pub reason: String,
    pub count: u64,
}

impl LinkedDropRow {
    fn new(packets: &'static str, d: &LinkedDrops) -> Self {
        LinkedDropRow {
            packets,
            netns: d.netns,
            direction: d.key.direction.name(),
            layer: d.key.layer.name(),
            reason: d.key.reason.to_string(),
            count: d.count,
        }
    }
}

impl From<&FlowLoss> for FlowRow {
    fn from(f: &FlowLoss) -> Self {
        FlowRow {
            netns: f.flow.netns,
            local: f.flow.src.to_string(),
            remote: f.flow.dst.to_string(),
            owner: f.owner.clone(),
            retransmits: f.retransmits.iter().map(|(k, n)| (k.name(), *n)).collect(),
            retransmitted_segs: f.retransmitted_segs,
            dsacked_segs: f.dsacked_segs,
            reordering_seen: f.reordering_seen,
            peer_duplicate: f.peer_duplicate,
            peer_fills_hole: f.peer_fills_hole,
            holes: f.holes,
            drops: (f.sent_dropped.iter().map(|d| LinkedDropRow::new("sent", d)))
                .chain(
                    f.received_dropped
                        .iter()
                        .map(|d| LinkedDropRow::new("received", d)),
                )
                .collect(),
            losing_direction: f.losing_direction(),
            handshake: f.handshake_end().map(HandshakeEnd::name),
        }
    }
}

/// Both directions of every flow, joined on the typed flow key; the busiest `top`.
pub fn flow_losses(w: &Window, top: usize) -> Vec<FlowLoss> {
    let mut rows: BTreeMap<Flow, FlowLoss> = BTreeMap::new();
    for f in &w.retransmits.flows {
        let row = rows
            .entry(f.flow)
            .or_insert_with(|| FlowLoss::new(f.flow, f.owner.clone()));
        for (kind, counts) in &f.kinds {
            *row.retransmits.entry(*kind).or_default() += counts.count;
        }
        row.retransmitted_segs += f.segs;
        row.failed.add(&f.failed);
        row.dsacked_segs += f.dsacked_segs;
        row.reordering_seen += f.reordering_seen;
        row.handshakes.add(&f.handshakes);
    }
    for f in &w.received.flows {
        let row = rows
            .entry(f.flow)
            .or_insert_with(|| FlowLoss::new(f.flow, f.owner.clone()));
        row.peer_duplicate += f.counts.all_duplicates();
        row.peer_fills_hole += f.counts.fills_hole;
        row.holes += f.counts.holes;
    }
    let mut out: Vec<FlowLoss> = rows.into_values().collect();
    mark_peers_resending_spuriously(&mut out);
    out.sort_by_key(|r| std::cmp::Reverse(r.weight()));
    out.truncate(top);
    out
}

/// Each row whose peer's end is another row (the same endpoints the other way round, in
/// another namespace: both ends on this host) learns whether that end's retransmits were
/// mostly spurious.
fn mark_peers_resending_spuriously(rows: &mut [FlowLoss]) {
    let spurious_senders: Vec<Flow> = rows
        .iter()
        .filter(|r| r.mostly_spurious())
        .map(|r| r.flow)
        .collect();
    for row in rows.iter_mut() {
        row.peer_resent_spuriously = spurious_senders.iter().any(|peer| {
            peer.netns != row.flow.netns && peer.src == row.flow.dst && peer.dst == row.flow.src
        });
    }
}

/// Joins each of `rows` with the drops of its own packets in each direction.
pub fn link_drops(rows: &mut [FlowLoss], drops: &DropTally) {
    for row in rows {
        let own_netns = row.flow.netns;
        row.sent_dropped = drops.losses_of(&row.flow);
        row.sent_dropped
            .retain(|d| !refused_on_the_way_out(d, own_netns));
        row.received_dropped = drops.losses_of(&row.flow.reversed());
    }
}

/// A netfilter hook of the sender's own namespace refusing its segment on the way out: TCP
/// gets the error at once (-EPERM) and sends the data again as new data, not as a retransmit
/// (measured: 22 OUTPUT drops of a transfer, RetransSegs +0, and a capture at the receiver with
/// no segment sent after its successor). A retransmit refused that way is a failed attempt
/// (`retransmits_fail_locally`). Neither explains what the flow's retransmits recover.
fn refused_on_the_way_out(d: &LinkedDrops, sender_netns: u32) -> bool {
    d.netns == sender_netns
        && d.key.direction == netprobe_common::vocab::Direction::Egress
        && d.key.layer == netprobe_common::vocab::Layer::Netfilter
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct CpuRow {
    pub cpu: usize,
    pub net_rx_runs: u64,
    pub net_rx_ms: f64,
    pub napi_polls: u64,
    pub napi_full_budget: u64,
    pub time_squeeze: u64,
    /// softnet_stat: packets dropped because this CPU's backlog was full.
    pub backlog_overflowed: u64,
    /// Backlog drops that this CPU tried to enqueue (drop events fired here).
    pub backlog_enqueue_drops: u64,
    /// All drop events that fired on this CPU.
    pub drops: u64,
    pub nic_irq_rate: f64,
    /// NIC IRQ lines that interrupted this CPU during the window.
    pub nic_irqs: Vec<String>,
    /// Receive queues whose RPS mask includes this CPU (`eth0/rx-0`).
    pub rps_from: Vec<String>,
}

pub fn cpu_rows(inputs: &Inputs, steering: &[Steering]) -> Vec<CpuRow> {
    let w = inputs.window;
    let mut rows: BTreeMap<usize, CpuRow> = BTreeMap::new();
    fn row(rows: &mut BTreeMap<usize, CpuRow>, cpu: usize) -> &mut CpuRow {
        rows.entry(cpu).or_insert_with(|| CpuRow {
            cpu,
            ..Default::default()
        })
    }
    for c in &w.cpus {
        let r = row(&mut rows, c.cpu);
        r.net_rx_runs = c.net_rx_runs;
        r.net_rx_ms = c.net_rx_total_ns as f64 / 1e6;
        r.napi_polls = c.napi_polls;
        r.napi_full_budget = c.napi_full_budget;
        r.time_squeeze = c.time_squeeze;
        r.backlog_overflowed = c.backlog_dropped;
    }
    for c in &w.backlog.enqueuing_cpus {
        row(&mut rows, c.cpu).backlog_enqueue_drops = c.count;
    }
    for c in &w.drops.by_cpu {
        row(&mut rows, c.cpu).drops = c.count;
    }
    for c in &inputs.report.cpus {
        if c.nic_irq_rate > 0.0 {
            row(&mut rows, c.cpu).nic_irq_rate = c.nic_irq_rate;
        }
    }
    for irq in &inputs.report.irqs {
        for (cpu, rate) in irq.per_cpu_rate.iter().enumerate() {
            if *rate > 0.0 {
                let line = format!("{} ({})", irq.irq, irq.name);
                row(&mut rows, cpu).nic_irqs.push(line);
            }
        }
    }
    for st in steering {
        for (queue, mask) in &st.rps {
            for cpu in CpuSet::parse_mask(mask).iter() {
                let from = format!("{}/{queue}", st.interface);
                row(&mut rows, cpu).rps_from.push(from);
            }
        }
    }
    rows.into_values().collect()
}
