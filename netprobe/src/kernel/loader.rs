//! Loads the kernel programs with the running kernel's layouts and attaches them, recording for
//! every hook whether it is active and why.

use std::path::Path;

use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, RawTracePoint,
        TracePoint,
    },
    Ebpf, EbpfLoader,
};
use netprobe_common::{
    CpuLayout, DropArgs, Filter, FlowKey, KindLayout, NapiKey, NapiTotals, NetRxTotals,
    ReceiveLayout, ReceiveTotals, RetransmitRecordLayout, RetransmitTotals, StreamConfig,
    SynackRecordLayout, TraceConfig, COUNTER_NAMES, COUNTER_SLOTS, OFFSET_ABSENT, SKB_SPAN_MAX,
};
use serde::Serialize;

use crate::{
    cli::FunctionHooks,
    kernel::btf::{BtfError, KernelBtf},
    kernel::timer_hooks::{self, TimerHook, TimerLinks},
    kernel::tracefs::{self, TracefsError},
};

/// At most one reader wakeup per this interval while events keep coming (plus one whenever a
/// quarter of the ring is pending). See `StreamConfig`.
pub const WAKEUP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// The kernel object, built by build.rs from `netprobe-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("--ring-size {0}: must be a power of two of at least 4096 bytes")]
    RingSize(u32),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("no hook could be attached: {0}")]
    NoHooks(String),
    #[error("reading kernel map {map}: {message}")]
    Map { map: &'static str, message: String },
}

/// How a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttachKind {
    /// Classic tracepoint: a record whose layout the tracefs `format` file describes.
    Tracepoint,
    /// Raw tracepoint: the tracepoint's own arguments, checked against BTF.
    RawTracepoint,
}

impl AttachKind {
    fn name(self) -> &'static str {
        match self {
            AttachKind::Tracepoint => "tracepoint",
            AttachKind::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// A hook netprobe knows about.
struct HookSpec {
    category: &'static str,
    name: &'static str,
    program: &'static str,
    attach: AttachKind,
}

/// An attached program's link.
enum AttachedLink {
    Tracepoint(TracePointLinkId),
    Raw(RawTracePointLinkId),
}

const RETRANSMIT_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_retransmit_skb",
    program: "netprobe_rtx",
    attach: AttachKind::Tracepoint,
};
/// The program that counts drops (the summary checks whether the kernel skipped it).
pub const DROP_PROGRAM: &str = "netprobe_drop";
const DROP_HOOK: HookSpec = HookSpec {
    category: "skb",
    name: "kfree_skb",
    program: DROP_PROGRAM,
    attach: AttachKind::RawTracepoint,
};
const SYNACK_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_retransmit_synack",
    program: "netprobe_synack",
    attach: AttachKind::Tracepoint,
};
const SOFTIRQ_ENTRY_HOOK: HookSpec = HookSpec {
    category: "irq",
    name: "softirq_entry",
    program: "netprobe_sirq_in",
    attach: AttachKind::RawTracepoint,
};
const SOFTIRQ_EXIT_HOOK: HookSpec = HookSpec {
    category: "irq",
    name: "softirq_exit",
    program: "netprobe_sirq_out",
    attach: AttachKind::RawTracepoint,
};
const RECEIVE_HOOK: HookSpec = HookSpec {
    category: "tcp",
    name: "tcp_probe",
    program: "netprobe_rcv",
    attach: AttachKind::RawTracepoint,
};
const NAPI_HOOK: HookSpec = HookSpec {
    category: "napi",
    name: "napi_poll",
    program: "netprobe_napi",
    attach: AttachKind::RawTracepoint,
};

const ALL_HOOKS: [&HookSpec; 7] = [
    &RETRANSMIT_HOOK,
    &SYNACK_HOOK,
    &DROP_HOOK,
    &RECEIVE_HOOK,
    &SOFTIRQ_ENTRY_HOOK,
    &SOFTIRQ_EXIT_HOOK,
    &NAPI_HOOK,
];

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

pub struct LoadOptions<'a> {
    pub btf_path: &'a Path,
    pub filter: Filter,
    pub ring_size: u32,
    /// Leave the per-CPU hooks (softirq entry/exit, NAPI polls) detached: they run on every
    /// softirq and poll, the largest part of netprobe's cost on a busy receive path.
    pub without_cpu_hooks: bool,
    /// Leave the receive-path hook (`tcp_probe`, every segment received) detached.
    pub without_receive_hook: bool,
    /// How the timer functions are hooked (`--function-hooks`).
    pub function_hooks: FunctionHooks,
}

/// Loaded and attached programs, and the maps they fill.
pub struct Probe {
    ebpf: Ebpf,
    links: Vec<(&'static str, AttachedLink)>,
    timer_links: Vec<(&'static TimerHook, TimerLinks)>,
    pub hooks: Vec<HookStatus>,
    pub mounted_tracefs: bool,
}

/// Exact totals kept in kernel maps.
#[derive(Debug, Clone, Default)]
pub struct KernelTotals {
    /// `COUNTER_*` sums over CPUs.
    pub counters: Vec<(u32, &'static str, u64)>,
    pub flows: Vec<(FlowKey, RetransmitTotals)>,
    /// (raw reason, count per CPU).
    pub reasons: Vec<(u32, Vec<u64>)>,
    /// NET_RX softirq totals, indexed by CPU (empty when the hooks are inactive).
    pub net_rx: Vec<NetRxTotals>,
    /// Per-flow receive-path totals (summed over CPUs).
    pub receive_flows: Vec<(FlowKey, ReceiveTotals)>,
    /// (device, totals per CPU) of NAPI polls.
    pub napi: Vec<(String, Vec<NapiTotals>)>,
}

impl KernelTotals {
    pub fn counter(&self, index: u32) -> u64 {
        self.counters
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, _, v)| *v)
            .unwrap_or(0)
    }
}

fn describe_attach(err_field: bool, what: &str) -> String {
    // Why a classic tracepoint: a stable ABI with a self-describing record (offsets from
    // tracefs), present on every kernel netprobe supports, already carrying most fields we
    // need. kprobes and fentry would reach the same call sites but are not available
    // everywhere (this kernel has no kprobes and refuses fentry).
    format!(
        "classic tracepoint, record offsets from tracefs format{}; {what}",
        if err_field {
            ""
        } else {
            " (no `err` field: only successful retransmits are traced by this kernel)"
        }
    )
}

/// Which classic tracepoints this kernel offers, with their record layouts. A hook whose
/// tracepoint is missing or has an unexpected layout is reported inactive; the others carry on.
pub struct HookPlan {
    pub retransmit: Option<RetransmitRecordLayout>,
    pub synack: Option<SynackRecordLayout>,
    /// Hooks to attach, with the detail to report once attached.
    wanted: Vec<(&'static HookSpec, String)>,
    /// Hooks already known to be unavailable.
    pub hooks: Vec<HookStatus>,
}

pub fn plan_hooks(tracefs: &Path) -> HookPlan {
    let mut plan = HookPlan {
        retransmit: None,
        synack: None,
        wanted: Vec::new(),
        hooks: Vec::new(),
    };
    match tracefs::read_format(tracefs, RETRANSMIT_HOOK.category, RETRANSMIT_HOOK.name)
        .and_then(|f| f.retransmit_layout())
    {
        Ok(layout) => {
            plan.retransmit = Some(layout);
            let detail = describe_attach(
                layout.err != OFFSET_ABSENT,
                "segments and sequence from skb->cb via BTF offsets",
            );
            plan.wanted.push((&RETRANSMIT_HOOK, detail));
        }
        Err(e) => plan.hooks.push(inactive(&RETRANSMIT_HOOK, e.to_string())),
    }
    match tracefs::read_format(tracefs, SYNACK_HOOK.category, SYNACK_HOOK.name)
        .and_then(|f| f.synack_layout())
    {
        Ok(layout) => {
            plan.synack = Some(layout);
            plan.wanted.push((
                &SYNACK_HOOK,
                "classic tracepoint, offsets from tracefs format; SYN-ACK retransmits (kind synack), owner and netns from the listener".into(),
            ));
        }
        Err(e) => plan.hooks.push(inactive(&SYNACK_HOOK, e.to_string())),
    }
    plan
}

/// Argument positions of the raw tracepoint `kfree_skb`, from its BTF prototype as
/// [`KernelBtf::raw_tracepoint_args`] names them. Every kernel so far has (skb, location), then
/// the reason (Linux ≥ 5.17), then the receiving socket (6.12+); the programs read each at that
/// index, so any other order makes the hook inactive rather than misread.
pub fn drop_args(args: &[String]) -> Result<DropArgs, String> {
    let at = |index: usize, label: &str| args.get(index).is_some_and(|a| a == label);
    if !(at(0, "sk_buff") && at(1, "void")) {
        return Err(format!(
            "kfree_skb takes ({}) here, not (struct sk_buff *, void *, …)",
            args.join(", ")
        ));
    }
    let reason = at(2, "skb_drop_reason");
    Ok(DropArgs {
        skb: 0,
        location: 1,
        reason: if reason { 2 } else { OFFSET_ABSENT },
        rx_sk: if reason && at(3, "sock") {
            3
        } else {
            OFFSET_ABSENT
        },
        skb_protocol: OFFSET_ABSENT,
        skb_span_start: 0,
        skb_span_len: 0,
        rx_sk_stash: 0,
    })
}

/// The span of `struct sk_buff` covering the members the drop program reads, as (start,
/// length), when it fits [`SKB_SPAN_MAX`]: one read instead of six. `None`: read them one by
/// one. Members: (offset, size).
pub fn skb_span(members: &[(u32, u32)]) -> Option<(u32, u32)> {
    let start = members.iter().map(|(offset, _)| *offset).min()?;
    let end = members.iter().map(|(offset, size)| offset + size).max()?;
    let len = end - start;
    (len <= SKB_SPAN_MAX).then_some((start, len))
}

/// Checks a raw tracepoint's arguments against what a program expects.
fn expect_args(tracepoint: &str, args: &[String], expected: &[&str]) -> Result<(), String> {
    if args.len() >= expected.len() && args.iter().zip(expected).all(|(a, e)| a == e) {
        Ok(())
    } else {
        Err(format!(
            "{tracepoint} takes ({}) here, not ({})",
            args.join(", "),
            expected.join(", ")
        ))
    }
}

/// The per-CPU hooks' layout: softirq vectors and NAPI polls, both raw tracepoints whose
/// arguments are checked against BTF. (Each part is `Err(why)` when unavailable.)
pub fn cpu_layout(
    softirq_entry: &[String],
    softirq_exit: &[String],
    napi_poll: &[String],
    net_rx_vec: Option<u64>,
    napi_dev: Option<u32>,
) -> (CpuLayout, Result<u64, String>, Result<(), String>) {
    let mut layout = TraceConfig::UNSET.cpu;
    let softirq = expect_args("softirq_entry", softirq_entry, &["unsigned int"])
        .and_then(|_| expect_args("softirq_exit", softirq_exit, &["unsigned int"]))
        .and_then(|_| {
            net_rx_vec.ok_or_else(|| "kernel BTF has no NET_RX_SOFTIRQ enumerator".to_string())
        });
    if let Ok(vec) = softirq {
        layout.softirq_vec_arg = 0;
        layout.net_rx_vec = vec as u32;
    }
    let napi = expect_args("napi_poll", napi_poll, &["napi_struct", "int", "int"])
        .and_then(|_| napi_dev.ok_or_else(|| "kernel BTF has no napi_struct.dev".to_string()));
    let napi = napi.map(|dev| {
        layout.napi_arg = 0;
        layout.napi_work_arg = 1;
        layout.napi_budget_arg = 2;
        layout.napi_dev = dev;
    });
    (layout, softirq, napi)
}

/// Plans the raw tracepoints (drops, per-CPU work, the receive path) from BTF, filling their
/// part of the configuration.
/// Hooks the user turned off are reported inactive with the flag, and left unplanned: their
/// programs see no layout and are never loaded.
fn plan_raw_hooks(
    btf: &KernelBtf,
    options: &LoadOptions,
    config: &mut TraceConfig,
    wanted: &mut Vec<(&'static HookSpec, String)>,
    hooks: &mut Vec<HookStatus>,
) {
    let args = |name: &str| btf.raw_tracepoint_args(name).map_err(|e| e.to_string());
    match args(DROP_HOOK.name).and_then(|a| drop_args(&a)) {
        Ok(mut layout) => match btf.offset_of("sk_buff", "protocol") {
            Ok(protocol) => {
                layout.skb_protocol = protocol;
                let k = &config.kernel;
                let members = [
                    (k.skb_sk, 8),
                    (k.skb_dev, 8),
                    (k.skb_head, 8),
                    (k.skb_network_header, 2),
                    (k.skb_iif, 4),
                    (protocol, 2),
                ];
                if let Some((start, len)) = skb_span(&members) {
                    layout.skb_span_start = start;
                    layout.skb_span_len = len;
                }
                config.drop = layout;
                let mut detail = "raw tracepoint, arguments (skb, location, reason, rx_sk) located in the BTF prototype btf_trace_kfree_skb; flow parsed from the packet headers via BTF offsets".to_string();
                if layout.reason == OFFSET_ABSENT {
                    detail.push_str("; this kernel records no drop reasons");
                }
                wanted.push((&DROP_HOOK, detail));
            }
            Err(e) => hooks.push(inactive(&DROP_HOOK, e.to_string())),
        },
        Err(why) => hooks.push(inactive(&DROP_HOOK, why)),
    }

    if options.without_cpu_hooks {
        for spec in [&SOFTIRQ_ENTRY_HOOK, &SOFTIRQ_EXIT_HOOK, &NAPI_HOOK] {
            hooks.push(inactive(spec, "turned off (--without-cpu-hooks)".into()));
        }
    } else {
        let none = Vec::new();
        let entry = args(SOFTIRQ_ENTRY_HOOK.name);
        let exit = args(SOFTIRQ_EXIT_HOOK.name);
        let napi = args(NAPI_HOOK.name);
        let (layout, softirq, napi_ok) = cpu_layout(
            entry.as_ref().unwrap_or(&none),
            exit.as_ref().unwrap_or(&none),
            napi.as_ref().unwrap_or(&none),
            btf.enumerator("NET_RX_SOFTIRQ"),
            btf.offset_of("napi_struct", "dev").ok(),
        );
        config.cpu = layout;
        let softirq = match (entry, exit) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => softirq,
        };
        for spec in [&SOFTIRQ_ENTRY_HOOK, &SOFTIRQ_EXIT_HOOK] {
            match &softirq {
                Ok(vec) => wanted.push((spec, format!(
                    "raw tracepoint (vec_nr checked against BTF), NET_RX_SOFTIRQ = {vec} from BTF; per-CPU NET_RX runs and time, aggregated in the kernel"
                ))),
                Err(why) => hooks.push(inactive(spec, why.clone())),
            }
        }
        match napi.and(napi_ok) {
            Ok(()) => wanted.push((
                &NAPI_HOOK,
                "raw tracepoint (napi, work, budget checked against BTF), device from napi->dev (BTF offsets); polls, full-budget polls and packets per CPU and device, aggregated in the kernel".into(),
            )),
            Err(why) => hooks.push(inactive(&NAPI_HOOK, why)),
        }
    }

    if options.without_receive_hook {
        hooks.push(inactive(
            &RECEIVE_HOOK,
            "turned off (--without-receive-hook)".into(),
        ));
    } else {
        match plan_receive(btf) {
            Ok(layout) => {
                config.receive = layout;
                let drop_planned = wanted.iter().any(|(spec, _)| spec.name == DROP_HOOK.name);
                // Only where TCP's drops fire the tracepoint at all: with drop reasons (5.17+);
                // before, tcp_drop() frees with __kfree_skb, which fires none.
                if drop_planned
                    && config.drop.rx_sk == OFFSET_ABSENT
                    && config.drop.reason != OFFSET_ABSENT
                {
                    // Without rx_sk, a segment TCP drops after clearing skb->dev names no
                    // namespace; the receive program tells the drop program its socket.
                    config.drop.rx_sk_stash = 1;
                    if let Some((_, detail)) = wanted
                        .iter_mut()
                        .find(|(spec, _)| spec.name == DROP_HOOK.name)
                    {
                        detail.push_str("; no rx_sk argument on this kernel: the socket (and namespace) of segments dropped inside tcp_rcv_established comes from the tcp_probe hook");
                    }
                }
                wanted.push((
                    &RECEIVE_HOOK,
                    "raw tracepoint (arguments sk, skb checked against BTF btf_trace_tcp_probe): every segment tcp_rcv_established processes, its sequence range read against the socket's rcv_nxt and out-of-order queue (BTF offsets); established sockets only; work only for segments out of sequence".into(),
                ));
            }
            Err(why) => hooks.push(inactive(&RECEIVE_HOOK, why)),
        }
    }
}

/// How retransmit kinds are named on this kernel, or why they cannot be.
fn kind_layout(btf: &KernelBtf) -> Result<KindLayout, String> {
    let (ca_state, shift, bits) = btf
        .small_field_of("inet_connection_sock", "icsk_ca_state")
        .map_err(|e| e.to_string())?;
    let timer_vec = btf
        .enumerator("TIMER_SOFTIRQ")
        .ok_or("kernel BTF has no TIMER_SOFTIRQ")? as u32;
    Ok(KindLayout {
        ca_state,
        ca_state_shift: shift,
        ca_state_bits: bits,
        timer_vec,
    })
}

/// The receive hook needs `tcp_probe(struct sock *, struct sk_buff *)` and the receive-state
/// members, both from BTF.
fn plan_receive(btf: &KernelBtf) -> Result<ReceiveLayout, String> {
    let args = btf
        .raw_tracepoint_args(RECEIVE_HOOK.name)
        .map_err(|e| e.to_string())?;
    if args.len() < 2 || args[0] != "sock" || args[1] != "sk_buff" {
        return Err(format!(
            "tcp_probe takes ({}) here, not (struct sock *, struct sk_buff *)",
            args.join(", ")
        ));
    }
    btf.receive_layout().map_err(|e| e.to_string())
}

pub fn load(options: &LoadOptions) -> Result<Probe, LoadError> {
    if !options.ring_size.is_power_of_two() || options.ring_size < 4096 {
        return Err(LoadError::RingSize(options.ring_size));
    }
    let btf = KernelBtf::load(options.btf_path)?;
    let (tracefs, mounted_tracefs) = tracefs::ensure_mounted()?;

    let mut config = TraceConfig::UNSET;
    config.kernel = btf.kernel_layout()?;
    config.filter = options.filter;
    config.stream = StreamConfig {
        // A quarter of the ring pending: wake now, well before it can fill.
        wakeup_bytes: options.ring_size / 4,
        wakeup_interval_ns: WAKEUP_INTERVAL.as_nanos() as u32,
    };

    let HookPlan {
        retransmit,
        synack,
        mut wanted,
        mut hooks,
    } = plan_hooks(&tracefs);
    plan_raw_hooks(&btf, options, &mut config, &mut wanted, &mut hooks);
    if let Some(layout) = synack {
        config.synack = layout;
    }
    // Retransmit kinds: congestion state (BTF bitfield) and the softirq the CPU runs.
    let kind_method = match kind_layout(&btf) {
        Ok(layout) => {
            config.kind = layout;
            if config.cpu.softirq_vec_arg == OFFSET_ABSENT {
                "kind from icsk_ca_state (BTF); softirq hooks inactive, so tlp cannot be told from other".to_string()
            } else {
                "kind from icsk_ca_state (BTF bitfield) and the softirq the CPU runs (TIMER vs other); no kprobe/fentry here".to_string()
            }
        }
        Err(why) => {
            format!("retransmit kinds unavailable ({why}): all but syn/synack report other")
        }
    };
    for (spec, detail) in wanted.iter_mut() {
        if spec.name == RETRANSMIT_HOOK.name {
            detail.push_str("; ");
            detail.push_str(&kind_method);
        }
    }
    if let Some(layout) = retransmit {
        config.retransmit = layout;
    }

    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", options.ring_size)
        .load(BPF_OBJECT)
        .map_err(LoadError::Load)?;

    let mut links = Vec::new();
    for (spec, detail) in wanted {
        let started = std::time::Instant::now();
        match attach(&mut ebpf, spec) {
            Ok(link) => {
                let load_ms = started.elapsed().as_secs_f64() * 1e3;
                links.push((spec.program, link));
                let verified_insns = ebpf
                    .program(spec.program)
                    .and_then(|p| p.info().ok())
                    .and_then(|info| info.verified_instruction_count());
                hooks.push(HookStatus {
                    hook: format!("{}:{}", spec.category, spec.name),
                    attach: spec.attach.name(),
                    program: spec.program,
                    active: true,
                    detail,
                    verified_insns,
                    load_ms: Some((load_ms * 10.0).round() / 10.0),
                });
            }
            Err(e) => hooks.push(inactive(spec, e)),
        }
    }
    // The function hooks only refine retransmit kinds: worth attaching with the retransmit hook.
    let mut timer_links = Vec::new();
    if links
        .iter()
        .any(|(program, _)| *program == RETRANSMIT_HOOK.program)
    {
        let (statuses, attached) =
            timer_hooks::attach_all(&mut ebpf, options.btf_path, options.function_hooks);
        if !attached.is_empty() {
            let methods: Vec<String> = statuses
                .iter()
                .filter(|s| s.active)
                .map(|s| format!("{} ({})", s.hook, s.attach))
                .collect();
            if let Some(status) = hooks
                .iter_mut()
                .find(|h| h.program == RETRANSMIT_HOOK.program)
            {
                // The inferred method's caveats no longer apply to the hooked kinds.
                let inferred = status
                    .detail
                    .replace("; no kprobe/fentry here", "")
                    .replace(", so tlp cannot be told from other", "");
                status.detail = format!("{inferred}; exact where hooked: {}", methods.join(", "));
            }
        }
        hooks.extend(statuses);
        timer_links = attached;
    }
    if links.is_empty() {
        let why: Vec<String> = hooks
            .iter()
            .map(|h| format!("{}: {}", h.hook, h.detail))
            .collect();
        return Err(LoadError::NoHooks(why.join("; ")));
    }
    Ok(Probe {
        ebpf,
        links,
        timer_links,
        hooks,
        mounted_tracefs,
    })
}

fn inactive(spec: &HookSpec, why: String) -> HookStatus {
    HookStatus {
        hook: format!("{}:{}", spec.category, spec.name),
        attach: spec.attach.name(),
        program: spec.program,
        active: false,
        detail: why,
        verified_insns: None,
        load_ms: None,
    }
}

fn attach(ebpf: &mut Ebpf, spec: &HookSpec) -> Result<AttachedLink, String> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| format!("program {} missing from the object", spec.program))?;
    let rejected =
        |e: aya::programs::ProgramError| format!("verifier rejected {}: {e:#}", spec.program);
    let failed = |e: aya::programs::ProgramError| format!("attach failed: {e}");
    match spec.attach {
        AttachKind::Tracepoint => {
            let program: &mut TracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(rejected)?;
            program
                .attach(spec.category, spec.name)
                .map(AttachedLink::Tracepoint)
                .map_err(failed)
        }
        AttachKind::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            program.load().map_err(rejected)?;
            program
                .attach(spec.name)
                .map(AttachedLink::Raw)
                .map_err(failed)
        }
    }
}

/// `bpf_prog_info.recursion_misses` of a program (Linux ≥ 5.12), read with
/// BPF_OBJ_GET_INFO_BY_FD; aya's ProgramInfo does not expose it.
fn prog_recursion_misses(fd: std::os::fd::BorrowedFd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid bpf_prog_info.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = [0u8; 128];
    let request = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: InfoByFd is the info_by_fd member of union bpf_attr; attr is larger than it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            &request as *const _ as *const u8,
            attr.as_mut_ptr(),
            std::mem::size_of::<InfoByFd>(),
        );
    }
    // SAFETY: a valid bpf(2) call; the kernel writes at most info_len bytes into info.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |e| LoadError::Map {
        map,
        message: e.to_string(),
    }
}

impl Probe {
    /// Takes the ring buffer out of the object for the reader.
    pub fn take_events(&mut self) -> Option<Map> {
        self.ebpf.take_map("EVENTS")
    }

    /// Detaches every program: no new events after this returns.
    pub fn detach(&mut self) {
        timer_hooks::detach_all(&mut self.ebpf, std::mem::take(&mut self.timer_links));
        for (name, link) in self.links.drain(..) {
            let Some(program) = self.ebpf.program_mut(name) else {
                continue;
            };
            match link {
                AttachedLink::Tracepoint(link) => {
                    if let Ok(tp) = <&mut TracePoint>::try_from(program) {
                        let _ = tp.detach(link);
                    }
                }
                AttachedLink::Raw(link) => {
                    if let Ok(tp) = <&mut RawTracePoint>::try_from(program) {
                        let _ = tp.detach(link);
                    }
                }
            }
        }
    }

    /// Per program, the invocations the kernel skipped because another BPF program was
    /// already running on that CPU (`recursion_misses`: a tracepoint fired in an interrupt
    /// that had interrupted one of ours). Those events were never seen: reported, not hidden.
    pub fn recursion_misses(&self) -> Vec<(&'static str, u64)> {
        self.programs()
            .filter_map(|name| {
                let fd = self.ebpf.program(name)?.fd().ok()?;
                Some((
                    name,
                    prog_recursion_misses(std::os::fd::AsFd::as_fd(fd)).ok()?,
                ))
            })
            .collect()
    }

    fn programs(&self) -> impl Iterator<Item = &'static str> {
        ALL_HOOKS
            .iter()
            .map(|spec| spec.program)
            .chain(timer_hooks::program_names())
    }

    /// (program name, run count, run time ns) from the kernel's BPF stats; zero unless
    /// `kernel.bpf_stats_enabled` is on.
    pub fn program_stats(&self) -> Vec<(&'static str, u64, u64)> {
        self.programs()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((name, info.run_count(), info.run_time().as_nanos() as u64))
            })
            .collect()
    }

    /// Reads the exact totals from the kernel maps.
    pub fn kernel_totals(&self) -> Result<KernelTotals, LoadError> {
        let counters_map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").ok_or(LoadError::Map {
                map: "COUNTERS",
                message: "missing".into(),
            })?)
            .map_err(map_error("COUNTERS"))?;
        let mut counters = Vec::new();
        for (index, name) in COUNTER_NAMES {
            debug_assert!(index < COUNTER_SLOTS);
            let per_cpu = counters_map.get(&index, 0).map_err(map_error("COUNTERS"))?;
            counters.push((index, name, per_cpu.iter().sum()));
        }

        let flows_map: PerCpuHashMap<&MapData, FlowKey, RetransmitTotals> =
            PerCpuHashMap::try_from(self.ebpf.map("RETRANSMIT_FLOWS").ok_or(LoadError::Map {
                map: "RETRANSMIT_FLOWS",
                message: "missing".into(),
            })?)
            .map_err(map_error("RETRANSMIT_FLOWS"))?;
        let mut flows = Vec::new();
        for entry in flows_map.iter() {
            let (key, per_cpu) = entry.map_err(map_error("RETRANSMIT_FLOWS"))?;
            let mut total = RetransmitTotals::default();
            for v in per_cpu.iter() {
                total.sent += v.sent;
                total.failed += v.failed;
                total.segs += v.segs;
                total.bytes += v.bytes;
                for (sum, n) in total.kinds.iter_mut().zip(v.kinds) {
                    *sum += n;
                }
                for (sum, n) in total.kind_segs.iter_mut().zip(v.kind_segs) {
                    *sum += n;
                }
                for (sum, n) in total.timer_kinds.iter_mut().zip(v.timer_kinds) {
                    *sum += n;
                }
                for (sum, n) in total.timer_segs.iter_mut().zip(v.timer_segs) {
                    *sum += n;
                }
                // The same socket on every CPU that saw the flow.
                if v.sock_ino != 0 {
                    total.sock_ino = v.sock_ino;
                }
            }
            flows.push((key, total));
        }

        let reasons_map: PerCpuHashMap<&MapData, u32, u64> =
            PerCpuHashMap::try_from(self.ebpf.map("DROP_REASONS").ok_or(LoadError::Map {
                map: "DROP_REASONS",
                message: "missing".into(),
            })?)
            .map_err(map_error("DROP_REASONS"))?;
        let mut reasons = Vec::new();
        for entry in reasons_map.iter() {
            let (reason, per_cpu) = entry.map_err(map_error("DROP_REASONS"))?;
            reasons.push((reason, per_cpu.iter().copied().collect()));
        }
        let mut receive_flows = Vec::new();
        if let Some(map) = self.ebpf.map("RECEIVE_FLOWS") {
            let table: PerCpuHashMap<&MapData, FlowKey, ReceiveTotals> =
                PerCpuHashMap::try_from(map).map_err(map_error("RECEIVE_FLOWS"))?;
            for entry in table.iter() {
                let (key, per_cpu) = entry.map_err(map_error("RECEIVE_FLOWS"))?;
                let mut total = ReceiveTotals::default();
                for v in per_cpu.iter() {
                    total.add(v);
                }
                receive_flows.push((key, total));
            }
        }
        let net_rx = match self.ebpf.map("NET_RX") {
            Some(map) => {
                let array: PerCpuArray<&MapData, NetRxTotals> =
                    PerCpuArray::try_from(map).map_err(map_error("NET_RX"))?;
                array
                    .get(&0, 0)
                    .map_err(map_error("NET_RX"))?
                    .iter()
                    .copied()
                    .collect()
            }
            None => Vec::new(),
        };
        let mut napi = Vec::new();
        if let Some(map) = self.ebpf.map("NAPI_POLLS") {
            let table: PerCpuHashMap<&MapData, NapiKey, NapiTotals> =
                PerCpuHashMap::try_from(map).map_err(map_error("NAPI_POLLS"))?;
            for entry in table.iter() {
                let (key, per_cpu) = entry.map_err(map_error("NAPI_POLLS"))?;
                let end = key
                    .dev
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(key.dev.len());
                let dev = String::from_utf8_lossy(&key.dev[..end]).into_owned();
                napi.push((dev, per_cpu.iter().copied().collect()));
            }
            napi.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(KernelTotals {
            counters,
            flows,
            reasons,
            net_rx,
            receive_flows,
            napi,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracefs tree with only the given format files.
    fn fake_tracefs(files: &[(&str, &str)]) -> std::path::PathBuf {
        // Unique per call: tests run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("netprobe-tracefs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (tracepoint, text) in files {
            let dir = root.join("events").join(tracepoint);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("format"), text).unwrap();
        }
        root
    }

    #[test]
    fn a_missing_tracepoint_is_reported_and_the_rest_carry_on() {
        let root = fake_tracefs(&[(
            "tcp/tcp_retransmit_skb",
            include_str!("../../fixtures/tracefs/tcp_retransmit_skb.5.15"),
        )]);
        let plan = plan_hooks(&root);
        assert_eq!(plan.wanted.len(), 1);
        assert_eq!(plan.wanted[0].0.name, "tcp_retransmit_skb");
        assert!(plan.wanted[0].1.contains("only successful retransmits"));
        assert_eq!(plan.retransmit.unwrap().err, OFFSET_ABSENT);
        // tcp_retransmit_synack is missing.
        assert_eq!(plan.hooks.len(), 1);
        let missing = &plan.hooks[0];
        assert_eq!(missing.hook, "tcp:tcp_retransmit_synack");
        assert!(!missing.active);
        assert!(
            missing.detail.contains("not available on this kernel"),
            "{}",
            missing.detail
        );
        let _ = std::fs::remove_dir_all(root);
    }

    fn labels(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    /// kfree_skb's prototype across kernels: (skb, location) before 5.17, then the reason,
    /// then (6.12+) the receiving socket.
    #[test]
    fn drop_arguments_across_kernels() {
        let new = drop_args(&labels(&["sk_buff", "void", "skb_drop_reason", "sock"])).unwrap();
        assert_eq!((new.skb, new.location, new.reason, new.rx_sk), (0, 1, 2, 3));
        let mid = drop_args(&labels(&["sk_buff", "void", "skb_drop_reason"])).unwrap();
        assert_eq!((mid.reason, mid.rx_sk), (2, OFFSET_ABSENT));
        let old = drop_args(&labels(&["sk_buff", "void"])).unwrap();
        assert_eq!((old.reason, old.rx_sk), (OFFSET_ABSENT, OFFSET_ABSENT));
        let err = drop_args(&labels(&["void", "sk_buff"])).unwrap_err();
        assert!(
            err.contains("kfree_skb takes (void, sk_buff) here"),
            "{err}"
        );
    }

    #[test]
    fn skb_members_are_read_in_one_span_when_close() {
        assert_eq!(
            skb_span(&[(24, 8), (16, 8), (200, 8), (180, 2)]),
            Some((16, 192))
        );
        assert_eq!(
            skb_span(&[(0, 8), (300, 8)]),
            None,
            "wider than SKB_SPAN_MAX"
        );
        assert_eq!(skb_span(&[]), None);
    }

    #[test]
    fn per_cpu_hooks_need_their_prototypes_and_the_vector_from_btf() {
        let vec = labels(&["unsigned int"]);
        let napi = labels(&["napi_struct", "int", "int"]);
        let (layout, softirq, napi_ok) = cpu_layout(&vec, &vec, &napi, Some(3), Some(48));
        assert_eq!(softirq, Ok(3));
        assert!(napi_ok.is_ok());
        assert_eq!((layout.softirq_vec_arg, layout.net_rx_vec), (0, 3));
        assert_eq!(
            (
                layout.napi_arg,
                layout.napi_work_arg,
                layout.napi_budget_arg,
                layout.napi_dev
            ),
            (0, 1, 2, 48)
        );

        let (layout, softirq, _) = cpu_layout(&vec, &vec, &napi, None, Some(48));
        assert!(softirq.unwrap_err().contains("NET_RX_SOFTIRQ"));
        assert_eq!(
            layout.softirq_vec_arg, OFFSET_ABSENT,
            "inactive: the programs see no vector"
        );

        let (layout, _, napi_ok) =
            cpu_layout(&vec, &vec, &labels(&["int", "int"]), Some(3), Some(48));
        assert!(napi_ok
            .unwrap_err()
            .contains("napi_poll takes (int, int) here"));
        assert_eq!(layout.napi_arg, OFFSET_ABSENT);
    }
}
