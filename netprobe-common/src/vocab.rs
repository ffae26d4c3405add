//! One vocabulary for the kernel programs and the agent: TCP states, IP protocols, address
//! families, retransmit kinds and triggers, receive classes, drop layers and directions, and
//! finding severities, and `netprobe monitor`'s columns and interval severities (`vocab/monitor.rs`).
//! Every name netprobe prints comes from here.
//!
//! The numeric values that cross the ABI are the kernel's own where the kernel defines them
//! (TCP states from include/net/tcp_states.h, IP protocols from include/uapi/linux/in.h, both
//! user-visible ABIs that never change) and netprobe's own, fixed forever, otherwise.

use crate::event::{
    KIND_FAST, KIND_OTHER, KIND_RTO, KIND_SYN, KIND_SYNACK, KIND_TLP, OUTCOME_ABORTED,
    OUTCOME_FAILED_COUNTED, OUTCOME_SENT, OUTCOME_UNCLASSIFIED, RX_DUPLICATE, RX_DUPLICATE_PARTIAL,
    RX_FILLS_HOLE, RX_OPENS_HOLE, TRIGGER_OTHER, TRIGGER_TIMER, TRIGGER_UNKNOWN,
};

mod monitor;
pub use monitor::{DropColumn, IntervalSeverity};

/// The kernel's TCP states (`sk->sk_state`, `tcp_retransmit_skb`'s `state` field).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    /// A request socket in the SYN table (the connection is in SYN_RECV).
    NewSynRecv = 12,
}

impl TcpState {
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            _ => return None,
        })
    }

    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// The kernel's name without `TCP_`, as `ss` and tracepoints print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
        }
    }

    /// The states after ESTABLISHED in which a socket still takes data from its peer
    /// (`tcp_rcv_state_process`, not `tcp_rcv_established`): a FIN was sent or received.
    pub const fn after_established(self) -> bool {
        matches!(
            self,
            Self::FinWait1 | Self::FinWait2 | Self::CloseWait | Self::Closing | Self::LastAck
        )
    }

    /// The name of a raw state, `UNKNOWN` for a value the kernel does not define.
    pub const fn name_of(raw: u8) -> &'static str {
        match Self::from_raw(raw) {
            Some(state) => state.name(),
            None => "UNKNOWN",
        }
    }
}

/// IP protocol numbers netprobe parses or names.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;

    /// The protocols whose first four bytes are source and destination ports.
    pub const fn has_ports(proto: u8) -> bool {
        matches!(proto, TCP | UDP | UDPLITE | SCTP)
    }

    /// The lower-case name, for the protocols netprobe names.
    pub const fn name(proto: u8) -> Option<&'static str> {
        Some(match proto {
            ICMP => "icmp",
            TCP => "tcp",
            UDP => "udp",
            ICMPV6 => "icmpv6",
            SCTP => "sctp",
            UDPLITE => "udplite",
            _ => return None,
        })
    }
}

/// Why a segment was sent again (the kernel programs' classification, see `tcp.rs`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetransmitKind {
    Other = KIND_OTHER,
    Rto = KIND_RTO,
    Fast = KIND_FAST,
    Tlp = KIND_TLP,
    Syn = KIND_SYN,
    Synack = KIND_SYNACK,
}

impl RetransmitKind {
    pub const ALL: [Self; 6] = [
        Self::Other,
        Self::Rto,
        Self::Fast,
        Self::Tlp,
        Self::Syn,
        Self::Synack,
    ];

    /// An unknown ID (a newer kernel program) reads as `other`.
    pub const fn from_id(id: u8) -> Self {
        match id {
            KIND_RTO => Self::Rto,
            KIND_FAST => Self::Fast,
            KIND_TLP => Self::Tlp,
            KIND_SYN => Self::Syn,
            KIND_SYNACK => Self::Synack,
            _ => Self::Other,
        }
    }

    pub const fn id(self) -> u8 {
        self as u8
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Other => "other",
            Self::Rto => "rto",
            Self::Fast => "fast",
            Self::Tlp => "tlp",
            Self::Syn => "syn",
            Self::Synack => "synack",
        }
    }

    /// Data re-sent because it (or its ACK) was presumed lost: what says a flow loses
    /// packets on the way out. SYN retries and `other` (e.g. MTU probing) do not.
    pub const fn signals_loss(self) -> bool {
        matches!(self, Self::Fast | Self::Rto | Self::Tlp)
    }
}

/// What became of a retransmit attempt (see `OUTCOME_*`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetransmitOutcome {
    Sent = OUTCOME_SENT,
    FailedAfterCounted = OUTCOME_FAILED_COUNTED,
    Aborted = OUTCOME_ABORTED,
    Unclassified = OUTCOME_UNCLASSIFIED,
}

impl RetransmitOutcome {
    pub const ALL: [Self; 4] = [
        Self::Sent,
        Self::FailedAfterCounted,
        Self::Aborted,
        Self::Unclassified,
    ];

    /// An unknown ID (a newer kernel program) reads as unclassified.
    pub const fn from_id(id: u8) -> Self {
        match id {
            OUTCOME_SENT => Self::Sent,
            OUTCOME_FAILED_COUNTED => Self::FailedAfterCounted,
            OUTCOME_ABORTED => Self::Aborted,
            _ => Self::Unclassified,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::FailedAfterCounted => "failed_after_counted",
            Self::Aborted => "aborted",
            Self::Unclassified => "unclassified",
        }
    }
}

/// Why a counted retransmit failed on its way out of this host, from the error
/// `tcp_transmit_skb` returned. The values tested are errnos (include/uapi/asm-generic/errno*.h,
/// user-visible ABI) and `NET_XMIT_DROP` (1), which `net_xmit_eval` passes up unchanged from a
/// qdisc that dropped the packet; the indices are netprobe's own, fixed forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressFailure {
    /// `-EPERM`: a netfilter hook (OUTPUT, POSTROUTING) dropped it.
    Netfilter = 0,
    /// `NET_XMIT_DROP`: the qdisc was full (or its policy dropped it).
    Qdisc = 1,
    /// `-ENOBUFS`/`-ENOMEM`: no memory for the clone.
    NoBuffer = 2,
    /// Anything else (no route, device down, …).
    Other = 3,
}

impl EgressFailure {
    pub const ALL: [Self; 4] = [Self::Netfilter, Self::Qdisc, Self::NoBuffer, Self::Other];
    const EPERM: i32 = 1;
    const ENOMEM: i32 = 12;
    const ENOBUFS: i32 = 105;
    const NET_XMIT_DROP: i32 = 1;

    pub const fn from_err(err: i32) -> Self {
        match err {
            e if e == -Self::EPERM => Self::Netfilter,
            Self::NET_XMIT_DROP => Self::Qdisc,
            e if e == -Self::ENOBUFS || e == -Self::ENOMEM => Self::NoBuffer,
            _ => Self::Other,
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Netfilter => "netfilter",
            Self::Qdisc => "qdisc",
            Self::NoBuffer => "no_buffer",
            Self::Other => "other",
        }
    }

    /// The layer that refused the segment.
    pub const fn layer(self) -> Layer {
        match self {
            Self::Netfilter => Layer::Netfilter,
            Self::Qdisc => Layer::Qdisc,
            Self::NoBuffer => Layer::Socket,
            Self::Other => Layer::Ip,
        }
    }
}

/// The context a retransmit ran in.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    Unknown = TRIGGER_UNKNOWN,
    /// The TIMER softirq (an RTO or a loss probe firing).
    Timer = TRIGGER_TIMER,
    /// ACK processing, process context…
    Other = TRIGGER_OTHER,
}

impl Trigger {
    pub const fn from_id(id: u8) -> Self {
        match id {
            TRIGGER_TIMER => Self::Timer,
            TRIGGER_OTHER => Self::Other,
            _ => Self::Unknown,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Timer => "timer",
            Self::Other => "other",
        }
    }
}

/// What an out-of-sequence data segment on the receive path was.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiveClass {
    /// Wholly received before.
    Duplicate = RX_DUPLICATE,
    /// Partly received before, with new data after the old.
    DuplicatePartial = RX_DUPLICATE_PARTIAL,
    /// Re-sent data that filled a hole.
    FillsHole = RX_FILLS_HOLE,
    /// Arrived beyond the next expected byte.
    OpensHole = RX_OPENS_HOLE,
}

impl ReceiveClass {
    pub const fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            RX_DUPLICATE => Self::Duplicate,
            RX_DUPLICATE_PARTIAL => Self::DuplicatePartial,
            RX_FILLS_HOLE => Self::FillsHole,
            RX_OPENS_HOLE => Self::OpensHole,
            _ => return None,
        })
    }

    /// The JSON `class`: partial duplicates are duplicates (with `partial: true`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Duplicate | Self::DuplicatePartial => "duplicate",
            Self::FillsHole => "fills_hole",
            Self::OpensHole => "opens_hole",
        }
    }

    pub const fn is_duplicate(self) -> bool {
        matches!(self, Self::Duplicate | Self::DuplicatePartial)
    }
}

/// Which way a dropped packet was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Arriving at this host (from a device).
    Ingress,
    /// Leaving this host (generated here, or forwarded out).
    Egress,
    /// Never left the host: loopback or between local sockets.
    Local,
    Unknown,
}

impl Direction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
            Self::Local => "local",
            Self::Unknown => "unknown",
        }
    }
}

/// Where in the stack a packet was lost: the layers of drops, of counters and of findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// Device, driver, L2 (rings, XDP, MAC checks, tunnels' outer headers).
    Nic,
    /// Traffic control: qdiscs and tc filters.
    Qdisc,
    /// Per-CPU input backlog and the NET_RX softirq core.
    Backlog,
    /// Netfilter and other policy hooks (LSM, cgroup BPF), conntrack.
    Netfilter,
    Ip,
    Tcp,
    Udp,
    Socket,
    Unknown,
}

impl Layer {
    pub const ALL: [Self; 9] = [
        Self::Nic,
        Self::Qdisc,
        Self::Backlog,
        Self::Netfilter,
        Self::Ip,
        Self::Tcp,
        Self::Udp,
        Self::Socket,
        Self::Unknown,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Nic => "nic",
            Self::Qdisc => "qdisc",
            Self::Backlog => "backlog",
            Self::Netfilter => "netfilter",
            Self::Ip => "ip",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Socket => "socket",
            Self::Unknown => "unknown",
        }
    }
}

/// How urgent a finding is. Ordered from the mildest, so that the worse of two is their
/// `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The vocabulary prints as its names.
macro_rules! display_by_name {
    ($($ty:ty),*) => {$(
        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
display_by_name!(
    TcpState,
    RetransmitKind,
    RetransmitOutcome,
    EgressFailure,
    Trigger,
    ReceiveClass,
    Direction,
    Layer,
    Severity,
    DropColumn,
    IntervalSeverity
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip_and_names_are_unique() {
        for raw in 0..=255u8 {
            if let Some(state) = TcpState::from_raw(raw) {
                assert_eq!(state.raw(), raw);
            }
        }
        assert_eq!(TcpState::name_of(12), "NEW_SYN_RECV");
        assert_eq!(TcpState::name_of(0), "UNKNOWN");
        for kind in RetransmitKind::ALL {
            assert_eq!(RetransmitKind::from_id(kind.id()), kind);
        }
        let names = RetransmitKind::ALL.map(RetransmitKind::name);
        for (i, a) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(a), "{a} twice");
        }
        for outcome in RetransmitOutcome::ALL {
            assert_eq!(RetransmitOutcome::from_id(outcome as u8), outcome);
        }
        for (i, cause) in EgressFailure::ALL.iter().enumerate() {
            assert_eq!(cause.index(), i);
        }
        let layers = Layer::ALL.map(Layer::name);
        for (i, a) in layers.iter().enumerate() {
            assert!(!layers[i + 1..].contains(a), "{a} twice");
        }
    }

    #[test]
    fn the_kernel_values_are_the_kernel_abi() {
        // include/net/tcp_states.h and include/uapi/linux/in.h.
        assert_eq!(TcpState::TimeWait.raw(), 6);
        assert_eq!(TcpState::Listen.raw(), 10);
        assert_eq!(TcpState::NewSynRecv.raw(), 12);
        assert_eq!(ip_proto::TCP, 6);
        assert_eq!(ip_proto::UDP, 17);
        assert!(ip_proto::has_ports(ip_proto::SCTP) && !ip_proto::has_ports(ip_proto::ICMP));
        assert_eq!(ip_proto::name(58), Some("icmpv6"));
        // What tcp_transmit_skb returns: -EPERM from netfilter, NET_XMIT_DROP from a qdisc,
        // -ENOBUFS without memory, -EHOSTUNREACH without a route.
        assert_eq!(EgressFailure::from_err(-1), EgressFailure::Netfilter);
        assert_eq!(EgressFailure::from_err(1), EgressFailure::Qdisc);
        assert_eq!(EgressFailure::from_err(-105), EgressFailure::NoBuffer);
        assert_eq!(EgressFailure::from_err(-113), EgressFailure::Other);
    }
}
