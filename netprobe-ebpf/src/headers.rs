//! The flow of a dropped packet, from its IP and TCP/UDP headers in the skb's data (not
//! BTF-typed memory: read by helper on every hook kind).

use netprobe_common::{vocab, Flow, AF_INET, AF_INET6, DROP_HAS_FLOW, DROP_HAS_PORTS};

use crate::kernel::read;

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// `skb->network_header` when it was never set (`(typeof(skb->network_header))~0U`).
pub(crate) const HEADER_UNSET: u16 = 0xffff;

/// Parses the IPv4/IPv6 header at `head + network` (the skb's) and the TCP/UDP ports
/// after it into `flow`. Returns the IP protocol and `DROP_HAS_*` bits for what was found.
#[inline(always)]
pub(crate) fn parse_headers(head: u64, network: u16, protocol: u16, flow: &mut Flow) -> (u8, u8) {
    *flow = Flow::default();
    if head == 0 || network == HEADER_UNSET {
        return (0, 0);
    }
    let ip = head + network as u64;
    // The IP header and the 4 bytes after it in one read: the ports, when no IPv4 options or
    // IPv6 extension headers come first (a TCP/UDP header is at least that long; a packet
    // without one never has its ports taken from them).
    let (ip_proto, transport, ports) = match protocol {
        ETH_P_IP => {
            let Ok(hdr) = read::<[u8; 24]>(ip, 0) else {
                return (0, 0);
            };
            if hdr[0] >> 4 != 4 {
                return (0, 0);
            }
            flow.family = AF_INET;
            flow.saddr[..4].copy_from_slice(&hdr[12..16]);
            flow.daddr[..4].copy_from_slice(&hdr[16..20]);
            // Only the first fragment carries the transport header.
            let fragment_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
            let header_len = ((hdr[0] & 0x0f) as u64) * 4;
            match (fragment_offset, header_len) {
                (0, 20) => (hdr[9], 0, Some([hdr[20], hdr[21], hdr[22], hdr[23]])),
                (0, _) => (hdr[9], ip + header_len, None),
                _ => (hdr[9], 0, None),
            }
        }
        ETH_P_IPV6 => {
            let Ok(hdr) = read::<[u8; 44]>(ip, 0) else {
                return (0, 0);
            };
            if hdr[0] >> 4 != 6 {
                return (0, 0);
            }
            flow.family = AF_INET6;
            flow.saddr.copy_from_slice(&hdr[8..24]);
            flow.daddr.copy_from_slice(&hdr[24..40]);
            // Extension headers are not walked: ports stay unknown behind them (the next
            // header is then no TCP/UDP).
            (hdr[6], 0, Some([hdr[40], hdr[41], hdr[42], hdr[43]]))
        }
        _ => return (0, 0),
    };
    let mut flags = DROP_HAS_FLOW;
    if vocab::ip_proto::has_ports(ip_proto) {
        let ports = match ports {
            Some(ports) => Some(ports),
            None if transport != 0 => read::<[u8; 4]>(transport, 0).ok(),
            None => None,
        };
        if let Some(ports) = ports {
            flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
            flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
            flags |= DROP_HAS_PORTS;
        }
    }
    (ip_proto, flags)
}
