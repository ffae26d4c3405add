//! The incoming direction: data segments the peer sent again, and holes opened by data
//! arriving out of order, on every established TCP socket.
//!
//! Hook: the raw tracepoint `tcp_probe(sk, skb)`, which `tcp_rcv_established()` fires for
//! every segment it processes, before it acts on it. At that point the segment's sequence
//! range (`TCP_SKB_CB(skb)->seq/end_seq`) can be read against the socket's own receive state
//! (`rcv_nxt`, the out-of-order queue), which is exactly what tells a duplicate from a hole
//! fill from a new hole. Why this hook rather than the alternatives:
//! - cost: the common case (next expected segment, nothing queued out of order) is four
//!   probe reads and no map access; work and events happen only for segments out of
//!   sequence. The raw tracepoint hands over `sk` and `skb` directly; the classic `tcp:tcp_probe`
//!   would build a 136-byte record (addresses, socket cookie) for every received segment.
//! - accuracy: the socket's state is the truth about what was received. A TC ingress program
//!   would have to keep its own per-flow sequence state in a map (a lookup and update for
//!   every packet), could not see what the socket already holds, and would count segments that
//!   netfilter or the backlog drop before TCP ever sees them (those are drops, reported by
//!   `kfree_skb` with their reason).
//! - what it misses: segments processed in other states (`tcp_rcv_state_process`: SYN-RECV,
//!   FIN-WAIT, CLOSE-WAIT…); and a re-sent segment that arrives as the next expected one with
//!   nothing queued behind it (a lost tail, re-sent by TLP or RTO) looks like ordinary
//!   in-order data at the receiver. Under reordering, the late original of a segment fills
//!   the hole just as a retransmit would.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_skc_to_tcp_sock},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netprobe_common::{
    EventHeader, EventKind, FlowKey, ReceiveEvent, ReceiveTotals, COUNTER_RECEIVE_LOST,
    COUNTER_RECEIVE_SEEN, COUNTER_RECEIVE_TABLE_FULL, RX_DUPLICATE, RX_DUPLICATE_PARTIAL,
    RX_FILLS_HOLE, RX_HAD_OOO, RX_OPENS_HOLE,
};

use crate::btf::{is_set, load};
use crate::kernel::{
    flow_matches, netns_matches, read, sock_family, sock_flow, sock_inode, sock_netns,
};
use crate::maps::{
    bump, counting_only, nest_in, nest_out, setting, submit_flags, EVENTS, MAX_NESTING,
};

/// Exact per-flow receive totals, per CPU (summed by the agent). Only this program writes it:
/// as a raw tracepoint it may run nested inside a classic-tracepoint program on the same CPU,
/// so it shares no per-CPU slot with them.
#[map]
pub static RECEIVE_FLOWS: PerCpuHashMap<FlowKey, ReceiveTotals> =
    PerCpuHashMap::with_max_entries(4096, 0);

/// Working space: the flow key and the table delta live in a per-CPU slot rather than on
/// the 512-byte BPF stack. Its own slot, not shared with the classic-tracepoint programs
/// (this one may interrupt them on the same CPU).
///
/// The segment's verdict is handed to [`netprobe_rcv_record`] through it: a global function,
/// checked by the verifier once on its own instead of once per path through the classing
/// above it (Linux 6.1's verifier walked ~79k instructions through the single-function form).
#[repr(C)]
pub struct ReceiveScratch {
    key: FlowKey,
    delta: ReceiveTotals,
    sk: u64,
    seq: u32,
    len: u32,
    rcv_nxt: u32,
    ooo_end: u32,
    gap: u32,
    class: u8,
    flags: u8,
    out_of_order: u8,
    _pad0: u8,
    /// `EventKind` id of the event to stream, 0 for none.
    event: u16,
    _pad1: u16,
}

#[map]
static RECEIVE_SCRATCH: PerCpuArray<ReceiveScratch> = PerCpuArray::with_max_entries(MAX_NESTING, 0);

/// This program's nesting level on each CPU (see `MAX_NESTING`): backlog processing runs
/// `tcp_rcv_established` with bottom halves enabled, so a softirq's segment can run this
/// program inside its own run on kernels without a raw-tracepoint recursion guard.
#[map]
static RECEIVE_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn netprobe_rcv(ctx: RawTracePointContext) -> i32 {
    let _ = try_receive(&ctx);
    0
}

/// How an out-of-sequence segment is classed.
struct Verdict {
    /// `None`: counted in the table only (it extends the out-of-order queue in sequence).
    kind: Option<EventKind>,
    class: u8,
    gap: u32,
}

fn try_receive(ctx: &RawTracePointContext) -> Result<(), i32> {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    let cb = skb + setting!(kernel.skb_cb) as u64;
    let (seq_at, end_seq_at) = (setting!(kernel.tcb_seq), setting!(receive.tcb_end_seq));
    // One read for both when they are neighbours (they are: `seq` then `end_seq`); this runs
    // for every segment received, and each read is a helper call.
    let (seq, end_seq) = if end_seq_at == seq_at.wrapping_add(4) {
        let both: [u32; 2] = read(cb, seq_at)?;
        (both[0], both[1])
    } else {
        (read::<u32>(cb, seq_at)?, read::<u32>(cb, end_seq_at)?)
    };
    if setting!(drop.rx_sk_stash) != 0 {
        stash_for_drops(skb, sk, seq);
    }
    if seq == end_seq {
        // No sequence space: a pure ACK (or window update).
        return Ok(());
    }
    let rcv_nxt: u32 = read(sk, setting!(receive.rcv_nxt))?;
    let ooo_root: u64 = read(sk, setting!(receive.ooo_root))?;
    if seq == rcv_nxt && ooo_root == 0 {
        // The next expected segment, nothing missing: the common case ends here.
        return Ok(());
    }

    let mut flags = 0u8;
    let mut ooo_end = 0u32;
    if ooo_root != 0 {
        let last: u64 = read(sk, setting!(receive.ooo_last_skb)).unwrap_or(0);
        if last != 0 {
            if let Ok(end) = read::<u32>(
                last + setting!(kernel.skb_cb) as u64,
                setting!(receive.tcb_end_seq),
            ) {
                ooo_end = end;
                flags |= RX_HAD_OOO;
            }
        }
    }
    classify(
        sk,
        Segment {
            seq,
            end_seq,
            rcv_nxt,
            ooo_end,
            flags,
        },
    )
}

/// `tcp_probe` on a BTF-typed tracepoint, where the kernel allows one: the segment's
/// sequence range and the socket's receive state by direct loads (the `tcp_sock` through
/// `bpf_skc_to_tcp_sock`, a cast without copy) instead of three helper reads per segment.
#[btf_tracepoint(function = "tcp_probe")]
pub fn netprobe_rcv_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_receive_btf(&ctx);
    0
}

fn try_receive_btf(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    // Each tested as it is: some kernels type tracepoint arguments as possibly NULL.
    if skb == 0 {
        return Ok(());
    }
    if sk == 0 {
        return Ok(());
    }
    let cb = setting!(kernel.skb_cb);
    let seq: u32 = load(skb, cb + setting!(kernel.tcb_seq));
    let end_seq: u32 = load(skb, cb + setting!(receive.tcb_end_seq));
    if setting!(drop.rx_sk_stash) != 0 {
        stash_for_drops(skb, sk, seq);
    }
    if seq == end_seq {
        return Ok(());
    }
    // SAFETY: a BTF-typed socket from the tracepoint; the helper returns NULL unless it is a
    // full TCP socket.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
    // Compared as it is: the verifier needs this test to know `tp` is not NULL.
    if tp == 0 {
        return Ok(());
    }
    let rcv_nxt: u32 = load(tp, setting!(receive.rcv_nxt));
    let ooo_root: u64 = load(tp, setting!(receive.ooo_root));
    let has_ooo = is_set(ooo_root);
    if seq == rcv_nxt && !has_ooo {
        return Ok(());
    }
    let mut flags = 0u8;
    let mut ooo_end = 0u32;
    if has_ooo {
        let last: u64 = load(tp, setting!(receive.ooo_last_skb));
        if is_set(last) {
            ooo_end = load(last, cb + setting!(receive.tcb_end_seq));
            flags |= RX_HAD_OOO;
        }
    }
    // The socket is only stored for the recording stage, which reads it back as a number.
    classify(
        sk,
        Segment {
            seq,
            end_seq,
            rcv_nxt,
            ooo_end,
            flags,
        },
    )
}

/// A segment's sequence range against its socket's receive state.
struct Segment {
    seq: u32,
    end_seq: u32,
    rcv_nxt: u32,
    /// End of the out-of-order queue's last segment (`RX_HAD_OOO` in `flags`), else 0.
    ooo_end: u32,
    flags: u8,
}

/// Classes a segment out of sequence and records it (`netprobe_rcv_record`).
#[inline(always)]
fn classify(sk: u64, segment: Segment) -> Result<(), i32> {
    let Segment {
        seq,
        end_seq,
        rcv_nxt,
        ooo_end,
        flags,
    } = segment;
    let len = end_seq.wrapping_sub(seq);
    let past_end = end_seq.wrapping_sub(rcv_nxt) as i32;
    let ahead = seq.wrapping_sub(rcv_nxt) as i32;
    let had_ooo = flags & RX_HAD_OOO != 0;
    let verdict = if past_end <= 0 {
        Verdict {
            kind: Some(EventKind::PeerRetransmit),
            class: RX_DUPLICATE,
            gap: len,
        }
    } else if ahead < 0 {
        Verdict {
            kind: Some(EventKind::PeerRetransmit),
            class: RX_DUPLICATE_PARTIAL,
            gap: rcv_nxt.wrapping_sub(seq),
        }
    } else if ahead == 0 || (had_ooo && (seq.wrapping_sub(ooo_end) as i32) < 0) {
        // At rcv_nxt with data queued behind it, or in front of the end of queued data.
        Verdict {
            kind: Some(EventKind::PeerRetransmit),
            class: RX_FILLS_HOLE,
            gap: 0,
        }
    } else if had_ooo && seq == ooo_end {
        // Continues the out-of-order queue in sequence: no new hole.
        Verdict {
            kind: None,
            class: 0,
            gap: 0,
        }
    } else {
        let from = if had_ooo { ooo_end } else { rcv_nxt };
        Verdict {
            kind: Some(EventKind::OutOfOrder),
            class: RX_OPENS_HOLE,
            gap: seq.wrapping_sub(from),
        }
    };

    // Only out-of-sequence segments get here: the nesting level is taken for them alone.
    let level = nest_in(&RECEIVE_DEPTH).ok_or(-1)?;
    let Some(scratch) = RECEIVE_SCRATCH.get_ptr_mut(level) else {
        nest_out(&RECEIVE_DEPTH, level);
        return Err(-1);
    };
    // SAFETY: this CPU's scratch slot for this nesting level: only this run uses it.
    let p = unsafe { &mut *scratch };
    p.sk = sk;
    p.seq = seq;
    p.len = len;
    p.rcv_nxt = rcv_nxt;
    p.ooo_end = ooo_end;
    p.gap = verdict.gap;
    p.class = verdict.class;
    p.flags = flags;
    p.event = verdict.kind.map_or(0, |k| k.id());
    p.out_of_order = (ahead > 0) as u8;
    netprobe_rcv_record(level);
    nest_out(&RECEIVE_DEPTH, level);
    Ok(())
}

/// Counts the classed segment in its flow's totals and streams its event, if it has one.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rcv_record(level: u32) -> i32 {
    let Some(scratch) = RECEIVE_SCRATCH.get_ptr_mut(level) else {
        return 1;
    };
    // SAFETY: as in `try_receive`, which called this.
    let p = unsafe { &mut *scratch };
    if sock_flow(p.sk, sock_family(p.sk), &mut p.key.flow).is_err() {
        return 1;
    }
    let netns = sock_netns(p.sk);
    if !netns_matches(netns) || !flow_matches(&p.key.flow, true) {
        return 1;
    }
    p.key.netns = netns;
    p.key._pad0 = 0;
    let sock_ino = sock_inode(p.sk);
    set_delta(
        &mut p.delta,
        p.class,
        p.gap,
        p.len,
        p.out_of_order != 0,
        sock_ino,
    );
    add_to_flow_table(&p.key, &p.delta);
    if p.event == 0 || counting_only() {
        return 0;
    }
    bump(COUNTER_RECEIVE_SEEN);

    // SAFETY: a helper without arguments; it only reads the clock.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = EVENTS.reserve::<ReceiveEvent>(0) else {
        bump(COUNTER_RECEIVE_LOST);
        return 1;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the ring buffer slot reserved above, sized for it, ours until submit.
    unsafe {
        (*event).header = EventHeader {
            kind: p.event,
            _pad0: 0,
            cpu: bpf_get_smp_processor_id(),
            ts_ns,
        };
        (*event).flow = p.key.flow;
        (*event).netns = netns;
        (*event).seq = p.seq;
        (*event).len = p.len;
        (*event).rcv_nxt = p.rcv_nxt;
        (*event).ooo_end = p.ooo_end;
        (*event).gap = p.gap;
        (*event).class = p.class;
        (*event).flags = p.flags;
        (*event)._pad0 = [0; 6];
        (*event).sock_ino = sock_ino;
    }
    entry.submit(submit_flags(ts_ns));
    0
}

/// The segment `tcp_rcv_established` (or, hooked, `tcp_rcv_state_process`: see
/// `state_process.rs`) is processing on this CPU, for the drop program (see
/// `DropArgs::rx_sk_stash`): only on kernels whose `kfree_skb` has no `rx_sk`.
#[repr(C)]
pub struct RxStash {
    pub skb: u64,
    pub sk: u64,
    pub seq: u32,
    pub _pad0: u32,
}

#[map]
pub static RX_STASH: PerCpuArray<RxStash> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn stash_for_drops(skb: u64, sk: u64, seq: u32) {
    if let Some(slot) = RX_STASH.get_ptr_mut(0) {
        // SAFETY: this CPU's slot. A drop program reading it from an interrupt mid-write sees
        // a mismatching (skb, seq) and ignores it.
        unsafe {
            (*slot).skb = skb;
            (*slot).sk = sk;
            (*slot).seq = seq;
        }
    }
}

/// Empties this CPU's stash: the segment it named is no longer being processed.
#[inline(always)]
pub fn clear_stash() {
    if let Some(slot) = RX_STASH.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, as in `stash_for_drops`.
        unsafe { (*slot).skb = 0 };
    }
}

/// What this segment adds to its flow's totals.
#[inline(always)]
fn set_delta(
    delta: &mut ReceiveTotals,
    class: u8,
    gap: u32,
    len: u32,
    out_of_order: bool,
    sock_ino: u64,
) {
    *delta = ReceiveTotals {
        sock_ino,
        out_of_order: out_of_order as u64,
        ..ReceiveTotals::default()
    };
    match class {
        RX_DUPLICATE => {
            delta.duplicate = 1;
            delta.duplicate_bytes = len as u64;
        }
        RX_DUPLICATE_PARTIAL => {
            delta.duplicate_partial = 1;
            delta.duplicate_bytes = gap as u64;
        }
        RX_FILLS_HOLE => {
            delta.fills_hole = 1;
            delta.fills_hole_bytes = len as u64;
        }
        RX_OPENS_HOLE => {
            delta.holes = 1;
            delta.hole_bytes = gap as u64;
        }
        _ => {}
    }
}

/// Adds the delta to the exact per-flow totals (this CPU's slot).
#[inline(always)]
fn add_to_flow_table(key: &FlowKey, delta: &ReceiveTotals) {
    if let Some(totals) = RECEIVE_FLOWS.get_ptr_mut(key) {
        // SAFETY: this CPU's value from the lookup; only this program writes it.
        unsafe { (*totals).add(delta) };
        return;
    }
    if RECEIVE_FLOWS.insert(key, delta, 0).is_err() {
        bump(COUNTER_RECEIVE_TABLE_FULL);
    }
}
