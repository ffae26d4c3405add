//! One table of fixes, keyed by the condition. The report's rules and the findings bundle
//! both ask here, and every knob has one policy (`settings`), so one bundle never proposes
//! two values for one knob. Proposals are computed from the live values; when a value cannot
//! be read the command says how to compute it (`<2×current>`) instead of guessing.

mod live;
mod settings;
mod sockets;
#[cfg(test)]
mod tests;

use std::fmt;

pub use live::{DeviceValues, LiveValues, OverflowingListener, OverflowingSocket, RxRing};
pub use settings::{Knob, Level, Setting};

use crate::model::classify::Layer;

/// A qdisc, as a fix names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QdiscRef<'a> {
    pub device: &'a str,
    pub kind: &'a str,
    /// The parent handle; `None` for the root qdisc.
    pub parent: Option<&'a str>,
}

impl QdiscRef<'_> {
    /// Where `tc qdisc change` finds it: `root`, or `parent 1:`.
    fn position(&self) -> String {
        match self.parent {
            None => "root".to_string(),
            Some(parent) => format!("parent {parent}"),
        }
    }
}

/// What went wrong, as far as its fix is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    /// A CPU's input backlog overflowed (softnet_stat `dropped`, CPU_BACKLOG drops).
    BacklogOverflow,
    /// The same, seen with the CPUs that enqueued: the steering is the other half of the fix.
    SteeredBacklogOverflow,
    /// NET_RX stopped with work left (time_squeeze; NAPI polls that used their whole budget).
    NapiBudgetExhausted,
    /// Receive work concentrated on one CPU; the interface receiving the most, when known.
    ReceiveImbalance { device: Option<&'a str> },
    /// The NIC ran out of receive descriptors (discards, missed, fifo); the device when known.
    RxRingOverflow { device: Option<&'a str> },
    /// The device drops what it is asked to send (tx_drop, tx_fifo).
    TransmitDrops { device: &'a str },
    /// Receive or transmit errors of the device itself: no setting cures them.
    DeviceErrors { device: &'a str },
    /// A qdisc drops; which one, when known.
    QdiscDrops { qdisc: Option<QdiscRef<'a>> },
    /// Netfilter or another policy hook (LSM, cgroup BPF) drops.
    FirewallDrops,
    /// Handshakes dropped at full listen queues (ListenOverflows); the fix is the one for the
    /// listener that refused the most (`LiveValues::overflowing_listener`), when known.
    ListenOverflow,
    /// One listener's accept queue is full; `owner` names it for people (`nginx (pid 12) on
    /// 0.0.0.0:80`), `limit` is its accept-queue limit: the fix turns somaxconn only when that
    /// is the limit, else names the listen() backlog.
    AcceptQueueFull { owner: &'a str, limit: u32 },
    /// Datagrams or segments dropped at a full socket receive buffer (RcvbufErrors,
    /// SOCKET_RCVBUFF); the fix is for what limits the socket that dropped the most
    /// (`LiveValues::overflowing_socket`), when known.
    SocketRcvbufFull,
    /// TCP pruned receive queues for lack of receive memory.
    TcpRcvbufPruned,
    /// Nothing listens on the destination port (NO_SOCKET).
    NoListener,
    /// Many TIME_WAIT sockets.
    TimeWaitPileUp,
    /// CLOSE_WAIT sockets an application never closes; its name and pid when known.
    CloseWaitLeak { holder: Option<(&'a str, u32)> },
    /// Connection tracking refuses entries, or its table is filling.
    ConntrackTableFull,
    /// Segments sent again; the counters do not say where they were lost.
    TcpRetransmits,
    /// Inbound loss that no drop on this host explains.
    LostBeforeArrival,
    /// Outbound loss that no drop on this host explains.
    LostOnThePath,
    /// SYNs never answered, and no drop of them seen: the peer's listener, or the path.
    HandshakeUnanswered,
    /// The peer re-sent data this host already had.
    AckLossOrSpuriousRetransmits,
    /// Segments arrive out of order: retransmits the peer already had, holes filled by the
    /// late originals. Nothing is lost.
    Reordering,
    /// A drop at a layer no other condition covers.
    OtherDrop { layer: Layer, reason: &'a str },
}

impl<'a> Condition<'a> {
    /// The condition of drop events at `layer` with the kernel's `reason`.
    pub fn for_drop(layer: Layer, reason: &'a str) -> Self {
        match layer {
            Layer::Netfilter => Condition::FirewallDrops,
            Layer::Qdisc => Condition::QdiscDrops { qdisc: None },
            Layer::Backlog => Condition::BacklogOverflow,
            Layer::Nic => Condition::RxRingOverflow { device: None },
            Layer::Socket if reason.contains("RCVBUFF") => Condition::SocketRcvbufFull,
            Layer::Socket | Layer::Udp if reason.contains("NO_SOCKET") => Condition::NoListener,
            _ => Condition::OtherDrop { layer, reason },
        }
    }
}

/// A fix: the knobs it turns, and the text that says how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub settings: Vec<Setting>,
    /// What the `fix` field shows: the commands with the values filled in, or the advice.
    pub command: String,
}

impl Fix {
    fn advice(text: impl Into<String>) -> Self {
        Self {
            settings: Vec::new(),
            command: text.into(),
        }
    }

    pub fn setting(&self, knob: Knob) -> Option<&Setting> {
        self.settings.iter().find(|s| s.knob == knob)
    }
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command)
    }
}

impl From<Fix> for String {
    fn from(fix: Fix) -> Self {
        fix.command
    }
}

/// The fix for `condition`, computed from `live`.
pub fn fix(condition: Condition, live: &LiveValues) -> Fix {
    match condition {
        Condition::BacklogOverflow => backlog_overflow(live),
        Condition::SteeredBacklogOverflow => steered_backlog_overflow(live),
        Condition::NapiBudgetExhausted => napi_budget_exhausted(live),
        Condition::ReceiveImbalance { device } => receive_imbalance(device, live),
        Condition::RxRingOverflow { device } => rx_ring_overflow(device, live),
        Condition::TransmitDrops { device } => transmit_drops(device, live),
        Condition::DeviceErrors { device } => Fix::advice(format!(
            "ethtool -S {device}: hardware errors — check cabling, optics and duplex"
        )),
        Condition::QdiscDrops { qdisc } => qdisc_drops(qdisc, live),
        Condition::FirewallDrops => Fix::advice(
            "a firewall rule drops them: find it with `nft list ruleset` (or `iptables-save -c`) and compare its counters",
        ),
        Condition::ListenOverflow => sockets::listen_overflow(live),
        Condition::AcceptQueueFull { owner, limit } => {
            sockets::accept_queue_full(owner, limit, live)
        }
        Condition::SocketRcvbufFull => sockets::socket_rcvbuf_full(live),
        Condition::TcpRcvbufPruned => tcp_rcvbuf_pruned(live),
        Condition::NoListener => Fix::advice("nothing listens on the destination port"),
        Condition::TimeWaitPileUp => time_wait_pile_up(live),
        Condition::CloseWaitLeak { holder } => close_wait_leak(holder),
        Condition::ConntrackTableFull => conntrack_table_full(live),
        Condition::TcpRetransmits => Fix::advice(
            "netprobe trace --duration 30   # which flows retransmit, and the drops with their reasons",
        ),
        Condition::LostBeforeArrival => Fix::advice(
            "check the path in: the peer's egress drops and qdisc, switch/NIC counters upstream (`ethtool -S` on both ends)",
        ),
        Condition::LostOnThePath => Fix::advice(
            "run netprobe on the peer: its drops (direction ingress) and its holes name where the segments die; check the path's links for errors",
        ),
        Condition::HandshakeUnanswered => Fix::advice(
            "the peer never answered and no drop of the SYNs was seen here: on the peer, a full accept queue (nstat ListenOverflows; ss -ltn Recv-Q at Send-Q) wants a faster accept() and a larger listen() backlog / net.core.somaxconn; a firewall there (nft list ruleset); else run netprobe on the peer and check the path",
        ),
        Condition::AckLossOrSpuriousRetransmits => Fix::advice(
            "check the path back to the peer for loss of ACKs (egress qdisc, firewall, links); on the peer, spurious retransmits show as TCPSpuriousRTOs / DSACKs received",
        ),
        Condition::Reordering => Fix::advice(
            "nothing is lost: no buffer or queue needs raising. Keep each flow on one path and one CPU: no per-packet balancing (bonding balance-rr, per-packet ECMP); for veth/tun senders on several CPUs, pin the sending threads or set rps_cpus on the receiving device so a flow is processed on one CPU. TCP adapts meanwhile (RACK; net.ipv4.tcp_reordering raises the initial tolerance)",
        ),
        Condition::OtherDrop { layer, reason } => Fix::advice(format!(
            "dropped by the kernel's {} code ({reason})",
            layer.name()
        )),
    }
}

/// `sysctl -w a=1 b=2`.
pub(crate) fn sysctl_command(settings: &[Setting]) -> String {
    let assignments: Vec<String> = settings.iter().map(Setting::assignment).collect();
    format!("sysctl -w {}", assignments.join(" "))
}

fn sysctl_fix(setting: Setting) -> Fix {
    Fix {
        command: sysctl_command(std::slice::from_ref(&setting)),
        settings: vec![setting],
    }
}

fn backlog_overflow(live: &LiveValues) -> Fix {
    sysctl_fix(settings::netdev_max_backlog(live))
}

fn steered_backlog_overflow(live: &LiveValues) -> Fix {
    let mut fix = backlog_overflow(live);
    let rps = settings::rps_cpus(None, live);
    fix.command = format!(
        "{}; and spread the steering: for q in /sys/class/net/<dev>/queues/rx-*/rps_cpus; do echo {} > $q; done",
        fix.command,
        rps.value_text()
    );
    fix.settings.push(rps);
    fix
}

fn napi_budget_exhausted(live: &LiveValues) -> Fix {
    let settings = settings::netdev_budget(live);
    Fix {
        command: format!(
            "{} (and spread RX over more CPUs)",
            sysctl_command(&settings)
        ),
        settings: settings.to_vec(),
    }
}

fn receive_imbalance(device: Option<&str>, live: &LiveValues) -> Fix {
    let Some(name) = device else {
        return Fix::advice("spread NIC IRQs over CPUs (irqbalance)");
    };
    let rps = settings::rps_cpus(Some(name), live);
    let rps_off = live.device(name).is_none_or(|d| d.rps.is_empty());
    let command = if rps_off {
        format!(
            "RPS is off on {name}: for q in /sys/class/net/{name}/queues/rx-*/rps_cpus; do echo {} > $q; done",
            rps.value_text()
        )
    } else {
        format!(
            "spread {name}'s IRQs over CPUs (irqbalance, or /proc/irq/<n>/smp_affinity) and widen rps_cpus to {}",
            rps.value_text()
        )
    };
    Fix {
        settings: vec![rps],
        command,
    }
}

fn rx_ring_overflow(device: Option<&str>, live: &LiveValues) -> Fix {
    let name = device.unwrap_or("<dev>");
    let values = device.and_then(|d| live.device(d));
    match settings::rx_ring(device, values) {
        None => Fix::advice(format!(
            "ring already at its maximum: spread the load over more queues (ethtool -L {name} combined <n>) or CPUs (RPS)"
        )),
        Some(ring) => {
            let value = match &ring.proposed {
                Some(level) => level.to_string(),
                None => format!("<max from ethtool -g {name}>"),
            };
            Fix {
                command: format!("ethtool -G {name} rx {value}"),
                settings: vec![ring],
            }
        }
    }
}

fn txqueuelen_fix(device: &str, live: &LiveValues) -> Fix {
    let setting = settings::txqueuelen(device, live.device(device));
    Fix {
        command: format!(
            "ip link set dev {device} txqueuelen {}",
            setting.value_text()
        ),
        settings: vec![setting],
    }
}

fn transmit_drops(device: &str, live: &LiveValues) -> Fix {
    let values = live.device(device);
    if values.is_some_and(|v| v.carrier == Some(false)) {
        let operstate = values.and_then(|v| v.operstate.as_deref());
        return Fix::advice(format!(
            "{device} has no carrier (operstate {}): it drops what it is asked to send; bring the link or its peer up (ip link set dev <peer> up) and check cabling",
            operstate.unwrap_or("unknown")
        ));
    }
    // A veth's tx_drop counts what its peer's input refused: the peer's per-CPU backlog was
    // full (netif_rx), the peer is down, or its XDP dropped. No queue of its own to lengthen.
    if values.is_some_and(DeviceValues::is_veth) {
        let mut fix = backlog_overflow(live);
        fix.command = format!(
            "{device} is a veth: its tx drops are its peer's input refusing packets (the receiving CPU's backlog full, or the peer down): {} on the host, and spread the peer's receive work (RPS/RFS, or GRO on the peer)",
            fix.command
        );
        return fix;
    }
    // A device without a queue (txqueuelen 0, or the noqueue qdisc) does not drop for its
    // length: what it cannot send goes nowhere, usually because its peer or lower device is down.
    let queued = values.is_some_and(|v| !v.has_no_transmit_queue())
        && values.and_then(|v| v.txqueuelen).is_some_and(|q| q > 0);
    if queued {
        return txqueuelen_fix(device, live);
    }
    Fix::advice(format!(
        "{device} drops on transmit without a queue to lengthen: check that its peer/lower device is up (ip link show {device})"
    ))
}

fn qdisc_drops(qdisc: Option<QdiscRef>, live: &LiveValues) -> Fix {
    let Some(q) = qdisc else {
        return Fix::advice(
            "the egress qdisc drops them: `tc -s qdisc show`; raise its limit or rate, or fix the shaper",
        );
    };
    let (device, kind, position) = (q.device, q.kind, q.position());
    match kind {
        // These queue as long as the device's txqueuelen (noqueue has no queue: no drops of
        // its own to fix, and never a txqueuelen).
        "pfifo_fast" | "pfifo" => {
            if live.device(device).is_some_and(|d| d.txqueuelen.is_some()) {
                txqueuelen_fix(device, live)
            } else {
                Fix::advice(format!("tc qdisc replace dev {device} root fq_codel"))
            }
        }
        "tbf" => Fix::advice(format!(
            "the tbf shaper on {device} is dropping: raise its rate/burst/limit (tc qdisc change dev {device} {position} tbf rate <rate> burst <bytes> limit <bytes>) or remove it (tc qdisc del dev {device} {position})"
        )),
        _ => Fix::advice(format!(
            "raise the {kind} limit: tc qdisc change dev {device} {position} {kind} limit <packets>"
        )),
    }
}

pub(crate) fn tcp_rcvbuf_pruned(live: &LiveValues) -> Fix {
    let setting = settings::tcp_rmem_max(live);
    let (min, default) = match live.tcp_rmem {
        Some([min, default, _]) => (min.to_string(), default.to_string()),
        None => ("<min>".to_string(), "<default>".to_string()),
    };
    Fix {
        command: format!(
            "sysctl -w {}=\"{min} {default} {}\"",
            setting.knob.name(),
            setting.value_text()
        ),
        settings: vec![setting],
    }
}

fn time_wait_pile_up(live: &LiveValues) -> Fix {
    match settings::tcp_tw_reuse(live) {
        None => Fix::advice("reuse connections (keep-alive, pooling) in the application"),
        Some(setting) => Fix {
            command: format!(
                "{}   # and reuse connections (keep-alive, pooling)",
                sysctl_command(std::slice::from_ref(&setting))
            ),
            settings: vec![setting],
        },
    }
}

fn close_wait_leak(holder: Option<(&str, u32)>) -> Fix {
    match holder {
        Some((comm, pid)) if pid != 0 => Fix::advice(format!(
            "fix {comm} (pid {pid}) to close() sockets after read() returns 0; ss -tnp state close-wait shows them; restarting it frees them now"
        )),
        _ => Fix::advice("run as root to name the owning process; ss -tnp state close-wait"),
    }
}

fn conntrack_table_full(live: &LiveValues) -> Fix {
    match settings::nf_conntrack_max(live) {
        Some(setting) => sysctl_fix(setting),
        None => Fix::advice(
            "net.netfilter.nf_conntrack_max is 0 (no limit): the drops are not for lack of room; insert_failed are races of one flow's parallel packets (e.g. DNS A and AAAA queries over UDP)",
        ),
    }
}
