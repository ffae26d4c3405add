//! Per-CPU receive processing: NET_RX softirq runs and their time (`irq:softirq_entry` /
//! `irq:softirq_exit`), and NAPI polls per device (`napi:napi_poll`). Aggregated in the kernel;
//! nothing is streamed. Host-wide: the trace filters do not apply here.
//!
//! Raw tracepoints: these fire on every softirq and every NAPI poll, so the classic
//! tracepoints' record (filled by the kernel before the program runs) would cost more than the
//! programs themselves; the arguments come as they are, at indices checked against BTF.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netprobe_common::{NapiKey, NapiTotals, NetRxTotals, COUNTER_NAPI_TABLE_FULL};

use crate::{
    btf::{btf_arg, is_set, load},
    kernel::{arg, read},
    maps::{bump, setting},
};

/// How `napi_poll` names a poll without a device (the per-CPU backlog).
const NO_DEVICE: [u8; 16] = *b"(no_device)\0\0\0\0\0";

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

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn netprobe_sirq_in(ctx: RawTracePointContext) -> i32 {
    let _ = try_softirq_entry(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn netprobe_sirq_out(ctx: RawTracePointContext) -> i32 {
    let _ = try_softirq_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "napi_poll")]
pub fn netprobe_napi(ctx: RawTracePointContext) -> i32 {
    let _ = try_napi_poll(&ctx);
    0
}

#[inline(always)]
fn softirq_vec(ctx: &RawTracePointContext) -> Result<u32, i32> {
    Ok(arg::<0>(ctx, setting!(cpu.softirq_vec_arg))? as u32)
}

fn try_softirq_entry(ctx: &RawTracePointContext) -> Result<(), i32> {
    let vec = softirq_vec(ctx)?;
    if let Some(current) = CURRENT_SOFTIRQ.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; softirqs do not nest on a CPU.
        unsafe { *current = vec + 1 };
    }
    if vec != setting!(cpu.net_rx_vec) {
        return Ok(());
    }
    if let Some(started) = NET_RX_STARTED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; softirqs do not nest on a CPU.
        unsafe { *started = bpf_ktime_get_ns() };
    }
    Ok(())
}

fn try_softirq_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    if let Some(current) = CURRENT_SOFTIRQ.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; softirqs do not nest on a CPU.
        unsafe { *current = 0 };
    }
    if softirq_vec(ctx)? != setting!(cpu.net_rx_vec) {
        return Ok(());
    }
    let (Some(started), Some(totals)) = (NET_RX_STARTED.get_ptr_mut(0), NET_RX.get_ptr_mut(0))
    else {
        return Ok(());
    };
    // SAFETY: this CPU's slots only; softirqs do not nest on a CPU.
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

fn try_napi_poll(ctx: &RawTracePointContext) -> Result<(), i32> {
    let napi = arg::<0>(ctx, setting!(cpu.napi_arg))?;
    let work = arg::<1>(ctx, setting!(cpu.napi_work_arg))? as i32;
    let budget = arg::<2>(ctx, setting!(cpu.napi_budget_arg))? as i32;
    let dev: u64 = read(napi, setting!(cpu.napi_dev)).unwrap_or(0);
    let mut key = NapiKey { dev: NO_DEVICE };
    if dev != 0 {
        // A NUL-terminated name in a 16-byte array (IFNAMSIZ).
        key.dev = [0; 16];
        // SAFETY: a probe read (a bad address is an error, not a fault) into our 16-byte key.dev.
        let _ = unsafe {
            bpf_probe_read_kernel_buf(
                (dev + setting!(kernel.dev_name) as u64) as *const u8,
                &mut key.dev,
            )
        };
    }
    count_poll(&key, work, budget);
    Ok(())
}

/// `napi_poll` on a BTF-typed tracepoint, where the kernel allows one: the device and its name
/// by direct loads instead of two helper reads.
#[btf_tracepoint(function = "napi_poll")]
pub fn netprobe_napi_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_napi_poll_btf(&ctx);
    0
}

fn try_napi_poll_btf(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let napi = btf_arg::<0>(ctx, setting!(cpu.napi_arg))?;
    // Tested as it is: some kernels type tracepoint arguments as possibly NULL.
    if napi == 0 {
        return Ok(());
    }
    let work = btf_arg::<1>(ctx, setting!(cpu.napi_work_arg))? as i32;
    let budget = btf_arg::<2>(ctx, setting!(cpu.napi_budget_arg))? as i32;
    let dev: u64 = load(napi, setting!(cpu.napi_dev));
    let key = NapiKey {
        dev: if is_set(dev) {
            load(dev, setting!(kernel.dev_name))
        } else {
            NO_DEVICE
        },
    };
    count_poll(&key, work, budget);
    Ok(())
}

/// One poll of the device `key` counted: `work` packets of its `budget`.
#[inline(always)]
fn count_poll(key: &NapiKey, work: i32, budget: i32) {
    let full = (budget > 0 && work >= budget) as u64;
    let work = work.max(0) as u64;
    if let Some(totals) = NAPI_POLLS.get_ptr_mut(key) {
        // SAFETY: this CPU's value from the lookup; NAPI polls do not nest on a CPU.
        unsafe {
            (*totals).polls += 1;
            (*totals).full_budget += full;
            (*totals).work += work;
        }
    } else if NAPI_POLLS
        .insert(
            key,
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
}
