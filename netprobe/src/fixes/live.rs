//! The live values fixes are computed from. The report fills them from what it read over its
//! window (`report::live`); `None` is a value that could not be read here (a global sysctl
//! seen from another network namespace, a driver without ring parameters).

use std::collections::BTreeMap;

use crate::model::{
    cpuset::CpuSet,
    socket_limits::{BufferSysctls, ReceiveLimit},
};

/// A receive ring's size and the hardware's maximum (`ethtool -g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxRing {
    pub current: u32,
    pub max: u32,
}

/// What fixes need to know about one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceValues {
    pub txqueuelen: Option<u64>,
    /// `Some(false)`: the link is up but has no carrier.
    pub carrier: Option<bool>,
    pub operstate: Option<String>,
    pub rx_ring: Option<RxRing>,
    /// Every CPU some receive queue's RPS mask names; empty when RPS is off.
    pub rps: CpuSet,
    /// The kernel driver (`ethtool -i`): `veth` has no transmit queue of its own.
    pub driver: Option<String>,
    /// The root qdisc's kind: `noqueue` has no queue for txqueuelen to lengthen.
    pub root_qdisc: Option<String>,
}

impl DeviceValues {
    /// A veth hands each packet to its peer's input at once: its transmit never waits in a
    /// queue of its own.
    pub fn is_veth(&self) -> bool {
        self.driver.as_deref() == Some("veth")
    }

    /// A device whose transmit never waits in a queue of txqueuelen packets: a veth, or one
    /// with the noqueue root qdisc.
    pub fn has_no_transmit_queue(&self) -> bool {
        self.is_veth() || self.root_qdisc.as_deref() == Some("noqueue")
    }
}

/// The socket that dropped the most at a full receive buffer in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowingSocket {
    /// How the fix names it: `udp 198.18.0.2:7002 of np-holder (pid 42)`.
    pub who: String,
    pub rcvbuf: u32,
    /// Its drops in the window.
    pub drops: u64,
    pub limit: ReceiveLimit,
}

/// The listener that refused the most handshakes in the window (or, without drop counts, the
/// fullest full one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowingListener {
    /// How the fix names it: `np-holder (pid 42) on 198.18.0.2:7001`.
    pub who: String,
    /// Its accept-queue limit.
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveValues {
    pub netdev_max_backlog: Option<u64>,
    pub netdev_budget: Option<u64>,
    pub netdev_budget_usecs: Option<u64>,
    pub somaxconn: Option<u64>,
    /// The largest accept-queue limit of any listener the socket dump saw.
    pub largest_accept_queue_limit: Option<u64>,
    pub rmem_max: Option<u64>,
    pub rmem_default: Option<u64>,
    /// min, default, max.
    pub tcp_rmem: Option<[u64; 3]>,
    pub tcp_tw_reuse: Option<u64>,
    /// 0: the table has no limit.
    pub nf_conntrack_max: Option<u64>,
    /// The CPUs the report saw (softnet_stat, softirqs).
    pub cpus: CpuSet,
    /// By interface name.
    pub devices: BTreeMap<String, DeviceValues>,
    pub overflowing_socket: Option<OverflowingSocket>,
    pub overflowing_listener: Option<OverflowingListener>,
}

impl LiveValues {
    /// The sysctls that bound socket buffers and accept queues.
    pub fn buffer_sysctls(&self) -> BufferSysctls {
        BufferSysctls {
            rmem_default: self.rmem_default,
            rmem_max: self.rmem_max,
            tcp_rmem: self.tcp_rmem,
            somaxconn: self.somaxconn,
        }
    }

    pub fn device(&self, name: &str) -> Option<&DeviceValues> {
        self.devices.get(name)
    }

    /// The CPUs a fix spreads work over. A mask must name at least one: with no CPU rows
    /// (softnet_stat unreadable) that is CPU 0, which every system has.
    pub fn all_cpus(&self) -> CpuSet {
        if self.cpus.is_empty() {
            CpuSet::first(1)
        } else {
            self.cpus.clone()
        }
    }
}
