//! One socket as the report names it: where it is, who owns it, its buffer and queue, the
//! drops its own counter (`sk_drops`, the `d…` of `ss -m`) counted in the window, and what
//! limits it. The same rows serve `report` and the trace's findings bundles.

use std::collections::HashMap;

use serde::Serialize;

use super::netlink::InetSocket;
use crate::model::{
    owners::Owner,
    socket_limits::{BufferSysctls, ListenLimit, ReceiveLimit},
};
use netprobe_common::vocab::ip_proto;

/// The second sample's sockets, and each one's drops since the first.
pub struct SocketWindow<'a> {
    pub after: &'a [InetSocket],
    /// By inode; `None` without a first sample to compare with.
    drops: Option<HashMap<u32, u64>>,
}

impl<'a> SocketWindow<'a> {
    /// A socket's drops in the window are the growth of its own counter (cumulative since the
    /// socket was created) between the samples, matched by inode. A socket the first sample
    /// did not list was created since, so every drop it counted is in the window. Sockets
    /// without memory info (TIME_WAIT, SYN_RECV entries) and orphans (inode 0) have none.
    pub fn new(before: Option<&[InetSocket]>, after: &'a [InetSocket]) -> Self {
        let drops = before.map(|before| {
            let earlier: HashMap<(u32, u8, u16), u32> = before
                .iter()
                .filter(|s| s.inode != 0)
                .filter_map(|s| Some(((s.inode, s.protocol, s.local_port), s.memory?.drops)))
                .collect();
            after
                .iter()
                .filter(|s| s.inode != 0)
                .filter_map(|s| {
                    let now = s.memory?.drops;
                    let key = (s.inode, s.protocol, s.local_port);
                    let then = earlier.get(&key).copied().unwrap_or(0);
                    // The counter is a 32-bit atomic in the kernel: it wraps.
                    Some((s.inode, u64::from(now.wrapping_sub(then))))
                })
                .collect()
        });
        Self { after, drops }
    }

    /// `None` when unknown: no first sample, or no counter for this socket.
    pub fn drops_of(&self, socket: &InetSocket) -> Option<u64> {
        self.drops.as_ref()?.get(&socket.inode).copied()
    }
}

/// A TCP or UDP socket (not a listener).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SocketRow {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub addr: String,
    pub port: u16,
    /// The peer, for a connected socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Bytes waiting to be read (sock_diag's receive queue; `ss` Recv-Q).
    pub recv_queue_bytes: u32,
    /// Bytes charged to the receive buffer (`sk_rmem_alloc`, `ss -m` `r`).
    pub rmem_alloc: Option<u32>,
    /// The receive buffer's limit (`sk_rcvbuf`, `ss -m` `rb`): twice what SO_RCVBUF asked for.
    pub rcvbuf: Option<u32>,
    /// Its own drop counter's growth in the window (`None` without a first sample).
    pub drops: Option<u64>,
    /// Its own drop counter since the socket was created (`ss -m` `d`).
    pub drops_total: Option<u32>,
    /// What limits its receive buffer: `so_rcvbuf` (the application's own setting),
    /// `rmem_default` (never set), `rmem_max`, `tcp_rmem` (autotuning at its max), `reader`
    /// (TCP below that max: the application reads too slowly).
    pub limited_by: Option<&'static str>,
    /// The limit's value in bytes: what SO_RCVBUF asked for, or the sysctl's value.
    pub limit: Option<u64>,
    pub owners: Vec<Owner>,
}

/// The rows of UDP sockets with unread data: the same row as every socket's.
pub type UdpBacklog = SocketRow;

impl SocketRow {
    pub fn new(
        s: &InetSocket,
        drops: Option<u64>,
        owners: Vec<Owner>,
        sysctls: &BufferSysctls,
    ) -> Self {
        let limit = s
            .memory
            .and_then(|m| ReceiveLimit::of(s.protocol, m.rcvbuf, sysctls));
        let connected = s.remote_port != 0;
        SocketRow {
            protocol: ip_proto::name(s.protocol).unwrap_or("unknown"),
            addr: s.local.to_string(),
            port: s.local_port,
            remote: connected.then(|| format!("{}:{}", s.remote, s.remote_port)),
            recv_queue_bytes: s.recv_queue,
            rmem_alloc: s.memory.map(|m| m.rmem_alloc),
            rcvbuf: s.memory.map(|m| m.rcvbuf),
            drops,
            drops_total: s.memory.map(|m| m.drops),
            limited_by: limit.map(ReceiveLimit::name),
            limit: limit.map(ReceiveLimit::value),
            owners,
        }
    }

    /// What limits it, as read again from the row's values.
    pub fn receive_limit(&self, sysctls: &BufferSysctls) -> Option<ReceiveLimit> {
        let protocol = match self.protocol {
            "tcp" => ip_proto::TCP,
            _ => ip_proto::UDP,
        };
        ReceiveLimit::of(protocol, self.rcvbuf?, sysctls)
    }

    /// How people and fixes name it: `udp 198.18.0.2:7002 of np-holder (pid 42)`.
    pub fn who(&self) -> String {
        format!(
            "{} {} of {}",
            self.protocol,
            host_port(&self.addr, self.port),
            owner_text(&self.owners)
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Listener {
    pub addr: String,
    pub port: u16,
    /// Connections waiting in the accept queue.
    pub accept_queue: u32,
    /// The accept queue's limit: min(listen backlog, net.core.somaxconn).
    pub accept_queue_max: u32,
    /// Handshakes this listener refused in the window: its own drop counter's growth (its
    /// share of TcpExt ListenDrops; ListenOverflows is the namespace's count of full queues).
    pub drops: Option<u64>,
    /// Its own drop counter since it was created.
    pub drops_total: Option<u32>,
    /// Which limit sets `accept_queue_max`: `listen_backlog` (the application's listen()
    /// backlog, below somaxconn) or `somaxconn`.
    pub limited_by: Option<&'static str>,
    pub somaxconn: Option<u64>,
    pub owners: Vec<Owner>,
}

impl Listener {
    pub fn new(
        s: &InetSocket,
        drops: Option<u64>,
        owners: Vec<Owner>,
        sysctls: &BufferSysctls,
    ) -> Self {
        Listener {
            addr: s.local.to_string(),
            port: s.local_port,
            accept_queue: s.recv_queue,
            accept_queue_max: s.send_queue,
            drops,
            drops_total: s.memory.map(|m| m.drops),
            limited_by: ListenLimit::of(s.send_queue, sysctls.somaxconn).map(ListenLimit::name),
            somaxconn: sysctls.somaxconn,
            owners,
        }
    }

    /// The kernel refuses a handshake once the queue holds more than its limit; a queue at
    /// the limit is as full as it is ever seen between two arrivals.
    pub fn is_full(&self) -> bool {
        self.accept_queue_max > 0 && self.accept_queue >= self.accept_queue_max
    }

    /// Full now, or refused handshakes during the window.
    pub fn overflowed(&self) -> bool {
        self.is_full() || self.drops.is_some_and(|d| d > 0)
    }

    /// How people and fixes name it: `np-holder (pid 42) on 198.18.0.2:7001`.
    pub fn who(&self) -> String {
        format!(
            "{} on {}",
            owner_text(&self.owners),
            host_port(&self.addr, self.port)
        )
    }
}

/// The first owner as `comm (pid N)`, or "its owner" when it could not be read.
pub fn owner_text(owners: &[Owner]) -> String {
    owners
        .first()
        .map(|o| format!("{} (pid {})", o.comm, o.pid))
        .unwrap_or_else(|| "its owner".into())
}

fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::netlink::SocketMemory;

    fn udp(inode: u32, port: u16, drops: u32) -> InetSocket {
        InetSocket {
            protocol: ip_proto::UDP,
            state: 7,
            local: "198.18.0.2".parse().unwrap(),
            local_port: port,
            remote: "0.0.0.0".parse().unwrap(),
            remote_port: 0,
            recv_queue: 2304,
            send_queue: 0,
            uid: 0,
            inode,
            memory: Some(SocketMemory {
                rmem_alloc: 2304,
                rcvbuf: 2304,
                sndbuf: 212_992,
                drops,
            }),
        }
    }

    #[test]
    fn drops_in_the_window_by_inode() {
        let before = [udp(10, 53, 1000), udp(11, 54, 7), udp(12, 55, u32::MAX - 1)];
        // 11 closed and its inode reused by another port; 13 is new; 12's counter wrapped.
        let after = [
            udp(10, 53, 1300),
            udp(11, 99, 5),
            udp(12, 55, 3),
            udp(13, 56, 40),
        ];
        let w = SocketWindow::new(Some(&before), &after);
        let drops: Vec<Option<u64>> = after.iter().map(|s| w.drops_of(s)).collect();
        assert_eq!(drops, vec![Some(300), Some(5), Some(5), Some(40)]);
        // Without a first sample nothing is claimed for the window.
        let unknown = SocketWindow::new(None, &after);
        assert_eq!(unknown.drops_of(&after[0]), None);
    }

    #[test]
    fn a_row_names_its_owner_buffer_and_limit() {
        let sysctls = BufferSysctls {
            rmem_default: Some(212_992),
            rmem_max: Some(4 << 20),
            ..Default::default()
        };
        let owner = Owner {
            pid: 42,
            comm: "np-holder".into(),
        };
        let row = SocketRow::new(&udp(10, 7002, 9), Some(9), vec![owner], &sysctls);
        assert_eq!(
            (row.rcvbuf, row.limited_by, row.limit),
            (Some(2304), Some("so_rcvbuf"), Some(1152))
        );
        assert_eq!(row.remote, None);
        assert_eq!(row.who(), "udp 198.18.0.2:7002 of np-holder (pid 42)");
    }
}
