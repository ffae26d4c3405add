//! `tcp:tcp_retransmit_skb`: every retransmitted skb, and (Linux ≥ 6.17) every failed attempt.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use netprobe_common::{
    EventHeader, EventKind, Flow, FlowKey, RetransmitEvent, RetransmitTotals, AF_INET,
    COUNTER_FLOW_TABLE_FULL, COUNTER_RETRANSMIT_LOST, COUNTER_RETRANSMIT_SEEN,
};

use crate::kernel::{field, flow_matches, netns_matches, read, sock_inode, sock_netns};
use crate::maps::{bump, setting, submit_flags, EVENTS, RETRANSMIT_FLOWS};

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
    // tcp_retransmit_skb always has a full socket.
    let sock_ino = sock_inode(sk);

    bump(COUNTER_RETRANSMIT_SEEN);
    add_to_flow_table(
        &FlowKey {
            flow,
            netns,
            _pad0: 0,
        },
        err,
        segs,
        bytes,
        sock_ino,
    );

    let ts_ns = unsafe { bpf_ktime_get_ns() };
    match EVENTS.reserve::<RetransmitEvent>(0) {
        Some(mut entry) => {
            entry.write(RetransmitEvent {
                header: EventHeader {
                    kind: EventKind::Retransmit.id(),
                    _pad0: 0,
                    cpu: unsafe { bpf_get_smp_processor_id() },
                    ts_ns,
                },
                flow,
                netns,
                err,
                seq,
                bytes,
                segs,
                state: state as u8,
                _pad0: 0,
                _pad1: 0,
                sock_ino,
            });
            entry.submit(submit_flags(ts_ns));
        }
        None => bump(COUNTER_RETRANSMIT_LOST),
    }
    Ok(())
}

/// Adds this retransmit to the exact per-flow totals (this CPU's slot).
#[inline(always)]
fn add_to_flow_table(key: &FlowKey, err: i32, segs: u16, bytes: u32, sock_ino: u64) {
    let mut delta = RetransmitTotals {
        sock_ino,
        ..RetransmitTotals::default()
    };
    if err == 0 {
        delta.sent = 1;
        delta.segs = segs as u64;
        delta.bytes = bytes as u64;
    } else {
        delta.failed = 1;
    }
    if let Some(totals) = RETRANSMIT_FLOWS.get_ptr_mut(key) {
        // Tracepoint programs do not nest on a CPU, and no other CPU writes this slot.
        unsafe {
            (*totals).sent += delta.sent;
            (*totals).failed += delta.failed;
            (*totals).segs += delta.segs;
            (*totals).bytes += delta.bytes;
            if sock_ino != 0 {
                (*totals).sock_ino = sock_ino;
            }
        }
        return;
    }
    // First retransmit of this flow on this CPU. From a program, updating a per-CPU hash
    // writes only this CPU's value and zero-fills the others on creation, so a concurrent
    // insert of the same key by another CPU loses nothing.
    if RETRANSMIT_FLOWS.insert(key, &delta, 0).is_err() {
        bump(COUNTER_FLOW_TABLE_FULL);
    }
}
