//! Load-time settings handed to the kernel programs as one read-only global, `CONFIG`.
//!
//! Nothing about the running kernel is compiled in: tracepoint record offsets come from the
//! tracefs `format` files and struct member offsets from the kernel's BTF, both read by the
//! agent at start-up. Because the global lives in `.rodata`, the verifier sees the values as
//! constants and prunes branches for absent fields and unused filters.

use crate::layout::assert_layout;

/// Marks an offset the running kernel does not have (an older tracepoint without `err`, …).
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Where the raw tracepoint `tcp_retransmit_skb(sk, skb[, err])` keeps its arguments (found in
/// its BTF prototype), and what the retransmit program reads to classify a failed attempt.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitArgs {
    pub sk: u32,
    pub skb: u32,
    /// [`OFFSET_ABSENT`] before Linux 6.17, where only successful retransmits fire it.
    pub err: u32,
    /// Byte offset of `tcp_sock.total_retrans` (BTF): what tells a failed attempt the kernel
    /// counted from one it gave up before counting. [`OFFSET_ABSENT`] without `err`.
    pub total_retrans: u32,
}
assert_layout!(RetransmitArgs, size 16, {
    sk: 0,
    skb: 4,
    err: 8,
    total_retrans: 12,
});

/// Where the raw tracepoint `inet_sock_set_state(sk, oldstate, newstate)` keeps its
/// arguments, and `sock.sk_protocol` (BTF): where the retransmit outcome program learns each
/// TCP socket's count before its first attempt (`netprobe-ebpf/src/outcome.rs`), and where
/// the handshake of a flow that retransmitted its SYN (or SYN-ACK) is seen to end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateArgs {
    pub sk: u32,
    pub newstate: u32,
    /// Byte offset of `sock.sk_protocol` (a u16).
    pub sk_protocol: u32,
    pub oldstate: u32,
    /// Byte offset of `inet_sock.inet_sport` (network order): the tracepoint fires for
    /// → CLOSE after `inet_put_port` cleared `sock_common.skc_num`, the local port the flow
    /// is otherwise read from.
    pub inet_sport: u32,
    pub _pad0: u32,
}
assert_layout!(SockStateArgs, size 24, {
    sk: 0,
    newstate: 4,
    sk_protocol: 8,
    oldstate: 12,
    inet_sport: 16,
    _pad0: 20,
});

/// Where the raw tracepoint `kfree_skb` keeps its arguments, as found in the kernel's BTF
/// prototype of the tracepoint: (skb, location[, reason[, rx_sk]]) in that order on every
/// kernel so far; the agent checks it and the programs read each at its fixed index when it
/// is present. Also `sk_buff.protocol` and `sock_common.skc_family`, which tell network
/// drops from the kernel's other frees.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropArgs {
    pub skb: u32,
    pub location: u32,
    /// [`OFFSET_ABSENT`] before Linux 5.17 (no drop reasons).
    pub reason: u32,
    /// [`OFFSET_ABSENT`] before the receiving socket was added to the tracepoint.
    pub rx_sk: u32,
    /// Byte offset of `sk_buff.protocol` (the ethertype, network byte order).
    pub skb_protocol: u32,
    /// The span of `struct sk_buff` holding every member the drop program reads (`sk`,
    /// `dev`, `head`, `network_header`, `skb_iif`, `protocol`): read in one go when it fits
    /// [`SKB_SPAN_MAX`] bytes (`skb_span_len` 0: read member by member).
    pub skb_span_start: u32,
    pub skb_span_len: u32,
    /// 1 when the receive program leaves each segment's (skb, socket, sequence) in a per-CPU
    /// slot for the drop program: on kernels whose `kfree_skb` has no `rx_sk`, a segment TCP
    /// drops after clearing `skb->dev` carries neither device nor socket otherwise.
    pub rx_sk_stash: u32,
    /// Byte offset of `sock.__sk_common.skc_family`: a free of an skb that is no IP/IPv6/ARP
    /// packet is still a network drop when its socket is an IP one.
    pub sk_family: u32,
    /// Raw reason value whose drops are checked for data before `rcv_nxt`
    /// ([`crate::DROP_OLD_SEQUENCE`]): TCP_INVALID_SEQUENCE on kernels that name no
    /// TCP_OLD_SEQUENCE (6.1), where one reason holds both stale and beyond-window segments.
    /// [`OFFSET_ABSENT`]: none.
    pub dupack_reason: u32,
    /// Byte offsets of `tcp_skb_cb.end_seq` and `tcp_sock.rcv_nxt`, for that check.
    pub tcb_end_seq: u32,
    pub rcv_nxt: u32,
    /// The span of `struct net_device` holding `ifindex` and `nd_net` (and `name` when it
    /// fits too), read in one go when it fits [`SKB_SPAN_MAX`] bytes: since Linux 6.8 they
    /// sit within a cache line or two of each other. `dev_span_len` 0: read one by one.
    pub dev_span_start: u32,
    pub dev_span_len: u32,
}
assert_layout!(DropArgs, size 56, {
    skb: 0,
    location: 4,
    reason: 8,
    rx_sk: 12,
    skb_protocol: 16,
    skb_span_start: 20,
    skb_span_len: 24,
    rx_sk_stash: 28,
    sk_family: 32,
    dupack_reason: 36,
    tcb_end_seq: 40,
    rcv_nxt: 44,
    dev_span_start: 48,
    dev_span_len: 52,
});

/// Largest `sk_buff` span the drop program reads in one go.
pub const SKB_SPAN_MAX: u32 = 256;

/// Where the raw tracepoint `tcp_retransmit_synack(sk, req)` keeps its arguments (BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynackArgs {
    /// The listener.
    pub sk: u32,
    /// The request socket, whose `sock_common` names the flow (a dual-stack listener's
    /// request for an IPv4 client is AF_INET6 with v4-mapped addresses, as its socket will be).
    pub req: u32,
}
assert_layout!(SynackArgs, size 8, {
    sk: 0,
    req: 4,
});

/// What the retransmit program reads to name a retransmit's kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindLayout {
    /// Byte offset in `struct sock` of the byte (or u16) holding `icsk_ca_state`.
    pub ca_state: u32,
    /// Bit position and width of `icsk_ca_state` in the little-endian u16 read there.
    pub ca_state_shift: u32,
    pub ca_state_bits: u32,
    /// `TIMER_SOFTIRQ` from BTF.
    pub timer_vec: u32,
}
assert_layout!(KindLayout, size 16, {
    ca_state: 0,
    ca_state_shift: 4,
    ca_state_bits: 8,
    timer_vec: 12,
});

/// The per-CPU hooks' arguments (raw tracepoints `softirq_entry`/`softirq_exit(vec_nr)` and
/// `napi_poll(napi, work, budget)`, indices checked against BTF), the NET_RX softirq vector
/// number and `napi_struct.dev` (both from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLayout {
    /// Argument index of `vec_nr`; [`OFFSET_ABSENT`] when the softirq hooks are inactive.
    pub softirq_vec_arg: u32,
    /// `NET_RX_SOFTIRQ` in the kernel's softirq enum.
    pub net_rx_vec: u32,
    pub napi_arg: u32,
    pub napi_work_arg: u32,
    pub napi_budget_arg: u32,
    /// Byte offset of `napi_struct.dev`.
    pub napi_dev: u32,
}
assert_layout!(CpuLayout, size 24, {
    softirq_vec_arg: 0,
    net_rx_vec: 4,
    napi_arg: 8,
    napi_work_arg: 12,
    napi_budget_arg: 16,
    napi_dev: 20,
});

/// What the receive program (raw tracepoint `tcp_probe(sk, skb)`) reads, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveLayout {
    /// `struct tcp_skb_cb` → `end_seq` (the skb's control block, `skb->cb`).
    pub tcb_end_seq: u32,
    /// `struct tcp_sock` → `rcv_nxt`, `out_of_order_queue.rb_node`, `ooo_last_skb`.
    pub rcv_nxt: u32,
    pub ooo_root: u32,
    pub ooo_last_skb: u32,
}
assert_layout!(ReceiveLayout, size 16, {
    tcb_end_seq: 0,
    rcv_nxt: 4,
    ooo_root: 8,
    ooo_last_skb: 12,
});

/// Byte offsets of the `struct sock_common` members naming a socket's flow (BTF). The same
/// for a full socket, a request socket and a timewait socket: each begins with its
/// `sock_common` (the agent checks it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFlowLayout {
    pub family: u32,
    /// Local port, host byte order.
    pub num: u32,
    /// Remote port, network byte order.
    pub dport: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    /// [`OFFSET_ABSENT`] in a kernel without IPv6.
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    pub _pad0: u32,
}
assert_layout!(SockFlowLayout, size 32, {
    family: 0,
    num: 4,
    dport: 8,
    daddr: 12,
    rcv_saddr: 16,
    v6_daddr: 20,
    v6_rcv_saddr: 24,
    _pad0: 28,
});

/// Byte offsets of kernel struct members, resolved from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `struct sk_buff`
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_cb: u32,
    pub skb_iif: u32,
    /// `struct sock` → `__sk_common.skc_net`
    pub sk_net: u32,
    /// `struct sock` → `__sk_common.skc_state`
    pub sk_state: u32,
    /// `struct sock` → `sk_socket` (full sockets only)
    pub sk_socket: u32,
    /// `struct socket_alloc` → `vfs_inode.i_ino`: the socket's inode number from its
    /// `struct socket *` (the two are allocated together).
    pub socket_ino: u32,
    /// `struct net` → `ns.inum`
    pub net_inum: u32,
    /// `struct net_device`
    pub dev_name: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    /// `struct tcp_skb_cb` (lives in `skb->cb`)
    pub tcb_seq: u32,
    pub tcb_gso_segs: u32,
}
assert_layout!(KernelLayout, size 68, {
    skb_len: 0,
    skb_dev: 4,
    skb_sk: 8,
    skb_head: 12,
    skb_network_header: 16,
    skb_cb: 20,
    skb_iif: 24,
    sk_net: 28,
    sk_state: 32,
    sk_socket: 36,
    socket_ino: 40,
    net_inum: 44,
    dev_name: 48,
    dev_ifindex: 52,
    dev_nd_net: 56,
    tcb_seq: 60,
    tcb_gso_segs: 64,
});

pub const FILTER_PORT: u32 = 1 << 0;
pub const FILTER_ADDR: u32 = 1 << 1;
pub const FILTER_NETNS: u32 = 1 << 2;
pub const FILTER_REASON: u32 = 1 << 3;

/// Filters evaluated in the kernel before anything is counted or queued.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `FILTER_*` bits: which of the fields below apply.
    pub flags: u32,
    /// Matches either end of the flow.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`: how many bytes of `addr` are significant.
    pub addr_family: u16,
    pub netns: u32,
    /// Raw `enum skb_drop_reason` value; applies to drops only.
    pub reason: u32,
    /// Matches either end of the flow; network byte order, IPv4 in the first four bytes.
    pub addr: [u8; 16],
}
assert_layout!(Filter, size 32, {
    flags: 0,
    port: 4,
    addr_family: 6,
    netns: 8,
    reason: 12,
    addr: 16,
});

/// When the kernel wakes the agent. Waking the reader on every event costs microseconds per
/// event (an irq_work self-IPI, dear in VMs); the programs instead wake it when `wakeup_bytes`
/// are pending or `wakeup_interval_ns` have passed since the last wakeup. At low event rates
/// every event still wakes the reader at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamConfig {
    pub wakeup_bytes: u32,
    pub wakeup_interval_ns: u32,
}
assert_layout!(StreamConfig, size 8, {
    wakeup_bytes: 0,
    wakeup_interval_ns: 4,
});

/// What the retransmit program reads of the socket to tell spurious retransmits from real
/// loss (BTF offsets in `struct tcp_sock`, both u32, both since Linux 4.19): `dsack_dups`,
/// the segments the peer reported receiving twice (D-SACK), and `reord_seen`, the times
/// the socket detected reordering. [`OFFSET_ABSENT`] where this kernel's BTF lacks one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpuriousLayout {
    pub dsack_dups: u32,
    pub reord_seen: u32,
}
assert_layout!(SpuriousLayout, size 8, {
    dsack_dups: 0,
    reord_seen: 4,
});

/// How the programs hand over what they see: [`MODE_STREAM`] (`netprobe trace`: an event per
/// retransmit, drop and out-of-sequence segment, plus the exact tables) or [`MODE_COUNT`]
/// (`netprobe monitor`, `trace --count`: no events at all, only in-kernel counts that the
/// agent reads). Read-only at load time, so the verifier drops the branch the mode never takes.
///
/// Stream mode samples drop storms: every drop is counted exactly in `DROP_SITES` (per reason,
/// location, device, namespace and CPU), and a site streams at most `max_rate` drops per
/// second on each CPU (`--max-rate`; 0: no limit), or `storm_rate` while the ring holds more
/// than `storm_backlog_bytes` unread (the reader falling behind: a sample of every site then
/// reaches it, instead of whichever events happened to find room).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregateConfig {
    pub mode: u32,
    pub max_rate: u32,
    pub storm_backlog_bytes: u32,
    pub storm_rate: u32,
}
assert_layout!(AggregateConfig, size 16, {
    mode: 0,
    max_rate: 4,
    storm_backlog_bytes: 8,
    storm_rate: 12,
});

/// [`AggregateConfig::mode`]: stream events (and keep the exact tables).
pub const MODE_STREAM: u32 = 0;
/// [`AggregateConfig::mode`]: stream nothing; each drop is one update of `DROP_SITES`, keyed
/// by [`crate::DropSiteKey`], and no flow headers are parsed unless a flow filter needs them.
pub const MODE_COUNT: u32 = 1;

/// The whole load-time configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    pub retransmit: RetransmitArgs,
    pub drop: DropArgs,
    pub kernel: KernelLayout,
    pub filter: Filter,
    pub stream: StreamConfig,
    pub cpu: CpuLayout,
    pub synack: SynackArgs,
    pub kind: KindLayout,
    pub receive: ReceiveLayout,
    pub sock_state: SockStateArgs,
    pub sock: SockFlowLayout,
    pub spurious: SpuriousLayout,
    pub aggregate: AggregateConfig,
}
assert_layout!(TraceConfig, size 324, {
    retransmit: 0,
    drop: 16,
    kernel: 72,
    filter: 140,
    stream: 172,
    cpu: 180,
    synack: 204,
    kind: 212,
    receive: 228,
    sock_state: 244,
    sock: 268,
    spurious: 300,
    aggregate: 308,
});

impl TraceConfig {
    /// All offsets absent, no filters: what the kernel object is compiled with. The agent
    /// always overrides it before loading.
    pub const UNSET: Self = Self {
        retransmit: RetransmitArgs {
            sk: OFFSET_ABSENT,
            skb: OFFSET_ABSENT,
            err: OFFSET_ABSENT,
            total_retrans: OFFSET_ABSENT,
        },
        drop: DropArgs {
            skb: OFFSET_ABSENT,
            location: OFFSET_ABSENT,
            reason: OFFSET_ABSENT,
            rx_sk: OFFSET_ABSENT,
            skb_protocol: OFFSET_ABSENT,
            skb_span_start: 0,
            skb_span_len: 0,
            rx_sk_stash: 0,
            sk_family: OFFSET_ABSENT,
            dupack_reason: OFFSET_ABSENT,
            tcb_end_seq: OFFSET_ABSENT,
            rcv_nxt: OFFSET_ABSENT,
            dev_span_start: 0,
            dev_span_len: 0,
        },
        kernel: KernelLayout {
            skb_len: OFFSET_ABSENT,
            skb_dev: OFFSET_ABSENT,
            skb_sk: OFFSET_ABSENT,
            skb_head: OFFSET_ABSENT,
            skb_network_header: OFFSET_ABSENT,
            skb_cb: OFFSET_ABSENT,
            skb_iif: OFFSET_ABSENT,
            sk_net: OFFSET_ABSENT,
            sk_state: OFFSET_ABSENT,
            sk_socket: OFFSET_ABSENT,
            socket_ino: OFFSET_ABSENT,
            net_inum: OFFSET_ABSENT,
            dev_name: OFFSET_ABSENT,
            dev_ifindex: OFFSET_ABSENT,
            dev_nd_net: OFFSET_ABSENT,
            tcb_seq: OFFSET_ABSENT,
            tcb_gso_segs: OFFSET_ABSENT,
        },
        filter: Filter {
            flags: 0,
            port: 0,
            addr_family: 0,
            netns: 0,
            reason: 0,
            addr: [0; 16],
        },
        stream: StreamConfig {
            wakeup_bytes: 0,
            wakeup_interval_ns: 0,
        },
        cpu: CpuLayout {
            softirq_vec_arg: OFFSET_ABSENT,
            net_rx_vec: u32::MAX,
            napi_arg: OFFSET_ABSENT,
            napi_work_arg: OFFSET_ABSENT,
            napi_budget_arg: OFFSET_ABSENT,
            napi_dev: OFFSET_ABSENT,
        },
        synack: SynackArgs {
            sk: OFFSET_ABSENT,
            req: OFFSET_ABSENT,
        },
        kind: KindLayout {
            ca_state: OFFSET_ABSENT,
            ca_state_shift: 0,
            ca_state_bits: 0,
            timer_vec: u32::MAX,
        },
        receive: ReceiveLayout {
            tcb_end_seq: OFFSET_ABSENT,
            rcv_nxt: OFFSET_ABSENT,
            ooo_root: OFFSET_ABSENT,
            ooo_last_skb: OFFSET_ABSENT,
        },
        sock_state: SockStateArgs {
            sk: OFFSET_ABSENT,
            newstate: OFFSET_ABSENT,
            sk_protocol: OFFSET_ABSENT,
            oldstate: OFFSET_ABSENT,
            inet_sport: OFFSET_ABSENT,
            _pad0: 0,
        },
        sock: SockFlowLayout {
            family: OFFSET_ABSENT,
            num: OFFSET_ABSENT,
            dport: OFFSET_ABSENT,
            daddr: OFFSET_ABSENT,
            rcv_saddr: OFFSET_ABSENT,
            v6_daddr: OFFSET_ABSENT,
            v6_rcv_saddr: OFFSET_ABSENT,
            _pad0: 0,
        },
        spurious: SpuriousLayout {
            dsack_dups: OFFSET_ABSENT,
            reord_seen: OFFSET_ABSENT,
        },
        aggregate: AggregateConfig {
            mode: MODE_STREAM,
            max_rate: 0,
            storm_backlog_bytes: u32::MAX,
            storm_rate: 0,
        },
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u32/u16 and byte arrays, so every bit pattern is valid,
    // with no implicit padding (proved by the `assert_layout!` lists above).
    unsafe impl aya::Pod for super::TraceConfig {}
}
