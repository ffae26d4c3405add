//! The knobs a fix turns, and one policy per knob: how its proposal follows from its live
//! value. Every condition that touches a knob asks the same function, so two findings in one
//! bundle cannot disagree about it.
//!
//! The policy for counts is "double, never below the kernel's default". Doubling is a bounded
//! step: each of these knobs costs memory per CPU, socket or entry and holds packets longer
//! in a deeper queue, and the rules judge the next window again, so a few doublings converge
//! without overshooting (the findings' old ×4 jumped 1000 → 4096 at once). The floor is for
//! values someone lowered far below the default, where doubling would take many rounds: the
//! default is what the kernel considers safe (the old ×4 policy had a floor for that reason).

use std::fmt;

use super::live::{DeviceValues, LiveValues};
use crate::model::cpuset::CpuSet;

/// `net.core.netdev_max_backlog` on a fresh kernel.
const DEFAULT_NETDEV_MAX_BACKLOG: u64 = 1000;
/// `net.core.netdev_budget` and `netdev_budget_usecs` on a fresh kernel (since 4.12).
const DEFAULT_NETDEV_BUDGET: u64 = 300;
const DEFAULT_NETDEV_BUDGET_USECS: u64 = 2000;
/// `net.core.somaxconn` since Linux 5.4 (128 before: a floor well above the old default).
const DEFAULT_SOMAXCONN: u64 = 4096;
/// `net.core.rmem_max` on a fresh kernel.
const DEFAULT_RMEM_MAX: u64 = 212_992;
/// What `ether_setup` gives an Ethernet device.
const DEFAULT_TXQUEUELEN: u64 = 1000;

/// A setting a fix changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Knob {
    NetdevMaxBacklog,
    NetdevBudget,
    NetdevBudgetUsecs,
    Somaxconn,
    RmemMax,
    /// The third (max) field of `net.ipv4.tcp_rmem`.
    TcpRmemMax,
    TcpTwReuse,
    NfConntrackMax,
    /// Per device: `ip link set dev X txqueuelen N`.
    TxQueueLen,
    /// Per device: `ethtool -G X rx N`.
    RxRing,
    /// Per device: the receive queues' `rps_cpus` masks.
    RpsCpus,
}

impl Knob {
    /// The sysctl's name, or the device setting's.
    pub fn name(self) -> &'static str {
        match self {
            Knob::NetdevMaxBacklog => "net.core.netdev_max_backlog",
            Knob::NetdevBudget => "net.core.netdev_budget",
            Knob::NetdevBudgetUsecs => "net.core.netdev_budget_usecs",
            Knob::Somaxconn => "net.core.somaxconn",
            Knob::RmemMax => "net.core.rmem_max",
            Knob::TcpRmemMax => "net.ipv4.tcp_rmem",
            Knob::TcpTwReuse => "net.ipv4.tcp_tw_reuse",
            Knob::NfConntrackMax => "net.netfilter.nf_conntrack_max",
            Knob::TxQueueLen => "txqueuelen",
            Knob::RxRing => "rx ring",
            Knob::RpsCpus => "rps_cpus",
        }
    }

    /// Whether the policy raises the knob above its live value (every knob but the
    /// `tcp_tw_reuse` switch, which is set to one value).
    pub fn raises(self) -> bool {
        !matches!(self, Knob::TcpTwReuse)
    }
}

/// A knob's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Count(u64),
    Cpus(CpuSet),
}

/// As the command writes it: the number, or the sysfs mask.
impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Count(n) => write!(f, "{n}"),
            Level::Cpus(cpus) => f.write_str(&cpus.to_mask()),
        }
    }
}

/// One knob's change: the live value and the proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub knob: Knob,
    /// The interface of a per-device knob; `None` for sysctls, and for a device the condition
    /// does not name.
    pub device: Option<String>,
    pub current: Option<Level>,
    /// `None` when the live value is unknown: nothing is guessed, the command says `how`.
    pub proposed: Option<Level>,
    /// How the proposal follows from the live value.
    pub how: &'static str,
}

impl Setting {
    fn sysctl(knob: Knob, current: Option<u64>, proposed: Option<u64>, how: &'static str) -> Self {
        Self {
            knob,
            device: None,
            current: current.map(Level::Count),
            proposed: proposed.map(Level::Count),
            how,
        }
    }

    /// The value as the command writes it: the proposal, or `<how>` when there is none.
    pub fn value_text(&self) -> String {
        match &self.proposed {
            Some(level) => level.to_string(),
            None => format!("<{}>", self.how),
        }
    }

    /// `name=value`, as `sysctl -w` takes it.
    pub fn assignment(&self) -> String {
        format!("{}={}", self.knob.name(), self.value_text())
    }
}

/// `current × factor`, never below `floor`.
fn raised(current: Option<u64>, factor: u64, floor: u64) -> Option<u64> {
    current.map(|c| c.saturating_mul(factor).max(floor))
}

pub fn netdev_max_backlog(live: &LiveValues) -> Setting {
    let current = live.netdev_max_backlog;
    let proposed = raised(current, 2, DEFAULT_NETDEV_MAX_BACKLOG);
    Setting::sysctl(Knob::NetdevMaxBacklog, current, proposed, "2×current")
}

/// The budget and its time limit go up together: raising one alone leaves NET_RX stopping
/// at the other.
pub fn netdev_budget(live: &LiveValues) -> [Setting; 2] {
    let (budget, usecs) = (live.netdev_budget, live.netdev_budget_usecs);
    [
        Setting::sysctl(
            Knob::NetdevBudget,
            budget,
            raised(budget, 2, DEFAULT_NETDEV_BUDGET),
            "2×current",
        ),
        Setting::sysctl(
            Knob::NetdevBudgetUsecs,
            usecs,
            raised(usecs, 2, DEFAULT_NETDEV_BUDGET_USECS),
            "2×current",
        ),
    ]
}

/// Doubled from the larger of somaxconn and the largest listener's limit: the kernel caps a
/// listen() backlog at somaxconn when the listener is created, so a listener above it means
/// somaxconn was lowered since, and doubling that would not give the listener more room.
pub fn somaxconn(live: &LiveValues) -> Setting {
    let current = live.somaxconn;
    let base = match (current, live.largest_accept_queue_limit) {
        (Some(s), Some(l)) => Some(s.max(l)),
        (s, l) => s.or(l),
    };
    let proposed = raised(base, 2, DEFAULT_SOMAXCONN);
    Setting::sysctl(Knob::Somaxconn, current, proposed, "2×current")
}

/// ×4, not ×2: rmem_max only caps what an application may ask for with SO_RCVBUF, nothing is
/// allocated until a socket asks, so a bigger step costs nothing by itself.
pub fn rmem_max(live: &LiveValues) -> Setting {
    let current = live.rmem_max;
    Setting::sysctl(
        Knob::RmemMax,
        current,
        raised(current, 4, DEFAULT_RMEM_MAX),
        "4×current",
    )
}

/// Only the max grows: min and default are what every socket starts with.
pub fn tcp_rmem_max(live: &LiveValues) -> Setting {
    let current = live.tcp_rmem.map(|[_, _, max]| max);
    Setting::sysctl(Knob::TcpRmemMax, current, raised(current, 2, 1), "2×max")
}

/// Reuse on (1) unless it already is; `None` then.
pub fn tcp_tw_reuse(live: &LiveValues) -> Option<Setting> {
    let current = live.tcp_tw_reuse;
    (current != Some(1)).then(|| Setting::sysctl(Knob::TcpTwReuse, current, Some(1), "1"))
}

/// `None` when the table has no limit (0): there is nothing to raise.
pub fn nf_conntrack_max(live: &LiveValues) -> Option<Setting> {
    let current = live.nf_conntrack_max;
    (current != Some(0)).then(|| {
        Setting::sysctl(
            Knob::NfConntrackMax,
            current,
            raised(current, 2, 1),
            "2×current",
        )
    })
}

pub fn txqueuelen(device: &str, values: Option<&DeviceValues>) -> Setting {
    let current = values.and_then(|v| v.txqueuelen);
    Setting {
        knob: Knob::TxQueueLen,
        device: Some(device.to_string()),
        current: current.map(Level::Count),
        proposed: raised(current, 2, DEFAULT_TXQUEUELEN).map(Level::Count),
        how: "2×current",
    }
}

/// The ring goes to the hardware's maximum at once: descriptors are a few bytes each and the
/// maximum is the driver's own bound. `None` when the ring is already there.
pub fn rx_ring(device: Option<&str>, values: Option<&DeviceValues>) -> Option<Setting> {
    let ring = values.and_then(|v| v.rx_ring);
    if ring.is_some_and(|r| r.current >= r.max) {
        return None;
    }
    Some(Setting {
        knob: Knob::RxRing,
        device: device.map(str::to_string),
        current: ring.map(|r| Level::Count(r.current.into())),
        proposed: ring.map(|r| Level::Count(r.max.into())),
        how: "the hardware maximum",
    })
}

/// Every CPU: the steering's job is to spread, and the backlog each CPU keeps is per CPU.
pub fn rps_cpus(device: Option<&str>, live: &LiveValues) -> Setting {
    let current = device
        .and_then(|d| live.devices.get(d))
        .map(|v| Level::Cpus(v.rps.clone()));
    Setting {
        knob: Knob::RpsCpus,
        device: device.map(str::to_string),
        current,
        proposed: Some(Level::Cpus(live.all_cpus())),
        how: "every CPU",
    }
}
