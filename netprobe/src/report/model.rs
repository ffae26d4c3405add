//! The report document: raw values from the second snapshot, per-second rates over the
//! interval, and the findings. Serialized as-is for `--json` (schema in docs/report.md).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::socket_limits::BufferSysctls;

use super::{
    ethtool::{classify, NicInfo, Rings},
    netlink::Qdisc,
    sample::{ConntrackSample, Skipped, Snapshot},
    sockets::SocketReport,
    sysfs::InterfaceInfo,
};

/// A counter's value at the end of the window and its rate over the window.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Counter {
    pub value: i64,
    /// Per second over the window; counters that went backwards (reset) read 0.
    pub rate: f64,
}

fn rate(before: u64, after: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / secs
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceReport {
    #[serde(flatten)]
    pub info: InterfaceInfo,
    /// /proc/net/dev and statistics/ counters with rates, by name (`rx_errors`, …).
    pub counters: BTreeMap<String, Counter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NicLoss {
    pub name: String,
    pub direction: &'static str,
    pub queue: Option<u32>,
    pub value: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NicReport {
    pub ifname: String,
    pub driver: String,
    pub version: String,
    pub firmware: String,
    pub bus: String,
    pub rings: Option<Rings>,
    /// Drop/miss/discard/error statistics, singled out, per queue where the driver says.
    pub loss: Vec<NicLoss>,
    /// Every statistic with its rate.
    pub stats: BTreeMap<String, Counter>,
}

impl NicReport {
    /// Rate of receive-side loss, from the driver's totals (not also its per-queue
    /// breakdown, which would count the same packets twice); per-queue sums when there are
    /// no totals.
    pub fn rx_loss_rate(&self) -> f64 {
        let rx: Vec<&NicLoss> = self.loss.iter().filter(|l| l.direction == "rx").collect();
        let totals: f64 = rx
            .iter()
            .filter(|l| l.queue.is_none())
            .map(|l| l.rate)
            .sum();
        if rx.iter().any(|l| l.queue.is_none()) {
            totals
        } else {
            rx.iter().map(|l| l.rate).sum()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QdiscReport {
    #[serde(flatten)]
    pub qdisc: Qdisc,
    pub drops_rate: f64,
    pub overlimits_rate: f64,
    pub requeues_rate: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    pub cpu: usize,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    pub received_rps: u64,
    pub flow_limit_count: u64,
    pub backlog_len: Option<u64>,
    pub processed_rate: f64,
    pub dropped_rate: f64,
    pub time_squeeze_rate: f64,
    pub received_rps_rate: f64,
    pub flow_limit_rate: f64,
    pub net_rx_rate: f64,
    pub net_tx_rate: f64,
    /// NIC interrupts per second on this CPU (all NIC IRQ lines).
    pub nic_irq_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IrqReport {
    pub irq: String,
    pub ifname: String,
    pub name: String,
    pub per_cpu_rate: Vec<f64>,
    /// CPUs the line is routed to.
    pub affinity: Vec<usize>,
}

/// Busiest CPU against the mean, for NET_RX softirqs and NIC interrupts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Imbalance {
    pub net_rx_busiest_cpu: Option<usize>,
    pub net_rx_busiest_rate: f64,
    pub net_rx_mean_rate: f64,
    /// busiest / mean; 0 when there is no NET_RX work.
    pub net_rx_ratio: f64,
    pub nic_irq_busiest_cpu: Option<usize>,
    pub nic_irq_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConntrackReport {
    pub count: u64,
    pub max: u64,
    pub usage_pct: f64,
    /// Per-CPU stat columns summed, with rates (`drop`, `insert_failed`, `early_drop`, …).
    pub stats: BTreeMap<String, Counter>,
}

pub use netprobe_common::vocab::{Direction, Layer, Severity};

/// The shared vocabulary serializes by name.
mod by_name {
    use netprobe_common::vocab::{Direction, Layer, Severity};
    use serde::Serializer;

    pub fn severity<S: Serializer>(v: &Severity, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }

    pub fn layer<S: Serializer>(v: &Layer, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }

    pub fn direction<S: Serializer>(v: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }
}

/// One finding of a rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub id: &'static str,
    #[serde(serialize_with = "by_name::severity")]
    pub severity: Severity,
    /// Where in the stack: the same layers as the drops' (`nic`, `qdisc`, `backlog`, …).
    #[serde(serialize_with = "by_name::layer")]
    pub layer: Layer,
    /// The direction the lost packets were going, where the counter implies one.
    #[serde(serialize_with = "by_name::direction")]
    pub direction: Direction,
    pub summary: String,
    pub evidence: serde_json::Map<String, serde_json::Value>,
    pub explanation: String,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub interval_s: f64,
    pub kernel: String,
    pub findings: Vec<Finding>,
    pub interfaces: Vec<InterfaceReport>,
    pub nics: Vec<NicReport>,
    pub qdiscs: Vec<QdiscReport>,
    pub cpus: Vec<CpuReport>,
    pub imbalance: Imbalance,
    pub irqs: Vec<IrqReport>,
    /// snmp (Ip, Icmp, Tcp, Udp, UdpLite…), netstat (TcpExt, IpExt, MPTcpExt) and snmp6, every
    /// field by name.
    pub protocols: BTreeMap<String, BTreeMap<String, Counter>>,
    pub sockets: Option<SocketReport>,
    pub conntrack: Option<ConntrackReport>,
    pub sysctls: BTreeMap<String, String>,
    /// The global sysctls netprobe read in the initial network namespace, because the one it
    /// runs in does not list them: the host's values, which are the ones that apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sysctls_from_initial_netns: Vec<String>,
    pub skipped: Vec<Skipped>,
}

impl Report {
    pub fn counter(&self, group: &str, field: &str) -> Counter {
        self.protocols
            .get(group)
            .and_then(|g| g.get(field))
            .copied()
            .unwrap_or(Counter {
                value: 0,
                rate: 0.0,
            })
    }

    pub fn sysctl_number(&self, name: &str) -> Option<u64> {
        self.sysctls
            .get(name)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// `net.ipv4.tcp_rmem`: min, default, max.
    pub fn tcp_rmem(&self) -> Option<[u64; 3]> {
        let fields: Vec<u64> = self
            .sysctls
            .get("net.ipv4.tcp_rmem")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        <[u64; 3]>::try_from(fields).ok()
    }

    /// The sysctls that bound socket buffers and accept queues.
    pub fn buffer_sysctls(&self) -> BufferSysctls {
        BufferSysctls {
            rmem_default: self.sysctl_number("net.core.rmem_default"),
            rmem_max: self.sysctl_number("net.core.rmem_max"),
            tcp_rmem: self.tcp_rmem(),
            somaxconn: self.sysctl_number("net.core.somaxconn"),
        }
    }
}

fn interface_counters(
    a: &Snapshot,
    b: &Snapshot,
    info: &InterfaceInfo,
    secs: f64,
) -> BTreeMap<String, Counter> {
    let mut out = BTreeMap::new();
    let dev = |s: &Snapshot| s.net_dev.iter().find(|d| d.name == info.name).cloned();
    if let (Some(before), Some(after)) = (dev(a), dev(b)) {
        let pairs = [
            ("rx_bytes", before.rx.bytes, after.rx.bytes),
            ("rx_packets", before.rx.packets, after.rx.packets),
            ("rx_errs", before.rx.errs, after.rx.errs),
            ("rx_drop", before.rx.drop, after.rx.drop),
            ("rx_fifo", before.rx.fifo, after.rx.fifo),
            (
                "rx_frame",
                before.rx.frame_or_colls,
                after.rx.frame_or_colls,
            ),
            ("tx_bytes", before.tx.bytes, after.tx.bytes),
            ("tx_packets", before.tx.packets, after.tx.packets),
            ("tx_errs", before.tx.errs, after.tx.errs),
            ("tx_drop", before.tx.drop, after.tx.drop),
            ("tx_fifo", before.tx.fifo, after.tx.fifo),
            (
                "tx_colls",
                before.tx.frame_or_colls,
                after.tx.frame_or_colls,
            ),
            ("tx_carrier", before.tx.other, after.tx.other),
        ];
        for (name, x, y) in pairs {
            out.insert(
                name.to_string(),
                Counter {
                    value: y as i64,
                    rate: rate(x, y, secs),
                },
            );
        }
    }
    // statistics/ has rx_missed_errors and friends that /proc/net/dev folds away.
    let before = a.interfaces.iter().find(|i| i.name == info.name);
    for (name, value) in &info.statistics {
        let old = before
            .and_then(|i| i.statistics.get(name))
            .copied()
            .unwrap_or(*value);
        out.insert(
            format!("statistics.{name}"),
            Counter {
                value: *value as i64,
                rate: rate(old, *value, secs),
            },
        );
    }
    out
}

fn nic_report(ifname: &str, before: Option<&NicInfo>, after: &NicInfo, secs: f64) -> NicReport {
    let mut stats = BTreeMap::new();
    let mut loss = Vec::new();
    for s in &after.stats {
        let old = before
            .and_then(|b| b.stats.iter().find(|x| x.name == s.name))
            .map(|x| x.value)
            .unwrap_or(s.value);
        let r = rate(old, s.value, secs);
        stats.insert(
            s.name.clone(),
            Counter {
                value: s.value as i64,
                rate: r,
            },
        );
        if let Some(c) = classify(&s.name) {
            loss.push(NicLoss {
                name: c.name,
                direction: c.direction,
                queue: c.queue,
                value: s.value,
                rate: r,
            });
        }
    }
    NicReport {
        ifname: ifname.to_string(),
        driver: after.driver.clone(),
        version: after.version.clone(),
        firmware: after.firmware.clone(),
        bus: after.bus.clone(),
        rings: after.rings,
        loss,
        stats,
    }
}

fn conntrack_report(
    a: Option<&ConntrackSample>,
    b: &ConntrackSample,
    secs: f64,
) -> ConntrackReport {
    let stats = b
        .stats
        .iter()
        .map(|(name, v)| {
            let old = a.and_then(|a| a.stats.get(name)).copied().unwrap_or(*v);
            let r = if name == "entries" {
                0.0
            } else {
                rate(old, *v, secs)
            };
            (
                name.clone(),
                Counter {
                    value: *v as i64,
                    rate: r,
                },
            )
        })
        .collect();
    ConntrackReport {
        count: b.count,
        max: b.max,
        usage_pct: if b.max > 0 {
            b.count as f64 * 100.0 / b.max as f64
        } else {
            0.0
        },
        stats,
    }
}

fn busiest(rates: &[(usize, f64)]) -> (Option<usize>, f64, f64, f64) {
    if rates.is_empty() {
        return (None, 0.0, 0.0, 0.0);
    }
    let mean = rates.iter().map(|r| r.1).sum::<f64>() / rates.len() as f64;
    let (cpu, max) = rates
        .iter()
        .copied()
        .fold((0, f64::MIN), |acc, r| if r.1 > acc.1 { r } else { acc });
    let ratio = if mean > 0.0 { max / mean } else { 0.0 };
    (Some(cpu), max, mean, ratio)
}

/// Builds everything but the findings and the once-only sections.
pub fn build(a: &Snapshot, b: &Snapshot, kernel: String) -> Report {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let irqs = irq_reports(a, b, secs);
    let cpus = cpu_reports(a, b, &irqs, secs);
    let imbalance = imbalance(&cpus, !irqs.is_empty());
    Report {
        kind: "report",
        interval_s: secs,
        kernel,
        findings: Vec::new(),
        interfaces: interface_reports(a, b, secs),
        nics: nic_reports(a, b, secs),
        qdiscs: qdisc_reports(a, b, secs),
        cpus,
        imbalance,
        irqs,
        protocols: protocol_counters(a, b, secs),
        sockets: None,
        conntrack: b
            .conntrack
            .as_ref()
            .map(|c| conntrack_report(a.conntrack.as_ref(), c, secs)),
        sysctls: BTreeMap::new(),
        sysctls_from_initial_netns: Vec::new(),
        skipped: Vec::new(),
    }
}

fn interface_reports(a: &Snapshot, b: &Snapshot, secs: f64) -> Vec<InterfaceReport> {
    b.interfaces
        .iter()
        .map(|info| InterfaceReport {
            counters: interface_counters(a, b, info, secs),
            info: info.clone(),
        })
        .collect()
}

fn nic_reports(a: &Snapshot, b: &Snapshot, secs: f64) -> Vec<NicReport> {
    b.nics
        .iter()
        .map(|(name, nic)| nic_report(name, a.nics.get(name), nic, secs))
        .collect()
}

/// A qdisc is the same one when its interface, handle and parent match; one that appeared
/// during the window has no earlier value and reads rate 0.
fn qdisc_reports(a: &Snapshot, b: &Snapshot, secs: f64) -> Vec<QdiscReport> {
    b.qdiscs
        .iter()
        .map(|q| {
            let old = a
                .qdiscs
                .iter()
                .find(|o| o.ifindex == q.ifindex && o.handle == q.handle && o.parent == q.parent)
                .unwrap_or(q);
            QdiscReport {
                qdisc: q.clone(),
                drops_rate: rate(old.drops, q.drops, secs),
                overlimits_rate: rate(old.overlimits, q.overlimits, secs),
                requeues_rate: rate(old.requeues, q.requeues, secs),
            }
        })
        .collect()
}

/// Every snmp/netstat/snmp6 field with its rate; a field new in the second snapshot reads 0.
fn protocol_counters(
    a: &Snapshot,
    b: &Snapshot,
    secs: f64,
) -> BTreeMap<String, BTreeMap<String, Counter>> {
    let mut protocols: BTreeMap<String, BTreeMap<String, Counter>> = BTreeMap::new();
    for (group, fields) in &b.counters {
        let out = protocols.entry(group.clone()).or_default();
        for (name, value) in fields {
            let old = a
                .counters
                .get(group)
                .and_then(|g| g.get(name))
                .copied()
                .unwrap_or(*value);
            // Gauges such as Tcp CurrEstab can go down; a counter that does has been reset.
            let r = if value >= &old {
                (value - old) as f64 / secs.max(f64::EPSILON)
            } else {
                0.0
            };
            out.insert(
                name.clone(),
                Counter {
                    value: *value,
                    rate: r,
                },
            );
        }
    }
    protocols
}

/// Each NIC IRQ line's interrupts per second, by /proc/interrupts column.
fn irq_reports(a: &Snapshot, b: &Snapshot, secs: f64) -> Vec<IrqReport> {
    b.irqs
        .iter()
        .map(|irq| {
            let old = a.irqs.iter().find(|o| o.irq == irq.irq).unwrap_or(irq);
            let per_cpu_rate = irq
                .per_cpu
                .iter()
                .enumerate()
                .map(|(i, v)| rate(old.per_cpu.get(i).copied().unwrap_or(*v), *v, secs))
                .collect();
            IrqReport {
                irq: irq.irq.clone(),
                ifname: irq.ifname.clone(),
                name: irq.name.clone(),
                per_cpu_rate,
                affinity: irq.affinity.clone(),
            }
        })
        .collect()
}

/// Per CPU: softnet by CPU id, softirqs and NIC IRQs by column. A CPU seen by only one of
/// the sources still gets its row, the others' fields at 0.
fn cpu_reports(a: &Snapshot, b: &Snapshot, irqs: &[IrqReport], secs: f64) -> Vec<CpuReport> {
    let mut cpus = softnet_by_cpu(a, b, secs);
    for (i, cpu) in b.softirq_cpus.iter().enumerate() {
        let entry = cpu_entry(&mut cpus, *cpu);
        let at = |v: &Vec<u64>| v.get(i).copied().unwrap_or(0);
        entry.net_rx_rate = rate(at(&a.net_rx), at(&b.net_rx), secs);
        entry.net_tx_rate = rate(at(&a.net_tx), at(&b.net_tx), secs);
    }
    for irq in irqs {
        for (i, r) in irq.per_cpu_rate.iter().enumerate() {
            if let Some(cpu) = b.irq_cpus.get(i) {
                cpu_entry(&mut cpus, *cpu).nic_irq_rate += r;
            }
        }
    }
    cpus.into_values().collect()
}

fn cpu_entry(cpus: &mut BTreeMap<usize, CpuReport>, cpu: usize) -> &mut CpuReport {
    cpus.entry(cpu).or_insert_with(|| CpuReport {
        cpu,
        ..Default::default()
    })
}

fn softnet_by_cpu(a: &Snapshot, b: &Snapshot, secs: f64) -> BTreeMap<usize, CpuReport> {
    let mut cpus = BTreeMap::new();
    for s in &b.softnet {
        let old = a.softnet.iter().find(|o| o.cpu == s.cpu).unwrap_or(s);
        cpus.insert(
            s.cpu,
            CpuReport {
                cpu: s.cpu,
                processed: s.processed,
                dropped: s.dropped,
                time_squeeze: s.time_squeeze,
                received_rps: s.received_rps,
                flow_limit_count: s.flow_limit_count,
                backlog_len: s.backlog_len,
                processed_rate: rate(old.processed, s.processed, secs),
                dropped_rate: rate(old.dropped, s.dropped, secs),
                time_squeeze_rate: rate(old.time_squeeze, s.time_squeeze, secs),
                received_rps_rate: rate(old.received_rps, s.received_rps, secs),
                flow_limit_rate: rate(old.flow_limit_count, s.flow_limit_count, secs),
                ..Default::default()
            },
        );
    }
    cpus
}

/// Without any NIC IRQ line there is no IRQ load to compare, so no busiest CPU is named
/// (rather than the first CPU at a ratio of 0).
fn imbalance(cpus: &[CpuReport], has_nic_irqs: bool) -> Imbalance {
    let net_rx: Vec<(usize, f64)> = cpus.iter().map(|c| (c.cpu, c.net_rx_rate)).collect();
    let (rx_cpu, rx_max, rx_mean, rx_ratio) = busiest(&net_rx);
    let irq_rates: Vec<(usize, f64)> = if has_nic_irqs {
        cpus.iter().map(|c| (c.cpu, c.nic_irq_rate)).collect()
    } else {
        Vec::new()
    };
    let (irq_cpu, _, _, irq_ratio) = busiest(&irq_rates);
    Imbalance {
        net_rx_busiest_cpu: rx_cpu,
        net_rx_busiest_rate: rx_max,
        net_rx_mean_rate: rx_mean,
        net_rx_ratio: rx_ratio,
        nic_irq_busiest_cpu: irq_cpu,
        nic_irq_ratio: irq_ratio,
    }
}
