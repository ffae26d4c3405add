//! Maps shared by all programs, and the load-time configuration global.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netprobe_common::{
    DropSiteKey, FlowKey, NonNetworkKey, RetransmitTotals, SiteCount, TraceConfig, COUNTER_SLOTS,
    MODE_COUNT,
};

/// Load-time settings: kernel layouts and filters. Overwritten by the agent before loading;
/// it lives in .rodata, so the verifier treats it as constant.
#[no_mangle]
pub static CONFIG: TraceConfig = TraceConfig::UNSET;

/// Reads one field of [`CONFIG`]. The volatile read stops the compiler from folding in the
/// compiled-in placeholder values.
macro_rules! setting {
    ($($field:ident).+) => {{
        // Also used inside unsafe blocks, where this one is redundant.
        // SAFETY: an aligned field of a static, which lives as long as the program.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(&$crate::maps::CONFIG.$($field).+) };
        value
    }};
}
pub(crate) use setting;

/// Event stream to the agent. The agent sizes it at load time (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Exact per-CPU counters (`netprobe_common::COUNTER_*`), kept whether or not events fit.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Exact per-flow retransmit totals, per CPU (summed by the agent). The BPF target has no
/// atomic read-modify-write in `core`; per-CPU slots need none. Memory is entries × CPUs × 32 B.
#[map]
pub static RETRANSMIT_FLOWS: PerCpuHashMap<FlowKey, RetransmitTotals> =
    PerCpuHashMap::with_max_entries(4096, 0);

/// Exact drop counts by raw reason value; per-CPU, so the agent also gets drops by CPU.
#[map]
pub static DROP_REASONS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Exact counts of the frees that are not network drops (see `NonNetworkKey`), by reason
/// and location; per-CPU, summed by the agent. Kept apart so that they are shown, not lost,
/// and never inflate the drops.
#[map]
pub static NON_NETWORK_DROPS: PerCpuHashMap<NonNetworkKey, u64> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// The drop table: exact drops per (reason, site, device, namespace), per CPU, and in stream
/// mode each site's storm sampling state. The agent sizes it at load time.
#[map]
pub static DROP_SITES: PerCpuHashMap<DropSiteKey, SiteCount> =
    PerCpuHashMap::with_max_entries(4096, 0);

/// Count mode's drop table, in two parts so that a storm's drops cost no hash lookup: each
/// CPU gives a site a slot of its own on first sight (`SITE_SLOTS`: key → slot + 1, per CPU;
/// 0 on the CPUs that never saw it), and counts it in that slot of `SITE_COUNTS`. The slot of
/// the site this CPU counted last is cached (`LAST_SITE`), so a drop at the same site as the
/// previous one is one key compare and one increment. Slots never move: the agent reads the
/// exact count of every (site, CPU) at any time.
#[map]
pub static SITE_SLOTS: PerCpuHashMap<DropSiteKey, u32> = PerCpuHashMap::with_max_entries(4096, 0);

/// Count mode's per-CPU counts, by slot (see `SITE_SLOTS`).
#[map]
pub static SITE_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SITE_SLOT_COUNT, 0);

/// Slots per CPU: as many as `SITE_SLOTS` has entries.
pub const SITE_SLOT_COUNT: u32 = 4096;

/// Count mode: nothing is streamed, only counted (see `AggregateConfig`).
#[inline(always)]
pub fn counting_only() -> bool {
    setting!(aggregate.mode) == MODE_COUNT
}

/// Time of the last reader wakeup (shared; a lost race only means one extra wakeup).
#[map]
pub static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Flags for `bpf_ringbuf_submit`: wake the reader only when enough bytes are pending or
/// enough time has passed since the last wakeup (see `StreamConfig`).
#[inline(always)]
pub fn submit_flags(now_ns: u64) -> u64 {
    submit_flags_for(EVENTS.query(BPF_RB_AVAIL_DATA as u64), now_ns)
}

/// [`submit_flags`] with the ring's unread bytes already queried (`unread`).
#[inline(always)]
pub fn submit_flags_for(unread: u64, now_ns: u64) -> u64 {
    if unread >= setting!(stream.wakeup_bytes) as u64 {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    if let Some(last) = LAST_WAKEUP.get_ptr_mut(0) {
        // SAFETY: the lookup's pointer to the shared slot; a racing CPU costs one extra wakeup.
        unsafe {
            if now_ns.wrapping_sub(*last) >= setting!(stream.wakeup_interval_ns) as u64 {
                *last = now_ns;
                return BPF_RB_FORCE_WAKEUP as u64;
            }
        }
    }
    BPF_RB_NO_WAKEUP as u64
}

/// Adds one to a per-CPU counter. Each slot has one writer program, or the two retransmit
/// programs, and only a run of the same writer that interrupts this one on this CPU could
/// lose an increment (between its load and its store, three instructions): a SYN-ACK
/// retransmit in a softirq that interrupted a retransmit's run in process context, or
/// before Linux 6.0 a program interrupting itself. The BPF target's `core` has no atomic
/// read-modify-write (and stable Rust no BPF inline assembly) to close that window.
#[inline(always)]
pub fn bump(counter: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: this CPU's slot from the lookup; one writer per slot (see above).
        unsafe { *slot += 1 };
    }
}

/// How deep a raw tracepoint program can be nested in itself on one CPU: task, softirq,
/// hardirq, NMI. Kernels before 6.0 have no per-program recursion guard for raw tracepoints,
/// so a drop in a softirq can run the drop program inside its own run in task context.
pub const MAX_NESTING: u32 = 4;

/// Enters one more level of `depth` (this CPU's nesting counter for one program): the level
/// whose per-CPU working slot this run owns. `None` only past [`MAX_NESTING`], which cannot
/// happen.
#[inline(always)]
pub fn nest_in(depth: &PerCpuArray<u32>) -> Option<u32> {
    let slot = depth.get_ptr_mut(0)?;
    // SAFETY: this CPU's counter; a nested run restores it before the outer run resumes.
    unsafe {
        let level = *slot;
        if level >= MAX_NESTING {
            return None;
        }
        *slot = level + 1;
        Some(level)
    }
}

/// Leaves the level [`nest_in`] returned.
#[inline(always)]
pub fn nest_out(depth: &PerCpuArray<u32>, level: u32) {
    if let Some(slot) = depth.get_ptr_mut(0) {
        // SAFETY: as in `nest_in`.
        unsafe { *slot = level };
    }
}
