//! The retransmit hook on a BTF-typed tracepoint (`tp_btf/tcp_retransmit_skb`), where the
//! kernel allows one: the raw tracepoint's work (`tcp.rs`), but the socket, its `tcp_sock`
//! (through `bpf_skc_to_tcp_sock`, a cast without copy) and the skb are read by direct loads
//! the verifier checks against the kernel's BTF instead of some twenty helper calls. Only the
//! socket's inode stays a helper read (reached from `struct socket` by container_of, beyond
//! what the verifier types). From the kind and outcome on, both twins run the same stages.
//! Pointers are handled as `btf.rs` says.

use aya_ebpf::{
    cty::c_void, helpers::bpf_skc_to_tcp_sock, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netprobe_common::OFFSET_ABSENT;

use crate::btf::{btf_arg, is_set, launder, load, net_inum, Loads};
use crate::kernel::{flow_matches, netns_matches, read, sock_flow_by};
use crate::maps::setting;
use crate::tcp::{netprobe_rtx_classify, with_pending, Pending, HAS_CA_STATE, HAS_TOTAL_RETRANS};

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn netprobe_rtx_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_retransmit_btf(&ctx);
    0
}

fn try_retransmit_btf(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let sk = btf_arg::<0>(ctx, setting!(retransmit.sk))?;
    let skb = btf_arg::<1>(ctx, setting!(retransmit.skb))?;
    // An int argument: the low 32 bits of its u64 slot.
    let err = btf_arg::<2>(ctx, setting!(retransmit.err)).map_or(0, |e| e as i32);
    // Each tested as it is: some kernels type tracepoint arguments as possibly NULL.
    if sk == 0 {
        return Ok(());
    }
    if skb == 0 {
        return Ok(());
    }
    with_pending(|p, level| {
        if describe(p, sk, skb, err) != 0 {
            return 1;
        }
        netprobe_rtx_classify(level)
    })
}

/// The raw twin's stage two (`netprobe_rtx_describe`) by direct loads: it needs the
/// BTF-typed pointers, which a global function's arguments cannot carry. Returns nonzero when
/// filtered out.
#[inline(always)]
fn describe(p: &mut Pending, sk: u64, skb: u64, err: i32) -> i32 {
    let family: u16 = load(sk, setting!(sock.family));
    if sock_flow_by(&Loads, sk, family, &mut p.flow).is_err() || !flow_matches(&p.flow, true) {
        return 1;
    }
    p.netns = net_inum(load(sk, setting!(kernel.sk_net)));
    if !netns_matches(p.netns) {
        return 1;
    }
    p.err = err;
    p.state = load(sk, setting!(kernel.sk_state));
    // The skb on the retransmit queue still holds TCP's control block in skb->cb.
    let cb = setting!(kernel.skb_cb);
    p.segs = load(skb, cb + setting!(kernel.tcb_gso_segs));
    p.seq = load(skb, cb + setting!(kernel.tcb_seq));
    p.bytes = load(skb, setting!(kernel.skb_len));
    p.sock_ino = sock_inode(sk, &mut p.sock_ino);
    p.has = 0;
    p.dsack_dups = 0;
    p.reord_seen = 0;
    // SAFETY: a BTF-typed socket from the tracepoint; the helper returns NULL unless it is a
    // full TCP socket (tcp_retransmit_skb's always is).
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
    // Compared as it is: the verifier needs this test to know `tp` is not NULL.
    if tp != 0 {
        tcp_sock_counts(p, tp);
    }
    // Kept as plain numbers: the shared stages compare them and use them as map keys.
    p.sk = launder(&mut p.sk, sk);
    p.skb = launder(&mut p.skb, skb);
    0
}

/// The congestion state and the counts that live in `tcp_sock` (and its
/// `inet_connection_sock`), beyond the `struct sock` the tracepoint's argument is typed as.
#[inline(always)]
fn tcp_sock_counts(p: &mut Pending, tp: u64) {
    let (at, shift, bits) = (
        setting!(kind.ca_state),
        setting!(kind.ca_state_shift),
        setting!(kind.ca_state_bits),
    );
    if at != OFFSET_ABSENT {
        // The verifier allows a load of a bitfield only through whole bytes that hold it and
        // no other member beyond: one byte where it fits in one, as the raw twin's two
        // otherwise (the shift and width are load-time constants).
        p.ca_state = if shift + bits <= 8 {
            load::<u8>(tp, at) as u16
        } else {
            load(tp, at)
        };
        p.has |= HAS_CA_STATE;
    }
    let total_retrans = setting!(retransmit.total_retrans);
    if total_retrans != OFFSET_ABSENT {
        p.total_retrans = load(tp, total_retrans);
        p.has |= HAS_TOTAL_RETRANS;
    }
    p.dsack_dups = load(tp, setting!(spurious.dsack_dups));
    p.reord_seen = load(tp, setting!(spurious.reord_seen));
}

/// `kernel::sock_inode` with the `struct socket *` by a direct load; its inode, reached by
/// container_of, stays a helper read (`slot`: map memory to launder the pointer through).
#[inline(always)]
fn sock_inode(sk: u64, slot: &mut u64) -> u64 {
    let socket: u64 = load(sk, setting!(kernel.sk_socket));
    if !is_set(socket) {
        return 0;
    }
    read::<u64>(launder(slot, socket), setting!(kernel.socket_ino)).unwrap_or(0)
}
