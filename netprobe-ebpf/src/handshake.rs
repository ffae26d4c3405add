//! Whether a flow that retransmitted its SYN (or SYN-ACK) completed its handshake: the end of
//! the handshake is a state change of its socket, seen by the raw tracepoint
//! `inet_sock_set_state` (`outcome.rs` owns the program).
//!
//! Only flows that retransmitted a SYN or SYN-ACK matter, and each of them already has an entry
//! in `RETRANSMIT_FLOWS` (the retransmit came first): the handshake's end is two counters in
//! that entry rather than a map of its own. No second table to size, fill or evict, nothing
//! written for the many connections that never retransmitted (their lookup misses), and the
//! per-CPU value is written like the retransmit program's: this CPU's slot, summed by the
//! agent. A flow the table had no room for is already counted (`flow_table_full`) and has
//! neither.

use netprobe_common::{vocab::TcpState, Flow, FlowKey};

use crate::kernel::{read, sock_family, sock_flow, sock_netns};
use crate::maps::{setting, RETRANSMIT_FLOWS};

const TCP_SYN_SENT: i32 = TcpState::SynSent.raw() as i32;
const TCP_SYN_RECV: i32 = TcpState::SynRecv.raw() as i32;
const TCP_ESTABLISHED: i32 = TcpState::Established.raw() as i32;
const TCP_CLOSE: i32 = TcpState::Close.raw() as i32;

/// Counts the end of a handshake when `oldstate → newstate` is one: the client's SYN_SENT (or
/// the server's child's SYN_RECV) to ESTABLISHED (completed) or to CLOSE (failed). Every other
/// transition returns at once, before anything is read.
#[inline(always)]
pub fn record(sk: u64, oldstate: i32, newstate: i32) {
    if oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV {
        return;
    }
    let completed = match newstate {
        TCP_ESTABLISHED => 1,
        TCP_CLOSE => 0,
        _ => return,
    };
    netprobe_handshake_end(sk, completed);
}

/// The lookup and the count, a global function so that the verifier checks it once, on its
/// own. Returns nonzero when the flow has no entry (it never retransmitted a SYN or SYN-ACK
/// since the trace began).
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_handshake_end(sk: u64, completed: u32) -> i32 {
    let mut key = FlowKey {
        flow: Flow::default(),
        netns: sock_netns(sk),
        _pad0: 0,
    };
    if sock_flow(sk, sock_family(sk), &mut key.flow).is_err() {
        return 1;
    }
    // → CLOSE fires after inet_put_port cleared skc_num; inet_sport still holds the port.
    if key.flow.sport == 0 {
        let Ok(sport) = read::<u16>(sk, setting!(sock_state.inet_sport)) else {
            return 1;
        };
        key.flow.sport = u16::from_be(sport);
    }
    let Some(totals) = RETRANSMIT_FLOWS.get_ptr_mut(&key) else {
        return 1;
    };
    // SAFETY: this CPU's value from the lookup. The retransmit programs write other fields of
    // it; a handshake ends once per socket, under the socket's lock.
    unsafe {
        if completed != 0 {
            (*totals).handshakes_completed += 1;
        } else {
            (*totals).handshakes_failed += 1;
        }
    }
    0
}
