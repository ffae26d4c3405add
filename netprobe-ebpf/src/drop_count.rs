//! Count mode's drop path (`netprobe monitor`, `trace --count`): each drop counted at its
//! site, nothing streamed. Two entry points: the raw tracepoint's (`netprobe_drop`, in
//! `drop.rs`, calls [`try_tally`]) and, where the kernel allows BTF-typed tracepoints,
//! `netprobe_drop_btf` (`drop_btf.rs`), which reads with direct loads instead of helpers;
//! both end in [`count_placed`].

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::RawTracePointContext};
use core::ptr::{read_volatile, write_volatile};
use netprobe_common::{
    DropSiteKey, Flow, COUNTER_DROP_SITE_TABLE_FULL, DROP_HAS_DEV, DROP_HAS_PORTS, DROP_HAS_SOCK,
    FILTER_ADDR, FILTER_PORT, FILTER_REASON,
};

use crate::drop::{count_non_network, count_reason, device, is_network, skb_fields, SkbFields};
use crate::headers::parse_headers;
use crate::kernel::{arg, flow_matches, netns_matches, sock_netns};
use crate::maps::{bump, setting, SITE_COUNTS, SITE_SLOTS, SITE_SLOT_COUNT};

/// Count mode's whole path, kept lean (the drop hook runs for every drop, storms included):
/// no nesting slot, no staging, no event, nothing on the stack but the key. Only what places
/// the drop is read: the skb's members in one copy of their span, the device's ifindex and
/// namespace, the flow headers only when a port or address filter needs them. Then the
/// site's slot is counted (see `count_site`).
pub(crate) fn try_tally(ctx: &RawTracePointContext) -> Result<(), i32> {
    let reason = arg::<2>(ctx, setting!(drop.reason)).unwrap_or(0) as u32;
    if setting!(filter.flags) & FILTER_REASON != 0 && reason != setting!(filter.reason) {
        return Ok(());
    }
    let skb = arg::<0>(ctx, setting!(drop.skb))?;
    let location = arg::<1>(ctx, setting!(drop.location)).unwrap_or(0);
    let rx_sk = arg::<3>(ctx, setting!(drop.rx_sk)).unwrap_or(0);
    tally(reason, location, rx_sk, skb_fields(skb));
    Ok(())
}

/// The drop counted at its site, its skb's members read by one helper copy.
#[inline(always)]
fn tally(reason: u32, location: u64, rx_sk: u64, fields: SkbFields) {
    let sk = if fields.sk != 0 { fields.sk } else { rx_sk };
    if !is_network(fields.protocol, sk) {
        count_non_network(reason, location);
        return;
    }
    let (ifindex, netns) = if fields.dev != 0 {
        let (ifindex, netns, _) = device(fields.dev, None);
        (ifindex, netns)
    } else if sk != 0 {
        (0, sock_netns(sk))
    } else {
        (0, 0)
    };
    let mut flags = 0;
    if fields.dev != 0 {
        flags |= DROP_HAS_DEV;
    }
    if sk != 0 {
        flags |= DROP_HAS_SOCK;
    }
    let place = Placement {
        ifindex,
        netns,
        skb_iif: fields.iif,
        flags,
    };
    count_placed(reason, location, &place, &fields);
}

/// Where a drop happened, as its site's key holds it.
pub(crate) struct Placement {
    pub ifindex: u32,
    pub netns: u32,
    pub skb_iif: u32,
    /// `DROP_HAS_DEV`, `DROP_HAS_SOCK`.
    pub flags: u8,
}

/// A placed network drop through the namespace and flow filters, then counted at its site.
/// `fields` serve the flow filters only (their headers are parsed only when one is set).
#[inline(always)]
pub(crate) fn count_placed(reason: u32, location: u64, place: &Placement, fields: &SkbFields) {
    if !netns_matches(place.netns) {
        return;
    }
    if setting!(filter.flags) & (FILTER_PORT | FILTER_ADDR) != 0 && !tally_flow_matches(fields) {
        return;
    }
    let key = DropSiteKey {
        reason,
        netns: place.netns,
        location,
        ifindex: place.ifindex,
        skb_iif: place.skb_iif,
        flags: place.flags,
        _pad0: [0; 7],
    };
    count_site(&key);
}

/// The port and address filters on a counted drop: its headers parsed, as a stream's are.
#[inline(never)]
fn tally_flow_matches(fields: &SkbFields) -> bool {
    let mut flow = Flow::default();
    let (_, header_flags) = parse_headers(
        fields.head,
        fields.network_header,
        fields.protocol,
        &mut flow,
    );
    flow_matches(&flow, header_flags & DROP_HAS_PORTS != 0)
}

/// This CPU's last counted site and its slot (see `SITE_SLOTS`), and the next free slot.
/// `generation` is odd while a run rewrites the entry: a nested run (a drop in a softirq that
/// interrupted this program, before Linux 6.0) then neither uses nor changes it.
#[repr(C)]
pub struct LastSite {
    key: DropSiteKey,
    slot: u32,
    generation: u32,
    next_slot: u32,
    _pad0: u32,
}

#[map]
static LAST_SITE: PerCpuArray<LastSite> = PerCpuArray::with_max_entries(1, 0);

/// Exact per-CPU count for this drop site; by reason alone when no slot is left (and said).
#[inline(always)]
fn count_site(key: &DropSiteKey) {
    let Some(last) = LAST_SITE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry. Every access is volatile and ordered by `generation`: a
    // nested run completes before this one resumes, so an unchanged even generation around
    // the reads means the slot read belongs to the key compared.
    unsafe {
        let last = &mut *last;
        let generation = read_volatile(&last.generation);
        if generation & 1 == 0 && same_site(&last.key, key) {
            let slot = read_volatile(&last.slot);
            if read_volatile(&last.generation) == generation {
                bump_slot(slot);
                return;
            }
        }
        if generation & 1 != 0 {
            // Nested inside a rewrite of the entry: counted apart, never wrong.
            bump(COUNTER_DROP_SITE_TABLE_FULL);
            count_reason(key.reason);
            return;
        }
        write_volatile(&mut last.generation, generation + 1);
        let slot = site_slot(last, key);
        if let Some(slot) = slot {
            write_volatile(&mut last.key, *key);
            write_volatile(&mut last.slot, slot);
        }
        write_volatile(&mut last.generation, generation + 2);
        match slot {
            Some(slot) => bump_slot(slot),
            None => {
                bump(COUNTER_DROP_SITE_TABLE_FULL);
                count_reason(key.reason);
            }
        }
    }
}

/// The slot of `key` on this CPU, given one if it has none; `None` when all are taken.
#[inline(always)]
fn site_slot(last: &mut LastSite, key: &DropSiteKey) -> Option<u32> {
    if let Some(slot) = SITE_SLOTS.get_ptr(key) {
        // SAFETY: this CPU's value from the lookup.
        let stored = unsafe { *slot };
        // 0: the entry exists for another CPU only.
        if stored != 0 {
            return Some(stored - 1);
        }
    }
    // SAFETY: this CPU's entry, marked odd by the caller: no nested run touches it.
    let next = unsafe { read_volatile(&last.next_slot) };
    if next >= SITE_SLOT_COUNT {
        return None;
    }
    // The entry may exist for other CPUs: this updates (or creates) this CPU's value only.
    SITE_SLOTS.insert(key, &(next + 1), 0).ok()?;
    // SAFETY: as above.
    unsafe { write_volatile(&mut last.next_slot, next + 1) };
    Some(next)
}

#[inline(always)]
fn bump_slot(slot: u32) {
    if let Some(count) = SITE_COUNTS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; one writer (see `count_site`).
        unsafe { *count += 1 };
    }
}

/// Two site keys alike (the padding is always zero).
#[inline(always)]
fn same_site(a: &DropSiteKey, b: &DropSiteKey) -> bool {
    a.reason == b.reason
        && a.netns == b.netns
        && a.location == b.location
        && a.ifindex == b.ifindex
        && a.skb_iif == b.skb_iif
        && a.flags == b.flags
}
