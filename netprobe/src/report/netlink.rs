//! Netlink dumps: qdiscs over rtnetlink (what `tc -s qdisc` shows) and inet sockets over
//! sock_diag (what `ss` shows), without forking either tool.

use std::{fmt::Debug, io, net::IpAddr};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    tc::{TcAttribute, TcMessage, TcStats2},
    RouteNetlinkMessage,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
    Socket, SocketAddr,
};
use serde::Serialize;

/// Sends one dump request and collects every answer until NLMSG_DONE.
fn dump<T>(protocol: isize, request: T) -> io::Result<Vec<T>>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    let mut receive = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<T>::deserialize(&receive[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// One qdisc with its statistics.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    /// Filled in by the caller from the interface table.
    pub ifname: String,
    pub kind: String,
    pub handle: String,
    pub parent: String,
    pub root: bool,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub requeues: u64,
    pub backlog: u64,
    pub qlen: u64,
}

pub fn qdiscs() -> io::Result<Vec<Qdisc>> {
    let messages = dump(
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
    )?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(tc) => Some(qdisc_from(tc)),
            _ => None,
        })
        .collect())
}

fn qdisc_from(tc: TcMessage) -> Qdisc {
    let mut q = Qdisc {
        ifindex: tc.header.index,
        ifname: String::new(),
        kind: String::new(),
        handle: tc_handle(tc.header.handle.major, tc.header.handle.minor),
        parent: tc_handle(tc.header.parent.major, tc.header.parent.minor),
        // TC_H_ROOT
        root: tc.header.parent.major == 0xffff && tc.header.parent.minor == 0xffff,
        bytes: 0,
        packets: 0,
        drops: 0,
        overlimits: 0,
        requeues: 0,
        backlog: 0,
        qlen: 0,
    };
    let mut have_stats2 = false;
    for attribute in &tc.attributes {
        match attribute {
            TcAttribute::Kind(kind) => q.kind = kind.clone(),
            TcAttribute::Stats2(stats) => {
                have_stats2 = true;
                for s in stats {
                    match s {
                        TcStats2::Basic(b) => {
                            q.bytes = b.bytes;
                            q.packets = b.packets as u64;
                        }
                        TcStats2::Queue(queue) => {
                            q.drops = queue.drops as u64;
                            q.overlimits = queue.overlimits as u64;
                            q.requeues = queue.requeues as u64;
                            q.backlog = queue.backlog as u64;
                            q.qlen = queue.qlen as u64;
                        }
                        _ => {}
                    }
                }
            }
            TcAttribute::Stats(s) if !have_stats2 => {
                q.bytes = s.bytes;
                q.packets = s.packets as u64;
                q.drops = s.drops as u64;
                q.overlimits = s.overlimits as u64;
                q.backlog = s.backlog as u64;
                q.qlen = s.qlen as u64;
            }
            _ => {}
        }
    }
    q
}

/// A qdisc handle as tc prints it: `1:`, `8001:1`, `root`.
pub fn tc_handle(major: u16, minor: u16) -> String {
    match (major, minor) {
        (0xffff, 0xffff) => "root".into(),
        (major, 0) => format!("{major:x}:"),
        (major, minor) => format!("{major:x}:{minor:x}"),
    }
}

/// One inet socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetSocket {
    pub protocol: u8,
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Listeners: current accept-queue length. Others: bytes in the receive queue.
    pub recv_queue: u32,
    /// Listeners: accept-queue limit (backlog). Others: bytes in the send queue.
    pub send_queue: u32,
    pub uid: u32,
    pub inode: u32,
    /// The socket's memory (INET_DIAG_SKMEMINFO); `None` for TIME_WAIT and SYN_RECV
    /// entries, which are not full sockets.
    pub memory: Option<SocketMemory>,
}

/// What `ss -m` shows as `skmem:(r…,rb…,t…,tb…,…,d…)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketMemory {
    /// Bytes charged to the receive queue (`sk_rmem_alloc`, `r`).
    pub rmem_alloc: u32,
    /// The receive buffer's limit (`sk_rcvbuf`, `rb`): twice what SO_RCVBUF asked for.
    pub rcvbuf: u32,
    /// The send buffer's limit (`sk_sndbuf`, `tb`).
    pub sndbuf: u32,
    /// Packets this socket dropped since it was created (`sk_drops`, `d`): for UDP, datagrams
    /// refused at a full receive buffer (and bad checksums); for a listener, handshakes
    /// refused (ListenDrops, of this socket).
    pub drops: u32,
}

/// Every TCP and UDP socket, IPv4 and IPv6, of the current network namespace.
pub fn inet_sockets() -> io::Result<Vec<InetSocket>> {
    let mut out = Vec::new();
    for (family, protocol) in [
        (AF_INET, IPPROTO_TCP),
        (AF_INET6, IPPROTO_TCP),
        (AF_INET, IPPROTO_UDP),
        (AF_INET6, IPPROTO_UDP),
    ] {
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            // SK_MEMINFO: rcvbuf and the socket's own drop counter (what `ss -m` shows).
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::all(),
            socket_id,
        });
        for message in dump(NETLINK_SOCK_DIAG, request)? {
            if let SockDiagMessage::InetResponse(r) = message {
                out.push(inet_socket(protocol, &r));
            }
        }
    }
    Ok(out)
}

fn inet_socket(protocol: u8, r: &InetResponse) -> InetSocket {
    let h = &r.header;
    let memory = r.nlas.iter().find_map(|nla| match nla {
        Nla::MemInfo(m) => Some(SocketMemory {
            rmem_alloc: m.receive_queue,
            rcvbuf: m.receive_queue_max,
            sndbuf: m.send_queue_max,
            drops: m.drops,
        }),
        _ => None,
    });
    InetSocket {
        protocol,
        state: h.state,
        local: h.socket_id.source_address,
        local_port: h.socket_id.source_port,
        remote: h.socket_id.destination_address,
        remote_port: h.socket_id.destination_port,
        recv_queue: h.recv_queue,
        send_queue: h.send_queue,
        uid: h.uid,
        inode: h.inode,
        memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_print_like_tc() {
        assert_eq!(tc_handle(0xffff, 0xffff), "root");
        assert_eq!(tc_handle(0, 0), "0:");
        assert_eq!(tc_handle(0x8001, 0), "8001:");
        assert_eq!(tc_handle(1, 0x10), "1:10");
    }
}
