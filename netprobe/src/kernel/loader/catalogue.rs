//! Every hook netprobe knows and the program attached to it: the one place their names are
//! spelled, and what is reported about each.

use serde::Serialize;

/// How a program is attached. Every tracepoint hook is a raw one: the tracepoint's own
/// arguments, checked against BTF, and a per-program guard whose misses the kernel counts
/// (a classic tracepoint's program can be skipped silently; see `netprobe-ebpf/src/tcp.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttachKind {
    RawTracepoint,
    /// A BTF-typed tracepoint (`tp_btf`): direct loads from its typed arguments.
    BtfTracepoint,
}

impl AttachKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            AttachKind::RawTracepoint => "raw_tracepoint",
            AttachKind::BtfTracepoint => "tp_btf",
        }
    }
}

/// A tracepoint hook and the program attached to it.
pub struct HookSpec {
    /// `category:tracepoint`, as reported in `hooks` (`tcp:tcp_retransmit_skb`).
    pub id: &'static str,
    /// BPF program name (as `bpftool prog` shows it, and `kernel_skipped` names it).
    pub program: &'static str,
    pub(super) attach: AttachKind,
}

impl HookSpec {
    /// The tracepoint's subsystem (`tcp`).
    pub fn category(&self) -> &'static str {
        self.id.split_once(':').map_or("", |(category, _)| category)
    }

    /// The tracepoint's name (`tcp_retransmit_skb`), which a raw tracepoint attaches by.
    pub fn tracepoint(&self) -> &'static str {
        self.id.split_once(':').map_or(self.id, |(_, name)| name)
    }

    /// The status of a hook that is not attached, and why.
    pub(super) fn inactive(&self, why: String) -> HookStatus {
        HookStatus {
            hook: self.id.to_string(),
            attach: self.attach.name(),
            program: self.program,
            active: false,
            detail: why,
            verified_insns: None,
            load_ms: None,
        }
    }
}

pub const RETRANSMIT_HOOK: HookSpec = HookSpec {
    id: "tcp:tcp_retransmit_skb",
    program: "netprobe_rtx",
    attach: AttachKind::RawTracepoint,
};
pub const SYNACK_HOOK: HookSpec = HookSpec {
    id: "tcp:tcp_retransmit_synack",
    program: "netprobe_synack",
    attach: AttachKind::RawTracepoint,
};
pub const DROP_HOOK: HookSpec = HookSpec {
    id: "skb:kfree_skb",
    program: "netprobe_drop",
    attach: AttachKind::RawTracepoint,
};
/// The program that counts drops (the summary checks whether the kernel skipped it; its
/// BTF-typed twin's name begins the same).
pub const DROP_PROGRAM: &str = DROP_HOOK.program;
/// The drop hook where the kernel allows BTF-typed tracepoints (`drop_btf.rs`): kernel
/// objects read with direct loads instead of helpers. [`DROP_HOOK`] where it is refused.
pub const DROP_BTF_HOOK: HookSpec = HookSpec {
    id: "skb:kfree_skb",
    program: "netprobe_drop_btf",
    attach: AttachKind::BtfTracepoint,
};
/// The NAPI poll hook on a BTF-typed tracepoint (`softirq.rs`): the device's name by direct
/// loads. [`NAPI_HOOK`] where it is refused.
pub const NAPI_BTF_HOOK: HookSpec = HookSpec {
    id: "napi:napi_poll",
    program: "netprobe_napi_btf",
    attach: AttachKind::BtfTracepoint,
};

/// The receive hook on a BTF-typed tracepoint (`receive.rs`): the segment's sequence range
/// and the socket's receive state by direct loads. [`RECEIVE_HOOK`] where it is refused.
pub const RECEIVE_BTF_HOOK: HookSpec = HookSpec {
    id: "tcp:tcp_probe",
    program: "netprobe_rcv_btf",
    attach: AttachKind::BtfTracepoint,
};

/// The retransmit hook on a BTF-typed tracepoint (`tcp_btf.rs`): the socket, its `tcp_sock`
/// and the skb by direct loads. [`RETRANSMIT_HOOK`] where it is refused.
pub const RETRANSMIT_BTF_HOOK: HookSpec = HookSpec {
    id: "tcp:tcp_retransmit_skb",
    program: "netprobe_rtx_btf",
    attach: AttachKind::BtfTracepoint,
};

/// Each BTF-typed hook and the raw one it falls back to: the same work, the same maps.
pub const BTF_TWINS: [(&HookSpec, &HookSpec); 4] = [
    (&RETRANSMIT_BTF_HOOK, &RETRANSMIT_HOOK),
    (&DROP_BTF_HOOK, &DROP_HOOK),
    (&NAPI_BTF_HOOK, &NAPI_HOOK),
    (&RECEIVE_BTF_HOOK, &RECEIVE_HOOK),
];

/// The hook to load instead when `spec` is refused.
pub(super) fn fallback_of(spec: &HookSpec) -> Option<&'static HookSpec> {
    BTF_TWINS
        .iter()
        .find(|(btf, _)| btf.program == spec.program)
        .map(|(_, raw)| *raw)
}

/// Whether the program `attached` does `program`'s work: itself, or its BTF-typed twin.
pub(super) fn does_the_work_of(attached: &str, program: &str) -> bool {
    attached == program
        || BTF_TWINS
            .iter()
            .any(|(btf, raw)| btf.program == attached && raw.program == program)
}

pub const RECEIVE_HOOK: HookSpec = HookSpec {
    id: "tcp:tcp_probe",
    program: "netprobe_rcv",
    attach: AttachKind::RawTracepoint,
};
pub const SOFTIRQ_ENTRY_HOOK: HookSpec = HookSpec {
    id: "irq:softirq_entry",
    program: "netprobe_sirq_in",
    attach: AttachKind::RawTracepoint,
};
pub const SOFTIRQ_EXIT_HOOK: HookSpec = HookSpec {
    id: "irq:softirq_exit",
    program: "netprobe_sirq_out",
    attach: AttachKind::RawTracepoint,
};
pub const NAPI_HOOK: HookSpec = HookSpec {
    id: "napi:napi_poll",
    program: "netprobe_napi",
    attach: AttachKind::RawTracepoint,
};

/// Each TCP socket's retransmit count when it connects and closes: the baseline that tells a
/// failed retransmit the kernel counted from one it did not (`netprobe-ebpf/src/outcome.rs`).
pub const SOCK_STATE_HOOK: HookSpec = HookSpec {
    id: "sock:inet_sock_set_state",
    program: "netprobe_sock_state",
    attach: AttachKind::RawTracepoint,
};

pub const TRACEPOINT_HOOKS: [&HookSpec; 8] = [
    &RETRANSMIT_HOOK,
    &SOCK_STATE_HOOK,
    &SYNACK_HOOK,
    &DROP_HOOK,
    &RECEIVE_HOOK,
    &SOFTIRQ_ENTRY_HOOK,
    &SOFTIRQ_EXIT_HOOK,
    &NAPI_HOOK,
];

/// A kernel function hooked on entry and exit (`netprobe-ebpf/src/timers.rs`), by fentry/fexit
/// or kprobe/kretprobe, whichever the kernel allows: one program of each.
pub struct FunctionHook {
    /// `function:<kernel function>`, as reported in `hooks`.
    pub id: &'static str,
    /// What the names of its four programs start with (`kernel_skipped` names one of them).
    pub program_prefix: &'static str,
    /// `HOOKED_FUNCTIONS` slot set once the pair is attached (the retransmit program checks
    /// the timer functions').
    pub(crate) slot: u32,
    pub(crate) fentry: &'static str,
    pub(crate) fexit: &'static str,
    pub(crate) kprobe: &'static str,
    pub(crate) kretprobe: &'static str,
    /// The program whose events it refines: hooked only when that one is attached.
    pub refines: &'static str,
    /// What becomes exact when it is hooked.
    pub(crate) gives: &'static str,
    /// What is so when it cannot be hooked.
    pub(crate) without: &'static str,
}

impl FunctionHook {
    /// The kernel function (`tcp_send_loss_probe`).
    pub fn function(&self) -> &'static str {
        self.id.split_once(':').map_or(self.id, |(_, name)| name)
    }

    /// Its programs: entry and exit of each attach method.
    pub(crate) fn programs(&self) -> [&'static str; 4] {
        [self.fentry, self.fexit, self.kprobe, self.kretprobe]
    }
}

pub const LOSS_PROBE_HOOK: FunctionHook = FunctionHook {
    id: "function:tcp_send_loss_probe",
    program_prefix: "netprobe_tlp",
    slot: 0,
    fentry: "netprobe_tlp_in",
    fexit: "netprobe_tlp_out",
    kprobe: "netprobe_tlp_kin",
    kretprobe: "netprobe_tlp_kout",
    refines: RETRANSMIT_HOOK.program,
    gives: "retransmits sent by the tail-loss probe are kind tlp, exactly; no other is",
    without: "retransmit kinds are inferred from the congestion state and the softirq",
};
pub const RTO_TIMER_HOOK: FunctionHook = FunctionHook {
    id: "function:tcp_retransmit_timer",
    program_prefix: "netprobe_rto",
    slot: 1,
    fentry: "netprobe_rto_in",
    fexit: "netprobe_rto_out",
    kprobe: "netprobe_rto_kin",
    kretprobe: "netprobe_rto_kout",
    refines: RETRANSMIT_HOOK.program,
    gives: "the RTO timer's own retransmits are kind rto with trigger timer, exactly",
    without: "retransmit kinds are inferred from the congestion state and the softirq",
};
/// Only on kernels with drop reasons but no `rx_sk` (`netprobe-ebpf/src/state_process.rs`).
pub const STATE_PROCESS_HOOK: FunctionHook = FunctionHook {
    id: "function:tcp_rcv_state_process",
    program_prefix: "netprobe_rsp",
    slot: 2,
    fentry: "netprobe_rsp_in",
    fexit: "netprobe_rsp_out",
    kprobe: "netprobe_rsp_kin",
    kretprobe: "netprobe_rsp_kout",
    refines: DROP_HOOK.program,
    gives: "segments TCP drops outside ESTABLISHED (SYN-RECV, FIN-WAIT, CLOSE-WAIT, LAST-ACK…) name their socket and namespace: duplicates after a FIN are counted",
    without: "segments TCP drops outside ESTABLISHED name no socket: duplicates after a FIN are not counted",
};

pub const FUNCTION_HOOKS: [&FunctionHook; 3] =
    [&LOSS_PROBE_HOOK, &RTO_TIMER_HOOK, &STATE_PROCESS_HOOK];

/// Every program netprobe loads (for statistics and recursion counts).
pub fn program_names() -> impl Iterator<Item = &'static str> {
    TRACEPOINT_HOOKS
        .iter()
        .map(|spec| spec.program)
        .chain(BTF_TWINS.iter().map(|(btf, _)| btf.program))
        .chain(FUNCTION_HOOKS.iter().flat_map(|hook| hook.programs()))
}

/// What happened to one hook, as reported to the user.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HookStatus {
    /// `category:name` of the tracepoint, or `function:<name>` of a function hook.
    pub hook: String,
    /// How it is attached.
    pub attach: &'static str,
    /// BPF program name (as `bpftool prog` shows it).
    pub program: &'static str,
    pub active: bool,
    /// Why this hook and attach type, or why it is inactive.
    pub detail: String,
    /// Instructions the verifier processed for this program (`bpf_prog_info.verified_insns`,
    /// Linux ≥ 5.16; absent before, or when the program was not loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    /// Wall time of this program's load (verification included) and attach, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names users, scripts and the integration tests see (`hooks[].hook`,
    /// `hooks[].program`, `kernel_skipped`, `bpftool prog`): changing one is a contract change.
    #[test]
    fn hook_ids_and_program_names_are_the_reported_ones() {
        let tracepoints: Vec<(&str, &str, &str, &str)> = TRACEPOINT_HOOKS
            .iter()
            .map(|h| (h.id, h.category(), h.tracepoint(), h.program))
            .collect();
        assert_eq!(
            tracepoints,
            [
                (
                    "tcp:tcp_retransmit_skb",
                    "tcp",
                    "tcp_retransmit_skb",
                    "netprobe_rtx"
                ),
                (
                    "sock:inet_sock_set_state",
                    "sock",
                    "inet_sock_set_state",
                    "netprobe_sock_state"
                ),
                (
                    "tcp:tcp_retransmit_synack",
                    "tcp",
                    "tcp_retransmit_synack",
                    "netprobe_synack"
                ),
                ("skb:kfree_skb", "skb", "kfree_skb", "netprobe_drop"),
                ("tcp:tcp_probe", "tcp", "tcp_probe", "netprobe_rcv"),
                (
                    "irq:softirq_entry",
                    "irq",
                    "softirq_entry",
                    "netprobe_sirq_in"
                ),
                (
                    "irq:softirq_exit",
                    "irq",
                    "softirq_exit",
                    "netprobe_sirq_out"
                ),
                ("napi:napi_poll", "napi", "napi_poll", "netprobe_napi"),
            ]
        );
        let functions: Vec<(&str, &str)> = FUNCTION_HOOKS
            .iter()
            .map(|h| (h.id, h.function()))
            .collect();
        assert_eq!(
            functions,
            [
                ("function:tcp_send_loss_probe", "tcp_send_loss_probe"),
                ("function:tcp_retransmit_timer", "tcp_retransmit_timer"),
                ("function:tcp_rcv_state_process", "tcp_rcv_state_process"),
            ]
        );
        assert_eq!(DROP_PROGRAM, "netprobe_drop");
        let twins: Vec<(&str, &str, &str)> = BTF_TWINS
            .iter()
            .map(|(btf, raw)| (btf.id, btf.program, raw.program))
            .collect();
        assert_eq!(
            twins,
            [
                ("tcp:tcp_retransmit_skb", "netprobe_rtx_btf", "netprobe_rtx"),
                ("skb:kfree_skb", "netprobe_drop_btf", "netprobe_drop"),
                ("napi:napi_poll", "netprobe_napi_btf", "netprobe_napi"),
                ("tcp:tcp_probe", "netprobe_rcv_btf", "netprobe_rcv"),
            ]
        );
        assert!(BTF_TWINS
            .iter()
            .all(|(btf, raw)| btf.id == raw.id && btf.attach == AttachKind::BtfTracepoint));
    }

    /// Rows fed by a function hook match `kernel_skipped` entries by prefix: every program of
    /// the hook must carry it, and no other hook's program may.
    #[test]
    fn function_hook_programs_share_their_prefix() {
        for hook in FUNCTION_HOOKS {
            for program in hook.programs() {
                assert!(program.starts_with(hook.program_prefix), "{program}");
            }
            let others = program_names().filter(|p| p.starts_with(hook.program_prefix));
            assert_eq!(others.count(), 4, "{}", hook.program_prefix);
        }
    }

    #[test]
    fn every_program_is_named_once() {
        let mut names: Vec<&str> = program_names().collect();
        assert_eq!(names.len(), 12 + 3 * 4);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 12 + 3 * 4, "a program name is used twice");
        assert!(names.iter().all(|n| n.starts_with("netprobe_")));
    }

    #[test]
    fn an_inactive_hook_reports_its_id_program_and_why() {
        let status = NAPI_HOOK.inactive("turned off (--without-cpu-hooks)".into());
        assert_eq!(
            (
                status.hook.as_str(),
                status.attach,
                status.program,
                status.active
            ),
            ("napi:napi_poll", "raw_tracepoint", "netprobe_napi", false)
        );
        assert_eq!(status.detail, "turned off (--without-cpu-hooks)");
        assert_eq!((status.verified_insns, status.load_ms), (None, None));
    }
}
