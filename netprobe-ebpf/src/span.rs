//! Several members of one kernel object read with one helper call: the span of bytes that
//! holds them all is copied into a per-CPU buffer, and each member taken out of it (see
//! `DropArgs::skb_span_len` and `dev_span_len`, found by the agent from BTF).

use aya_ebpf::{helpers::bpf_probe_read_kernel_buf, macros::map, maps::PerCpuArray};
use netprobe_common::SKB_SPAN_MAX;

/// The buffer, per CPU. The drop program's stages copy into it and take their members out at
/// once (the skb's, then the device's). On kernels before 6.0, which guard no raw tracepoint
/// against running nested on its CPU, a drop in a softirq that interrupts those few
/// instructions can overwrite it: the outer drop then reads the inner one's members.
#[map]
static SPAN: PerCpuArray<[u8; SKB_SPAN_MAX as usize]> = PerCpuArray::with_max_entries(1, 0);

/// `len` bytes from `base + start` copied into this CPU's buffer; `None` when `len` is 0 (no
/// span: read member by member), too long, or the copy failed.
#[inline(always)]
pub fn copy_span(base: u64, start: u32, len: u32) -> Option<&'static [u8; SKB_SPAN_MAX as usize]> {
    let len = len as usize;
    if len == 0 || len > SKB_SPAN_MAX as usize {
        return None;
    }
    // SAFETY: this CPU's slot; its users take their members out before anything else runs.
    let span = unsafe { &mut *SPAN.get_ptr_mut(0)? };
    // SAFETY: a probe read (bad addresses fail, never fault) into our own span[..len].
    let copied =
        unsafe { bpf_probe_read_kernel_buf((base + start as u64) as *const u8, &mut span[..len]) };
    copied.ok().map(|()| &*span)
}

/// A little-endian `T` at object offset `offset` from a span copied from `start`; the
/// default when outside the buffer.
#[inline(always)]
pub fn span_get<T: Copy + Default>(
    span: &[u8; SKB_SPAN_MAX as usize],
    offset: u32,
    start: u32,
) -> T {
    let at = offset.wrapping_sub(start) as usize;
    if at + core::mem::size_of::<T>() > SKB_SPAN_MAX as usize {
        return T::default();
    }
    // SAFETY: in bounds (checked above); the span holds plain bytes.
    unsafe { core::ptr::read_unaligned(span.as_ptr().add(at) as *const T) }
}
