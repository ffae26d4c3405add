//! Exact retransmit attribution where the kernel lets us hook functions: `tcp_send_loss_probe`
//! (the tail-loss probe) and `tcp_retransmit_timer` (the RTO timer's own retransmit).
//!
//! Each function's entry marks this CPU as "inside it, for socket `sk`", its exit clears the
//! mark; `tcp:tcp_retransmit_skb` fires inside them when they retransmit, and the retransmit
//! program then names the kind exactly instead of inferring it from the congestion state and
//! the softirq. Both run with bottom halves disabled (timer softirq, or `tcp_release_cb` under
//! the socket spinlock), so entry, retransmit and exit stay on one CPU.
//!
//! Two ways to hook, the best the kernel allows: fentry/fexit (BPF trampolines, cheapest),
//! else kprobe/kretprobe; the agent attaches one pair per function and says which. Kernels
//! with neither (this project's CI host) keep the tracepoint-only inference.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use netprobe_common::{KIND_RTO, KIND_TLP};

/// The timer function this CPU is running now, if one of ours is.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TimerContext {
    /// The socket it runs for (0: none).
    pub sk: u64,
    /// `KIND_TLP` or `KIND_RTO`.
    pub kind: u32,
    pub _pad0: u32,
}

#[map]
static TIMER_CONTEXT: PerCpuArray<TimerContext> = PerCpuArray::with_max_entries(1, 0);

/// Written by the agent once both programs of a function hook are attached: slot 0 for the
/// probe ([`TIMER_KIND_TLP`]), 1 for the RTO timer ([`TIMER_KIND_RTO`]), 2 for
/// `tcp_rcv_state_process` (`state_process.rs`, which needs no flag). Runtime, not a load-time
/// setting: whether a hook attaches is known only after the object is loaded.
#[map]
pub static HOOKED_FUNCTIONS: Array<u32> = Array::with_max_entries(3, 0);

pub const TIMER_KIND_TLP: u32 = 0;
pub const TIMER_KIND_RTO: u32 = 1;

#[inline(always)]
fn enter(sk: u64, kind: u32) {
    if let Some(slot) = TIMER_CONTEXT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; entry and exit of one call run on this CPU.
        unsafe {
            (*slot).sk = sk;
            (*slot).kind = kind;
        }
    }
}

#[inline(always)]
fn exit() {
    if let Some(slot) = TIMER_CONTEXT.get_ptr_mut(0) {
        // SAFETY: as in `enter`.
        unsafe { (*slot).sk = 0 };
    }
}

/// Whether the hook for `which` (`TIMER_KIND_*`) is attached.
#[inline(always)]
pub fn hooked(which: u32) -> bool {
    HOOKED_FUNCTIONS.get(which).is_some_and(|v| *v != 0)
}

/// The kind of a retransmit of `sk` sent from inside one of the hooked functions. A mark is
/// trusted only while its pair is attached (the agent sets the flag once both are), so an
/// entry that fired during attaching, before its exit could clear it, is ignored.
#[inline(always)]
pub fn kind_inside(sk: u64) -> Option<u8> {
    let slot = TIMER_CONTEXT.get(0)?;
    if slot.sk != sk || sk == 0 {
        return None;
    }
    let which = if slot.kind == KIND_TLP as u32 {
        TIMER_KIND_TLP
    } else {
        TIMER_KIND_RTO
    };
    hooked(which).then_some(slot.kind as u8)
}

#[fentry(function = "tcp_send_loss_probe")]
pub fn netprobe_tlp_in(ctx: FEntryContext) -> i32 {
    enter(ctx.arg::<u64>(0), KIND_TLP as u32);
    0
}

#[fexit(function = "tcp_send_loss_probe")]
pub fn netprobe_tlp_out(_ctx: FExitContext) -> i32 {
    exit();
    0
}

#[fentry(function = "tcp_retransmit_timer")]
pub fn netprobe_rto_in(ctx: FEntryContext) -> i32 {
    enter(ctx.arg::<u64>(0), KIND_RTO as u32);
    0
}

#[fexit(function = "tcp_retransmit_timer")]
pub fn netprobe_rto_out(_ctx: FExitContext) -> i32 {
    exit();
    0
}

#[kprobe]
pub fn netprobe_tlp_kin(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0).unwrap_or(0), KIND_TLP as u32);
    0
}

#[kretprobe]
pub fn netprobe_tlp_kout(_ctx: RetProbeContext) -> u32 {
    exit();
    0
}

#[kprobe]
pub fn netprobe_rto_kin(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0).unwrap_or(0), KIND_RTO as u32);
    0
}

#[kretprobe]
pub fn netprobe_rto_kout(_ctx: RetProbeContext) -> u32 {
    exit();
    0
}
