//! The bundle's tables: each flow's loss in both directions, and each CPU's receive work.

use std::collections::BTreeMap;

use netprobe_common::vocab::RetransmitKind;
use serde::Serialize;

use super::{Inputs, Steering};
use crate::model::{
    cpuset::CpuSet,
    flow::Flow,
    owners::Owner,
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
    /// How its handshakes ended, when it retransmitted a SYN or SYN-ACK.
    pub handshakes: Handshakes,
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
            handshakes: Handshakes::default(),
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

    /// Retransmits that mean data (or its ACK) was lost on the way out.
    pub fn outbound_loss(&self) -> bool {
        self.retransmits
            .iter()
            .any(|(k, n)| k.signals_loss() && *n > 0)
    }

    /// Holes in what the peer sent, or its re-sent data filling them.
    pub fn inbound_loss(&self) -> bool {
        self.peer_fills_hole + self.holes > 0
    }

    pub fn losing_direction(&self) -> &'static str {
        match (self.outbound_loss(), self.inbound_loss()) {
            (true, true) => "both",
            (true, false) => "outbound",
            (false, true) => "inbound",
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
    /// What the peer sent again, and holes, as this host received it.
    pub peer_duplicate: u64,
    pub peer_fills_hole: u64,
    pub holes: u64,
    /// The direction that loses packets, as far as this flow shows.
    pub losing_direction: &'static str,
    /// How a handshake whose SYN or SYN-ACK was sent again ended: `failed`, `pending` (not
    /// decided at the bundle's time) or `completed`; absent for other flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<&'static str>,
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
            peer_duplicate: f.peer_duplicate,
            peer_fills_hole: f.peer_fills_hole,
            holes: f.holes,
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
    out.sort_by_key(|r| std::cmp::Reverse(r.weight()));
    out.truncate(top);
    out
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
