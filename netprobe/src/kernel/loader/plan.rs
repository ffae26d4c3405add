//! Which hooks this kernel can take and the configuration their programs read: argument
//! positions (from the tracepoints' BTF prototypes) and struct offsets, all from BTF. A hook
//! that cannot be planned is reported inactive with the reason; the others carry on.

use netprobe_common::{
    CpuLayout, DropArgs, KindLayout, ReceiveLayout, SpuriousLayout, StreamConfig, TraceConfig,
    MODE_COUNT, MODE_STREAM, OFFSET_ABSENT, SKB_SPAN_MAX,
};

use super::{
    catalogue::{
        HookSpec, HookStatus, DROP_BTF_HOOK, DROP_HOOK, NAPI_BTF_HOOK, NAPI_HOOK, RECEIVE_BTF_HOOK,
        RECEIVE_HOOK, RETRANSMIT_HOOK, SOFTIRQ_ENTRY_HOOK, SOFTIRQ_EXIT_HOOK,
    },
    LoadOptions, STORM_RATE, WAKEUP_INTERVAL,
};
use crate::{
    cli::TracepointHooks,
    kernel::btf::{BtfError, KernelBtf},
};

/// The whole plan: the programs' configuration, the hooks to attach (with the detail to
/// report once attached) and those already known to be unavailable.
pub(super) struct Planned {
    pub config: TraceConfig,
    pub wanted: Vec<(&'static HookSpec, String)>,
    pub hooks: Vec<HookStatus>,
}

/// Plans every hook from this kernel's BTF.
pub(super) fn plan(options: &LoadOptions) -> Result<Planned, BtfError> {
    let btf = options.btf;
    let mut config = TraceConfig::UNSET;
    config.kernel = btf.kernel_layout()?;
    config.sock = btf.sock_flow_layout()?;
    config.filter = options.filter;
    config.aggregate.mode = if options.counting_only {
        MODE_COUNT
    } else {
        MODE_STREAM
    };
    config.aggregate.max_rate = options.max_rate;
    // Half the ring unread: the reader is falling behind; from there on each site streams a
    // sample, so that the ring never fills with one storm while the rest finds no room.
    config.aggregate.storm_backlog_bytes = options.ring_size / 2;
    config.aggregate.storm_rate = STORM_RATE;
    config.stream = StreamConfig {
        // A quarter of the ring pending: wake now, well before it can fill.
        wakeup_bytes: options.ring_size / 4,
        wakeup_interval_ns: WAKEUP_INTERVAL.as_nanos() as u32,
    };

    let mut plan = HookPlan {
        wanted: Vec::new(),
        hooks: Vec::new(),
    };
    super::retransmits::plan_retransmit_hooks(
        btf,
        &mut config,
        options.tracepoint_hooks,
        &mut plan,
    );
    plan_raw_hooks(btf, options, &mut config, &mut plan);
    let kind_method = plan_kinds(btf, &mut config);
    let spurious_method = plan_spurious(btf, &mut config);
    for (spec, detail) in plan.wanted.iter_mut() {
        if spec.id == RETRANSMIT_HOOK.id {
            detail.push_str("; ");
            detail.push_str(&kind_method);
            detail.push_str("; ");
            detail.push_str(&spurious_method);
        }
    }
    super::outcomes::plan_outcomes(btf, &mut config, &mut plan);
    Ok(Planned {
        config,
        wanted: plan.wanted,
        hooks: plan.hooks,
    })
}

/// Which hooks this kernel can take: those to attach, with the detail to report once
/// attached, and those already known to be unavailable, with why.
pub struct HookPlan {
    pub(super) wanted: Vec<(&'static HookSpec, String)>,
    pub hooks: Vec<HookStatus>,
}

impl HookPlan {
    pub(super) fn want(&mut self, spec: &'static HookSpec, detail: String) {
        self.wanted.push((spec, detail));
    }

    pub(super) fn unavailable(&mut self, spec: &'static HookSpec, why: String) {
        self.hooks.push(spec.inactive(why));
    }

    /// The detail of a hook already planned, to add to.
    pub(super) fn detail_of(&mut self, spec: &HookSpec) -> Option<&mut String> {
        self.wanted
            .iter_mut()
            .find(|(planned, _)| planned.id == spec.id)
            .map(|(_, detail)| detail)
    }
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
        ..TraceConfig::UNSET.drop
    })
}

/// The span of a struct covering the members (offset, size) a program reads, as (start,
/// length), when it fits [`SKB_SPAN_MAX`]: one read instead of one per member (the drop
/// program's six of `sk_buff`). `None`: read them one by one.
pub fn member_span(members: &[(u32, u32)]) -> Option<(u32, u32)> {
    let start = members.iter().map(|(offset, _)| *offset).min()?;
    let end = members.iter().map(|(offset, size)| offset + size).max()?;
    let len = end - start;
    (len <= SKB_SPAN_MAX).then_some((start, len))
}

/// The span of `struct net_device` the drop program reads in one go: `ifindex`, `nd_net`
/// and `name` (streamed drops name their device), else the first two only. `None` when
/// even those are too far apart (before Linux 6.8 `name` leads the struct and `nd_net` sits
/// past a kilobyte): read one by one.
pub fn device_span(ifindex: u32, nd_net: u32, name: u32) -> Option<(u32, u32)> {
    member_span(&[(ifindex, 4), (nd_net, 8), (name, 16)])
        .or_else(|| member_span(&[(ifindex, 4), (nd_net, 8)]))
}

/// Checks a raw tracepoint's arguments against what a program expects.
pub(super) fn expect_args(
    tracepoint: &str,
    args: &[String],
    expected: &[&str],
) -> Result<(), String> {
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
    let softirq = expect_args(
        SOFTIRQ_ENTRY_HOOK.tracepoint(),
        softirq_entry,
        &["unsigned int"],
    )
    .and_then(|_| {
        expect_args(
            SOFTIRQ_EXIT_HOOK.tracepoint(),
            softirq_exit,
            &["unsigned int"],
        )
    })
    .and_then(|_| {
        net_rx_vec.ok_or_else(|| "kernel BTF has no NET_RX_SOFTIRQ enumerator".to_string())
    });
    if let Ok(vec) = softirq {
        layout.softirq_vec_arg = 0;
        layout.net_rx_vec = vec as u32;
    }
    let napi = expect_args(
        NAPI_HOOK.tracepoint(),
        napi_poll,
        &["napi_struct", "int", "int"],
    )
    .and_then(|_| napi_dev.ok_or_else(|| "kernel BTF has no napi_struct.dev".to_string()));
    let napi = napi.map(|dev| {
        layout.napi_arg = 0;
        layout.napi_work_arg = 1;
        layout.napi_budget_arg = 2;
        layout.napi_dev = dev;
    });
    (layout, softirq, napi)
}

/// The arguments of a raw tracepoint, or why they cannot be known.
pub(super) fn raw_args(btf: &KernelBtf, tracepoint: &str) -> Result<Vec<String>, String> {
    btf.raw_tracepoint_args(tracepoint)
        .map_err(|e| e.to_string())
}

/// Plans the raw tracepoints (drops, per-CPU work, the receive path) from BTF, filling their
/// part of the configuration.
/// Hooks the user turned off are reported inactive with the flag, and left unplanned: their
/// programs see no layout and are never loaded.
fn plan_raw_hooks(
    btf: &KernelBtf,
    options: &LoadOptions,
    config: &mut TraceConfig,
    plan: &mut HookPlan,
) {
    plan_drop_hook(btf, config, options.tracepoint_hooks, plan);
    if options.without_cpu_hooks {
        for spec in [&SOFTIRQ_ENTRY_HOOK, &SOFTIRQ_EXIT_HOOK, &NAPI_HOOK] {
            plan.unavailable(spec, "turned off (--without-cpu-hooks)".into());
        }
    } else {
        plan_cpu_hooks(btf, config, options.tracepoint_hooks, plan);
    }
    if options.without_receive_hook {
        plan.unavailable(&RECEIVE_HOOK, "turned off (--without-receive-hook)".into());
    } else {
        plan_receive_hook(btf, config, options.tracepoint_hooks, plan);
    }
}

fn plan_drop_hook(
    btf: &KernelBtf,
    config: &mut TraceConfig,
    hooks: TracepointHooks,
    plan: &mut HookPlan,
) {
    let mut layout = match raw_args(btf, DROP_HOOK.tracepoint()).and_then(|a| drop_args(&a)) {
        Ok(layout) => layout,
        Err(why) => return plan.unavailable(&DROP_HOOK, why),
    };
    let protocol = match btf.offset_of("sk_buff", "protocol") {
        Ok(protocol) => protocol,
        Err(e) => return plan.unavailable(&DROP_HOOK, e.to_string()),
    };
    layout.skb_protocol = protocol;
    // Which frees are network drops: the packet's ethertype, else its socket's family.
    layout.sk_family = match btf.offset_of("sock", "__sk_common.skc_family") {
        Ok(family) => family,
        Err(e) => return plan.unavailable(&DROP_HOOK, e.to_string()),
    };
    let k = &config.kernel;
    let members = [
        (k.skb_sk, 8),
        (k.skb_dev, 8),
        (k.skb_head, 8),
        (k.skb_network_header, 2),
        (k.skb_iif, 4),
        (protocol, 2),
    ];
    if let Some((start, len)) = member_span(&members) {
        layout.skb_span_start = start;
        layout.skb_span_len = len;
    }
    (layout.dev_span_start, layout.dev_span_len) =
        device_span(k.dev_ifindex, k.dev_nd_net, k.dev_name).unwrap_or((0, 0));
    plan_dupack_check(btf, &mut layout);
    config.drop = layout;
    let arguments =
        "arguments (skb, location, reason, rx_sk) located in the BTF prototype btf_trace_kfree_skb";
    let non_network = "frees of skbs that are neither IP/IPv6/ARP packets nor an IP socket's (unix-domain, netlink…) counted apart as non_network";
    let no_reasons = if layout.reason == OFFSET_ABSENT {
        "; this kernel records no drop reasons"
    } else {
        ""
    };
    let what = if config.aggregate.mode == MODE_COUNT {
        format!("{arguments}; counted per site (reason, function, device, namespace) in the kernel, the packet headers read only for a port or address filter; {non_network}{no_reasons}")
    } else {
        format!("{arguments}; flow parsed from the packet headers via BTF offsets; {non_network}, not streamed{no_reasons}")
    };
    if hooks == TracepointHooks::Raw {
        return plan.want(
            &DROP_HOOK,
            format!("raw tracepoint (--tracepoint-hooks raw); {what}"),
        );
    }
    // The skb, device and namespace (and in count mode the socket) read by direct loads on a
    // BTF-typed tracepoint instead of helper calls: in count mode a storm's drop then costs
    // no helper call but the count's. The raw tracepoint is loaded instead where tp_btf is
    // refused (see `attach_planned`), with this detail's first part replaced.
    let how = if config.aggregate.mode == MODE_COUNT {
        "skb, device, namespace and socket read by direct loads the verifier checks against BTF, no helper call"
    } else {
        "skb, device and namespace read by direct loads the verifier checks against BTF, the socket and packet headers by helper reads"
    };
    plan.want(
        &DROP_BTF_HOOK,
        format!("BTF-typed tracepoint (tp_btf): {how}; {what}"),
    );
}

/// Where one drop reason holds both the stale segments `tcp_send_dupack` counts in
/// DelayedACKLost and the segments beyond the window (6.1's TCP_INVALID_SEQUENCE, split into
/// TCP_OLD_SEQUENCE and TCP_INVALID_SEQUENCE later), its drops are checked against the
/// socket's `rcv_nxt`.
fn plan_dupack_check(btf: &KernelBtf, layout: &mut DropArgs) {
    if btf.enumerator("SKB_DROP_REASON_TCP_OLD_SEQUENCE").is_some() {
        return;
    }
    let Some(reason) = btf.enumerator("SKB_DROP_REASON_TCP_INVALID_SEQUENCE") else {
        return;
    };
    if let (Ok(end_seq), Ok(rcv_nxt)) = (
        btf.offset_of("tcp_skb_cb", "end_seq"),
        btf.offset_of("tcp_sock", "rcv_nxt"),
    ) {
        layout.dupack_reason = reason as u32;
        layout.tcb_end_seq = end_seq;
        layout.rcv_nxt = rcv_nxt;
    }
}

fn plan_cpu_hooks(
    btf: &KernelBtf,
    config: &mut TraceConfig,
    hooks: TracepointHooks,
    plan: &mut HookPlan,
) {
    let none = Vec::new();
    let entry = raw_args(btf, SOFTIRQ_ENTRY_HOOK.tracepoint());
    let exit = raw_args(btf, SOFTIRQ_EXIT_HOOK.tracepoint());
    let napi = raw_args(btf, NAPI_HOOK.tracepoint());
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
            Ok(vec) => plan.want(spec, format!(
                "raw tracepoint (vec_nr checked against BTF), NET_RX_SOFTIRQ = {vec} from BTF; per-CPU NET_RX runs and time, aggregated in the kernel"
            )),
            Err(why) => plan.unavailable(spec, why.clone()),
        }
    }
    let what = "polls, full-budget polls and packets per CPU and device, aggregated in the kernel";
    match napi.and(napi_ok) {
        Ok(()) if hooks == TracepointHooks::Raw => plan.want(
            &NAPI_HOOK,
            format!("raw tracepoint (--tracepoint-hooks raw; napi, work, budget checked against BTF), device from napi->dev (BTF offsets); {what}"),
        ),
        // The device's name by direct loads instead of two helper reads: this runs for every
        // poll, as often as the softirq hooks.
        Ok(()) => plan.want(
            &NAPI_BTF_HOOK,
            format!("BTF-typed tracepoint (tp_btf): napi->dev and its name read by direct loads the verifier checks against BTF; arguments napi, work, budget checked against BTF; {what}"),
        ),
        Err(why) => plan.unavailable(&NAPI_HOOK, why),
    }
}

fn plan_receive_hook(
    btf: &KernelBtf,
    config: &mut TraceConfig,
    hooks: TracepointHooks,
    plan: &mut HookPlan,
) {
    let layout = match receive_hook_layout(btf) {
        Ok(layout) => layout,
        Err(why) => return plan.unavailable(&RECEIVE_HOOK, why),
    };
    config.receive = layout;
    // Only where TCP's drops fire the tracepoint at all: with drop reasons (5.17+);
    // before, tcp_drop() frees with __kfree_skb, which fires none.
    if config.drop.rx_sk == OFFSET_ABSENT && config.drop.reason != OFFSET_ABSENT {
        if let Some(detail) = plan.detail_of(&DROP_HOOK) {
            // Without rx_sk, a segment TCP drops after clearing skb->dev names no
            // namespace; the receive program tells the drop program its socket.
            config.drop.rx_sk_stash = 1;
            detail.push_str("; no rx_sk argument on this kernel: the socket (and namespace) of segments dropped inside tcp_rcv_established comes from the tcp_probe hook");
        }
    }
    let what = "every segment tcp_rcv_established processes, its sequence range read against the socket's rcv_nxt and out-of-order queue (BTF offsets); established sockets only; work only for segments out of sequence";
    if hooks == TracepointHooks::Raw {
        return plan.want(
            &RECEIVE_HOOK,
            format!("raw tracepoint (--tracepoint-hooks raw; arguments sk, skb checked against BTF btf_trace_tcp_probe): {what}"),
        );
    }
    // Three helper reads per segment received become direct loads and one cast.
    plan.want(
        &RECEIVE_BTF_HOOK,
        format!("BTF-typed tracepoint (tp_btf): direct loads of the skb's sequence range and, through bpf_skc_to_tcp_sock, the socket's receive state; arguments sk, skb checked against BTF btf_trace_tcp_probe; {what}"),
    );
}

/// Retransmit kinds: congestion state (BTF bitfield) and the softirq the CPU runs. Fills
/// their layout and says how kinds are named on this kernel.
fn plan_kinds(btf: &KernelBtf, config: &mut TraceConfig) -> String {
    match kind_layout(btf) {
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
    }
}

/// Spurious retransmits: the socket's D-SACK and reordering counters (BTF), read at each
/// attempt. Says how, or which member this kernel lacks.
fn plan_spurious(btf: &KernelBtf, config: &mut TraceConfig) -> String {
    let offset = |member: &str| btf.offset_of("tcp_sock", member).ok();
    let dsack = offset("dsack_dups");
    let reord = offset("reord_seen");
    config.spurious = SpuriousLayout {
        dsack_dups: dsack.unwrap_or(OFFSET_ABSENT),
        reord_seen: reord.unwrap_or(OFFSET_ABSENT),
    };
    match (dsack, reord) {
        (Some(_), Some(_)) => "spurious retransmits from the socket's tcp_sock.dsack_dups and reord_seen (BTF), read at each attempt".to_string(),
        (Some(_), None) => "spurious retransmits from tcp_sock.dsack_dups (BTF); no reord_seen in this kernel".to_string(),
        (None, _) => "no tcp_sock.dsack_dups in this kernel's BTF: spurious retransmits cannot be told from loss per flow".to_string(),
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
fn receive_hook_layout(btf: &KernelBtf) -> Result<ReceiveLayout, String> {
    let args = raw_args(btf, RECEIVE_HOOK.tracepoint())?;
    if args.len() < 2 || args[0] != "sock" || args[1] != "sk_buff" {
        return Err(format!(
            "tcp_probe takes ({}) here, not (struct sock *, struct sk_buff *)",
            args.join(", ")
        ));
    }
    btf.receive_layout().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            member_span(&[(24, 8), (16, 8), (200, 8), (180, 2)]),
            Some((16, 192))
        );
        assert_eq!(
            member_span(&[(0, 8), (300, 8)]),
            None,
            "wider than SKB_SPAN_MAX"
        );
        assert_eq!(member_span(&[]), None);
    }

    #[test]
    fn device_members_in_one_span_with_the_name_when_it_fits() {
        // Linux 6.18 (this machine): ifindex 224, nd_net 264, name 280.
        assert_eq!(device_span(224, 264, 280), Some((224, 72)));
        // Name far away: ifindex and nd_net alone.
        assert_eq!(device_span(224, 264, 900), Some((224, 48)));
        // Before Linux 6.8, nd_net sits about a kilobyte past ifindex: member by member.
        assert_eq!(device_span(224, 1184, 0), None);
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
