//! Retransmits over the window: what each flow sent again (by kind) and the attempts that did
//! not go out (by outcome), from the kernel's exact per-flow totals.

use std::collections::BTreeMap;

use netprobe_common::{
    vocab::{EgressFailure, RetransmitKind},
    RetransmitTotals,
};

use super::{
    flow::{Family, Flow},
    owners::Owner,
};
use crate::kernel::loader::KernelTotals;

/// One kind of retransmit on a flow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounts {
    /// Retransmits sent.
    pub count: u64,
    /// Their segments.
    pub segs: u64,
    /// Retransmits sent from the TIMER softirq, and their segments: what TcpExt
    /// tells apart, an RTO's own retransmit vs the slow-start ones after it.
    pub timer: u64,
    pub timer_segs: u64,
}

impl KindCounts {
    pub fn add(&mut self, other: &KindCounts) {
        self.count += other.count;
        self.segs += other.segs;
        self.timer += other.timer;
        self.timer_segs += other.timer_segs;
    }
}

/// Retransmit attempts of one outcome, and the segments in their skbs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub count: u64,
    pub segs: u64,
}

impl Attempts {
    fn add(&mut self, other: &Attempts) {
        self.count += other.count;
        self.segs += other.segs;
    }
}

/// The attempts that did not go out, by outcome (see `RetransmitOutcome`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FailedAttempts {
    /// Counted in RetransSegs (and TCPRetransFail), then refused on the way out.
    pub after_counted: Attempts,
    /// Of those segments, the `-EBUSY` ones, which TCPRetransFail leaves out.
    pub busy_segs: u64,
    /// Given up before anything was counted.
    pub aborted: Attempts,
    /// Counted or not, unknown (the socket's history began before the trace).
    pub unclassified: Attempts,
    /// Failed-after-counted attempts by kind and by what refused them; none are left out.
    pub kinds: BTreeMap<RetransmitKind, u64>,
    pub causes: BTreeMap<EgressFailure, u64>,
}

impl FailedAttempts {
    pub fn count(&self) -> u64 {
        self.after_counted.count + self.aborted.count + self.unclassified.count
    }

    pub fn add(&mut self, other: &FailedAttempts) {
        self.after_counted.add(&other.after_counted);
        self.busy_segs += other.busy_segs;
        self.aborted.add(&other.aborted);
        self.unclassified.add(&other.unclassified);
        for (k, n) in &other.kinds {
            *self.kinds.entry(*k).or_default() += n;
        }
        for (c, n) in &other.causes {
            *self.causes.entry(*c).or_default() += n;
        }
    }

    fn from_totals(t: &RetransmitTotals) -> Self {
        let nonzero = |v: u32| (v > 0).then_some(v as u64);
        let mut kinds = BTreeMap::new();
        for (k, n) in t.failed_kinds.iter().enumerate() {
            if let Some(n) = nonzero(*n) {
                *kinds.entry(RetransmitKind::from_id(k as u8)).or_default() += n;
            }
        }
        let causes = EgressFailure::ALL
            .iter()
            .filter_map(|c| nonzero(t.failed_causes[c.index()]).map(|n| (*c, n)))
            .collect();
        FailedAttempts {
            after_counted: Attempts {
                count: t.failed_counted,
                segs: t.failed_counted_segs,
            },
            busy_segs: t.failed_busy_segs,
            aborted: Attempts {
                count: t.aborted,
                segs: t.aborted_segs,
            },
            unclassified: Attempts {
                count: t.unclassified,
                segs: t.unclassified_segs,
            },
            kinds,
            causes,
        }
    }
}

/// How the handshakes of a flow that retransmitted its SYN (or SYN-ACK) ended, from its
/// socket's state changes (`netprobe-ebpf/src/handshake.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handshakes {
    /// SYN_SENT (or the server's child's SYN_RECV) → ESTABLISHED.
    pub completed: u64,
    /// SYN_SENT (or SYN_RECV) → CLOSE: timed out, refused, or given up by the owner.
    pub failed: u64,
    /// The socket-state hook was active: without it nothing ends, and an end is unknown.
    pub seen: bool,
}

impl Handshakes {
    pub fn add(&mut self, other: &Handshakes) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.seen |= other.seen;
    }
}

/// Where a flow's retransmitted handshake stands at the end of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeEnd {
    /// It failed (SYN_SENT → CLOSE): the connection was never made.
    Failed,
    /// Not decided yet: still SYN_SENT (or the request still waiting for its ACK).
    Pending,
    /// It completed after the retransmits: a delay, not a failure.
    Completed,
    /// Not known: the socket-state hook was not active.
    Unknown,
}

impl HandshakeEnd {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Unknown => "unknown",
        }
    }

    /// For a flow that retransmitted its SYN or SYN-ACK: a failure wins over a completion of
    /// the same 4-tuple (a socket that connected again after failing).
    pub fn of(handshakes: &Handshakes) -> Self {
        if !handshakes.seen {
            Self::Unknown
        } else if handshakes.failed > 0 {
            Self::Failed
        } else if handshakes.completed > 0 {
            Self::Completed
        } else {
            Self::Pending
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetransmitFlow {
    /// The socket's view: this host first.
    pub flow: Flow,
    pub family: Option<Family>,
    /// Retransmits sent, their segments and bytes.
    pub sent: u64,
    pub segs: u64,
    pub bytes: u64,
    pub failed: FailedAttempts,
    /// What was sent, by kind; kinds with none are left out.
    pub kinds: BTreeMap<RetransmitKind, KindCounts>,
    /// Segments the peer reported as received twice (D-SACK) since the flow's first attempt,
    /// read from the socket at each attempt: retransmits that were not needed. D-SACKs that
    /// arrive after the flow's last attempt are not read.
    pub dsacked_segs: u64,
    /// Times the socket detected reordering over the same span.
    pub reordering_seen: u64,
    pub owner: Option<Owner>,
    /// How its handshakes ended, when it retransmitted a SYN or SYN-ACK.
    pub handshakes: Handshakes,
}

impl RetransmitFlow {
    pub fn kind(&self, kind: RetransmitKind) -> KindCounts {
        self.kinds.get(&kind).copied().unwrap_or_default()
    }

    /// Where its handshake stands, when it sent its SYN (sent or counted and refused) or its
    /// SYN-ACK again.
    pub fn handshake_end(&self) -> Option<HandshakeEnd> {
        let failed_syns = self.failed.kinds.get(&RetransmitKind::Syn).copied();
        let again = self.kind(RetransmitKind::Syn).count
            + self.kind(RetransmitKind::Synack).count
            + failed_syns.unwrap_or(0);
        (again > 0).then(|| HandshakeEnd::of(&self.handshakes))
    }

    /// Retransmits that say data (or its ACK) was lost on the way out.
    pub fn loss_retransmits(&self) -> u64 {
        self.kinds
            .iter()
            .filter(|(k, _)| k.signals_loss())
            .map(|(_, c)| c.count)
            .sum()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retransmits {
    pub sent: u64,
    pub segs: u64,
    pub bytes: u64,
    pub failed: FailedAttempts,
    /// Sent retransmits by kind.
    pub by_kind: BTreeMap<RetransmitKind, u64>,
    /// Busiest first.
    pub flows: Vec<RetransmitFlow>,
}

fn kinds(t: &RetransmitTotals) -> BTreeMap<RetransmitKind, KindCounts> {
    let mut kinds: BTreeMap<RetransmitKind, KindCounts> = BTreeMap::new();
    for k in (0..t.kinds.len()).filter(|&k| t.kinds[k] > 0) {
        // Unknown IDs count as `other`.
        kinds
            .entry(RetransmitKind::from_id(k as u8))
            .or_default()
            .add(&KindCounts {
                count: t.kinds[k] as u64,
                segs: t.kind_segs[k] as u64,
                timer: t.timer_kinds[k] as u64,
                timer_segs: t.timer_segs[k] as u64,
            });
    }
    kinds
}

/// The window's retransmits; `handshakes_seen`: the socket-state hook was active.
pub(super) fn retransmits(
    totals: &KernelTotals,
    handshakes_seen: bool,
    owner_of: &mut dyn FnMut(u64) -> Option<Owner>,
) -> Retransmits {
    let mut out = Retransmits::default();
    for (key, t) in &totals.flows {
        let failed = FailedAttempts::from_totals(t);
        out.sent += t.sent;
        out.failed.add(&failed);
        out.segs += t.segs;
        out.bytes += t.bytes;
        let kinds = kinds(t);
        for (kind, counts) in &kinds {
            *out.by_kind.entry(*kind).or_default() += counts.count;
        }
        out.flows.push(RetransmitFlow {
            flow: Flow::from_raw(key.netns, &key.flow, true),
            family: Family::from_raw(key.flow.family),
            sent: t.sent,
            failed,
            segs: t.segs,
            bytes: t.bytes,
            kinds,
            dsacked_segs: t.dsacked_segs() as u64,
            reordering_seen: t.reordering_seen() as u64,
            owner: owner_of(t.sock_ino),
            handshakes: Handshakes {
                completed: t.handshakes_completed as u64,
                failed: t.handshakes_failed as u64,
                seen: handshakes_seen,
            },
        });
    }
    out.flows.sort_by(|a, b| {
        (b.sent + b.failed.count())
            .cmp(&(a.sent + a.failed.count()))
            .then(a.flow.src.port.cmp(&b.flow.src.port))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_wins_over_a_completion_and_nothing_is_pending() {
        let end = |completed, failed| {
            HandshakeEnd::of(&Handshakes {
                completed,
                failed,
                seen: true,
            })
        };
        assert_eq!(end(0, 0), HandshakeEnd::Pending);
        assert_eq!(end(1, 0), HandshakeEnd::Completed);
        assert_eq!(end(0, 2), HandshakeEnd::Failed);
        assert_eq!(end(1, 1), HandshakeEnd::Failed);
        let unseen = Handshakes::default();
        assert_eq!(HandshakeEnd::of(&unseen), HandshakeEnd::Unknown);
    }

    /// A SYN counted and then refused on the way out (6.17+) is a SYN sent again; a flow with
    /// neither SYN nor SYN-ACK retransmits has no handshake to judge.
    #[test]
    fn the_handshake_is_judged_for_syn_and_synack_flows_only() {
        let mut totals = RetransmitTotals {
            failed_counted: 1,
            handshakes_failed: 1,
            ..Default::default()
        };
        totals.failed_kinds[RetransmitKind::Syn as usize] = 1;
        let key = netprobe_common::FlowKey {
            flow: netprobe_common::Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 80),
            netns: 7,
            _pad0: 0,
        };
        let mut rto = totals;
        rto.failed_kinds = [0; 8];
        rto.kinds[RetransmitKind::Rto as usize] = 1;
        rto.handshakes_failed = 0;
        let kernel = KernelTotals {
            flows: vec![(key, totals), (key, rto)],
            ..Default::default()
        };
        let flows = retransmits(&kernel, true, &mut |_| None).flows;
        assert_eq!(flows[0].handshake_end(), Some(HandshakeEnd::Failed));
        assert_eq!(flows[1].handshake_end(), None);
    }
}
