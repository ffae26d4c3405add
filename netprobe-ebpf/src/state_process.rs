//! The socket of a segment TCP drops outside ESTABLISHED, on kernels whose `kfree_skb` has drop
//! reasons but no `rx_sk` (5.17 to 6.2).
//!
//! `tcp_rcv_state_process(sk, skb)` handles each segment of a socket in any state but
//! ESTABLISHED (SYN-RECV, FIN-WAIT, CLOSE-WAIT, CLOSING, LAST-ACK…). Its entry leaves (skb,
//! socket, sequence) in the receive path's stash (`receive::RX_STASH`), as `tcp_probe` does
//! for `tcp_rcv_established`; its exit clears it. A drop of that very skb then names its socket
//! and namespace, although TCP has cleared `skb->dev`: the duplicates arriving after a FIN,
//! which DelayedACKLost counts as it drops them (TCP_OLD_DATA), are seen with their state.
//!
//! fentry/fexit, else kprobe/kretprobe, whichever the kernel allows (the agent attaches one
//! pair and says which), like the timer hooks.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::kernel::read;
use crate::maps::setting;
use crate::receive::{clear_stash, stash_for_drops};

#[inline(always)]
fn enter(sk: u64, skb: u64) {
    let cb = skb + setting!(kernel.skb_cb) as u64;
    if let Ok(seq) = read::<u32>(cb, setting!(kernel.tcb_seq)) {
        stash_for_drops(skb, sk, seq);
    }
}

#[fentry(function = "tcp_rcv_state_process")]
pub fn netprobe_rsp_in(ctx: FEntryContext) -> i32 {
    enter(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

#[fexit(function = "tcp_rcv_state_process")]
pub fn netprobe_rsp_out(_ctx: FExitContext) -> i32 {
    clear_stash();
    0
}

#[kprobe]
pub fn netprobe_rsp_kin(ctx: ProbeContext) -> u32 {
    enter(
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
    );
    0
}

#[kretprobe]
pub fn netprobe_rsp_kout(_ctx: RetProbeContext) -> u32 {
    clear_stash();
    0
}
