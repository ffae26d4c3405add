//! Every hook netprobe knows and the program attached to it: the one place their names are
//! spelled, and what is reported about each.

use serde::Serialize;

use crate::kernel::timer_hooks;

/// How a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttachKind {
    /// Classic tracepoint: a record whose layout the tracefs `format` file describes.
    Tracepoint,
    /// Raw tracepoint: the tracepoint's own arguments, checked against BTF.
    RawTracepoint,
}

impl AttachKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            AttachKind::Tracepoint => "tracepoint",
            AttachKind::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// A hook netprobe knows about.
pub struct HookSpec {
    pub category: &'static str,
    pub name: &'static str,
    pub program: &'static str,
    pub(super) attach: AttachKind,
}

pub const RETRANSMIT_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_retransmit_skb",
    program: "netprobe_rtx",
    attach: AttachKind::Tracepoint,
};
/// The program that counts drops (the summary checks whether the kernel skipped it).
pub const DROP_PROGRAM: &str = "netprobe_drop";
pub const DROP_HOOK: HookSpec = HookSpec {
    category: "skb",
    name: "kfree_skb",
    program: DROP_PROGRAM,
    attach: AttachKind::RawTracepoint,
};
pub const SYNACK_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_retransmit_synack",
    program: "netprobe_synack",
    attach: AttachKind::Tracepoint,
};
pub const SOFTIRQ_ENTRY_HOOK: HookSpec = HookSpec {
    category: "irq",
    name: "softirq_entry",
    program: "netprobe_sirq_in",
    attach: AttachKind::RawTracepoint,
};
pub const SOFTIRQ_EXIT_HOOK: HookSpec = HookSpec {
    category: "irq",
    name: "softirq_exit",
    program: "netprobe_sirq_out",
    attach: AttachKind::RawTracepoint,
};
pub const RECEIVE_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_probe",
    program: "netprobe_rcv",
    attach: AttachKind::RawTracepoint,
};
pub const NAPI_HOOK: HookSpec = HookSpec {
    category: "napi",
    name: "napi_poll",
    program: "netprobe_napi",
    attach: AttachKind::RawTracepoint,
};

pub const ALL_HOOKS: [&HookSpec; 7] = [
    &RETRANSMIT_HOOK,
    &SYNACK_HOOK,
    &DROP_HOOK,
    &RECEIVE_HOOK,
    &SOFTIRQ_ENTRY_HOOK,
    &SOFTIRQ_EXIT_HOOK,
    &NAPI_HOOK,
];

/// Every program netprobe loads (for statistics and recursion counts).
pub fn program_names() -> impl Iterator<Item = &'static str> {
    ALL_HOOKS
        .iter()
        .map(|spec| spec.program)
        .chain(timer_hooks::program_names())
}

/// What happened to one hook, as reported to the user.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HookStatus {
    /// `category:name` of the tracepoint.
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

impl HookSpec {
    /// The status of a hook that is not attached, and why.
    pub(super) fn inactive(&self, why: String) -> HookStatus {
        HookStatus {
            hook: format!("{}:{}", self.category, self.name),
            attach: self.attach.name(),
            program: self.program,
            active: false,
            detail: why,
            verified_insns: None,
            load_ms: None,
        }
    }
}
