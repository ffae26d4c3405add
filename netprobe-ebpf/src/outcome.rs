//! What became of a retransmit attempt (Linux ≥ 6.17, where `tcp:tcp_retransmit_skb` also fires
//! for failed attempts, with `err`); the same socket-state program also sees, on every
//! kernel, the end of a handshake whose SYN or SYN-ACK was retransmitted (`handshake.rs`).
//!
//! `__tcp_retransmit_skb` gives up some attempts before it counts anything (`-EBUSY` still in the
//! host queue, `-EAGAIN` zero window, `-ENOMEM`, `-EHOSTUNREACH` from `rebuild_header`), and
//! counts others in RetransSegs (and the socket's `total_retrans`) before `tcp_transmit_skb`
//! fails (`-EPERM` from netfilter, `NET_XMIT_DROP` from a qdisc, `-ENOBUFS`, a failed route).
//! The same errno can come from either stage, so the errno does not tell them apart: the
//! socket's own `tp->total_retrans` does. It changes only inside `__tcp_retransmit_skb`, whose
//! every attempt fires the tracepoint, so the value at the previous attempt (or when the
//! socket was connected) is its value before this one: if it grew by this skb's segments, the
//! kernel counted them.
//!
//! The value before the first attempt comes from the raw tracepoint `inet_sock_set_state`
//! (a raw one, for the reason `tcp.rs` gives), which fires when
//! a socket starts connecting (SYN_SENT) or is established; the entry goes when it closes. A
//! socket that was already connected when the trace began has no value until its first
//! attempt: a first attempt that fails is then unclassified, unless nothing was ever counted.

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use netprobe_common::{
    vocab::{ip_proto, TcpState},
    OFFSET_ABSENT, OUTCOME_ABORTED, OUTCOME_FAILED_COUNTED, OUTCOME_SENT, OUTCOME_UNCLASSIFIED,
};

use crate::handshake;
use crate::kernel::{arg, netns_matches, read, sock_netns};
use crate::maps::setting;

/// `tcp_sock.total_retrans` of each socket as of its last attempt (or its connecting), by
/// socket address. LRU: a socket whose entry was evicted has its next failure unclassified.
#[map]
static SOCKET_RETRANS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

const TCP_ESTABLISHED: i32 = TcpState::Established.raw() as i32;
const TCP_SYN_SENT: i32 = TcpState::SynSent.raw() as i32;
const TCP_CLOSE: i32 = TcpState::Close.raw() as i32;

/// The `OUTCOME_*` of the attempt the tracepoint reports for `sk`, `err` and `segs`, with the
/// socket's `total_retrans` read `now`, kept for its next attempt.
#[inline(always)]
pub fn outcome(sk: u64, err: i32, segs: u16, now: Option<u32>) -> u8 {
    // Absent before 6.17 (only successful retransmits fire the tracepoint): nothing is kept,
    // and an unreadable count leaves a failure unclassified.
    let Some(now) = now else {
        return if err == 0 {
            OUTCOME_SENT
        } else {
            OUTCOME_UNCLASSIFIED
        };
    };
    // SAFETY: a copy of the value is taken at once; the entry is per socket, and the
    // socket's lock serialises its attempts.
    let before = unsafe { SOCKET_RETRANS.get(&sk) }.copied();
    let _ = SOCKET_RETRANS.insert(&sk, &now, 0);
    if err == 0 {
        return OUTCOME_SENT;
    }
    match before {
        Some(before) => match now.wrapping_sub(before) {
            0 => OUTCOME_ABORTED,
            grown if grown == segs as u32 => OUTCOME_FAILED_COUNTED,
            // An attempt of this socket was missed in between: what this one added is unknown.
            _ => OUTCOME_UNCLASSIFIED,
        },
        // Never counted anything: this attempt was not counted either.
        None if now == 0 => OUTCOME_ABORTED,
        None => OUTCOME_UNCLASSIFIED,
    }
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn netprobe_sock_state(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_state(&ctx);
    0
}

/// The end of a handshake that retransmitted (`handshake.rs`, every kernel), and each TCP
/// socket's count from its connecting to its closing (where failed attempts are traced).
fn try_sock_state(ctx: &RawTracePointContext) -> Result<(), i32> {
    let sk = arg::<0>(ctx, setting!(sock_state.sk))?;
    let protocol: u16 = read(sk, setting!(sock_state.sk_protocol))?;
    if protocol != ip_proto::TCP as u16 {
        return Ok(());
    }
    // Int arguments: the low 32 bits of their u64 slots.
    let oldstate = arg::<1>(ctx, setting!(sock_state.oldstate))? as i32;
    let newstate = arg::<2>(ctx, setting!(sock_state.newstate))? as i32;
    handshake::record(sk, oldstate, newstate);
    // Before 6.17 nothing is classified: no count to keep (a load-time constant, pruned).
    if setting!(retransmit.total_retrans) == OFFSET_ABSENT {
        return Ok(());
    }
    match newstate {
        TCP_CLOSE => {
            let _ = SOCKET_RETRANS.remove(&sk);
        }
        // A listener's child gets its count (the SYN-ACK retransmits) after it is created in
        // SYN_RECV, so it is read when the child is established.
        TCP_SYN_SENT | TCP_ESTABLISHED if netns_matches(sock_netns(sk)) => {
            let now: u32 = read(sk, setting!(retransmit.total_retrans))?;
            let _ = SOCKET_RETRANS.insert(&sk, &now, 0);
        }
        _ => {}
    }
    Ok(())
}
