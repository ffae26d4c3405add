//! The socket section: TCP states, TIME_WAIT and CLOSE_WAIT holders, listeners with their
//! accept-queue fill, UDP sockets with data waiting, and the sockets that dropped in the
//! window, each with the owning process and what limits it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::netlink::InetSocket;
pub use super::socket_rows::{owner_text, Listener, SocketRow, SocketWindow, UdpBacklog};
pub use crate::model::owners::Owner;
use crate::model::socket_limits::BufferSysctls;
use netprobe_common::vocab::{ip_proto, TcpState};

use crate::model::owners;

const IPPROTO_TCP: u8 = ip_proto::TCP;
const TCP_LISTEN: u8 = TcpState::Listen.raw();
const TCP_TIME_WAIT: u8 = TcpState::TimeWait.raw();
const TCP_CLOSE_WAIT: u8 = TcpState::CloseWait.raw();
const TOP: usize = 10;

/// The sockets whose owners the report names: CLOSE_WAIT holders, listeners, UDP sockets
/// with unread data, and every socket that dropped in the window.
pub fn inodes_of_interest(window: &SocketWindow) -> HashSet<u32> {
    window
        .after
        .iter()
        .filter(|s| {
            s.inode != 0
                && (window.drops_of(s).is_some_and(|d| d > 0)
                    || if s.protocol == IPPROTO_TCP {
                        s.state == TCP_CLOSE_WAIT || s.state == TCP_LISTEN
                    } else {
                        s.recv_queue > 0
                    })
        })
        .map(|s| s.inode)
        .collect()
}

/// Socket inode → owning processes for the `wanted` inodes only; the second value says
/// whether every process could be read (only root sees them all).
pub fn socket_owners(wanted: &HashSet<u32>) -> (HashMap<u32, Vec<Owner>>, bool) {
    if wanted.is_empty() {
        return (HashMap::new(), true);
    }
    let (found, complete) =
        owners::scan(&|inode| u32::try_from(inode).is_ok_and(|i| wanted.contains(&i)));
    (
        found.into_iter().map(|(k, v)| (k as u32, v)).collect(),
        complete,
    )
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortCount {
    pub port: u16,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OwnerCount {
    pub pid: u32,
    pub comm: String,
    pub count: usize,
    /// Local ports of the sockets it holds (up to 10).
    pub local_ports: Vec<u16>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SocketReport {
    pub tcp_states: BTreeMap<String, usize>,
    pub tcp_total: usize,
    pub udp_total: usize,
    pub time_wait: usize,
    /// TIME_WAIT sockets per local port, most first.
    pub time_wait_ports: Vec<PortCount>,
    pub close_wait: usize,
    /// Who holds the CLOSE_WAIT sockets, most first.
    pub close_wait_owners: Vec<OwnerCount>,
    pub listeners: Vec<Listener>,
    /// UDP sockets with unread data, fullest first.
    pub udp_backlogs: Vec<UdpBacklog>,
    /// TCP and UDP sockets (not listeners) whose own drop counter grew in the window, most
    /// drops first.
    pub overflowing_sockets: Vec<SocketRow>,
    /// False when not every process's file descriptors could be read (not root).
    pub owners_complete: bool,
}

/// CLOSE_WAIT sockets by their first owner (pid, comm): how many, and their first local ports.
type CloseWaitTally = BTreeMap<(u32, String), (usize, Vec<u16>)>;

pub fn summarize(
    window: &SocketWindow,
    owners: &HashMap<u32, Vec<Owner>>,
    owners_complete: bool,
    sysctls: &BufferSysctls,
) -> SocketReport {
    let mut r = SocketReport {
        owners_complete,
        ..Default::default()
    };
    let owners_of = |inode: u32| owners.get(&inode).cloned().unwrap_or_default();
    let mut tw_ports: BTreeMap<u16, usize> = BTreeMap::new();
    let mut close_wait = CloseWaitTally::new();
    for s in window.after {
        let drops = window.drops_of(s);
        if s.state != TCP_LISTEN && drops.is_some_and(|d| d > 0) {
            r.overflowing_sockets
                .push(SocketRow::new(s, drops, owners_of(s.inode), sysctls));
        }
        if s.protocol != IPPROTO_TCP {
            r.udp_total += 1;
            if s.recv_queue > 0 {
                r.udp_backlogs
                    .push(SocketRow::new(s, drops, owners_of(s.inode), sysctls));
            }
            continue;
        }
        r.tcp_total += 1;
        *r.tcp_states
            .entry(TcpState::name_of(s.state).to_string())
            .or_default() += 1;
        match s.state {
            TCP_TIME_WAIT => {
                r.time_wait += 1;
                *tw_ports.entry(s.local_port).or_default() += 1;
            }
            TCP_CLOSE_WAIT => {
                r.close_wait += 1;
                count_close_wait(&mut close_wait, s, &owners_of(s.inode));
            }
            TCP_LISTEN => r
                .listeners
                .push(Listener::new(s, drops, owners_of(s.inode), sysctls)),
            _ => {}
        }
    }
    r.time_wait_ports = top_ports(tw_ports);
    r.close_wait_owners = holders_most_first(close_wait);
    sort_fullest_first(&mut r.listeners);
    r.udp_backlogs
        .sort_by_key(|b| std::cmp::Reverse(b.recv_queue_bytes));
    r.udp_backlogs.truncate(TOP);
    r.overflowing_sockets = most_drops_per_protocol(r.overflowing_sockets);
    r
}

/// Most drops first, TOP of each protocol: TCP sockets count every segment they discard, and
/// many of them must not push the UDP sockets that overflow out of the list.
fn most_drops_per_protocol(mut rows: Vec<SocketRow>) -> Vec<SocketRow> {
    rows.sort_by_key(|row| std::cmp::Reverse(row.drops));
    let mut kept: HashMap<&'static str, usize> = HashMap::new();
    rows.retain(|row| {
        let n = kept.entry(row.protocol).or_default();
        *n += 1;
        *n <= TOP
    });
    rows
}

/// A socket whose owner could not be read (not root) counts under pid 0, "unknown".
fn count_close_wait(tally: &mut CloseWaitTally, s: &InetSocket, holders: &[Owner]) {
    let key = holders
        .first()
        .map(|o| (o.pid, o.comm.clone()))
        .unwrap_or((0, "unknown".into()));
    let entry = tally.entry(key).or_default();
    entry.0 += 1;
    if entry.1.len() < TOP && !entry.1.contains(&s.local_port) {
        entry.1.push(s.local_port);
    }
}

/// The TOP ports with the most TIME_WAIT sockets; ties by port, so the order is stable.
fn top_ports(counts: BTreeMap<u16, usize>) -> Vec<PortCount> {
    let mut ports: Vec<PortCount> = counts
        .into_iter()
        .map(|(port, count)| PortCount { port, count })
        .collect();
    ports.sort_by(|a, b| b.count.cmp(&a.count).then(a.port.cmp(&b.port)));
    ports.truncate(TOP);
    ports
}

fn holders_most_first(tally: CloseWaitTally) -> Vec<OwnerCount> {
    let mut holders: Vec<OwnerCount> = tally
        .into_iter()
        .map(|((pid, comm), (count, local_ports))| OwnerCount {
            pid,
            comm,
            count,
            local_ports,
        })
        .collect();
    holders.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    holders
}

/// By accept-queue fill relative to its limit (per mille, a zero limit read as 1), so a
/// small queue near full ranks above a big one half full; then by drops in the window.
fn sort_fullest_first(listeners: &mut [Listener]) {
    listeners.sort_by(|a, b| {
        let fill = |l: &Listener| l.accept_queue as u64 * 1000 / l.accept_queue_max.max(1) as u64;
        fill(b)
            .cmp(&fill(a))
            .then(b.drops.cmp(&a.drops))
            .then(a.port.cmp(&b.port))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(protocol: u8, state: u8, port: u16, rq: u32, wq: u32, inode: u32) -> InetSocket {
        InetSocket {
            protocol,
            state,
            local: "198.18.0.1".parse().unwrap(),
            local_port: port,
            remote: "198.18.0.2".parse().unwrap(),
            remote_port: 40000,
            recv_queue: rq,
            send_queue: wq,
            uid: 0,
            inode,
            memory: None,
        }
    }

    #[test]
    fn states_holders_and_listeners() {
        let sockets = vec![
            sock(6, TCP_LISTEN, 80, 128, 128, 1),
            sock(6, TCP_LISTEN, 22, 0, 128, 2),
            sock(6, TCP_CLOSE_WAIT, 80, 0, 0, 3),
            sock(6, TCP_CLOSE_WAIT, 80, 0, 0, 4),
            sock(6, TCP_CLOSE_WAIT, 81, 0, 0, 5),
            sock(6, TCP_TIME_WAIT, 443, 0, 0, 0),
            sock(6, TCP_TIME_WAIT, 443, 0, 0, 0),
            sock(6, TCP_TIME_WAIT, 80, 0, 0, 0),
            sock(6, 1, 80, 0, 0, 6),
            sock(17, 7, 53, 4096, 0, 7),
            sock(17, 7, 54, 0, 0, 8),
        ];
        let app = Owner {
            pid: 42,
            comm: "leaky".into(),
        };
        let owners: HashMap<u32, Vec<Owner>> = [
            (3, vec![app.clone()]),
            (4, vec![app.clone()]),
            (
                1,
                vec![Owner {
                    pid: 7,
                    comm: "nginx".into(),
                }],
            ),
        ]
        .into();
        let r = summarize(
            &SocketWindow::new(None, &sockets),
            &owners,
            true,
            &BufferSysctls::default(),
        );
        assert_eq!(r.tcp_total, 9);
        assert_eq!(r.udp_total, 2);
        assert_eq!(r.tcp_states["CLOSE_WAIT"], 3);
        assert_eq!(r.time_wait, 3);
        assert_eq!(
            r.time_wait_ports[0],
            PortCount {
                port: 443,
                count: 2
            }
        );
        assert_eq!(r.close_wait, 3);
        assert_eq!(r.close_wait_owners[0].comm, "leaky");
        assert_eq!(r.close_wait_owners[0].count, 2);
        assert_eq!(r.close_wait_owners[0].local_ports, vec![80]);
        assert_eq!(r.close_wait_owners[1].comm, "unknown");
        assert_eq!(r.listeners[0].port, 80, "fullest listener first");
        assert_eq!(r.listeners[0].owners[0].comm, "nginx");
        assert_eq!(r.udp_backlogs.len(), 1);
        assert_eq!(r.udp_backlogs[0].port, 53);
    }

    #[test]
    fn many_tcp_sockets_dropping_leave_the_udp_one_listed() {
        let row = |protocol, drops| SocketRow {
            protocol,
            drops: Some(drops),
            ..Default::default()
        };
        let mut rows: Vec<SocketRow> = (0..15).map(|i| row("tcp", 1000 + i)).collect();
        rows.push(row("udp", 3));
        let kept = most_drops_per_protocol(rows);
        assert_eq!(kept.len(), TOP + 1);
        assert_eq!(kept[0].drops, Some(1014), "most first");
        assert_eq!(kept.last().map(|r| r.protocol), Some("udp"));
    }
}
