//! Maps shared by all programs, and the load-time configuration global.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use netprobe_common::{FlowKey, RetransmitTotals, TraceConfig, COUNTER_SLOTS};

/// Load-time settings: kernel layouts and filters. Overwritten by the agent before loading;
/// it lives in .rodata, so the verifier treats it as constant.
#[no_mangle]
pub static CONFIG: TraceConfig = TraceConfig::UNSET;

/// Reads one field of [`CONFIG`]. The volatile read stops the compiler from folding in the
/// compiled-in placeholder values.
macro_rules! setting {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&$crate::maps::CONFIG.$($field).+) }
    };
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

/// Adds one to a per-CPU counter. Tracepoint programs do not nest on a CPU (the kernel's
/// bpf_prog_active guard), so a plain increment of this CPU's slot is exact.
#[inline(always)]
pub fn bump(counter: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter) {
        unsafe { *slot += 1 };
    }
}
