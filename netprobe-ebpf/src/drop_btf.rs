//! The drop hook on a BTF-typed tracepoint (`tp_btf/kfree_skb`), where the kernel allows one
//! (Linux 5.5+, BPF_PROG_TYPE_TRACING): the same counts and events as the raw tracepoint's
//! program (`drop.rs`, `drop_count.rs`), but kernel objects are read by direct loads the
//! verifier checks against the kernel's BTF (offsets from the read-only configuration,
//! constants to the verifier) instead of helper calls. In count mode skb, device, namespace
//! and socket all cost plain loads, so a storm's drop costs the site's counting and nothing
//! else; streamed, the skb and device do.
//! Pointers are handled as `btf.rs` says.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use netprobe_common::{
    AF_INET, AF_INET6, DROP_HAS_DEV, DROP_HAS_SOCK, FILTER_ADDR, FILTER_PORT, FILTER_REASON,
};

use crate::btf::{btf_arg, is_set, launder, load, net_inum};
use crate::drop::{count_non_network, finish, pending, place, SkbFields, DROP_DEPTH};
use crate::drop_count::{count_placed, Placement};
use crate::headers::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, HEADER_UNSET};
use crate::maps::{counting_only, nest_in, nest_out, setting};

#[btf_tracepoint(function = "kfree_skb")]
pub fn netprobe_drop_btf(ctx: BtfTracePointContext) -> i32 {
    if counting_only() {
        let _ = try_tally_btf(&ctx);
        return 0;
    }
    if let Some(level) = nest_in(&DROP_DEPTH) {
        let _ = try_drop_btf(&ctx, level);
        nest_out(&DROP_DEPTH, level);
    }
    0
}

/// A drop's tracepoint arguments, and its socket: `skb->sk` on the way out, the
/// tracepoint's `rx_sk` on the way in.
struct Dropped {
    reason: u32,
    skb: u64,
    location: u64,
    sk: u64,
}

/// The drop's arguments, `None` when the reason filter excludes it. The skb is tested as it
/// is, so that the verifier knows it set even where a kernel types tracepoint arguments as
/// possibly NULL.
#[inline(always)]
fn dropped(ctx: &BtfTracePointContext) -> Option<Dropped> {
    let reason = btf_arg::<2>(ctx, setting!(drop.reason)).unwrap_or(0) as u32;
    if setting!(filter.flags) & FILTER_REASON != 0 && reason != setting!(filter.reason) {
        return None;
    }
    let skb = btf_arg::<0>(ctx, setting!(drop.skb)).ok()?;
    if skb == 0 {
        return None;
    }
    let skb_sk: u64 = load(skb, setting!(kernel.skb_sk));
    let sk = if is_set(skb_sk) {
        skb_sk
    } else {
        btf_arg::<3>(ctx, setting!(drop.rx_sk)).unwrap_or(0)
    };
    Some(Dropped {
        reason,
        skb,
        location: btf_arg::<1>(ctx, setting!(drop.location)).unwrap_or(0),
        sk,
    })
}

/// Streaming mode: the drop placed from direct loads of its skb and device, then the same
/// stages as the raw tracepoint's (`drop::finish`). The socket's details stay helper reads
/// (its `tcp_sock` and inode members lie outside the `struct sock` the verifier types).
fn try_drop_btf(ctx: &BtfTracePointContext, level: u32) -> Result<(), i32> {
    let Some(d) = dropped(ctx) else {
        return Ok(());
    };
    let p = pending(level).ok_or(-1)?;
    p.reason = d.reason;
    p.location = d.location;
    let dev: u64 = load(d.skb, setting!(kernel.skb_dev));
    // Kept as plain numbers: the shared stages compare and combine them freely.
    p.skb = launder(&mut p.skb, d.skb);
    p.sk = launder(&mut p.sk, d.sk);
    p.dev = launder(&mut p.dev, dev);
    let fields = SkbFields {
        sk: 0,
        dev: p.dev,
        head: load(d.skb, setting!(kernel.skb_head)),
        network_header: load(d.skb, setting!(kernel.skb_network_header)),
        iif: load(d.skb, setting!(kernel.skb_iif)),
        protocol: u16::from_be(load(d.skb, setting!(drop.skb_protocol))),
    };
    let named = |ifname: &mut [u8; 16]| {
        *ifname = load(dev, setting!(kernel.dev_name));
        let (ifindex, netns) = device(dev);
        (ifindex, netns, true)
    };
    if place(p, &fields, named) != 0 {
        return Ok(());
    }
    finish(level);
    Ok(())
}

/// A device's (ifindex, namespace), by direct loads.
#[inline(always)]
fn device(dev: u64) -> (u32, u32) {
    (
        load(dev, setting!(kernel.dev_ifindex)),
        net_inum(load(dev, setting!(kernel.dev_nd_net))),
    )
}

/// Count mode: every member by direct loads, then counted at its site (`count_placed`).
fn try_tally_btf(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let Some(Dropped {
        reason,
        skb,
        location,
        sk,
    }) = dropped(ctx)
    else {
        return Ok(());
    };
    let has_sk = is_set(sk);
    let protocol = u16::from_be(load(skb, setting!(drop.skb_protocol)));
    if !is_network(protocol, sk, has_sk) {
        count_non_network(reason, location);
        return Ok(());
    }
    let dev: u64 = load(skb, setting!(kernel.skb_dev));
    let has_dev = is_set(dev);
    // Where the packet was dropped: the device's namespace when it has a device, the
    // socket's before a device is set (as `drop.rs` places it).
    let (ifindex, netns) = if has_dev {
        device(dev)
    } else if has_sk {
        (0, net_inum(load(sk, setting!(kernel.sk_net))))
    } else {
        (0, 0)
    };
    let mut flags = 0;
    if has_dev {
        flags |= DROP_HAS_DEV;
    }
    if has_sk {
        flags |= DROP_HAS_SOCK;
    }
    let place = Placement {
        ifindex,
        netns,
        skb_iif: load(skb, setting!(kernel.skb_iif)),
        flags,
    };
    // The flow filters parse the headers (helper reads: the packet is not BTF-typed memory);
    // without one, these members are not read at all.
    let filtered = setting!(filter.flags) & (FILTER_PORT | FILTER_ADDR) != 0;
    let fields = SkbFields {
        sk: 0,
        dev: 0,
        head: if filtered {
            load(skb, setting!(kernel.skb_head))
        } else {
            0
        },
        network_header: if filtered {
            load(skb, setting!(kernel.skb_network_header))
        } else {
            HEADER_UNSET
        },
        iif: 0,
        protocol,
    };
    count_placed(reason, location, &place, &fields);
    Ok(())
}

/// A network drop (see `drop::is_network`), the socket's family read by a direct load.
#[inline(always)]
fn is_network(protocol: u16, sk: u64, has_sk: bool) -> bool {
    if protocol == ETH_P_IP || protocol == ETH_P_IPV6 || protocol == ETH_P_ARP {
        return true;
    }
    if !has_sk {
        return false;
    }
    let family: u16 = load(sk, setting!(drop.sk_family));
    family == AF_INET || family == AF_INET6
}
