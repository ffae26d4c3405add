//! Reading kernel objects through offsets resolved from BTF at load time, and the in-kernel
//! filters shared by every hook.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::RawTracePointContext};
use netprobe_common::{
    Flow, AF_INET, AF_INET6, FILTER_ADDR, FILTER_NETNS, FILTER_PORT, OFFSET_ABSENT,
};

use crate::maps::setting;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    if base == 0 || offset == OFFSET_ABSENT {
        return Err(-1);
    }
    // SAFETY: a probe read fails on a bad address instead of faulting; T is an integer or bytes.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// How a kernel object's members are read: helper reads ([`Probe`]), or direct loads in
/// BTF-typed programs (`btf::Loads`), so that one reader of a structure serves both.
pub trait Reader {
    /// A `T` at `base + offset`; `Err` where this kernel lacks the member.
    fn get<T: Copy + Default>(&self, base: u64, offset: u32) -> Result<T, i32>;
}

/// Helper reads ([`read`]).
pub struct Probe;

impl Reader for Probe {
    #[inline(always)]
    fn get<T: Copy + Default>(&self, base: u64, offset: u32) -> Result<T, i32> {
        read(base, offset)
    }
}

/// Argument `N` of a raw tracepoint, when the agent found it there in this kernel's BTF
/// prototype (`position == N`; `OFFSET_ABSENT` when this kernel's tracepoint lacks it). The
/// index is a literal so that the load has a fixed offset from the context, as the verifier
/// requires; `position` is a load-time constant, so the other branch is pruned.
#[inline(always)]
pub fn arg<const N: usize>(ctx: &RawTracePointContext, position: u32) -> Result<u64, i32> {
    if position != N as u32 {
        return Err(-1);
    }
    Ok(ctx.arg::<u64>(N))
}

/// Inode of the network namespace `net` (a `struct net *`).
#[inline(always)]
pub fn net_inum(net: u64) -> u32 {
    read::<u32>(net, setting!(kernel.net_inum)).unwrap_or(0)
}

/// Network namespace inode of a socket (`struct sock *`, or any `sock_common` prefix).
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    match read::<u64>(sk, setting!(kernel.sk_net)) {
        Ok(net) => net_inum(net),
        Err(_) => 0,
    }
}

/// Inode number of a full socket's `struct socket` (what /proc/<pid>/fd shows as
/// `socket:[ino]`), 0 when it has none (orphaned, or not a full socket).
#[inline(always)]
pub fn sock_inode(sk: u64) -> u64 {
    match read::<u64>(sk, setting!(kernel.sk_socket)) {
        Ok(socket) if socket != 0 => read::<u64>(socket, setting!(kernel.socket_ino)).unwrap_or(0),
        _ => 0,
    }
}

/// The address family in a socket's `sock_common` (a full, request or timewait socket).
#[inline(always)]
pub fn sock_family(sk: u64) -> u16 {
    read(sk, setting!(sock.family)).unwrap_or(0)
}

/// The flow in a socket's `sock_common`, local end first, for the address family `family`
/// (the socket's own, or what a request socket was made for). An IPv6 socket talking to an
/// IPv4 peer (v4-mapped addresses) is reported as the IPv4 flow it carries.
#[inline(always)]
pub fn sock_flow(sk: u64, family: u16, flow: &mut Flow) -> Result<(), i32> {
    sock_flow_by(&Probe, sk, family, flow)
}

/// [`sock_flow`] with the reader `r`.
#[inline(always)]
pub fn sock_flow_by<R: Reader>(r: &R, sk: u64, family: u16, flow: &mut Flow) -> Result<(), i32> {
    let dport: u16 = r.get(sk, setting!(sock.dport))?;
    *flow = Flow {
        family,
        sport: r.get(sk, setting!(sock.num))?,
        dport: u16::from_be(dport),
        ..Flow::default()
    };
    if family == AF_INET {
        let saddr: [u8; 4] = r.get(sk, setting!(sock.rcv_saddr))?;
        let daddr: [u8; 4] = r.get(sk, setting!(sock.daddr))?;
        flow.saddr[..4].copy_from_slice(&saddr);
        flow.daddr[..4].copy_from_slice(&daddr);
    } else if family == AF_INET6 {
        let saddr: [u8; 16] = r.get(sk, setting!(sock.v6_rcv_saddr)).unwrap_or([0; 16]);
        let daddr: [u8; 16] = r.get(sk, setting!(sock.v6_daddr)).unwrap_or([0; 16]);
        if is_v4_mapped(&saddr) && is_v4_mapped(&daddr) {
            flow.family = AF_INET;
            flow.saddr[..4].copy_from_slice(&saddr[12..]);
            flow.daddr[..4].copy_from_slice(&daddr[12..]);
        } else {
            flow.saddr = saddr;
            flow.daddr = daddr;
        }
    } else {
        return Err(-1);
    }
    Ok(())
}

/// Network namespace inode of a `struct net_device *`.
#[inline(always)]
pub fn dev_netns(dev: u64) -> u32 {
    match read::<u64>(dev, setting!(kernel.dev_nd_net)) {
        Ok(net) => net_inum(net),
        Err(_) => 0,
    }
}

/// True when the event passes the netns filter.
#[inline(always)]
pub fn netns_matches(netns: u32) -> bool {
    setting!(filter.flags) & FILTER_NETNS == 0 || setting!(filter.netns) == netns
}

/// True when the flow passes the port and address filters. `has_ports` is false for packets
/// without a TCP/UDP header: they never match a port filter.
#[inline(always)]
pub fn flow_matches(flow: &Flow, has_ports: bool) -> bool {
    let flags = setting!(filter.flags);
    if flags & FILTER_PORT != 0 {
        let port = setting!(filter.port);
        if !has_ports || (flow.sport != port && flow.dport != port) {
            return false;
        }
    }
    if flags & FILTER_ADDR != 0 {
        if flow.family != setting!(filter.addr_family) {
            return false;
        }
        let want = setting!(filter.addr);
        let len = if flow.family == AF_INET { 4 } else { 16 };
        if !prefix_eq(&flow.saddr, &want, len) && !prefix_eq(&flow.daddr, &want, len) {
            return false;
        }
    }
    true
}

#[inline(always)]
fn prefix_eq(a: &[u8; 16], b: &[u8; 16], len: usize) -> bool {
    let mut i = 0;
    while i < 16 {
        if i < len && a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `::ffff:a.b.c.d`: an IPv4 address carried by an IPv6 socket or record.
#[inline(always)]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 10 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    a[10] == 0xff && a[11] == 0xff
}
