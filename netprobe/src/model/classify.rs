//! Where a drop happened: its direction and its layer, from the kernel's drop reason, the
//! function that freed the packet, and the interface it arrived on.
//!
//! One table maps reason families to a layer and, when the reason implies one, a direction.
//! Otherwise the direction comes from `skb->skb_iif`: set when a device received the packet,
//! zero for packets this host generated. Loopback (ifindex 1 in every namespace) is `local`.

pub use netprobe_common::vocab::{Direction, Layer};

// Short names for the table; `Unknown` exists in both and is always written qualified.
use Direction::{Egress, Ingress, Local};
use Layer::{Backlog, Ip, Netfilter, Nic, Qdisc, Socket, Tcp, Udp};

/// A reason family: `NAME` matches exactly, `PREFIX*` matches a prefix. First match wins, so
/// exact names come before the prefixes they share.
struct Family {
    pattern: &'static str,
    layer: Layer,
    /// `None`: the reason occurs in both directions; `skb_iif` decides.
    direction: Option<Direction>,
}

const fn f(pattern: &'static str, layer: Layer, direction: Option<Direction>) -> Family {
    Family {
        pattern,
        layer,
        direction,
    }
}

const TABLE: &[Family] = &[
    // Policy hooks.
    f("NETFILTER_DROP", Netfilter, None),
    f("SECURITY_HOOK", Netfilter, None),
    f("BPF_CGROUP_EGRESS", Netfilter, Some(Egress)),
    // Traffic control.
    f("TC_INGRESS", Qdisc, Some(Ingress)),
    f("TC_EGRESS", Qdisc, Some(Egress)),
    f("TC_*", Qdisc, None),
    f("QDISC_*", Qdisc, Some(Egress)),
    f("CAKE_FLOOD", Qdisc, Some(Egress)),
    f("FQ_*", Qdisc, Some(Egress)),
    f("DUALPI2_*", Qdisc, Some(Egress)),
    // Per-CPU backlog and the receive core.
    f("CPU_BACKLOG", Backlog, Some(Ingress)),
    f("UNHANDLED_PROTO", Backlog, Some(Ingress)),
    f("PFMEMALLOC", Backlog, Some(Ingress)),
    // Device and L2.
    f("XDP", Nic, Some(Ingress)),
    f("FULL_RING", Nic, None),
    f("DEV_*", Nic, None),
    f("NO_TX_TARGET", Nic, Some(Egress)),
    f("TAP_TXFILTER", Nic, Some(Egress)),
    f("TAP_FILTER", Nic, Some(Ingress)),
    f("MAC_*", Nic, Some(Ingress)),
    f("LOCAL_MAC", Nic, Some(Ingress)),
    f("BRIDGE_*", Nic, Some(Ingress)),
    f("ARP_PVLAN_DISABLE", Nic, Some(Ingress)),
    f("CAN*", Nic, Some(Ingress)),
    f("SKB_GSO_SEG", Nic, Some(Egress)),
    f("RECURSION_LIMIT", Nic, Some(Egress)),
    // IP, neighbours, tunnels, IPsec.
    f("IP_OUTNOROUTES", Ip, Some(Egress)),
    f("IP_RPFILTER", Ip, Some(Ingress)),
    f("IP_*", Ip, Some(Ingress)),
    f("IPV6DISABLED", Ip, None),
    f("IPV6_*", Ip, Some(Ingress)),
    f("NEIGH_*", Ip, Some(Egress)),
    f("OTHERHOST", Ip, Some(Ingress)),
    f("PKT_TOO_SMALL", Ip, Some(Ingress)),
    f("PKT_TOO_BIG", Ip, Some(Egress)),
    f("UNICAST_IN_L2_MULTICAST", Ip, Some(Ingress)),
    f("INVALID_PROTO", Ip, Some(Ingress)),
    f("HDR_TRUNC", Ip, None),
    f("DUP_FRAG", Ip, Some(Ingress)),
    f("FRAG_*", Ip, Some(Ingress)),
    f("ICMP_CSUM", Ip, Some(Ingress)),
    f("XFRM_POLICY", Ip, None),
    f("PSP_INPUT", Ip, Some(Ingress)),
    f("PSP_OUTPUT", Ip, Some(Egress)),
    f("VXLAN_*", Ip, Some(Ingress)),
    f("IP_TUNNEL_ECN", Ip, Some(Ingress)),
    f("TUNNEL_TXINFO", Ip, Some(Egress)),
    f("SKB_CSUM", Ip, Some(Ingress)),
    // Transport.
    f("TCP_*", Tcp, Some(Ingress)),
    f("UDP_CSUM", Udp, Some(Ingress)),
    // Sockets.
    f("NO_SOCKET", Socket, Some(Ingress)),
    f("SOCKET_*", Socket, Some(Ingress)),
    f("PROTO_MEM", Socket, Some(Ingress)),
    f("SKB_UCOPY_FAULT", Socket, Some(Egress)),
    f("UNIX_*", Socket, Some(Local)),
    f("QUEUE_PURGE", Socket, None),
    f("PACKET_SOCK_ERROR", Socket, None),
];

/// For reasons that say nothing (`NOT_SPECIFIED`, `NOMEM`, unknown ones): the layer of the
/// function that freed the packet.
const LOCATION_PREFIXES: &[(&str, Layer)] = &[
    ("tcp_", Tcp),
    ("__tcp", Tcp),
    ("inet_csk", Tcp),
    ("udp", Udp),
    ("__udp", Udp),
    ("nf_", Netfilter),
    ("nft_", Netfilter),
    ("ipt_", Netfilter),
    ("ip6t_", Netfilter),
    ("ebt_", Netfilter),
    ("ip_", Ip),
    ("ip6_", Ip),
    ("ipv6_", Ip),
    ("__ip", Ip),
    ("icmp", Ip),
    ("arp_", Ip),
    ("neigh_", Ip),
    ("sch_", Qdisc),
    ("qdisc_", Qdisc),
    ("__qdisc", Qdisc),
    ("tcf_", Qdisc),
    ("__dev_xmit_skb", Qdisc),
    ("enqueue_to_backlog", Backlog),
    ("netif_", Backlog),
    ("__netif", Backlog),
    ("process_backlog", Backlog),
    ("sk_", Socket),
    ("sock_", Socket),
    ("__sk", Socket),
    ("skb_queue_purge", Socket),
    ("unix_", Socket),
];

/// Loopback's ifindex in every network namespace (`LOOPBACK_IFINDEX`).
pub const LOOPBACK_IFINDEX: u32 = 1;

fn family(reason: &str) -> Option<&'static Family> {
    TABLE
        .iter()
        .find(|fam| match fam.pattern.strip_suffix('*') {
            Some(prefix) => reason.starts_with(prefix),
            None => reason == fam.pattern,
        })
}

fn layer_of_location(location: &str) -> Layer {
    LOCATION_PREFIXES
        .iter()
        .find(|(prefix, _)| location.starts_with(prefix))
        .map(|(_, layer)| *layer)
        .unwrap_or(Layer::Unknown)
}

/// What the kernel program knows about the packet besides its reason.
#[derive(Debug, Clone, Copy)]
pub struct DropContext<'a> {
    /// `symbol+0xoff` of the freeing function.
    pub location: &'a str,
    /// `skb->skb_iif`.
    pub skb_iif: u32,
    /// `skb->dev` ifindex when set.
    pub ifindex: Option<u32>,
    /// A socket was attached to the packet.
    pub has_socket: bool,
}

impl<'a> DropContext<'a> {
    /// The context of the drops counted at a drop site (count mode, or storm sampling), at
    /// `location` (the site's function, named): what an event from there would carry.
    pub fn at_site(location: &'a str, key: &netprobe_common::DropSiteKey) -> Self {
        use netprobe_common::{DROP_HAS_DEV, DROP_HAS_SOCK};
        DropContext {
            location,
            skb_iif: key.skb_iif,
            ifindex: (key.flags & DROP_HAS_DEV != 0).then_some(key.ifindex),
            has_socket: key.flags & DROP_HAS_SOCK != 0,
        }
    }
}

/// What the reason and the freeing function alone say: the layer, and the direction when the
/// reason implies one. The same for every drop at one (reason, location): cacheable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteClass {
    pub layer: Layer,
    pub direction: Option<Direction>,
}

pub fn classify_site(reason: &str, location: &str) -> SiteClass {
    let fam = family(reason);
    SiteClass {
        layer: match fam {
            Some(fam) => fam.layer,
            None => layer_of_location(location),
        },
        direction: fam.and_then(|fam| fam.direction),
    }
}

/// The direction and layer of one drop at a classified site.
pub fn classify_at(site: SiteClass, ctx: DropContext) -> (Direction, Layer) {
    let layer = site.layer;
    // Loopback traffic never left the host, whatever the reason says.
    if ctx.skb_iif == LOOPBACK_IFINDEX
        || (ctx.skb_iif == 0 && ctx.ifindex == Some(LOOPBACK_IFINDEX))
    {
        return (Local, layer);
    }
    let direction = match site.direction {
        Some(direction) => direction,
        None if ctx.skb_iif != 0 => Ingress,
        None if ctx.has_socket || ctx.ifindex.is_some() => Egress,
        None => Direction::Unknown,
    };
    (direction, layer)
}

/// What a drop says about loss, from its reason alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropRole {
    /// A packet that was on its way somewhere and did not get there.
    Loss,
    /// A socket going away freed what it still held (queues purged on close, data for a
    /// closed or closing socket): the end of a connection, never why one lost packets.
    Teardown,
    /// TCP discarding what it already has (old data, old ACKs): the consequence of a
    /// retransmit or duplicate, not a loss.
    AlreadyReceived,
}

/// Reasons a socket's teardown frees packets with.
const TEARDOWN: &[&str] = &[
    "QUEUE_PURGE",
    "SOCKET_CLOSE",
    "TCP_CLOSE",
    "TCP_ABORT_ON_DATA",
    "UNIX_DISCONNECT",
];

/// Reasons TCP discards a segment it already had with.
const ALREADY_RECEIVED: &[&str] = &[
    "TCP_OLD_DATA",
    "TCP_OLD_SEQUENCE",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_OFOMERGE",
];

pub fn role_of(reason: &str) -> DropRole {
    if TEARDOWN.contains(&reason) {
        DropRole::Teardown
    } else if ALREADY_RECEIVED.contains(&reason) {
        DropRole::AlreadyReceived
    } else {
        DropRole::Loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both steps at once, as the renderer does them for a new site.
    fn classify(reason: &str, ctx: DropContext) -> (Direction, Layer) {
        classify_at(classify_site(reason, ctx.location), ctx)
    }

    fn ctx(
        location: &'static str,
        skb_iif: u32,
        ifindex: Option<u32>,
        has_socket: bool,
    ) -> DropContext<'static> {
        DropContext {
            location,
            skb_iif,
            ifindex,
            has_socket,
        }
    }
    const RECEIVED: DropContext = DropContext {
        location: "x+0x1",
        skb_iif: 2,
        ifindex: Some(2),
        has_socket: false,
    };
    const SENT: DropContext = DropContext {
        location: "x+0x1",
        skb_iif: 0,
        ifindex: None,
        has_socket: true,
    };

    #[test]
    fn netfilter_takes_the_direction_of_the_packet() {
        assert_eq!(classify("NETFILTER_DROP", RECEIVED), (Ingress, Netfilter));
        assert_eq!(classify("NETFILTER_DROP", SENT), (Egress, Netfilter));
        assert_eq!(classify("SECURITY_HOOK", SENT), (Egress, Netfilter));
        assert_eq!(classify("BPF_CGROUP_EGRESS", SENT), (Egress, Netfilter));
    }

    #[test]
    fn traffic_control() {
        assert_eq!(classify("QDISC_DROP", SENT), (Egress, Qdisc));
        assert_eq!(classify("QDISC_OVERLIMIT", SENT), (Egress, Qdisc));
        assert_eq!(classify("FQ_FLOW_LIMIT", SENT), (Egress, Qdisc));
        assert_eq!(classify("CAKE_FLOOD", SENT), (Egress, Qdisc));
        assert_eq!(classify("TC_INGRESS", RECEIVED), (Ingress, Qdisc));
        assert_eq!(classify("TC_EGRESS", SENT), (Egress, Qdisc));
        assert_eq!(classify("TC_CHAIN_NOTFOUND", RECEIVED), (Ingress, Qdisc));
    }

    #[test]
    fn backlog_and_device() {
        assert_eq!(classify("CPU_BACKLOG", RECEIVED), (Ingress, Backlog));
        assert_eq!(classify("UNHANDLED_PROTO", RECEIVED), (Ingress, Backlog));
        assert_eq!(classify("XDP", RECEIVED), (Ingress, Nic));
        assert_eq!(classify("FULL_RING", SENT), (Egress, Nic));
        assert_eq!(classify("DEV_READY", SENT), (Egress, Nic));
        assert_eq!(classify("MAC_INVALID_SOURCE", RECEIVED), (Ingress, Nic));
        assert_eq!(classify("SKB_GSO_SEG", SENT), (Egress, Nic));
    }

    #[test]
    fn ip_neighbours_and_tunnels() {
        assert_eq!(classify("IP_INHDR", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("IP_RPFILTER", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("IP_OUTNOROUTES", SENT), (Egress, Ip));
        assert_eq!(classify("IPV6_NDISC_FRAG", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("NEIGH_FAILED", SENT), (Egress, Ip));
        assert_eq!(classify("OTHERHOST", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("FRAG_REASM_TIMEOUT", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("VXLAN_INVALID_HDR", RECEIVED), (Ingress, Ip));
        assert_eq!(classify("XFRM_POLICY", SENT), (Egress, Ip));
    }

    /// Teardown and TCP's discards of what it had never explain loss; everything else may.
    #[test]
    fn roles() {
        assert_eq!(role_of("QUEUE_PURGE"), DropRole::Teardown);
        assert_eq!(role_of("TCP_CLOSE"), DropRole::Teardown);
        assert_eq!(role_of("TCP_OLD_DATA"), DropRole::AlreadyReceived);
        assert_eq!(role_of("TCP_OLD_SEQUENCE"), DropRole::AlreadyReceived);
        assert_eq!(role_of("NETFILTER_DROP"), DropRole::Loss);
        assert_eq!(role_of("TCP_OFO_DROP"), DropRole::Loss);
        assert_eq!(role_of("NO_SOCKET"), DropRole::Loss);
    }

    #[test]
    fn transport_and_sockets() {
        assert_eq!(classify("TCP_CSUM", RECEIVED), (Ingress, Tcp));
        assert_eq!(classify("TCP_LISTEN_OVERFLOW", RECEIVED), (Ingress, Tcp));
        assert_eq!(classify("TCP_OFO_DROP", RECEIVED), (Ingress, Tcp));
        assert_eq!(classify("UDP_CSUM", RECEIVED), (Ingress, Udp));
        assert_eq!(classify("NO_SOCKET", RECEIVED), (Ingress, Socket));
        assert_eq!(classify("SOCKET_RCVBUFF", RECEIVED), (Ingress, Socket));
        assert_eq!(classify("PROTO_MEM", RECEIVED), (Ingress, Socket));
        assert_eq!(
            classify("UNIX_DISCONNECT", ctx("unix_x+0x1", 0, None, true)),
            (Local, Socket)
        );
    }

    #[test]
    fn loopback_is_local_whatever_the_reason() {
        let lo_rx = ctx("__udp4_lib_rcv+0x4bc", LOOPBACK_IFINDEX, Some(1), false);
        assert_eq!(classify("NO_SOCKET", lo_rx), (Local, Socket));
        let lo_tx = ctx("nft_do_chain+0x3e8", 0, Some(1), true);
        assert_eq!(classify("NETFILTER_DROP", lo_tx), (Local, Netfilter));
    }

    #[test]
    fn unspecified_reasons_use_the_location() {
        assert_eq!(
            classify("NOT_SPECIFIED", ctx("tcp_v4_rcv+0x10", 2, Some(2), false)),
            (Ingress, Tcp)
        );
        assert_eq!(
            classify(
                "NOT_SPECIFIED",
                ctx("sch_direct_xmit+0x5", 0, Some(2), true)
            ),
            (Egress, Qdisc)
        );
        assert_eq!(
            classify("NOMEM", ctx("enqueue_to_backlog+0x1", 3, Some(3), false)),
            (Ingress, Backlog)
        );
        assert_eq!(
            classify("UNKNOWN_999", ctx("0xffffffff81000000", 0, None, false)),
            (Direction::Unknown, Layer::Unknown)
        );
    }
}
