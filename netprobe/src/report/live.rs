//! The live values fixes are computed from, as this report read them.

use std::collections::BTreeMap;

use crate::{
    fixes::{DeviceValues, LiveValues, OverflowingListener, OverflowingSocket, RxRing},
    model::cpuset::CpuSet,
};

use super::{model::Report, sockets::SocketReport};

impl From<&Report> for LiveValues {
    fn from(report: &Report) -> Self {
        let number = |name: &str| report.sysctl_number(name);
        let tcp_rmem = report.tcp_rmem();
        let largest_accept_queue_limit = report
            .sockets
            .as_ref()
            .and_then(|s| s.listeners.iter().map(|l| l.accept_queue_max).max())
            .map(u64::from);
        LiveValues {
            netdev_max_backlog: number("net.core.netdev_max_backlog"),
            netdev_budget: number("net.core.netdev_budget"),
            netdev_budget_usecs: number("net.core.netdev_budget_usecs"),
            somaxconn: number("net.core.somaxconn"),
            largest_accept_queue_limit,
            rmem_max: number("net.core.rmem_max"),
            rmem_default: number("net.core.rmem_default"),
            tcp_rmem,
            tcp_tw_reuse: number("net.ipv4.tcp_tw_reuse"),
            // The table's own limit where conntrack is loaded: the sysctl is the same number,
            // but unreadable where the report could still read the table.
            nf_conntrack_max: report
                .conntrack
                .as_ref()
                .map(|c| c.max)
                .or_else(|| number("net.netfilter.nf_conntrack_max")),
            cpus: report.cpus.iter().map(|c| c.cpu).collect(),
            devices: devices(report),
            overflowing_socket: report
                .sockets
                .as_ref()
                .and_then(|s| overflowing_socket(s, report)),
            overflowing_listener: report.sockets.as_ref().and_then(overflowing_listener),
        }
    }
}

/// The UDP socket whose own counter dropped the most in the window, with what limits it. Only
/// UDP: its `sk_drops` grows with RcvbufErrors, while a TCP socket's counts every segment TCP
/// discards (duplicates, out of window), which says nothing about its receive buffer.
fn overflowing_socket(sockets: &SocketReport, report: &Report) -> Option<OverflowingSocket> {
    let sysctls = report.buffer_sysctls();
    let mut udp = sockets
        .overflowing_sockets
        .iter()
        .filter(|row| row.protocol == "udp");
    udp.find_map(|row| {
        Some(OverflowingSocket {
            who: row.who(),
            rcvbuf: row.rcvbuf?,
            drops: row.drops?,
            limit: row.receive_limit(&sysctls)?,
        })
    })
}

/// The listener that refused the most handshakes in the window; without drop counts, the
/// fullest full one.
fn overflowing_listener(sockets: &SocketReport) -> Option<OverflowingListener> {
    let most_drops = sockets
        .listeners
        .iter()
        .filter(|l| l.drops.is_some_and(|d| d > 0))
        .max_by_key(|l| l.drops);
    let listener = most_drops.or_else(|| sockets.listeners.iter().find(|l| l.is_full()))?;
    Some(OverflowingListener {
        who: listener.who(),
        limit: listener.accept_queue_max,
    })
}

/// Interfaces by name, with the ring sizes of those the ethtool ioctl answered for.
fn devices(report: &Report) -> BTreeMap<String, DeviceValues> {
    let mut devices: BTreeMap<String, DeviceValues> = report
        .interfaces
        .iter()
        .map(|i| {
            let rps = i
                .info
                .rps_cpus
                .values()
                .flat_map(|mask| CpuSet::parse_mask(mask).to_vec())
                .collect();
            let values = DeviceValues {
                txqueuelen: i.info.txqueuelen,
                carrier: i.info.carrier,
                operstate: i.info.operstate.clone(),
                rx_ring: None,
                rps,
                driver: None,
                root_qdisc: report
                    .qdiscs
                    .iter()
                    .find(|q| q.qdisc.root && q.qdisc.ifname == i.info.name)
                    .map(|q| q.qdisc.kind.clone()),
            };
            (i.info.name.clone(), values)
        })
        .collect();
    for nic in &report.nics {
        let ring = nic.rings.map(|r| RxRing {
            current: r.rx,
            max: r.rx_max,
        });
        let device = devices.entry(nic.ifname.clone()).or_default();
        device.rx_ring = ring;
        device.driver = Some(nic.driver.clone()).filter(|d| !d.is_empty());
    }
    devices
}
