//! The keys and values of the kernel-side aggregation maps: per-flow retransmit and receive
//! totals, non-network frees, NET_RX and NAPI work. Exact whatever the event stream loses.
//!
//! Each type's layout is pinned by an [`assert_layout!`] list, as the events' are.

#[cfg(feature = "user")]
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{event::Flow, layout::assert_layout};

/// Per-CPU value of the per-flow receive table: exact even when events are lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveTotals {
    /// Segments wholly received before ([`RX_DUPLICATE`]): comparable to `DelayedACKLost`.
    pub duplicate: u64,
    /// Segments partly received before ([`RX_DUPLICATE_PARTIAL`]).
    pub duplicate_partial: u64,
    /// Bytes received twice (both duplicate classes).
    pub duplicate_bytes: u64,
    /// Segments that filled a hole ([`RX_FILLS_HOLE`]) and their bytes.
    pub fills_hole: u64,
    pub fills_hole_bytes: u64,
    /// Segments that arrived beyond `rcv_nxt` (queued out of order, or dropped there):
    /// comparable to `TCPOFOQueue + TCPOFODrop`.
    pub out_of_order: u64,
    /// Holes opened ([`RX_OPENS_HOLE`]) and the bytes missing in front of them.
    pub holes: u64,
    pub hole_bytes: u64,
    /// Inode of the flow's socket, as last seen on this CPU.
    pub sock_ino: u64,
}
assert_layout!(ReceiveTotals, size 72, {
    duplicate: 0,
    duplicate_partial: 8,
    duplicate_bytes: 16,
    fills_hole: 24,
    fills_hole_bytes: 32,
    out_of_order: 40,
    holes: 48,
    hole_bytes: 56,
    sock_ino: 64,
});

impl ReceiveTotals {
    /// Adds another CPU's (or flow's) totals; keeps the socket inode when the other knows it.
    pub fn add(&mut self, other: &Self) {
        self.duplicate += other.duplicate;
        self.duplicate_partial += other.duplicate_partial;
        self.duplicate_bytes += other.duplicate_bytes;
        self.fills_hole += other.fills_hole;
        self.fills_hole_bytes += other.fills_hole_bytes;
        self.out_of_order += other.out_of_order;
        self.holes += other.holes;
        self.hole_bytes += other.hole_bytes;
        if other.sock_ino != 0 {
            self.sock_ino = other.sock_ino;
        }
    }
}

/// Key of the per-flow retransmit table kept in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub flow: Flow,
    pub netns: u32,
    pub _pad0: u32,
}
assert_layout!(FlowKey, size 48, {
    flow: 0,
    netns: 40,
    _pad0: 44,
});

/// Key of the per-CPU table of non-network frees: `kfree_skb` of an skb that is neither an
/// IP/IPv6/ARP packet nor one of an IP socket's (a unix-domain socket's queue purged on
/// close, a netlink message nobody took…). Not lost packets: counted apart, by where and why
/// the kernel freed them, never streamed as drops. The value is the count (`u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct NonNetworkKey {
    /// Raw `enum skb_drop_reason` value, as in [`DropEvent::reason`].
    pub reason: u32,
    pub _pad0: u32,
    /// Kernel text address that freed the skb, as in [`DropEvent::location`].
    pub location: u64,
}
assert_layout!(NonNetworkKey, size 16, {
    reason: 0,
    _pad0: 4,
    location: 8,
});

/// Key of the per-CPU drop table of count mode ([`crate::MODE_COUNT`]): what the agent needs
/// to place a drop (reason and freeing function give the layer; the device and `skb_iif` the
/// direction and interface; the namespace the scope) without a per-drop event. The value is
/// a [`SiteCount`]; the table's per-CPU values are the drops by CPU. Bounded by the kernel's
/// drop sites times the devices that drop. Stream mode keeps the same table: it is where its
/// exact counts live when a storm is sampled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct DropSiteKey {
    /// Raw `enum skb_drop_reason` value, as in [`crate::DropEvent::reason`].
    pub reason: u32,
    /// Namespace the packet was dropped in, as in [`crate::DropEvent::netns`].
    pub netns: u32,
    /// Kernel text address that freed the skb.
    pub location: u64,
    /// `skb->dev`'s ifindex (0: no device).
    pub ifindex: u32,
    /// `skb->skb_iif`: the device the packet arrived on (0: generated here).
    pub skb_iif: u32,
    /// `DROP_HAS_DEV` and `DROP_HAS_SOCK` bits.
    pub flags: u8,
    pub _pad0: [u8; 7],
}
assert_layout!(DropSiteKey, size 32, {
    reason: 0,
    netns: 4,
    location: 8,
    ifindex: 16,
    skb_iif: 20,
    flags: 24,
    _pad0: 25,
});

/// Per-CPU value of the drop-site table: the exact count, and in stream mode what the storm
/// sampler needs (each site streams at most a limit of drops per second on each CPU, see
/// [`crate::AggregateConfig`]; the rest are counted here, never silently dropped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct SiteCount {
    /// Every drop at this site on this CPU (streamed, sampled out or lost alike).
    pub drops: u64,
    /// Of which not streamed because the site was over its rate in the current second.
    pub sampled_out: u64,
    /// `bpf_ktime_get_ns` when the current one-second window began (0: none yet).
    pub window_start_ns: u64,
    /// Drops streamed in the current window.
    pub window_streamed: u32,
    pub _pad0: u32,
}
assert_layout!(SiteCount, size 32, {
    drops: 0,
    sampled_out: 8,
    window_start_ns: 16,
    window_streamed: 24,
    _pad0: 28,
});

/// Per-CPU value of the per-flow retransmit table: exact even when events are lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(FromBytes, IntoBytes, KnownLayout, Immutable))]
pub struct RetransmitTotals {
    /// skbs retransmitted successfully (`err == 0`, outcome sent).
    pub sent: u64,
    /// Segments in successfully retransmitted skbs.
    pub segs: u64,
    /// Payload bytes in successfully retransmitted skbs.
    pub bytes: u64,
    /// Inode of the flow's socket, as last seen on this CPU (0 when unknown).
    pub sock_ino: u64,
    /// Attempts that failed after the kernel counted them, and their segments: with `segs`,
    /// what RetransSegs counts.
    pub failed_counted: u64,
    pub failed_counted_segs: u64,
    /// Of those segments, the ones that failed with `-EBUSY`, which TCPRetransFail leaves out.
    pub failed_busy_segs: u64,
    /// Attempts given up before anything was counted, and their segments.
    pub aborted: u64,
    pub aborted_segs: u64,
    /// Failed attempts that could not be classified (`OUTCOME_UNCLASSIFIED`), and segments.
    pub unclassified: u64,
    pub unclassified_segs: u64,
    /// Sent retransmits by `KIND_*`.
    pub kinds: [u32; 8],
    /// Their segments by `KIND_*` (what TcpExt counts for some kinds).
    pub kind_segs: [u32; 8],
    /// Of those, retransmits and segments sent from the TIMER softirq: an RTO's own
    /// retransmit, as opposed to the slow-start ones that follow it.
    pub timer_kinds: [u32; 8],
    pub timer_segs: [u32; 8],
    /// Failed-after-counted attempts by `KIND_*` (TCPSynRetrans counts SYNs when counted).
    pub failed_kinds: [u32; 8],
    /// Failed-after-counted attempts by `vocab::EgressFailure` (netfilter, qdisc, …).
    pub failed_causes: [u32; 4],
    /// Handshakes of this flow that completed after it retransmitted a SYN or SYN-ACK: the
    /// socket went SYN_SENT → ESTABLISHED (client) or SYN_RECV → ESTABLISHED (the server's
    /// child). Written by the socket-state program into the flow's existing entry.
    pub handshakes_completed: u32,
    /// Handshakes of this flow that failed after it retransmitted: SYN_SENT (or SYN_RECV) →
    /// CLOSE (timed out, refused, or given up by its owner).
    pub handshakes_failed: u32,
    /// The socket's `tcp_sock.dsack_dups` (segments the peer reported as received twice) as
    /// read at this CPU's first attempt for the flow, and its highest value read since: the
    /// difference is the flow's retransmits the peer already had (spurious). Userspace takes
    /// the lowest first value of the CPUs that saw an attempt and the highest latest one.
    pub dsack_dups_first: u32,
    pub dsack_dups_latest: u32,
    /// The same for `tcp_sock.reord_seen`: times the socket detected reordering.
    pub reord_seen_first: u32,
    pub reord_seen_latest: u32,
}
assert_layout!(RetransmitTotals, size 288, {
    sent: 0,
    segs: 8,
    bytes: 16,
    sock_ino: 24,
    failed_counted: 32,
    failed_counted_segs: 40,
    failed_busy_segs: 48,
    aborted: 56,
    aborted_segs: 64,
    unclassified: 72,
    unclassified_segs: 80,
    kinds: 88,
    kind_segs: 120,
    timer_kinds: 152,
    timer_segs: 184,
    failed_kinds: 216,
    failed_causes: 248,
    handshakes_completed: 264,
    handshakes_failed: 268,
    dsack_dups_first: 272,
    dsack_dups_latest: 276,
    reord_seen_first: 280,
    reord_seen_latest: 284,
});

impl RetransmitTotals {
    /// Every attempt recorded, whatever its outcome.
    pub const fn attempts(&self) -> u64 {
        self.sent + self.failed_counted + self.aborted + self.unclassified
    }

    /// Folds another CPU's socket-counter readings for the same flow into these: the lowest
    /// first reading and the highest latest one of the CPUs that recorded an attempt (a CPU
    /// without one holds zeros). Call before adding the other's counts.
    pub fn merge_readings(&mut self, other: &Self) {
        if other.attempts() == 0 {
            return;
        }
        if self.attempts() == 0 {
            self.dsack_dups_first = other.dsack_dups_first;
            self.reord_seen_first = other.reord_seen_first;
        } else {
            self.dsack_dups_first = self.dsack_dups_first.min(other.dsack_dups_first);
            self.reord_seen_first = self.reord_seen_first.min(other.reord_seen_first);
        }
        self.dsack_dups_latest = self.dsack_dups_latest.max(other.dsack_dups_latest);
        self.reord_seen_latest = self.reord_seen_latest.max(other.reord_seen_latest);
    }

    /// Segments the peer reported as received twice (D-SACK) since the flow's first attempt:
    /// retransmits that were not needed.
    pub const fn dsacked_segs(&self) -> u32 {
        self.dsack_dups_latest.saturating_sub(self.dsack_dups_first)
    }

    /// Times the socket detected reordering since the flow's first attempt.
    pub const fn reordering_seen(&self) -> u32 {
        self.reord_seen_latest.saturating_sub(self.reord_seen_first)
    }
}

/// Per-CPU NET_RX softirq totals (runs that began and ended while attached).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRxTotals {
    pub runs: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}
assert_layout!(NetRxTotals, size 24, {
    runs: 0,
    total_ns: 8,
    max_ns: 16,
});

/// Key of the per-CPU NAPI table: the device name as the tracepoint gives it (NUL-padded;
/// `(no_device)` for the per-CPU backlog).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NapiKey {
    pub dev: [u8; 16],
}
assert_layout!(NapiKey, size 16, {
    dev: 0,
});

/// Per-CPU NAPI poll totals for one device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NapiTotals {
    pub polls: u64,
    /// Polls that used their whole budget (`work == budget`): more was waiting.
    pub full_budget: u64,
    /// Packets processed.
    pub work: u64,
}
assert_layout!(NapiTotals, size 24, {
    polls: 0,
    full_budget: 8,
    work: 16,
});

#[cfg(feature = "user")]
mod pod {
    // SAFETY: this and each impl below is for a #[repr(C)] struct of integers and integer
    // arrays, so every bit pattern is valid, with no implicit padding (as its `assert_layout!`
    // list proves).
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RetransmitTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetRxTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NapiKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NapiTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReceiveTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NonNetworkKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropSiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteCount {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key's bytes as the kernel writes them into the map, written out by hand: the
    /// agent reads the map's keys back as this struct.
    #[cfg(feature = "user")]
    #[test]
    fn non_network_key_memory_is_the_golden_bytes_and_back() {
        use zerocopy::{FromBytes, IntoBytes};
        #[rustfmt::skip]
        const GOLDEN: [u8; 16] = [
            /* 0 reason */ 2, 0, 1, 0, /* 4 pad */ 0, 0, 0, 0,
            /* 8 location */ 0xe0, 0xcb, 0x12, 0x82, 0xff, 0xff, 0xff, 0xff,
        ];
        let key = NonNetworkKey {
            reason: 0x0001_0002,
            _pad0: 0,
            location: 0xffff_ffff_8212_cbe0,
        };
        assert_eq!(key.as_bytes(), &GOLDEN[..]);
        assert_eq!(NonNetworkKey::read_from_bytes(&GOLDEN[..]).unwrap(), key);
    }

    /// The count-mode drop key as the kernel writes it, byte by byte.
    #[cfg(feature = "user")]
    #[test]
    fn drop_site_key_memory_is_the_golden_bytes_and_back() {
        use zerocopy::{FromBytes, IntoBytes};
        #[rustfmt::skip]
        const GOLDEN: [u8; 32] = [
            /* 0 reason */ 0x0c, 0, 0, 0, /* 4 netns */ 0x01, 0x00, 0x00, 0xf0,
            /* 8 location */ 0xe0, 0xcb, 0x12, 0x82, 0xff, 0xff, 0xff, 0xff,
            /* 16 ifindex */ 3, 0, 0, 0, /* 20 skb_iif */ 2, 0, 0, 0,
            /* 24 flags */ 0x06, /* 25 pad */ 0, 0, 0, 0, 0, 0, 0,
        ];
        let key = DropSiteKey {
            reason: 12,
            netns: 0xf000_0001,
            location: 0xffff_ffff_8212_cbe0,
            ifindex: 3,
            skb_iif: 2,
            flags: crate::DROP_HAS_DEV | crate::DROP_HAS_SOCK,
            _pad0: [0; 7],
        };
        assert_eq!(key.as_bytes(), &GOLDEN[..]);
        assert_eq!(DropSiteKey::read_from_bytes(&GOLDEN[..]).unwrap(), key);
    }

    /// The drop-site value as the kernel writes it, byte by byte.
    #[cfg(feature = "user")]
    #[test]
    fn site_count_memory_is_the_golden_bytes_and_back() {
        use zerocopy::{FromBytes, IntoBytes};
        #[rustfmt::skip]
        const GOLDEN: [u8; 32] = [
            /* 0 drops */ 0x10, 0x27, 0, 0, 0, 0, 0, 0,
            /* 8 sampled_out */ 0x58, 0x1b, 0, 0, 0, 0, 0, 0,
            /* 16 window_start_ns */ 0x00, 0xca, 0x9a, 0x3b, 0, 0, 0, 0,
            /* 24 window_streamed */ 100, 0, 0, 0, /* 28 pad */ 0, 0, 0, 0,
        ];
        let count = SiteCount {
            drops: 10_000,
            sampled_out: 7_000,
            window_start_ns: 1_000_000_000,
            window_streamed: 100,
            _pad0: 0,
        };
        assert_eq!(count.as_bytes(), &GOLDEN[..]);
        assert_eq!(SiteCount::read_from_bytes(&GOLDEN[..]).unwrap(), count);
    }
}
