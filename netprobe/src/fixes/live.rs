//! The live values fixes are computed from. The report fills them from what it read over its
//! window (`report::live`); `None` is a value that could not be read here (a global sysctl
//! seen from another network namespace, a driver without ring parameters).

use std::collections::BTreeMap;

use crate::model::cpuset::CpuSet;

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveValues {
    pub netdev_max_backlog: Option<u64>,
    pub netdev_budget: Option<u64>,
    pub netdev_budget_usecs: Option<u64>,
    pub somaxconn: Option<u64>,
    /// The largest accept-queue limit of any listener the socket dump saw.
    pub largest_accept_queue_limit: Option<u64>,
    pub rmem_max: Option<u64>,
    /// min, default, max.
    pub tcp_rmem: Option<[u64; 3]>,
    pub tcp_tw_reuse: Option<u64>,
    /// 0: the table has no limit.
    pub nf_conntrack_max: Option<u64>,
    /// The CPUs the report saw (softnet_stat, softirqs).
    pub cpus: CpuSet,
    /// By interface name.
    pub devices: BTreeMap<String, DeviceValues>,
}

impl LiveValues {
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
