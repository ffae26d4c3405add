//! The socket-state hook (raw tracepoint `inet_sock_set_state`), attached on every kernel:
//! - the end of each handshake whose SYN or SYN-ACK was retransmitted (completed or failed,
//!   `netprobe-ebpf/src/handshake.rs`), on every kernel;
//! - retransmit outcomes: where this kernel's tracepoint reports failed attempts (`err`, Linux
//!   ≥ 6.17), each socket's `tcp_sock.total_retrans` (BTF) tells the attempts the kernel
//!   counted from those it gave up before counting, with this hook for the count each socket
//!   starts from (`netprobe-ebpf/src/outcome.rs`).

use netprobe_common::{SockStateArgs, TraceConfig, OFFSET_ABSENT};

use super::{
    catalogue::{RETRANSMIT_HOOK, SOCK_STATE_HOOK},
    plan::{expect_args, raw_args, HookPlan},
};
use crate::kernel::btf::KernelBtf;

/// What the retransmit hook's detail says where failed attempts are classified by outcome:
/// the reconciliation reads it to know whether this kernel's rows count failures.
pub const OUTCOMES_CLASSIFIED: &str =
    "outcome of failed attempts from the socket's tcp_sock.total_retrans (BTF)";

/// Plans the socket-state hook and the retransmit program's outcome reading, or says why a
/// retransmit's outcome is only what its `err` says on this kernel.
pub(super) fn plan_outcomes(btf: &KernelBtf, config: &mut TraceConfig, plan: &mut HookPlan) {
    if plan.detail_of(&RETRANSMIT_HOOK).is_none() {
        return plan.unavailable(&SOCK_STATE_HOOK, "the retransmit hook is inactive".into());
    }
    let outcome = match plan_state_hook(btf, config) {
        Err(why) => {
            plan.unavailable(&SOCK_STATE_HOOK, why.clone());
            config.retransmit.total_retrans = OFFSET_ABSENT;
            format!("failed attempts are unclassified and handshakes not seen: {why}")
        }
        Ok(()) => {
            let handshakes = "raw tracepoint (arguments sk, oldstate, newstate checked against BTF); the end of each handshake whose SYN or SYN-ACK was retransmitted (SYN_SENT or SYN_RECV → ESTABLISHED or CLOSE)";
            match plan_total_retrans(btf, config) {
                Ok(()) => {
                    plan.want(&SOCK_STATE_HOOK, format!("{handshakes}; each TCP socket's tcp_sock.total_retrans (BTF) when it connects, dropped when it closes"));
                    format!("{OUTCOMES_CLASSIFIED}: counted in RetransSegs (failed_after_counted) or not (aborted)")
                }
                Err(why) => {
                    plan.want(
                        &SOCK_STATE_HOOK,
                        format!("{handshakes}; no retransmit outcomes to classify: {why}"),
                    );
                    config.retransmit.total_retrans = OFFSET_ABSENT;
                    format!("failed attempts are unclassified: {why}")
                }
            }
        }
    };
    if let Some(detail) = plan.detail_of(&RETRANSMIT_HOOK) {
        detail.push_str("; ");
        detail.push_str(&outcome);
    }
}

/// The tracepoint's arguments (checked against its BTF prototype), `sock.sk_protocol` and
/// `inet_sock.inet_sport`.
fn plan_state_hook(btf: &KernelBtf, config: &mut TraceConfig) -> Result<(), String> {
    let args = raw_args(btf, SOCK_STATE_HOOK.tracepoint())?;
    expect_args(SOCK_STATE_HOOK.tracepoint(), &args, &["sock", "int", "int"])?;
    let offset = |strukt: &str, path: &str| btf.offset_of(strukt, path).map_err(|e| e.to_string());
    config.sock_state = SockStateArgs {
        sk: 0,
        oldstate: 1,
        newstate: 2,
        sk_protocol: offset("sock", "sk_protocol")?,
        inet_sport: offset("inet_sock", "inet_sport")?,
        _pad0: 0,
    };
    Ok(())
}

/// Where failed attempts fire the retransmit tracepoint (its `err`, Linux ≥ 6.17), the
/// socket's count that classifies them.
fn plan_total_retrans(btf: &KernelBtf, config: &mut TraceConfig) -> Result<(), String> {
    if config.retransmit.err == OFFSET_ABSENT {
        return Err("this kernel's tcp_retransmit_skb fires only for sent retransmits (no err argument before Linux 6.17): nothing to classify".into());
    }
    config.retransmit.total_retrans = btf
        .offset_of("tcp_sock", "total_retrans")
        .map_err(|e| e.to_string())?;
    Ok(())
}
