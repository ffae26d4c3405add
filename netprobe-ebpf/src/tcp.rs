//! `tcp:tcp_retransmit_skb`: every retransmitted skb, and (Linux ≥ 6.17) every failed attempt.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use netprobe_common::{
    EventHeader, EventKind, Flow, FlowKey, RetransmitEvent, RetransmitTotals, AF_INET,
    COUNTER_FLOW_TABLE_FULL, COUNTER_RETRANSMIT_LOST, COUNTER_RETRANSMIT_SEEN, KIND_FAST,
    KIND_OTHER, KIND_RTO, KIND_SYN, KIND_SYNACK, KIND_TLP, TRIGGER_OTHER, TRIGGER_TIMER,
    TRIGGER_UNKNOWN,
};

use crate::kernel::{field, flow_matches, netns_matches, read, sock_inode, sock_netns};
use crate::maps::{bump, setting, submit_flags, EVENTS, RETRANSMIT_FLOWS};
use crate::softirq::current_softirq;

#[tracepoint]
pub fn netprobe_rtx(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx);
    0
}

fn try_retransmit(ctx: &TracePointContext) -> Result<(), i32> {
    let family: u16 = field(ctx, setting!(retransmit.family))?;
    let mut flow = Flow {
        family,
        sport: field(ctx, setting!(retransmit.sport))?,
        dport: field(ctx, setting!(retransmit.dport))?,
        ..Flow::default()
    };
    if family == AF_INET {
        let saddr: [u8; 4] = field(ctx, setting!(retransmit.saddr))?;
        let daddr: [u8; 4] = field(ctx, setting!(retransmit.daddr))?;
        flow.saddr[..4].copy_from_slice(&saddr);
        flow.daddr[..4].copy_from_slice(&daddr);
    } else {
        flow.saddr = field(ctx, setting!(retransmit.saddr_v6))?;
        flow.daddr = field(ctx, setting!(retransmit.daddr_v6))?;
    }
    let sk: u64 = field(ctx, setting!(retransmit.skaddr))?;
    let netns = sock_netns(sk);
    if !netns_matches(netns) || !flow_matches(&flow, true) {
        return Ok(());
    }

    let err: i32 = field(ctx, setting!(retransmit.err)).unwrap_or(0);
    let skb: u64 = field(ctx, setting!(retransmit.skbaddr))?;
    // The skb on the retransmit queue still holds TCP's control block in skb->cb.
    let cb = skb + setting!(kernel.skb_cb) as u64;
    let segs: u16 = read(cb, setting!(kernel.tcb_gso_segs)).unwrap_or(0);
    let seq: u32 = read(cb, setting!(kernel.tcb_seq)).unwrap_or(0);
    let bytes: u32 = read(skb, setting!(kernel.skb_len)).unwrap_or(0);
    let state: i32 = field(ctx, setting!(retransmit.state)).unwrap_or(0);
    let (kind, trigger) = retransmit_kind(sk, state as u8);
    // tcp_retransmit_skb always has a full socket.
    let sock_ino = sock_inode(sk);

    bump(COUNTER_RETRANSMIT_SEEN);
    let event = Emit {
        flow: &flow,
        netns,
        err,
        seq,
        bytes,
        segs,
        state: state as u8,
        kind,
        trigger,
        sock_ino,
    };
    add_to_flow_table(&event);
    emit(&event);
    Ok(())
}

/// One retransmit event's fields.
struct Emit<'a> {
    flow: &'a Flow,
    netns: u32,
    err: i32,
    seq: u32,
    bytes: u32,
    segs: u16,
    state: u8,
    kind: u8,
    trigger: u8,
    sock_ino: u64,
}

/// Queues a retransmit event, written in place in the ring slot (an 88-byte event built on
/// the stack first would not fit the BPF stack beside the flow-table update).
#[inline(always)]
fn emit(e: &Emit) {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = EVENTS.reserve::<RetransmitEvent>(0) else {
        bump(COUNTER_RETRANSMIT_LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).header = EventHeader {
            kind: EventKind::Retransmit.id(),
            _pad0: 0,
            cpu: bpf_get_smp_processor_id(),
            ts_ns,
        };
        (*event).flow = *e.flow;
        (*event).netns = e.netns;
        (*event).err = e.err;
        (*event).seq = e.seq;
        (*event).bytes = e.bytes;
        (*event).segs = e.segs;
        (*event).state = e.state;
        (*event).kind = e.kind;
        (*event).trigger = e.trigger;
        (*event)._pad1 = [0; 3];
        (*event).sock_ino = e.sock_ino;
    }
    entry.submit(submit_flags(ts_ns));
}

/// `TRIGGER_*` for what this CPU is running now.
#[inline(always)]
fn current_trigger() -> u8 {
    match current_softirq() {
        Some(vec) if vec == setting!(kind.timer_vec) => TRIGGER_TIMER,
        Some(_) => TRIGGER_OTHER,
        // Not in a softirq: process context (socket backlog), unless the hooks are inactive.
        None if setting!(cpu.softirq_vec_arg) != netprobe_common::OFFSET_ABSENT => TRIGGER_OTHER,
        None => TRIGGER_UNKNOWN,
    }
}

const TCP_SYN_SENT: u8 = 2;
/// `enum tcp_ca_state` (include/uapi/linux/tcp.h, user-visible ABI).
const TCP_CA_RECOVERY: u8 = 3;
const TCP_CA_LOSS: u8 = 4;

/// Why this segment is sent again, from what the kernel exposes at the tracepoint:
/// - SYN_SENT: a SYN retransmit;
/// - congestion state Loss: the RTO timer fired (tcp_enter_loss runs before its retransmit,
///   and the slow-start retransmits after it stay in Loss);
/// - Recovery: fast retransmit / recovery (dupACKs, SACK, the RACK reordering timer);
/// - otherwise, from the TIMER softirq: the tail-loss probe (it keeps the state as it is).
///
/// The timer armed *now* (icsk_pending) is deliberately not used: it is the next timer, not
/// the one that fired. Returns (KIND_*, TRIGGER_*).
#[inline(always)]
fn retransmit_kind(sk: u64, state: u8) -> (u8, u8) {
    let trigger = current_trigger();
    if state == TCP_SYN_SENT {
        return (KIND_SYN, trigger);
    }
    // Without the congestion state (not in this kernel's BTF) nothing more can be said.
    let Ok(raw) = read::<u16>(sk, setting!(kind.ca_state)) else {
        return (KIND_OTHER, trigger);
    };
    let bits = setting!(kind.ca_state_bits);
    let ca_state = ((raw >> setting!(kind.ca_state_shift)) & ((1u16 << bits) - 1)) as u8;
    let kind = match ca_state {
        TCP_CA_LOSS => KIND_RTO,
        TCP_CA_RECOVERY => KIND_FAST,
        _ if trigger == TRIGGER_TIMER => KIND_TLP,
        _ => KIND_OTHER,
    };
    (kind, trigger)
}

/// Working space for a flow-table update: key and value live in a per-CPU map slot rather
/// than on the 512-byte BPF stack.
#[repr(C)]
pub struct FlowScratch {
    key: FlowKey,
    delta: RetransmitTotals,
}

#[map]
static FLOW_SCRATCH: PerCpuArray<FlowScratch> = PerCpuArray::with_max_entries(1, 0);

/// Adds this retransmit to the exact per-flow totals (this CPU's slot).
#[inline(always)]
fn add_to_flow_table(e: &Emit) {
    let Some(scratch) = FLOW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let slot = (e.kind as usize) & 7;
    let from_timer = e.trigger == TRIGGER_TIMER;
    // SAFETY: this CPU's scratch slot; the two retransmit programs do not nest on a CPU.
    let (key, delta) = unsafe {
        (*scratch).key = FlowKey {
            flow: *e.flow,
            netns: e.netns,
            _pad0: 0,
        };
        (*scratch).delta = RetransmitTotals {
            sock_ino: e.sock_ino,
            ..RetransmitTotals::default()
        };
        (*scratch).delta.kinds[slot] = 1;
        if from_timer {
            (*scratch).delta.timer_kinds[slot] = 1;
        }
        if e.err == 0 {
            (*scratch).delta.sent = 1;
            (*scratch).delta.segs = e.segs as u64;
            (*scratch).delta.bytes = e.bytes as u64;
            (*scratch).delta.kind_segs[slot] = e.segs as u32;
            if from_timer {
                (*scratch).delta.timer_segs[slot] = e.segs as u32;
            }
        } else {
            (*scratch).delta.failed = 1;
        }
        (&(*scratch).key, &(*scratch).delta)
    };
    if let Some(totals) = RETRANSMIT_FLOWS.get_ptr_mut(key) {
        // Tracepoint programs do not nest on a CPU, and no other CPU writes this slot.
        unsafe {
            (*totals).sent += delta.sent;
            (*totals).failed += delta.failed;
            (*totals).segs += delta.segs;
            (*totals).bytes += delta.bytes;
            (*totals).kinds[slot] += 1;
            (*totals).kind_segs[slot] += delta.kind_segs[slot];
            (*totals).timer_kinds[slot] += delta.timer_kinds[slot];
            (*totals).timer_segs[slot] += delta.timer_segs[slot];
            if e.sock_ino != 0 {
                (*totals).sock_ino = e.sock_ino;
            }
        }
        return;
    }
    // First retransmit of this flow on this CPU. From a program, updating a per-CPU hash
    // writes only this CPU's value and zero-fills the others on creation, so a concurrent
    // insert of the same key by another CPU loses nothing.
    if RETRANSMIT_FLOWS.insert(key, delta, 0).is_err() {
        bump(COUNTER_FLOW_TABLE_FULL);
    }
}

#[tracepoint]
pub fn netprobe_synack(ctx: TracePointContext) -> u32 {
    let _ = try_synack(&ctx);
    0
}

/// `tcp:tcp_retransmit_synack`: fires only when the SYN-ACK went out, which is also when
/// RetransSegs and TCPSynRetrans count it (one segment).
fn try_synack(ctx: &TracePointContext) -> Result<(), i32> {
    let family: u16 = field(ctx, setting!(synack.family))?;
    let mut flow = Flow {
        family,
        sport: field(ctx, setting!(synack.sport))?,
        dport: field(ctx, setting!(synack.dport))?,
        ..Flow::default()
    };
    if family == AF_INET {
        let saddr: [u8; 4] = field(ctx, setting!(synack.saddr))?;
        let daddr: [u8; 4] = field(ctx, setting!(synack.daddr))?;
        flow.saddr[..4].copy_from_slice(&saddr);
        flow.daddr[..4].copy_from_slice(&daddr);
    } else {
        flow.saddr = field(ctx, setting!(synack.saddr_v6))?;
        flow.daddr = field(ctx, setting!(synack.daddr_v6))?;
    }
    // The listener: its namespace, and its owner (the process that will accept()).
    let listener: u64 = field(ctx, setting!(synack.skaddr))?;
    let netns = sock_netns(listener);
    if !netns_matches(netns) || !flow_matches(&flow, true) {
        return Ok(());
    }
    let sock_ino = sock_inode(listener);
    let trigger = current_trigger();
    bump(COUNTER_RETRANSMIT_SEEN);
    let event = Emit {
        flow: &flow,
        netns,
        err: 0,
        seq: 0,
        bytes: 0,
        segs: 1,
        // The request socket is in SYN_RECV (NEW_SYN_RECV in the hash table).
        state: 12,
        kind: KIND_SYNACK,
        trigger,
        sock_ino,
    };
    add_to_flow_table(&event);
    emit(&event);
    Ok(())
}
