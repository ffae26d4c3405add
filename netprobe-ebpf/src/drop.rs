//! `skb:kfree_skb`: every packet the kernel drops, with its drop reason.
//!
//! A raw tracepoint: the arguments (skb, location, reason, rx_sk) come as they are, at indices
//! read from the kernel's BTF prototype of the tracepoint, instead of a record the kernel
//! would first fill for every drop. It is also guarded per program rather than by the
//! classic tracepoints' per-CPU flag, so it is not skipped when a drop happens in a softirq
//! that interrupted another BPF program (or a bpf() map syscall) on that CPU.
//!
//! Not every `kfree_skb` is a lost packet: unix-domain and netlink sockets free their skbs
//! through it too. Only network drops (see `is_network`) are counted as drops and streamed;
//! the others, after the same filters, are counted apart by reason and location.

use aya_ebpf::{
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use netprobe_common::{
    DropEvent, DropSiteKey, EventHeader, EventKind, Flow, NonNetworkKey, SiteCount, AF_INET,
    AF_INET6, COUNTER_DROP_LOST, COUNTER_DROP_SAMPLED_OUT, COUNTER_DROP_SEEN,
    COUNTER_DROP_SITE_TABLE_FULL, COUNTER_NON_NETWORK_TABLE_FULL, COUNTER_REASON_TABLE_FULL,
    DROP_HAS_DEV, DROP_HAS_PORTS, DROP_HAS_SOCK, DROP_OLD_SEQUENCE, FILTER_ADDR, FILTER_PORT,
    FILTER_REASON,
};

use crate::headers::{parse_headers, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, HEADER_UNSET};
use crate::kernel::{
    arg, dev_netns, flow_matches, net_inum, netns_matches, read, sock_inode, sock_netns,
};
use crate::maps::{
    bump, counting_only, nest_in, nest_out, setting, submit_flags_for, DROP_REASONS, DROP_SITES,
    EVENTS, MAX_NESTING, NON_NETWORK_DROPS,
};
use crate::receive::RX_STASH;
use crate::span::{copy_span, span_get};

use netprobe_common::vocab::TcpState;

/// Minisock states: no `sk_socket` behind them.
const TCP_TIME_WAIT: u8 = TcpState::TimeWait.raw();
const TCP_NEW_SYN_RECV: u8 = TcpState::NewSynRecv.raw();

/// The members of the dropped skb the program uses.
pub(crate) struct SkbFields {
    pub sk: u64,
    pub dev: u64,
    pub head: u64,
    pub network_header: u16,
    pub iif: u32,
    pub protocol: u16,
}

/// Reads the skb members: one copy of their span when the agent found one, else one read per
/// member.
#[inline(always)]
pub(crate) fn skb_fields(skb: u64) -> SkbFields {
    let start = setting!(drop.skb_span_start);
    if let Some(span) = copy_span(skb, start, setting!(drop.skb_span_len)) {
        return SkbFields {
            sk: span_get(span, setting!(kernel.skb_sk), start),
            dev: span_get(span, setting!(kernel.skb_dev), start),
            head: span_get(span, setting!(kernel.skb_head), start),
            network_header: span_get(span, setting!(kernel.skb_network_header), start),
            iif: span_get(span, setting!(kernel.skb_iif), start),
            protocol: u16::from_be(span_get(span, setting!(drop.skb_protocol), start)),
        };
    }
    SkbFields {
        sk: read(skb, setting!(kernel.skb_sk)).unwrap_or(0),
        dev: read(skb, setting!(kernel.skb_dev)).unwrap_or(0),
        head: read(skb, setting!(kernel.skb_head)).unwrap_or(0),
        network_header: read(skb, setting!(kernel.skb_network_header)).unwrap_or(HEADER_UNSET),
        iif: read(skb, setting!(kernel.skb_iif)).unwrap_or(0),
        protocol: u16::from_be(read::<u16>(skb, setting!(drop.skb_protocol)).unwrap_or(0)),
    }
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn netprobe_drop(ctx: RawTracePointContext) -> i32 {
    if counting_only() {
        let _ = crate::drop_count::try_tally(&ctx);
        return 0;
    }
    if let Some(level) = nest_in(&DROP_DEPTH) {
        let _ = try_drop(&ctx, level);
        nest_out(&DROP_DEPTH, level);
    }
    0
}

/// This program's nesting level on each CPU (see `MAX_NESTING`).
#[map]
pub(crate) static DROP_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// One drop on its way to the counts and the stream, in a per-CPU slot per nesting level,
/// filled in stages that are global functions: the verifier
/// checks each once, on its own, rather than once per path through the stages before it
/// (Linux 6.1's verifier walked ~290k instructions through the single-function version).
#[repr(C)]
pub struct PendingDrop {
    flow: Flow,
    pub(crate) skb: u64,
    pub(crate) location: u64,
    pub(crate) sk: u64,
    pub(crate) dev: u64,
    head: u64,
    sock_ino: u64,
    /// When the drop was counted, and the ring's unread bytes then.
    ts_ns: u64,
    unread: u64,
    pub(crate) reason: u32,
    netns: u32,
    iif: u32,
    ifindex: u32,
    /// The device's name (zero without one), when read with its ifindex and namespace
    /// (`named`); else the emit stage reads it.
    ifname: [u8; 16],
    network_header: u16,
    protocol: u16,
    ip_proto: u8,
    sk_state: u8,
    flags: u8,
    /// 1 for a network drop (see `is_network`), 0 for the kernel's other frees.
    network: u8,
    /// 1 when `ifname` holds the device's name.
    named: u8,
}

#[map]
static PENDING_DROP: PerCpuArray<PendingDrop> = PerCpuArray::with_max_entries(MAX_NESTING, 0);

#[inline(always)]
pub(crate) fn pending(level: u32) -> Option<&'static mut PendingDrop> {
    // SAFETY: this CPU's slot for this nesting level: only this run uses it.
    PENDING_DROP.get_ptr_mut(level).map(|p| unsafe { &mut *p })
}

fn try_drop(ctx: &RawTracePointContext, level: u32) -> Result<(), i32> {
    // Before drop reasons existed every drop is reported as reason 0 ("unknown").
    let reason = arg::<2>(ctx, setting!(drop.reason)).unwrap_or(0) as u32;
    if setting!(filter.flags) & FILTER_REASON != 0 && reason != setting!(filter.reason) {
        return Ok(());
    }
    let p = pending(level).ok_or(-1)?;
    p.reason = reason;
    p.skb = arg::<0>(ctx, setting!(drop.skb))?;
    p.location = arg::<1>(ctx, setting!(drop.location)).unwrap_or(0);
    // The socket: skb->sk on the way out, the tracepoint's rx_sk on the way in.
    p.sk = arg::<3>(ctx, setting!(drop.rx_sk)).unwrap_or(0);
    if netprobe_drop_where(level) != 0 {
        return Ok(());
    }
    finish(level);
    Ok(())
}

/// The stages after the drop is placed: counted, parsed and streamed (see `try_drop`).
#[inline(always)]
pub(crate) fn finish(level: u32) {
    // A drop is counted once it passes every filter; without a flow filter that is now, and
    // a storm's sampled-out drops then cost no header parsing at all.
    if setting!(filter.flags) & (FILTER_PORT | FILTER_ADDR) != 0 {
        if netprobe_drop_parse(level) != 0 || netprobe_drop_count(level) != 0 {
            return;
        }
    } else {
        if netprobe_drop_count(level) != 0 {
            return;
        }
        netprobe_drop_parse(level);
    }
    netprobe_drop_emit(level);
}

/// Stage two: the skb's members, its socket and the namespace it was dropped in; nonzero
/// when the netns filter excludes it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_drop_where(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    let fields = skb_fields(p.skb);
    p.dev = fields.dev;
    place(p, &fields, |ifname| device(fields.dev, Some(ifname)))
}

/// The drop placed from its skb's `fields` (`p.skb`, `p.sk` and `p.dev` set): its socket,
/// and the namespace it was dropped in, the device's (`device`, called with `p.dev` set,
/// fills the name and returns (ifindex, netns)) when it has one, else the socket's. Nonzero
/// when the netns filter excludes it.
#[inline(always)]
pub(crate) fn place(
    p: &mut PendingDrop,
    fields: &SkbFields,
    device: impl FnOnce(&mut [u8; 16]) -> (u32, u32, bool),
) -> i32 {
    p.flags = 0;
    if fields.sk != 0 {
        p.sk = fields.sk;
    }
    p.head = fields.head;
    p.network_header = fields.network_header;
    p.iif = fields.iif;
    p.protocol = fields.protocol;
    p.sk_state = 0;
    p.sock_ino = 0;
    if p.sk == 0 && p.dev == 0 && setting!(drop.rx_sk_stash) != 0 {
        p.sk = stashed_socket(p.skb);
    }
    if p.sk != 0 {
        p.flags |= DROP_HAS_SOCK;
        p.sk_state = read(p.sk, setting!(kernel.sk_state)).unwrap_or(0);
        if p.reason == setting!(drop.dupack_reason) && before_rcv_nxt(p.skb, p.sk) {
            p.flags |= DROP_OLD_SEQUENCE;
        }
        // Only full sockets have sk_socket (not request or TIME_WAIT minisocks).
        if p.sk_state != TCP_TIME_WAIT && p.sk_state != TCP_NEW_SYN_RECV {
            p.sock_ino = sock_inode(p.sk);
        }
    }
    p.network = is_network(p.protocol, p.sk) as u8;
    // Where the packet was dropped: the device's namespace when it has a device (the
    // receiver's, for a packet forwarded across namespaces by veth, which still carries the
    // sending socket), the socket's before a device is set (the OUTPUT hook).
    p.ifname = [0; 16];
    (p.ifindex, p.netns, p.named) = if p.dev != 0 {
        let (ifindex, netns, named) = device(&mut p.ifname);
        (ifindex, netns, named as u8)
    } else if p.sk != 0 {
        (0, sock_netns(p.sk), 0)
    } else {
        (0, 0, 0)
    };
    !netns_matches(p.netns) as i32
}

/// Whether the TCP segment `skb`, dropped by socket `sk`, holds data from before its
/// `rcv_nxt`: what `tcp_send_dupack` counts in DelayedACKLost (`TCP_SKB_CB` is TCP's here,
/// the drop being TCP's own).
#[inline(always)]
fn before_rcv_nxt(skb: u64, sk: u64) -> bool {
    let cb = skb + setting!(kernel.skb_cb) as u64;
    let seq = read::<u32>(cb, setting!(kernel.tcb_seq));
    let end_seq = read::<u32>(cb, setting!(drop.tcb_end_seq));
    let rcv_nxt = read::<u32>(sk, setting!(drop.rcv_nxt));
    match (seq, end_seq, rcv_nxt) {
        (Ok(seq), Ok(end_seq), Ok(rcv_nxt)) => {
            end_seq != seq && (seq.wrapping_sub(rcv_nxt) as i32) < 0
        }
        _ => false,
    }
}

/// The socket the receive program saw this very segment with (same skb, same sequence number),
/// or 0. See `DropArgs::rx_sk_stash`.
#[inline(always)]
fn stashed_socket(skb: u64) -> u64 {
    let Some(stash) = RX_STASH.get(0) else {
        return 0;
    };
    if stash.skb != skb {
        return 0;
    }
    let seq: u32 = read(
        skb + setting!(kernel.skb_cb) as u64,
        setting!(kernel.tcb_seq),
    )
    .unwrap_or(0);
    if seq == stash.seq {
        stash.sk
    } else {
        0
    }
}

/// Stage three: the flow from the packet headers; nonzero when the flow filters exclude it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_drop_parse(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    let (ip_proto, header_flags) = parse_headers(p.head, p.network_header, p.protocol, &mut p.flow);
    p.ip_proto = ip_proto;
    p.flags |= header_flags;
    !flow_matches(&p.flow, p.flags & DROP_HAS_PORTS != 0) as i32
}

/// A network drop: an IP, IPv6 or ARP packet, or any skb of an IP socket (a TCP segment
/// freed before IP set the ethertype). The kernel frees others through the same tracepoint
/// — unix-domain sockets' queues purged on close or connect, netlink messages nobody took —
/// and those are no lost packets.
#[inline(always)]
pub(crate) fn is_network(protocol: u16, sk: u64) -> bool {
    if protocol == ETH_P_IP || protocol == ETH_P_IPV6 || protocol == ETH_P_ARP {
        return true;
    }
    let family: u16 = read(sk, setting!(drop.sk_family)).unwrap_or(0);
    family == AF_INET || family == AF_INET6
}

/// The exact count of the drop's site; nonzero when it is not to be streamed: a free that is
/// not a network drop (counted apart, `NON_NETWORK_DROPS`), or a drop whose site is over its
/// rate this second.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_drop_count(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    if p.network == 0 {
        count_non_network(p.reason, p.location);
        return 1;
    }
    bump(COUNTER_DROP_SEEN);
    // SAFETY: a helper without arguments; it only reads the clock.
    p.ts_ns = unsafe { bpf_ktime_get_ns() };
    if p.dev != 0 {
        p.flags |= DROP_HAS_DEV;
    }
    let key = DropSiteKey {
        reason: p.reason,
        netns: p.netns,
        location: p.location,
        ifindex: p.ifindex,
        skb_iif: p.iif,
        flags: p.flags & (DROP_HAS_DEV | DROP_HAS_SOCK),
        _pad0: [0; 7],
    };
    p.unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if !count_and_sample(&key, p.ts_ns, p.unread) {
        bump(COUNTER_DROP_SAMPLED_OUT);
        return 1;
    }
    0
}

/// The last stage: the event, filled in place in its ring slot.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_drop_emit(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    let (ts_ns, flags) = (p.ts_ns, p.flags);
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        bump(COUNTER_DROP_LOST);
        return 1;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the ring buffer slot reserved above, sized for it, ours until submit.
    unsafe {
        (*event).header = EventHeader {
            kind: EventKind::Drop.id(),
            _pad0: 0,
            cpu: bpf_get_smp_processor_id(),
            ts_ns,
        };
        (*event).flow = p.flow;
        (*event).location = p.location;
        (*event).netns = p.netns;
        (*event).reason = p.reason;
        (*event).protocol = p.protocol;
        (*event).ip_proto = p.ip_proto;
        (*event).sk_state = p.sk_state;
        (*event)._pad0 = [0; 3];
        (*event).skb_iif = p.iif;
        (*event).sock_ino = p.sock_ino;
        (*event).ifindex = p.ifindex;
        (*event).ifname = p.ifname;
        if p.dev != 0 && p.named == 0 {
            device_name(p.dev, &mut (*event).ifname);
        }
        (*event).flags = flags;
    }
    entry.submit(submit_flags_for(p.unread, ts_ns));
    0
}

/// Counts a streamed-mode drop at its site, exactly; returns whether it is to be streamed.
/// A site streams at most the configured rate per second on this CPU: `--max-rate`, or
/// `storm_rate` while `unread` bytes wait in the ring past `storm_backlog_bytes` (the reader
/// is behind). A drop whose site the full table cannot hold is counted by reason, and
/// always streamed.
#[inline(always)]
fn count_and_sample(key: &DropSiteKey, ts_ns: u64, unread: u64) -> bool {
    let site = match DROP_SITES.get_ptr_mut(key) {
        Some(site) => site,
        None => {
            let first = SiteCount {
                drops: 1,
                sampled_out: 0,
                window_start_ns: ts_ns,
                window_streamed: 1,
                _pad0: 0,
            };
            if DROP_SITES.insert(key, &first, 0).is_err() {
                bump(COUNTER_DROP_SITE_TABLE_FULL);
                count_reason(key.reason);
            }
            return true;
        }
    };
    let mut limit = setting!(aggregate.max_rate);
    if unread >= setting!(aggregate.storm_backlog_bytes) as u64 {
        let storm_rate = setting!(aggregate.storm_rate);
        if limit == 0 || storm_rate < limit {
            limit = storm_rate;
        }
    }
    // SAFETY: this CPU's slot from the lookup; only this program writes it (a nested run on
    // this CPU can lose one increment in a few-instruction window, see `bump`).
    unsafe {
        (*site).drops += 1;
        if ts_ns.wrapping_sub((*site).window_start_ns) >= NS_PER_SEC {
            (*site).window_start_ns = ts_ns;
            (*site).window_streamed = 0;
        }
        if limit != 0 && (*site).window_streamed >= limit {
            (*site).sampled_out += 1;
            return false;
        }
        (*site).window_streamed += 1;
    }
    true
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// A device's (ifindex, namespace): one copy of their span when the agent found one
/// (`DropArgs::dev_span_len`), else one read each; and its name into `name` when asked and
/// the span holds it (true then; else the emit stage reads it, for streamed drops only).
/// Read each time, never cached by the device's address: a device freed and another
/// allocated there (namespaces and veths come and go) would keep the old one's namespace, and
/// its drops would be placed in the wrong one.
#[inline(always)]
pub(crate) fn device(dev: u64, name: Option<&mut [u8; 16]>) -> (u32, u32, bool) {
    let start = setting!(drop.dev_span_start);
    let len = setting!(drop.dev_span_len);
    let Some(span) = copy_span(dev, start, len) else {
        let ifindex = read(dev, setting!(kernel.dev_ifindex)).unwrap_or(0);
        return (ifindex, dev_netns(dev), false);
    };
    let mut named = false;
    if let Some(name) = name {
        // The name is in the span only where it fitted (see `device_span`).
        let at = setting!(kernel.dev_name).wrapping_sub(start);
        if at.saturating_add(name.len() as u32) <= len {
            *name = span_get(span, setting!(kernel.dev_name), start);
            named = true;
        }
    }
    let net: u64 = span_get(span, setting!(kernel.dev_nd_net), start);
    let ifindex = span_get(span, setting!(kernel.dev_ifindex), start);
    (ifindex, net_inum(net), named)
}

/// `dev->name` into `name`.
#[inline(always)]
fn device_name(dev: u64, name: &mut [u8; 16]) {
    let address = (dev + setting!(kernel.dev_name) as u64) as *const u8;
    // SAFETY: a probe read (bad addresses fail, never fault) into our own buffer.
    let _ = unsafe { bpf_probe_read_kernel_buf(address, name) };
}

/// Exact per-CPU count for this reason.
#[inline(always)]
pub(crate) fn count_reason(reason: u32) {
    if let Some(count) = DROP_REASONS.get_ptr_mut(&reason) {
        // SAFETY: this CPU's slot from the lookup; only this program writes it.
        unsafe { *count += 1 };
    } else if DROP_REASONS.insert(&reason, &1, 0).is_err() {
        bump(COUNTER_REASON_TABLE_FULL);
    }
}

/// Exact per-CPU count for this (reason, location) of a non-network free.
#[inline(always)]
pub(crate) fn count_non_network(reason: u32, location: u64) {
    let key = NonNetworkKey {
        reason,
        _pad0: 0,
        location,
    };
    if let Some(count) = NON_NETWORK_DROPS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot from the lookup; only this program writes it.
        unsafe { *count += 1 };
    } else if NON_NETWORK_DROPS.insert(&key, &1, 0).is_err() {
        bump(COUNTER_NON_NETWORK_TABLE_FULL);
    }
}
