//! Anomaly rules over one report. Every counter-based rule works on per-second rates over the
//! sampling window: a counter's value since boot never triggers a rule by itself. Gauges
//! (socket counts, conntrack usage, accept-queue fill) are judged as they stand.

use serde_json::{json, Map, Value};

use super::model::{Finding, Report, Severity};

/// Warning and critical thresholds of one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub id: &'static str,
    pub warning: f64,
    pub critical: f64,
    pub unit: &'static str,
}

pub const THRESHOLDS: &[Threshold] = &[
    Threshold {
        id: "tcp_retransmits",
        warning: 10.0,
        critical: 50.0,
        unit: "segments/s",
    },
    Threshold {
        id: "tcp_timewait",
        warning: 5000.0,
        critical: 20000.0,
        unit: "sockets",
    },
    Threshold {
        id: "tcp_closewait",
        warning: 1.0,
        critical: 100.0,
        unit: "sockets",
    },
    Threshold {
        id: "network_errors",
        warning: 1.0,
        critical: 100.0,
        unit: "errors+drops/s per interface",
    },
    Threshold {
        id: "conntrack_usage",
        warning: 70.0,
        critical: 90.0,
        unit: "% of nf_conntrack_max",
    },
    Threshold {
        id: "conntrack_drops",
        warning: 1.0,
        critical: 100.0,
        unit: "drops/s",
    },
    Threshold {
        id: "softnet_dropped",
        warning: 1.0,
        critical: 10.0,
        unit: "drops/s per CPU",
    },
    Threshold {
        id: "softnet_time_squeeze",
        warning: 10.0,
        critical: 100.0,
        unit: "squeezes/s per CPU",
    },
    Threshold {
        id: "irq_imbalance",
        warning: 5.0,
        critical: 20.0,
        unit: "busiest CPU / mean",
    },
    Threshold {
        id: "listen_overflows",
        warning: 1.0,
        critical: 100.0,
        unit: "overflows/s",
    },
    Threshold {
        id: "nic_rx_discards",
        warning: 100.0,
        critical: 10000.0,
        unit: "discards/s per NIC",
    },
    Threshold {
        id: "nic_ring_undersized",
        warning: 1.0,
        critical: 10000.0,
        unit: "rx loss/s with ring below max",
    },
    Threshold {
        id: "udp_rcvbuf_errors",
        warning: 1.0,
        critical: 100.0,
        unit: "errors/s",
    },
    Threshold {
        id: "tcp_rcvbuf_pruned",
        warning: 1.0,
        critical: 100.0,
        unit: "pruned/s",
    },
    Threshold {
        id: "qdisc_drops",
        warning: 1.0,
        critical: 100.0,
        unit: "drops/s per qdisc",
    },
    Threshold {
        id: "accept_queue_full",
        warning: 80.0,
        critical: 100.0,
        unit: "% of accept-queue limit",
    },
];

/// NET_RX softirqs per second on the busiest CPU below which imbalance is not judged: an idle
/// host is always "imbalanced".
pub const IMBALANCE_MIN_RATE: f64 = 1000.0;

pub fn threshold(id: &str) -> Threshold {
    *THRESHOLDS
        .iter()
        .find(|t| t.id == id)
        .expect("every rule has thresholds")
}

fn severity(id: &str, value: f64) -> Option<Severity> {
    let t = threshold(id);
    if value >= t.critical {
        Some(Severity::Critical)
    } else if value >= t.warning {
        Some(Severity::Warning)
    } else {
        None
    }
}

macro_rules! evidence {
    ($($key:expr => $value:expr),* $(,)?) => {{
        let mut map = Map::new();
        $( map.insert($key.to_string(), json!($value)); )*
        map
    }};
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

struct Rule<'a> {
    report: &'a Report,
    out: Vec<Finding>,
}

impl Rule<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: &'static str,
        layer: &'static str,
        value: f64,
        summary: String,
        evidence: Map<String, Value>,
        explanation: &str,
        fix: String,
    ) {
        if let Some(severity) = severity(id, value) {
            self.out.push(Finding {
                id,
                severity,
                layer,
                summary,
                evidence,
                explanation: explanation.to_string(),
                fix,
            });
        }
    }
}

pub fn evaluate(report: &Report) -> Vec<Finding> {
    let mut r = Rule {
        report,
        out: Vec::new(),
    };
    nic_rules(&mut r);
    interface_errors(&mut r);
    qdisc_drops(&mut r);
    cpu_rules(&mut r);
    tcp_rules(&mut r);
    udp_rcvbuf(&mut r);
    socket_rules(&mut r);
    conntrack_rules(&mut r);
    let mut out = r.out;
    out.sort_by_key(|f| (std::cmp::Reverse(f.severity), layer_order(f.layer)));
    out
}

/// NIC → driver/ring → softirq/CPU → IP → TCP/UDP → sockets → conntrack.
pub fn layer_order(layer: &str) -> usize {
    [
        "nic",
        "driver",
        "qdisc",
        "cpu",
        "ip",
        "tcp",
        "udp",
        "sockets",
        "conntrack",
    ]
    .iter()
    .position(|l| *l == layer)
    .unwrap_or(99)
}

fn nic_rules(r: &mut Rule) {
    for nic in &r.report.nics {
        let loss = nic.rx_loss_rate();
        let missed = r
            .report
            .interfaces
            .iter()
            .find(|i| i.info.name == nic.ifname)
            .map(|i| {
                i.counters
                    .get("statistics.rx_missed_errors")
                    .map(|c| c.rate)
                    .unwrap_or(0.0)
                    + i.counters.get("rx_fifo").map(|c| c.rate).unwrap_or(0.0)
            })
            .unwrap_or(0.0);
        let top: Vec<Value> = nic
            .loss
            .iter()
            .filter(|l| l.rate > 0.0)
            .map(|l| json!({"name": l.name, "queue": l.queue, "rate": round(l.rate)}))
            .collect();
        let ring_fix = match nic.rings {
            Some(ring) if ring.rx < ring.rx_max => format!("ethtool -G {} rx {}", nic.ifname, ring.rx_max),
            _ => format!(
                "ring already at its maximum: spread the load over more queues (ethtool -L {} combined <n>) or CPUs (RPS)",
                nic.ifname
            ),
        };
        r.push(
            "nic_rx_discards",
            "nic",
            loss,
            format!("{}: the NIC discards {:.0} received packets/s", nic.ifname, loss),
            evidence! {"interface" => nic.ifname, "driver" => nic.driver, "rx_discards_per_s" => round(loss), "counters" => top, "rings" => nic.rings},
            "The NIC or its driver drops packets before the kernel sees them: the receive ring is full because the CPU servicing it does not drain it fast enough, or the ring is too small for the bursts.",
            ring_fix,
        );
        if let Some(ring) = nic.rings {
            let lost = loss.max(missed);
            if ring.rx < ring.rx_max && lost > 0.0 {
                r.push(
                    "nic_ring_undersized",
                    "driver",
                    lost,
                    format!("{}: rx ring {} of max {} while {:.0} packets/s are missed", nic.ifname, ring.rx, ring.rx_max, lost),
                    evidence! {"interface" => nic.ifname, "rx_ring" => ring.rx, "rx_ring_max" => ring.rx_max, "rx_loss_per_s" => round(lost)},
                    "The receive ring is smaller than the hardware allows and the NIC is running out of descriptors; a larger ring absorbs bursts.",
                    format!("ethtool -G {} rx {}", nic.ifname, ring.rx_max),
                );
            }
        }
    }
}

fn interface_errors(r: &mut Rule) {
    for iface in &r.report.interfaces {
        let c = |name: &str| iface.counters.get(name).map(|c| c.rate).unwrap_or(0.0);
        // rx_drop is evidence, not part of the metric: it also rises for benign reasons
        // (unknown protocols, inactive bond slaves), and backlog drops are softnet_dropped's.
        let rx_drop = c("rx_drop");
        let parts = [
            ("rx_errs", c("rx_errs")),
            ("rx_missed", c("statistics.rx_missed_errors")),
            ("rx_fifo", c("rx_fifo")),
            ("tx_errs", c("tx_errs")),
            ("tx_drop", c("tx_drop")),
            ("tx_fifo", c("tx_fifo")),
        ];
        let total: f64 = parts.iter().map(|p| p.1).sum();
        let (worst, _) = parts
            .iter()
            .copied()
            .fold(("", 0.0), |a, p| if p.1 > a.1 { p } else { a });
        let name = &iface.info.name;
        let fix = match worst {
            "tx_drop" | "tx_fifo" if iface.info.carrier == Some(false) => format!(
                "{name} has no carrier (operstate {}): it drops what it is asked to send; bring the link or its peer up (ip link set dev <peer> up) and check cabling",
                iface.info.operstate.as_deref().unwrap_or("unknown")
            ),
            "tx_drop" | "tx_fifo" => match iface.info.txqueuelen {
                Some(q) if q > 0 => format!("ip link set dev {name} txqueuelen {}", q * 2),
                _ => format!("{name} drops on transmit: check that its peer/lower device is up (ip link show {name})"),
            },
            "rx_missed" | "rx_fifo" => format!("ethtool -G {name} rx <max from ethtool -g {name}>"),
            _ => format!("ethtool -S {name}: hardware errors — check cabling, optics and duplex"),
        };
        let ev: Map<String, Value> = parts
            .iter()
            .map(|(k, v)| (format!("{k}_per_s"), json!(round(*v))))
            .chain([
                ("interface".to_string(), json!(name)),
                ("rx_drop_per_s".to_string(), json!(round(rx_drop))),
            ])
            .collect();
        r.push(
            "network_errors",
            "nic",
            total,
            format!("{name}: {:.0} errors+drops/s (mostly {worst})", total),
            ev,
            "Interface error and drop counters are rising over the window: packets are lost at the device.",
            fix,
        );
    }
}

fn qdisc_drops(r: &mut Rule) {
    for q in &r.report.qdiscs {
        let iface = r
            .report
            .interfaces
            .iter()
            .find(|i| i.info.name == q.qdisc.ifname);
        let fix = match q.qdisc.kind.as_str() {
            "pfifo_fast" | "pfifo" | "noqueue" => match iface.and_then(|i| i.info.txqueuelen) {
                Some(len) => format!("ip link set dev {} txqueuelen {}", q.qdisc.ifname, len.max(1) * 2),
                None => format!("tc qdisc replace dev {} root fq_codel", q.qdisc.ifname),
            },
            "tbf" => format!(
                "the tbf shaper on {} is dropping: raise its rate/burst/limit (tc qdisc change dev {} {} tbf rate <rate> burst <bytes> limit <bytes>) or remove it (tc qdisc del dev {} {})",
                q.qdisc.ifname,
                q.qdisc.ifname,
                if q.qdisc.root { "root".to_string() } else { format!("parent {}", q.qdisc.parent) },
                q.qdisc.ifname,
                if q.qdisc.root { "root".to_string() } else { format!("parent {}", q.qdisc.parent) },
            ),
            kind => format!(
                "raise the {kind} limit: tc qdisc change dev {} {} {kind} limit <packets>",
                q.qdisc.ifname,
                if q.qdisc.root { "root".to_string() } else { format!("parent {}", q.qdisc.parent) }
            ),
        };
        r.push(
            "qdisc_drops",
            "qdisc",
            q.drops_rate,
            format!("{}: qdisc {} {} drops {:.0} packets/s", q.qdisc.ifname, q.qdisc.kind, q.qdisc.handle, q.drops_rate),
            evidence! {"interface" => q.qdisc.ifname, "qdisc" => q.qdisc.kind, "handle" => q.qdisc.handle, "drops_per_s" => round(q.drops_rate), "overlimits_per_s" => round(q.overlimits_rate), "requeues_per_s" => round(q.requeues_rate), "backlog_bytes" => q.qdisc.backlog, "qlen" => q.qdisc.qlen},
            "The transmit queue discipline drops packets: it is shaping below the offered load, or its queue is too short for the bursts.",
            fix,
        );
    }
}

fn cpu_rules(r: &mut Rule) {
    let backlog = r.report.sysctl_number("net.core.netdev_max_backlog");
    for cpu in &r.report.cpus {
        r.push(
            "softnet_dropped",
            "cpu",
            cpu.dropped_rate,
            format!("CPU {}: backlog full, {:.0} packets/s dropped", cpu.cpu, cpu.dropped_rate),
            evidence! {"cpu" => cpu.cpu, "dropped_per_s" => round(cpu.dropped_rate), "processed_per_s" => round(cpu.processed_rate), "received_rps_per_s" => round(cpu.received_rps_rate), "netdev_max_backlog" => backlog},
            "The per-CPU input backlog (netdev_max_backlog) overflowed: packets steered to this CPU (RPS/RFS or non-NAPI drivers) arrive faster than it processes them.",
            match backlog {
                Some(b) => format!("sysctl -w net.core.netdev_max_backlog={}", b.max(1) * 2),
                None => "sysctl -w net.core.netdev_max_backlog=<2×current>".into(),
            },
        );
    }
    let budget = r.report.sysctl_number("net.core.netdev_budget");
    let usecs = r.report.sysctl_number("net.core.netdev_budget_usecs");
    for cpu in &r.report.cpus {
        r.push(
            "softnet_time_squeeze",
            "cpu",
            cpu.time_squeeze_rate,
            format!("CPU {}: NET_RX ran out of budget {:.0} times/s", cpu.cpu, cpu.time_squeeze_rate),
            evidence! {"cpu" => cpu.cpu, "time_squeeze_per_s" => round(cpu.time_squeeze_rate), "processed_per_s" => round(cpu.processed_rate), "netdev_budget" => budget, "netdev_budget_usecs" => usecs},
            "The receive softirq stopped with work left (budget or time exhausted); the rest waits for the next round or ksoftirqd, and rings can overflow meanwhile.",
            format!(
                "sysctl -w net.core.netdev_budget={} net.core.netdev_budget_usecs={}",
                budget.unwrap_or(300) * 2,
                usecs.unwrap_or(2000) * 2
            ),
        );
    }
    let im = &r.report.imbalance;
    if im.net_rx_busiest_rate >= IMBALANCE_MIN_RATE {
        // The interface receiving the most, and whether it spreads work at all.
        let busiest_if = r
            .report
            .interfaces
            .iter()
            .filter(|i| i.info.name != "lo")
            .max_by(|a, b| {
                let rate = |i: &super::model::InterfaceReport| {
                    i.counters.get("rx_packets").map(|c| c.rate).unwrap_or(0.0)
                };
                rate(a).total_cmp(&rate(b))
            });
        let ncpu = r.report.cpus.len().max(1);
        let all_cpus = cpu_mask(ncpu);
        let (fix, rps) = match busiest_if {
            Some(i) if i.info.rps_cpus.is_empty() => (
                format!(
                    "RPS is off on {0}: for q in /sys/class/net/{0}/queues/rx-*/rps_cpus; do echo {1} > $q; done",
                    i.info.name, all_cpus
                ),
                "off",
            ),
            Some(i) => (
                format!("spread {}'s IRQs over CPUs (irqbalance, or /proc/irq/<n>/smp_affinity) and widen rps_cpus to {}", i.info.name, all_cpus),
                "on",
            ),
            None => ("spread NIC IRQs over CPUs (irqbalance)".into(), "unknown"),
        };
        r.push(
            "irq_imbalance",
            "cpu",
            im.net_rx_ratio,
            format!(
                "CPU {} does {:.1}× the mean NET_RX work ({:.0}/s vs {:.0}/s)",
                im.net_rx_busiest_cpu.unwrap_or(0),
                im.net_rx_ratio,
                im.net_rx_busiest_rate,
                im.net_rx_mean_rate
            ),
            evidence! {"busiest_cpu" => im.net_rx_busiest_cpu, "net_rx_busiest_per_s" => round(im.net_rx_busiest_rate), "net_rx_mean_per_s" => round(im.net_rx_mean_rate), "ratio" => round(im.net_rx_ratio), "nic_irq_ratio" => round(im.nic_irq_ratio), "interface" => busiest_if.map(|i| i.info.name.clone()), "rps" => rps},
            "Receive processing is concentrated on one CPU: a single RX queue or IRQ affinity pins it there while other CPUs idle; that CPU saturates first and drops.",
            fix,
        );
    }
}

/// Hex mask of `n` CPUs in sysfs's comma-grouped format.
pub fn cpu_mask(n: usize) -> String {
    let mut groups = Vec::new();
    let mut left = n;
    while left > 0 {
        let bits = left.min(32);
        let word: u64 = if bits == 32 {
            0xffff_ffff
        } else {
            (1u64 << bits) - 1
        };
        groups.push(format!("{word:x}"));
        left -= bits;
    }
    groups.reverse();
    groups.join(",")
}

fn tcp_rules(r: &mut Rule) {
    let rep = r.report;
    let retrans = rep.counter("Tcp", "RetransSegs");
    let out_segs = rep.counter("Tcp", "OutSegs");
    r.push(
        "tcp_retransmits",
        "tcp",
        retrans.rate,
        format!("TCP retransmits {:.0} segments/s ({:.2}% of segments sent)", retrans.rate, 100.0 * retrans.rate / out_segs.rate.max(1.0)),
        evidence! {
            "retrans_segs_per_s" => round(retrans.rate),
            "out_segs_per_s" => round(out_segs.rate),
            "timeouts_per_s" => round(rep.counter("TcpExt", "TCPTimeouts").rate),
            "loss_probes_per_s" => round(rep.counter("TcpExt", "TCPLossProbes").rate),
            "fast_retrans_per_s" => round(rep.counter("TcpExt", "TCPFastRetrans").rate),
            "slow_start_retrans_per_s" => round(rep.counter("TcpExt", "TCPSlowStartRetrans").rate),
            "syn_retrans_per_s" => round(rep.counter("TcpExt", "TCPSynRetrans").rate),
        },
        "Segments are being sent again: something on the path (or this host) loses them. The counters say how often, not where.",
        "netprobe trace --duration 30   # which flows retransmit, and the drops with their reasons".into(),
    );
    let overflows = rep.counter("TcpExt", "ListenOverflows");
    let somaxconn = rep.sysctl_number("net.core.somaxconn");
    let full: Vec<Value> = rep
        .sockets
        .iter()
        .flat_map(|s| s.listeners.iter())
        .filter(|l| l.accept_queue_max > 0 && l.accept_queue >= l.accept_queue_max)
        .map(|l| json!({"port": l.port, "accept_queue": l.accept_queue, "max": l.accept_queue_max, "owners": l.owners}))
        .collect();
    r.push(
        "listen_overflows",
        "tcp",
        overflows.rate,
        format!("{:.0} connections/s dropped at full listen queues", overflows.rate),
        evidence! {"listen_overflows_per_s" => round(overflows.rate), "listen_drops_per_s" => round(rep.counter("TcpExt", "ListenDrops").rate), "somaxconn" => somaxconn, "full_listeners" => full},
        "A listener's accept queue is full: the application does not accept() as fast as connections complete, so the kernel drops the handshake's final ACK and clients retry after a timeout.",
        format!(
            "make the application accept faster; raise its listen() backlog and sysctl -w net.core.somaxconn={}",
            somaxconn.unwrap_or(4096) * 2
        ),
    );
    let pruned = rep.counter("TcpExt", "RcvPruned").rate + rep.counter("TcpExt", "OfoPruned").rate;
    let rmem = rep
        .sysctls
        .get("net.ipv4.tcp_rmem")
        .cloned()
        .unwrap_or_default();
    let rmem_fix = {
        let v: Vec<u64> = rmem
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() == 3 {
            format!(
                "sysctl -w net.ipv4.tcp_rmem=\"{} {} {}\"",
                v[0],
                v[1],
                v[2] * 2
            )
        } else {
            "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 <2×max>\"".into()
        }
    };
    r.push(
        "tcp_rcvbuf_pruned",
        "tcp",
        pruned,
        format!("TCP pruned {:.1} receive queues/s (data dropped for lack of receive memory)", pruned),
        evidence! {
            "rcv_pruned_per_s" => round(rep.counter("TcpExt", "RcvPruned").rate),
            "ofo_pruned_per_s" => round(rep.counter("TcpExt", "OfoPruned").rate),
            "prune_called_per_s" => round(rep.counter("TcpExt", "PruneCalled").rate),
            "rcv_collapsed_per_s" => round(rep.counter("TcpExt", "TCPRcvCollapsed").rate),
            "tcp_rmem" => rmem,
        },
        "Sockets' receive buffers are full (the application reads too slowly or tcp_rmem is too small): the kernel collapses and finally prunes queued data, which the sender must retransmit.",
        rmem_fix,
    );
}

fn udp_rcvbuf(r: &mut Rule) {
    let rep = r.report;
    let v4 = rep.counter("Udp", "RcvbufErrors").rate;
    let v6 = rep.counter("Snmp6", "Udp6RcvbufErrors").rate;
    let rmem_max = rep.sysctl_number("net.core.rmem_max");
    let backlogs: Vec<Value> = rep
        .sockets
        .iter()
        .flat_map(|s| s.udp_backlogs.iter())
        .take(5)
        .map(
            |b| json!({"port": b.port, "recv_queue_bytes": b.recv_queue_bytes, "owners": b.owners}),
        )
        .collect();
    r.push(
        "udp_rcvbuf_errors",
        "udp",
        v4 + v6,
        format!("UDP drops {:.0} datagrams/s at full receive buffers", v4 + v6),
        evidence! {"udp_rcvbuf_errors_per_s" => round(v4), "udp6_rcvbuf_errors_per_s" => round(v6), "udp_in_errors_per_s" => round(rep.counter("Udp", "InErrors").rate), "rmem_max" => rmem_max, "fullest_sockets" => backlogs},
        "Datagrams arrive at a socket whose receive buffer is full: the application does not read fast enough, or its SO_RCVBUF (capped by rmem_max) is too small.",
        format!(
            "sysctl -w net.core.rmem_max={} and have the application set SO_RCVBUF (or read faster)",
            rmem_max.unwrap_or(212992) * 4
        ),
    );
}

fn socket_rules(r: &mut Rule) {
    let Some(s) = &r.report.sockets else { return };
    let tw_max = r.report.sysctl_number("net.ipv4.tcp_max_tw_buckets");
    let reuse = r.report.sysctl_number("net.ipv4.tcp_tw_reuse");
    r.push(
        "tcp_timewait",
        "sockets",
        s.time_wait as f64,
        format!("{} sockets in TIME_WAIT", s.time_wait),
        evidence! {"time_wait" => s.time_wait, "top_local_ports" => s.time_wait_ports, "tcp_max_tw_buckets" => tw_max, "tcp_tw_reuse" => reuse},
        "Many short connections close on this side; each leaves a TIME_WAIT socket for 60 s. Enough of them exhaust ephemeral ports towards one destination.",
        if reuse == Some(1) {
            "reuse connections (keep-alive, pooling) in the application".into()
        } else {
            "sysctl -w net.ipv4.tcp_tw_reuse=1   # and reuse connections (keep-alive, pooling)".into()
        },
    );
    let holder = s.close_wait_owners.first();
    r.push(
        "tcp_closewait",
        "sockets",
        s.close_wait as f64,
        match holder {
            Some(h) if h.pid != 0 => format!("{} sockets in CLOSE_WAIT; {} (pid {}) holds {}", s.close_wait, h.comm, h.pid, h.count),
            _ => format!("{} sockets in CLOSE_WAIT", s.close_wait),
        },
        evidence! {"close_wait" => s.close_wait, "holders" => s.close_wait_owners, "owners_complete" => s.owners_complete},
        "The peer closed these connections but the local application never called close(): a socket leak that grows until the process runs out of file descriptors.",
        match holder {
            Some(h) if h.pid != 0 => format!(
                "fix {} (pid {}) to close() sockets after read() returns 0; ss -tnp state close-wait shows them; restarting it frees them now",
                h.comm, h.pid
            ),
            _ => "run as root to name the owning process; ss -tnp state close-wait".into(),
        },
    );
    let somaxconn = r.report.sysctl_number("net.core.somaxconn");
    for l in &s.listeners {
        if l.accept_queue_max == 0 {
            continue;
        }
        let fill = l.accept_queue as f64 * 100.0 / l.accept_queue_max as f64;
        let owner = l
            .owners
            .first()
            .map(|o| format!("{} (pid {})", o.comm, o.pid))
            .unwrap_or_else(|| "its owner".into());
        r.push(
            "accept_queue_full",
            "sockets",
            fill,
            format!("listener {}:{} accept queue {}/{} ({:.0}%), owned by {owner}", l.addr, l.port, l.accept_queue, l.accept_queue_max, fill),
            evidence! {"addr" => l.addr, "port" => l.port, "accept_queue" => l.accept_queue, "accept_queue_max" => l.accept_queue_max, "owners" => l.owners, "somaxconn" => somaxconn},
            "Completed connections wait for the application to accept() them; when the queue is full new handshakes are dropped (ListenOverflows).",
            format!(
                "{owner} must accept() faster; raise its listen() backlog (limit {}) and sysctl -w net.core.somaxconn={}",
                l.accept_queue_max,
                somaxconn.unwrap_or(4096).max(l.accept_queue_max as u64) * 2
            ),
        );
    }
}

fn conntrack_rules(r: &mut Rule) {
    let Some(ct) = &r.report.conntrack else {
        return;
    };
    let doubled = (ct.max.max(1)) * 2;
    r.push(
        "conntrack_usage",
        "conntrack",
        ct.usage_pct,
        format!("conntrack table {:.0}% full ({}/{})", ct.usage_pct, ct.count, ct.max),
        evidence! {"count" => ct.count, "max" => ct.max, "usage_pct" => round(ct.usage_pct)},
        "When the connection-tracking table is full, new flows are dropped (\"nf_conntrack: table full, dropping packet\").",
        format!("sysctl -w net.netfilter.nf_conntrack_max={doubled}"),
    );
    let stat = |n: &str| ct.stats.get(n).map(|c| c.rate).unwrap_or(0.0);
    let drops = stat("drop") + stat("early_drop") + stat("insert_failed");
    r.push(
        "conntrack_drops",
        "conntrack",
        drops,
        format!("conntrack drops {:.0} packets/s", drops),
        evidence! {"drop_per_s" => round(stat("drop")), "early_drop_per_s" => round(stat("early_drop")), "insert_failed_per_s" => round(stat("insert_failed")), "count" => ct.count, "max" => ct.max},
        "Connection tracking refuses packets: the table is full (drop, early_drop) or inserts race (insert_failed, typical of UDP DNS with parallel A/AAAA queries).",
        format!("sysctl -w net.netfilter.nf_conntrack_max={doubled}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_classify() {
        assert_eq!(severity("tcp_retransmits", 9.9), None);
        assert_eq!(severity("tcp_retransmits", 10.0), Some(Severity::Warning));
        assert_eq!(severity("tcp_retransmits", 50.0), Some(Severity::Critical));
        assert_eq!(severity("tcp_closewait", 1.0), Some(Severity::Warning));
        assert_eq!(severity("conntrack_usage", 91.0), Some(Severity::Critical));
        for t in THRESHOLDS {
            assert!(t.warning < t.critical, "{}", t.id);
        }
    }

    #[test]
    fn cpu_masks() {
        assert_eq!(cpu_mask(2), "3");
        assert_eq!(cpu_mask(8), "ff");
        assert_eq!(cpu_mask(32), "ffffffff");
        assert_eq!(cpu_mask(40), "ff,ffffffff");
    }
}
