//! The raw tracepoint `tcp_retransmit_skb(sk, skb[, err])`: every retransmitted skb, and (Linux ≥
//! 6.17) every failed attempt, with its outcome (`outcome.rs`); and
//! `tcp_retransmit_synack(sk, req)`.
//!
//! Raw tracepoints rather than the classic `tcp:` ones: a classic tracepoint's program runs
//! through perf's tracepoint path, which silently skips it when the CPU is already inside a
//! BPF program of that kind, or inside perf's buffer of the same context (a retransmit in a
//! softirq that interrupted one): a retransmit the kernel counted and netprobe never saw. A raw
//! tracepoint program is only ever skipped when it interrupts itself (Linux ≥ 6.0), and the
//! kernel counts that (`recursion_misses`, reported as `kernel_skipped`). It also builds no
//! record: the flow is read from the socket, the arguments' positions from BTF.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use netprobe_common::{
    vocab::EgressFailure, EventHeader, EventKind, Flow, FlowKey, RetransmitEvent, RetransmitTotals,
    COUNTER_FLOW_TABLE_FULL, COUNTER_RETRANSMIT_LOST, COUNTER_RETRANSMIT_SEEN, KIND_FAST,
    KIND_OTHER, KIND_RTO, KIND_SYN, KIND_SYNACK, KIND_TLP, OUTCOME_ABORTED, OUTCOME_FAILED_COUNTED,
    OUTCOME_SENT, TRIGGER_OTHER, TRIGGER_TIMER, TRIGGER_UNKNOWN,
};

use crate::kernel::{
    arg, flow_matches, netns_matches, read, sock_family, sock_flow, sock_inode, sock_netns,
};
use crate::maps::{
    bump, counting_only, nest_in, nest_out, setting, submit_flags, EVENTS, MAX_NESTING,
    RETRANSMIT_FLOWS,
};
use crate::outcome;
use crate::softirq::current_softirq;
use crate::timers::{self, TIMER_KIND_RTO, TIMER_KIND_TLP};

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn netprobe_rtx(ctx: RawTracePointContext) -> i32 {
    let _ = try_retransmit(&ctx);
    0
}

/// One retransmit on its way to the flow table and the stream. It lives in a per-CPU slot,
/// one per nesting level of the two retransmit programs (a SYN-ACK's in a softirq can
/// interrupt a retransmit's in process context, and before Linux 6.0 either can interrupt
/// itself), and is filled in stages, each stage a global function: the verifier checks a
/// global function once, on its own, instead of once for every path that reaches it. Without
/// this the Linux 6.1 verifier walked ~1M instructions (its limit) through the combinations of
/// family, kind, trigger, flow-table hit and ring-buffer outcome.
///
/// The two twins of the retransmit program (this raw tracepoint's, and the BTF-typed one in
/// `tcp_btf.rs`) differ only in how they read the kernel's objects into it: from
/// [`netprobe_rtx_classify`] on, one code path.
#[repr(C)]
pub struct Pending {
    pub(crate) flow: Flow,
    pub(crate) sk: u64,
    pub(crate) skb: u64,
    pub(crate) sock_ino: u64,
    pub(crate) netns: u32,
    pub(crate) err: i32,
    pub(crate) seq: u32,
    pub(crate) bytes: u32,
    pub(crate) segs: u16,
    pub(crate) state: u8,
    kind: u8,
    trigger: u8,
    outcome: u8,
    /// Which of `ca_state` and `total_retrans` were read (`HAS_*`).
    pub(crate) has: u8,
    _pad0: u8,
    /// The two bytes holding the socket's `icsk_ca_state` bitfield.
    pub(crate) ca_state: u16,
    _pad1: u16,
    /// The socket's `total_retrans` now (`outcome.rs`).
    pub(crate) total_retrans: u32,
    /// The socket's `dsack_dups` and `reord_seen` now (0 where unreadable, e.g. SYN-ACKs).
    pub(crate) dsack_dups: u32,
    pub(crate) reord_seen: u32,
    delta: RetransmitTotals,
    key: FlowKey,
}

/// `Pending::has`: the congestion state was read.
pub const HAS_CA_STATE: u8 = 1;
/// `Pending::has`: the socket's `total_retrans` was read.
pub const HAS_TOTAL_RETRANS: u8 = 2;

#[map]
static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(MAX_NESTING, 0);

/// The two retransmit programs' nesting level on each CPU: which `PENDING` slot a run owns.
#[map]
static RETRANSMIT_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's pending retransmit at nesting level `level`.
#[inline(always)]
fn pending(level: u32) -> Option<&'static mut Pending> {
    // SAFETY: this CPU's slot for this level: only the run that took the level uses it.
    PENDING.get_ptr_mut(level).map(|p| unsafe { &mut *p })
}

/// Fills this CPU's next `PENDING` slot with `describe` (given the slot and its level;
/// nonzero: filtered out), then counts and streams it.
#[inline(always)]
pub(crate) fn with_pending(describe: impl FnOnce(&mut Pending, u32) -> i32) -> Result<(), i32> {
    let level = nest_in(&RETRANSMIT_DEPTH).ok_or(-1)?;
    if let Some(p) = pending(level) {
        if describe(p, level) == 0 {
            netprobe_rtx_record(level);
        }
    }
    nest_out(&RETRANSMIT_DEPTH, level);
    Ok(())
}

fn try_retransmit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let sk = arg::<0>(ctx, setting!(retransmit.sk))?;
    let skb = arg::<1>(ctx, setting!(retransmit.skb))?;
    // An int argument: the low 32 bits of its u64 slot.
    let err = arg::<2>(ctx, setting!(retransmit.err)).map_or(0, |e| e as i32);
    with_pending(|p, level| {
        p.sk = sk;
        p.skb = skb;
        p.err = err;
        if netprobe_rtx_describe(level) != 0 {
            return 1;
        }
        netprobe_rtx_classify(level)
    })
}

/// Stage two of a retransmit: its namespace (and the netns filter), segments, sequence,
/// length, congestion state, counts and owner, read from the kernel by helper calls (the
/// BTF-typed twin's direct loads: `tcp_btf.rs`). Returns nonzero when filtered out.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rtx_describe(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    if sock_flow(p.sk, sock_family(p.sk), &mut p.flow).is_err() || !flow_matches(&p.flow, true) {
        return 1;
    }
    p.netns = sock_netns(p.sk);
    if !netns_matches(p.netns) {
        return 1;
    }
    // The skb on the retransmit queue still holds TCP's control block in skb->cb.
    p.state = read(p.sk, setting!(kernel.sk_state)).unwrap_or(0);
    let cb = p.skb + setting!(kernel.skb_cb) as u64;
    p.segs = read(cb, setting!(kernel.tcb_gso_segs)).unwrap_or(0);
    p.seq = read(cb, setting!(kernel.tcb_seq)).unwrap_or(0);
    p.bytes = read(p.skb, setting!(kernel.skb_len)).unwrap_or(0);
    p.has = 0;
    if let Ok(raw) = read::<u16>(p.sk, setting!(kind.ca_state)) {
        p.ca_state = raw;
        p.has |= HAS_CA_STATE;
    }
    if let Ok(now) = read::<u32>(p.sk, setting!(retransmit.total_retrans)) {
        p.total_retrans = now;
        p.has |= HAS_TOTAL_RETRANS;
    }
    // tcp_retransmit_skb always has a full socket.
    p.sock_ino = sock_inode(p.sk);
    // What the peer has reported so far as received twice, and the reordering the socket
    // has detected: with the first values read, they tell spurious retransmits from loss.
    p.dsack_dups = read(p.sk, setting!(spurious.dsack_dups)).unwrap_or(0);
    p.reord_seen = read(p.sk, setting!(spurious.reord_seen)).unwrap_or(0);
    0
}

/// Stage three, shared by both twins: the kind and the outcome, from what stage two read.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rtx_classify(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    let ca_state = (p.has & HAS_CA_STATE != 0).then_some(p.ca_state);
    let (kind, trigger) = retransmit_kind(p.sk, p.state, ca_state);
    p.kind = kind;
    p.trigger = trigger;
    let now = (p.has & HAS_TOTAL_RETRANS != 0).then_some(p.total_retrans);
    p.outcome = outcome::outcome(p.sk, p.err, p.segs, now);
    0
}

/// Stage four, shared with SYN-ACKs: the exact per-flow totals, then the event.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rtx_record(level: u32) -> i32 {
    bump(COUNTER_RETRANSMIT_SEEN);
    netprobe_rtx_count(level);
    if counting_only() {
        return 0;
    }
    netprobe_rtx_emit(level)
}

/// Queues the pending retransmit, written in place in the ring slot.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rtx_emit(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    // SAFETY: a helper without arguments; it only reads the clock.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = EVENTS.reserve::<RetransmitEvent>(0) else {
        bump(COUNTER_RETRANSMIT_LOST);
        return 1;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the ring buffer slot reserved above, sized for it, ours until submit.
    unsafe {
        (*event).header = EventHeader {
            kind: EventKind::Retransmit.id(),
            _pad0: 0,
            cpu: bpf_get_smp_processor_id(),
            ts_ns,
        };
        (*event).flow = p.flow;
        (*event).netns = p.netns;
        (*event).err = p.err;
        (*event).seq = p.seq;
        (*event).bytes = p.bytes;
        (*event).segs = p.segs;
        (*event).state = p.state;
        (*event).kind = p.kind;
        (*event).trigger = p.trigger;
        (*event).outcome = p.outcome;
        (*event)._pad1 = [0; 2];
        (*event).sock_ino = p.sock_ino;
    }
    entry.submit(submit_flags(ts_ns));
    0
}

/// `TRIGGER_*` for what this CPU is running now.
#[inline(always)]
fn current_trigger() -> u8 {
    match current_softirq() {
        Some(vec) if vec == setting!(kind.timer_vec) => TRIGGER_TIMER,
        Some(_) => TRIGGER_OTHER,
        // Not in a softirq: process context (socket backlog), unless the hooks are inactive.
        None if setting!(cpu.softirq_vec_arg) != netprobe_common::OFFSET_ABSENT => TRIGGER_OTHER,
        None => TRIGGER_UNKNOWN,
    }
}

const TCP_SYN_SENT: u8 = netprobe_common::vocab::TcpState::SynSent.raw();
const TCP_NEW_SYN_RECV: u8 = netprobe_common::vocab::TcpState::NewSynRecv.raw();
/// `enum tcp_ca_state` (include/uapi/linux/tcp.h, user-visible ABI).
const TCP_CA_RECOVERY: u8 = 3;
const TCP_CA_LOSS: u8 = 4;

/// Why this segment is sent again.
///
/// Exact where the kernel lets us hook `tcp_send_loss_probe` / `tcp_retransmit_timer`
/// (`timers.rs`): a retransmit sent from inside one of them is that function's. Otherwise,
/// from what the kernel exposes at the tracepoint:
/// - SYN_SENT: a SYN retransmit;
/// - congestion state Loss: the RTO timer fired (tcp_enter_loss runs before its retransmit,
///   and the slow-start retransmits after it stay in Loss);
/// - Recovery: fast retransmit / recovery (dupACKs, SACK, the RACK reordering timer);
/// - otherwise, from the TIMER softirq: the tail-loss probe (it keeps the state as it is),
///   unless the probe is hooked, which then says exactly which ones are probes.
///
/// The timer armed *now* (icsk_pending) is deliberately not used: it is the next timer, not
/// the one that fired. `ca_state`: the bytes holding the congestion state, where read.
/// Returns (KIND_*, TRIGGER_*).
#[inline(always)]
fn retransmit_kind(sk: u64, state: u8, ca_state: Option<u16>) -> (u8, u8) {
    let trigger = current_trigger();
    if state == TCP_SYN_SENT {
        return (KIND_SYN, trigger);
    }
    if let Some(kind) = timers::kind_inside(sk) {
        return (kind, TRIGGER_TIMER);
    }
    // Without the congestion state (not in this kernel's BTF) nothing more can be said.
    let Some(raw) = ca_state else {
        return (KIND_OTHER, trigger);
    };
    let bits = setting!(kind.ca_state_bits);
    let ca_state = ((raw >> setting!(kind.ca_state_shift)) & ((1u16 << bits) - 1)) as u8;
    match ca_state {
        // Hooked, the timer's own retransmit was caught above: this one is a slow-start one.
        TCP_CA_LOSS if timers::hooked(TIMER_KIND_RTO) && trigger != TRIGGER_UNKNOWN => {
            (KIND_RTO, TRIGGER_OTHER)
        }
        TCP_CA_LOSS => (KIND_RTO, trigger),
        TCP_CA_RECOVERY => (KIND_FAST, trigger),
        _ if trigger == TRIGGER_TIMER && !timers::hooked(TIMER_KIND_TLP) => (KIND_TLP, trigger),
        _ => (KIND_OTHER, trigger),
    }
}

/// Adds the pending retransmit to the exact per-flow totals (this CPU's slot). Kinds count what
/// was sent; failed attempts are counted by outcome.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_rtx_count(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    let slot = (p.kind as usize) & 7;
    let cause = EgressFailure::from_err(p.err).index() & 3;
    p.key = FlowKey {
        flow: p.flow,
        netns: p.netns,
        _pad0: 0,
    };
    p.delta = RetransmitTotals {
        sock_ino: p.sock_ino,
        dsack_dups_first: p.dsack_dups,
        dsack_dups_latest: p.dsack_dups,
        reord_seen_first: p.reord_seen,
        reord_seen_latest: p.reord_seen,
        ..RetransmitTotals::default()
    };
    let segs = p.segs as u64;
    let d = &mut p.delta;
    match p.outcome {
        OUTCOME_SENT => {
            d.sent = 1;
            d.segs = segs;
            d.bytes = p.bytes as u64;
            d.kinds[slot] = 1;
            d.kind_segs[slot] = p.segs as u32;
            if p.trigger == TRIGGER_TIMER {
                d.timer_kinds[slot] = 1;
                d.timer_segs[slot] = p.segs as u32;
            }
        }
        OUTCOME_FAILED_COUNTED => {
            d.failed_counted = 1;
            d.failed_counted_segs = segs;
            if p.err == -EBUSY {
                d.failed_busy_segs = segs;
            }
            d.failed_kinds[slot] = 1;
            d.failed_causes[cause] = 1;
        }
        OUTCOME_ABORTED => {
            d.aborted = 1;
            d.aborted_segs = segs;
        }
        _ => {
            d.unclassified = 1;
            d.unclassified_segs = segs;
        }
    }
    let delta = &p.delta;
    if let Some(totals) = RETRANSMIT_FLOWS.get_ptr_mut(&p.key) {
        // SAFETY: this CPU's value from the lookup; the retransmit programs do not nest on a CPU.
        unsafe { add_totals(&mut *totals, delta, slot, cause) };
        return 0;
    }
    // First retransmit of this flow on this CPU. From a program, updating a per-CPU hash
    // writes only this CPU's value and zero-fills the others on creation, so a concurrent
    // insert of the same key by another CPU loses nothing.
    if RETRANSMIT_FLOWS.insert(&p.key, delta, 0).is_err() {
        bump(COUNTER_FLOW_TABLE_FULL);
    }
    0
}

/// `-EBUSY` (include/uapi/asm-generic/errno-base.h): TCPRetransFail leaves these out.
const EBUSY: i32 = 16;

/// Adds one attempt's delta, which is zero outside `slot` and `cause`, to a flow's totals.
#[inline(always)]
fn add_totals(totals: &mut RetransmitTotals, delta: &RetransmitTotals, slot: usize, cause: usize) {
    // This CPU's first attempt for the flow (the entry may have been created by another CPU,
    // which leaves this CPU's value zeroed): its socket counters are the baseline.
    let attempts = totals.sent + totals.failed_counted + totals.aborted + totals.unclassified;
    if attempts == 0 {
        totals.dsack_dups_first = delta.dsack_dups_first;
        totals.reord_seen_first = delta.reord_seen_first;
    }
    if delta.dsack_dups_latest > totals.dsack_dups_latest {
        totals.dsack_dups_latest = delta.dsack_dups_latest;
    }
    if delta.reord_seen_latest > totals.reord_seen_latest {
        totals.reord_seen_latest = delta.reord_seen_latest;
    }
    totals.sent += delta.sent;
    totals.segs += delta.segs;
    totals.bytes += delta.bytes;
    totals.failed_counted += delta.failed_counted;
    totals.failed_counted_segs += delta.failed_counted_segs;
    totals.failed_busy_segs += delta.failed_busy_segs;
    totals.aborted += delta.aborted;
    totals.aborted_segs += delta.aborted_segs;
    totals.unclassified += delta.unclassified;
    totals.unclassified_segs += delta.unclassified_segs;
    totals.kinds[slot] += delta.kinds[slot];
    totals.kind_segs[slot] += delta.kind_segs[slot];
    totals.timer_kinds[slot] += delta.timer_kinds[slot];
    totals.timer_segs[slot] += delta.timer_segs[slot];
    totals.failed_kinds[slot] += delta.failed_kinds[slot];
    totals.failed_causes[cause] += delta.failed_causes[cause];
    if delta.sock_ino != 0 {
        totals.sock_ino = delta.sock_ino;
    }
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn netprobe_synack(ctx: RawTracePointContext) -> i32 {
    let _ = try_synack(&ctx);
    0
}

/// `tcp_retransmit_synack` fires only when the SYN-ACK went out, which is also when
/// RetransSegs and TCPSynRetrans count it (one segment).
fn try_synack(ctx: &RawTracePointContext) -> Result<(), i32> {
    // The listener: its namespace, and its owner (the process that will accept()).
    let sk = arg::<0>(ctx, setting!(synack.sk))?;
    let req = arg::<1>(ctx, setting!(synack.req))?;
    with_pending(|p, level| {
        p.sk = sk;
        p.skb = req;
        netprobe_synack_describe(level)
    })
}

/// Stage two of a SYN-ACK retransmit: the listener's namespace and owner.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netprobe_synack_describe(level: u32) -> i32 {
    let Some(p) = pending(level) else {
        return 1;
    };
    // The request socket (kept in `skb`) names the flow.
    let req = p.skb;
    if sock_flow(req, sock_family(req), &mut p.flow).is_err() || !flow_matches(&p.flow, true) {
        return 1;
    }
    p.netns = sock_netns(p.sk);
    if !netns_matches(p.netns) {
        return 1;
    }
    p.sock_ino = sock_inode(p.sk);
    p.trigger = current_trigger();
    p.err = 0;
    p.seq = 0;
    p.bytes = 0;
    p.segs = 1;
    // The request socket is in SYN_RECV (NEW_SYN_RECV in the hash table).
    p.state = TCP_NEW_SYN_RECV;
    p.kind = KIND_SYNACK;
    p.outcome = OUTCOME_SENT;
    // A request socket has no tcp_sock.
    p.dsack_dups = 0;
    p.reord_seen = 0;
    0
}
