//! Retransmit outcomes: where this kernel's tracepoint reports failed attempts (`err`, Linux ≥
//! 6.17), each socket's `tcp_sock.total_retrans` (BTF) tells the attempts the kernel counted
//! from those it gave up before counting, with `sock:inet_sock_set_state` for the count each
//! socket starts from (`netprobe-ebpf/src/outcome.rs`).

use std::path::Path;

use netprobe_common::{TraceConfig, OFFSET_ABSENT};

use super::{
    catalogue::{RETRANSMIT_HOOK, SOCK_STATE_HOOK},
    plan::HookPlan,
};
use crate::kernel::{btf::KernelBtf, tracefs};

/// Plans the socket-state hook and the retransmit program's outcome reading, or says why a
/// retransmit's outcome is only what its `err` says on this kernel.
pub(super) fn plan_outcomes(
    tracefs: &Path,
    btf: &KernelBtf,
    config: &mut TraceConfig,
    plan: &mut HookPlan,
) {
    if plan.detail_of(&RETRANSMIT_HOOK).is_none() {
        return plan.unavailable(&SOCK_STATE_HOOK, "the retransmit hook is inactive".into());
    }
    let outcome = match plan_state_hook(tracefs, btf, config) {
        Ok(()) => {
            plan.want(
                &SOCK_STATE_HOOK,
                "classic tracepoint, offsets from tracefs format; each TCP socket's tcp_sock.total_retrans (BTF) when it connects, dropped when it closes".into(),
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

fn plan_state_hook(
    tracefs: &Path,
    btf: &KernelBtf,
    config: &mut TraceConfig,
) -> Result<(), String> {
    if config.retransmit.err == OFFSET_ABSENT {
        return Err("this kernel's tcp_retransmit_skb fires only for sent retransmits (no err field before Linux 6.17): nothing to classify".into());
    }
    let total_retrans = btf
        .offset_of("tcp_sock", "total_retrans")
        .map_err(|e| e.to_string())?;
    let layout = tracefs::read_format(
        tracefs,
        SOCK_STATE_HOOK.category(),
        SOCK_STATE_HOOK.tracepoint(),
    )
    .and_then(|f| f.sock_state_layout())
    .map_err(|e| e.to_string())?;
    config.retransmit.total_retrans = total_retrans;
    config.sock_state = layout;
    Ok(())
}
