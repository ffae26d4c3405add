//! Reading kernel objects in BTF-typed programs (tp_btf): arguments and members by direct
//! loads the verifier checks against the kernel's BTF, instead of helper calls.
//!
//! The verifier types the loaded pointers (`struct net_device *`…) and refuses any ALU
//! operation combining two of them; the compiler is free to fold `a != 0 || b != 0` into
//! `(a | b) != 0`, which it refuses ("pointer |= pointer prohibited"). So a pointer is only
//! compared to zero through [`is_set`], whose result the compiler cannot see through, used
//! as the base of a load, or made a plain number with [`launder`] before shared code that
//! combines it freely.

use aya_ebpf::programs::BtfTracePointContext;
use core::ptr::{read_volatile, write_volatile};
use netprobe_common::OFFSET_ABSENT;

use crate::kernel::Reader;
use crate::maps::setting;

/// Whether a loaded pointer is set, as a value the compiler cannot fold back into pointer
/// arithmetic (see the module's documentation).
#[inline(always)]
pub fn is_set(pointer: u64) -> bool {
    let mut set = (pointer != 0) as u64;
    // SAFETY: one register moved to itself (an empty sequence would share its line-info
    // offset with the next instruction, which the kernel refuses); only hides `set`'s origin from the optimizer.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) set, options(nomem, nostack, preserves_flags))
    };
    set != 0
}

/// Argument `N` of a BTF-typed tracepoint, as `kernel::arg` for raw ones.
#[inline(always)]
pub fn btf_arg<const N: usize>(ctx: &BtfTracePointContext, position: u32) -> Result<u64, i32> {
    if position != N as u32 {
        return Err(-1);
    }
    Ok(ctx.arg::<u64>(N))
}

/// A member of a BTF-typed object, by a direct load (`T::default()` where this kernel lacks
/// it). The offset is a load-time constant the verifier checks, with the size, against the
/// object's BTF type; the load is fault-handling: a NULL or stale object reads as zero.
#[inline(always)]
pub fn load<T: Copy + Default>(base: u64, offset: u32) -> T {
    if offset == OFFSET_ABSENT {
        return T::default();
    }
    // SAFETY: `base` is a BTF-typed pointer (a tracepoint argument or loaded from one); the
    // verifier turns this into a fault-handling load.
    unsafe { core::ptr::read((base + offset as u64) as *const T) }
}

/// `value` stored in `slot` (map memory) and read back: the verifier types a load from a map
/// value as a number, whatever was stored, so a BTF-typed pointer comes back as its address.
#[inline(always)]
pub fn launder(slot: &mut u64, value: u64) -> u64 {
    // SAFETY: `slot` is a valid, exclusive reference; volatile so that the load is not
    // replaced by the stored value.
    unsafe {
        write_volatile(slot, value);
        read_volatile(slot)
    }
}

/// Direct loads ([`load`]) as a [`Reader`]: the base must be a BTF-typed pointer.
pub struct Loads;

impl Reader for Loads {
    #[inline(always)]
    fn get<T: Copy + Default>(&self, base: u64, offset: u32) -> Result<T, i32> {
        if offset == OFFSET_ABSENT {
            return Err(-1);
        }
        Ok(load(base, offset))
    }
}

/// Inode of the network namespace `net` (a `struct net *` loaded from BTF-typed memory; the
/// helper-read twin is `kernel::net_inum`).
#[inline(always)]
pub fn net_inum(net: u64) -> u32 {
    load(net, setting!(kernel.net_inum))
}
