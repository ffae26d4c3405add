//! Per-CPU receive processing: NET_RX softirq runs and their time (`irq:softirq_entry` /
//! `irq:softirq_exit`), and NAPI polls per device (`napi:napi_poll`). Aggregated in the kernel;
//! nothing is streamed. Host-wide: the trace filters do not apply here.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use netprobe_common::{NapiKey, NapiTotals, NetRxTotals, COUNTER_NAPI_TABLE_FULL};

use crate::{
    kernel::field,
    maps::{bump, setting},
};

/// The softirq vector this CPU is running, plus one (0: none, or hooks inactive).
#[map]
static CURRENT_SOFTIRQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The softirq vector this CPU is running now, if the softirq hooks are attached.
#[inline(always)]
pub fn current_softirq() -> Option<u32> {
    match CURRENT_SOFTIRQ.get(0) {
        Some(v) if *v != 0 => Some(*v - 1),
        _ => None,
    }
}

/// When this CPU entered NET_RX (0: not in NET_RX, or it began before we attached).
#[map]
static NET_RX_STARTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static NET_RX: PerCpuArray<NetRxTotals> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static NAPI_POLLS: PerCpuHashMap<NapiKey, NapiTotals> = PerCpuHashMap::with_max_entries(256, 0);

#[tracepoint]
pub fn netprobe_sirq_in(ctx: TracePointContext) -> u32 {
    let _ = try_softirq_entry(&ctx);
    0
}

#[tracepoint]
pub fn netprobe_sirq_out(ctx: TracePointContext) -> u32 {
    let _ = try_softirq_exit(&ctx);
    0
}

#[tracepoint]
pub fn netprobe_napi(ctx: TracePointContext) -> u32 {
    let _ = try_napi_poll(&ctx);
    0
}

#[inline(always)]
fn is_net_rx(ctx: &TracePointContext) -> Result<bool, i32> {
    let vec: u32 = field(ctx, setting!(cpu.softirq_vec))?;
    Ok(vec == setting!(cpu.net_rx_vec))
}

fn try_softirq_entry(ctx: &TracePointContext) -> Result<(), i32> {
    let vec: u32 = field(ctx, setting!(cpu.softirq_vec))?;
    if let Some(current) = CURRENT_SOFTIRQ.get_ptr_mut(0) {
        unsafe { *current = vec + 1 };
    }
    if vec != setting!(cpu.net_rx_vec) {
        return Ok(());
    }
    if let Some(started) = NET_RX_STARTED.get_ptr_mut(0) {
        unsafe { *started = bpf_ktime_get_ns() };
    }
    Ok(())
}

fn try_softirq_exit(ctx: &TracePointContext) -> Result<(), i32> {
    if let Some(current) = CURRENT_SOFTIRQ.get_ptr_mut(0) {
        unsafe { *current = 0 };
    }
    if !is_net_rx(ctx)? {
        return Ok(());
    }
    let (Some(started), Some(totals)) = (NET_RX_STARTED.get_ptr_mut(0), NET_RX.get_ptr_mut(0))
    else {
        return Ok(());
    };
    // This CPU's slots only; softirqs do not nest on a CPU.
    unsafe {
        if *started == 0 {
            return Ok(());
        }
        let took = bpf_ktime_get_ns().saturating_sub(*started);
        *started = 0;
        (*totals).runs += 1;
        (*totals).total_ns += took;
        if took > (*totals).max_ns {
            (*totals).max_ns = took;
        }
    }
    Ok(())
}

fn try_napi_poll(ctx: &TracePointContext) -> Result<(), i32> {
    let work: i32 = field(ctx, setting!(cpu.napi_work))?;
    let budget: i32 = field(ctx, setting!(cpu.napi_budget))?;
    // __data_loc: the string lives in the record at (loc & 0xffff), (loc >> 16) bytes long.
    let loc: u32 = field(ctx, setting!(cpu.napi_dev_name))?;
    let raw: [u8; 16] = field(ctx, loc & 0xffff)?;
    let len = ((loc >> 16) as usize).min(16);
    let mut key = NapiKey { dev: [0; 16] };
    let mut i = 0;
    while i < 16 {
        if i < len && raw[i] != 0 {
            key.dev[i] = raw[i];
        } else {
            break;
        }
        i += 1;
    }
    let full = (budget > 0 && work >= budget) as u64;
    let work = work.max(0) as u64;
    if let Some(totals) = NAPI_POLLS.get_ptr_mut(&key) {
        unsafe {
            (*totals).polls += 1;
            (*totals).full_budget += full;
            (*totals).work += work;
        }
    } else if NAPI_POLLS
        .insert(
            &key,
            &NapiTotals {
                polls: 1,
                full_budget: full,
                work,
            },
            0,
        )
        .is_err()
    {
        bump(COUNTER_NAPI_TABLE_FULL);
    }
    Ok(())
}
