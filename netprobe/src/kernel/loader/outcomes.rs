//! Retransmit outcomes: where this kernel's tracepoint reports failed attempts (`err`, Linux ≥
//! 6.17), each socket's `tcp_sock.total_retrans` (BTF) tells the attempts the kernel counted
//! from those it gave up before counting, with the raw tracepoint `inet_sock_set_state` for
//! the count each socket starts from (`netprobe-ebpf/src/outcome.rs`).

use netprobe_common::{SockStateArgs, TraceConfig, OFFSET_ABSENT};

use super::{
    catalogue::{RETRANSMIT_HOOK, SOCK_STATE_HOOK},
    plan::{expect_args, raw_args, HookPlan},
};
use crate::kernel::btf::KernelBtf;

/// Plans the socket-state hook and the retransmit program's outcome reading, or says why a
/// retransmit's outcome is only what its `err` says on this kernel.
pub(super) fn plan_outcomes(btf: &KernelBtf, config: &mut TraceConfig, plan: &mut HookPlan) {
    if plan.detail_of(&RETRANSMIT_HOOK).is_none() {
        return plan.unavailable(&SOCK_STATE_HOOK, "the retransmit hook is inactive".into());
    }
    let outcome = match plan_state_hook(btf, config) {
        Ok(()) => {
            plan.want(
                &SOCK_STATE_HOOK,
                "raw tracepoint (arguments sk, oldstate, newstate checked against BTF); each TCP socket's tcp_sock.total_retrans (BTF) when it connects, dropped when it closes".into(),
            );
            "outcome of failed attempts from the socket's tcp_sock.total_retrans (BTF): counted in RetransSegs (failed_after_counted) or not (aborted)".to_string()
        }
        Err(why) => {
            plan.unavailable(&SOCK_STATE_HOOK, why.clone());
            config.retransmit.total_retrans = OFFSET_ABSENT;
            format!("failed attempts are unclassified: {why}")
        }
    };
    if let Some(detail) = plan.detail_of(&RETRANSMIT_HOOK) {
        detail.push_str("; ");
        detail.push_str(&outcome);
    }
}

fn plan_state_hook(btf: &KernelBtf, config: &mut TraceConfig) -> Result<(), String> {
    if config.retransmit.err == OFFSET_ABSENT {
        return Err("this kernel's tcp_retransmit_skb fires only for sent retransmits (no err argument before Linux 6.17): nothing to classify".into());
    }
    let offset = |strukt: &str, path: &str| btf.offset_of(strukt, path).map_err(|e| e.to_string());
    let total_retrans = offset("tcp_sock", "total_retrans")?;
    let args = raw_args(btf, SOCK_STATE_HOOK.tracepoint())?;
    expect_args(SOCK_STATE_HOOK.tracepoint(), &args, &["sock", "int", "int"])?;
    config.sock_state = SockStateArgs {
        sk: 0,
        newstate: 2,
        sk_protocol: offset("sock", "sk_protocol")?,
        _pad0: 0,
    };
    config.retransmit.total_retrans = total_retrans;
    Ok(())
}
