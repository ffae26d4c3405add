//! Events written by the kernel programs into the ring buffer (the kernel-side aggregation
//! maps' keys and values are in `tables`).
//!
//! Each type's layout is pinned by an [`assert_layout!`] list (size, every field's offset, no
//! implicit padding); fields the kernel fills from flags or enums stay plain integers, so any
//! bit pattern in a record is a valid value.

#[cfg(feature = "user")]
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::assert_layout;

/// Fixed event-kind IDs. Never renumber, never reuse a retired ID.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `tcp:tcp_retransmit_skb`: one skb retransmitted (or an attempt that failed).
    Retransmit = 1,
    /// `skb:kfree_skb`: one packet dropped, with the kernel's drop reason.
    Drop = 2,
    /// `tcp_probe` (receive path): a data segment the peer sent again ([`ReceiveEvent`]).
    PeerRetransmit = 3,
    /// `tcp_probe` (receive path): data arrived out of order and opened a hole
    /// ([`ReceiveEvent`]).
    OutOfOrder = 4,
}

impl EventKind {
    pub const fn id(self) -> u16 {
        self as u16
    }
}

impl TryFrom<u16> for EventKind {
    type Error = u16;

    fn try_from(id: u16) -> Result<Self, u16> {
        match id {
            1 => Ok(Self::Retransmit),
            2 => Ok(Self::Drop),
            3 => Ok(Self::PeerRetransmit),
            4 => Ok(Self::OutOfOrder),
            other => Err(other),
        }
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct EventHeader {
    /// An [`EventKind`] ID.
    pub kind: u16,
    pub _pad0: u16,
    /// CPU the program ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds since boot.
    pub ts_ns: u64,
}
assert_layout!(EventHeader, size 16, {
    kind: 0,
    _pad0: 2,
    cpu: 4,
    ts_ns: 8,
});

/// A flow as seen from the packet or socket: addresses are in network byte order; IPv4
/// addresses occupy the first four bytes and the rest is zero. Ports are host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct Flow {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `AF_INET`, `AF_INET6`, or 0 when the packet carried no parsable IP header.
    pub family: u16,
    pub _pad0: u16,
}
assert_layout!(Flow, size 40, {
    saddr: 0,
    daddr: 16,
    sport: 32,
    dport: 34,
    family: 36,
    _pad0: 38,
});

impl Flow {
    /// An IPv4 flow (what the kernel side writes for `AF_INET`): fixtures and benchmarks.
    pub const fn ipv4(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16) -> Self {
        let mut flow = Flow {
            saddr: [0; 16],
            daddr: [0; 16],
            sport,
            dport,
            family: AF_INET,
            _pad0: 0,
        };
        let mut i = 0;
        while i < 4 {
            flow.saddr[i] = saddr[i];
            flow.daddr[i] = daddr[i];
            i += 1;
        }
        flow
    }
}

/// `tcp:tcp_retransmit_skb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct RetransmitEvent {
    pub header: EventHeader,
    /// Local address/port first (the socket's view).
    pub flow: Flow,
    /// Inode of the socket's network namespace.
    pub netns: u32,
    /// 0 when the segment was sent, a negative errno when the attempt failed (e.g. -EBUSY).
    pub err: i32,
    /// `TCP_SKB_CB(skb)->seq`.
    pub seq: u32,
    /// `skb->len`: payload bytes in the retransmitted skb.
    pub bytes: u32,
    /// `tcp_skb_pcount(skb)`: segments in the skb, what RetransSegs adds on success.
    pub segs: u16,
    /// TCP state (`TCP_ESTABLISHED` = 1 …).
    pub state: u8,
    /// `KIND_*`: why the segment was sent again.
    pub kind: u8,
    /// `TRIGGER_*`: what the CPU was running when it was.
    pub trigger: u8,
    /// `OUTCOME_*`: sent, failed after the kernel counted it, or aborted before.
    pub outcome: u8,
    pub _pad1: [u8; 2],
    /// Inode of the socket (`socket:[ino]` in /proc/<pid>/fd): names the owning process.
    pub sock_ino: u64,
}
assert_layout!(RetransmitEvent, size 88, {
    header: 0,
    flow: 16,
    netns: 56,
    err: 60,
    seq: 64,
    bytes: 68,
    segs: 72,
    state: 74,
    kind: 75,
    trigger: 76,
    outcome: 77,
    _pad1: 78,
    sock_ino: 80,
});

/// Retransmit kinds. Other = 0 so that an unset byte reads as "other".
pub const KIND_OTHER: u8 = 0;
/// Retransmission timeout: the RTO timer's retransmit, and the slow-start retransmits that
/// follow it while the connection is in the Loss state.
pub const KIND_RTO: u8 = 1;
/// Fast retransmit / recovery (Recovery state: dupACKs, SACK, RACK).
pub const KIND_FAST: u8 = 2;
/// Tail-loss probe: the probe timer resends the last segment.
pub const KIND_TLP: u8 = 3;
pub const KIND_SYN: u8 = 4;
pub const KIND_SYNACK: u8 = 5;
pub const KIND_NAMES: [&str; 6] = ["other", "rto", "fast", "tlp", "syn", "synack"];

/// What the CPU was running: unknown (softirq hooks inactive), a timer (TIMER softirq), or
/// anything else (ACK processing in NET_RX, process context, TSQ…).
/// Retransmit outcomes: what became of the attempt, read from what the kernel counted (see
/// `netprobe-ebpf/src/outcome.rs`). Sent = 0, so that kernels tracing only successful
/// retransmits (before 6.17) write what is true of every record they emit.
pub const OUTCOME_SENT: u8 = 0;
/// Failed after `__tcp_retransmit_skb` counted it in RetransSegs (and, unless `-EBUSY`, in
/// TCPRetransFail): dropped in this host's own egress path (netfilter, qdisc, no buffer).
pub const OUTCOME_FAILED_COUNTED: u8 = 1;
/// Given up before anything was counted (still queued below, zero window, no memory, no route).
pub const OUTCOME_ABORTED: u8 = 2;
/// Failed, and the socket's count before the attempt is unknown (it retransmitted before the
/// trace began, or an event of it was missed): counted or not cannot be told.
pub const OUTCOME_UNCLASSIFIED: u8 = 3;

pub const TRIGGER_UNKNOWN: u8 = 0;
pub const TRIGGER_TIMER: u8 = 1;
pub const TRIGGER_OTHER: u8 = 2;

/// The drop event carried a parsable IP (and maybe TCP/UDP) header.
pub const DROP_HAS_FLOW: u8 = 1 << 0;
/// `skb->dev` was set: `ifindex` and `ifname` are valid.
pub const DROP_HAS_DEV: u8 = 1 << 1;
/// A socket was attached (`skb->sk` or the tracepoint's `rx_sk`).
pub const DROP_HAS_SOCK: u8 = 1 << 2;
/// Ports in `flow` are valid (TCP or UDP header found).
pub const DROP_HAS_PORTS: u8 = 1 << 3;
/// A segment with data from before its socket's `rcv_nxt`, which `tcp_send_dupack` counted in
/// DelayedACKLost before the drop. Checked only for [`crate::DropArgs::dupack_reason`]
/// (Linux 6.1's TCP_INVALID_SEQUENCE, which also covers segments beyond the window).
pub const DROP_OLD_SEQUENCE: u8 = 1 << 4;

/// `skb:kfree_skb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct DropEvent {
    pub header: EventHeader,
    /// From the packet's own headers (source → destination as on the wire).
    pub flow: Flow,
    /// Kernel text address that freed the skb (resolved to `symbol+offset` in userspace).
    pub location: u64,
    /// Inode of the network namespace where it was dropped (device's, else socket's), 0 when
    /// unknown.
    pub netns: u32,
    /// Raw `enum skb_drop_reason` value, subsystem in the upper 16 bits.
    pub reason: u32,
    pub ifindex: u32,
    /// Ethertype in host order (`0x0800` IPv4, `0x86dd` IPv6, …).
    pub protocol: u16,
    /// IP protocol number (6 TCP, 17 UDP, …) when [`DROP_HAS_FLOW`].
    pub ip_proto: u8,
    /// `DROP_HAS_*` bits.
    pub flags: u8,
    /// `skb->dev->name`, NUL-padded.
    pub ifname: [u8; 16],
    /// TCP/socket state of the attached socket when [`DROP_HAS_SOCK`], else 0.
    pub sk_state: u8,
    pub _pad0: [u8; 3],
    /// `skb->skb_iif`: the interface the packet arrived on; 0 for locally generated packets.
    pub skb_iif: u32,
    /// Inode of the attached full socket, 0 when none (or a request/TIME_WAIT socket).
    pub sock_ino: u64,
}
assert_layout!(DropEvent, size 112, {
    header: 0,
    flow: 16,
    location: 56,
    netns: 64,
    reason: 68,
    ifindex: 72,
    protocol: 76,
    ip_proto: 78,
    flags: 79,
    ifname: 80,
    sk_state: 96,
    _pad0: 97,
    skb_iif: 100,
    sock_ino: 104,
});

/// Classes of a segment seen on the receive path ([`ReceiveEvent::class`]).
/// Every byte of it was already received: the peer re-sent data we had (a spurious
/// retransmit, or our ACK was lost on the way out). What TcpExt `DelayedACKLost` counts.
pub const RX_DUPLICATE: u8 = 1;
/// It starts with data already received and carries new data after it (a re-sent segment
/// the peer repacketized); counted as a duplicate with `overlap` bytes old.
pub const RX_DUPLICATE_PARTIAL: u8 = 2;
/// It lands in a hole in front of data already queued out of order: data we never received
/// (loss on the way in), or, under reordering, the late original.
pub const RX_FILLS_HOLE: u8 = 3;
/// It arrived beyond the next expected byte with nothing queued there: a new hole opens
/// (`gap` bytes missing in front of it).
pub const RX_OPENS_HOLE: u8 = 4;

/// The socket had data queued out of order when the segment arrived (`ooo_end` is valid).
pub const RX_HAD_OOO: u8 = 1 << 0;

/// A data segment on the receive path of an established TCP socket that was not the next
/// expected one (`tcp_probe`, read against the socket's receive state).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct ReceiveEvent {
    pub header: EventHeader,
    /// Local address/port first (the receiving socket's view); `daddr:dport` is the peer.
    pub flow: Flow,
    pub netns: u32,
    /// `TCP_SKB_CB(skb)->seq` and the sequence space it occupies (`end_seq - seq`).
    pub seq: u32,
    pub len: u32,
    /// `tp->rcv_nxt`: the next byte the socket expected.
    pub rcv_nxt: u32,
    /// End of the data queued out of order (`ooo_last_skb`'s `end_seq`) when [`RX_HAD_OOO`].
    pub ooo_end: u32,
    /// [`RX_OPENS_HOLE`]: bytes missing in front of the segment; duplicates: bytes of it
    /// already received; [`RX_FILLS_HOLE`]: 0.
    pub gap: u32,
    /// `RX_*` class.
    pub class: u8,
    /// `RX_HAD_OOO` bits.
    pub flags: u8,
    pub _pad0: [u8; 6],
    /// Inode of the receiving socket: names the owning process.
    pub sock_ino: u64,
}
assert_layout!(ReceiveEvent, size 96, {
    header: 0,
    flow: 16,
    netns: 56,
    seq: 60,
    len: 64,
    rcv_nxt: 68,
    ooo_end: 72,
    gap: 76,
    class: 80,
    flags: 81,
    _pad0: 82,
    sock_ino: 88,
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind ID ever assigned. Records carry these numbers, so they never change and a
    /// retired kind keeps its row: a new kind takes a new number and a new row.
    const KIND_IDS: [(u16, EventKind); 4] = [
        (1, EventKind::Retransmit),
        (2, EventKind::Drop),
        (3, EventKind::PeerRetransmit),
        (4, EventKind::OutOfOrder),
    ];

    #[test]
    fn kind_ids_are_fixed() {
        for (id, kind) in KIND_IDS {
            assert_eq!(kind.id(), id, "{kind:?}");
            assert_eq!(EventKind::try_from(id), Ok(kind));
        }
        // No other number names a kind: a kind added without its row here fails too.
        for id in (0..=u16::MAX).filter(|id| KIND_IDS.iter().all(|(known, _)| known != id)) {
            assert_eq!(EventKind::try_from(id), Err(id));
        }
    }
}
