//! One snapshot of every counter source. Two snapshots an interval apart give the rates.
//! A source that cannot be read is recorded in `skipped` with the reason, never fatal.

use std::os::fd::AsRawFd;
use std::{collections::BTreeMap, fs, path::Path, time::Instant};

use serde::Serialize;

use crate::model::cpuset::CpuSet;

use super::{
    ethtool::{self, NicInfo},
    netlink::{self, InetSocket, Qdisc},
    procfs::{self, Counters, CpuRow, NetDev, Softnet},
    sysfs::{self, InterfaceInfo},
};

pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// A source the report could not read, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

/// Which interfaces to look at.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `None`: every interface of the namespace.
    pub interface: Option<String>,
}

impl Scope {
    pub fn includes(&self, ifname: &str) -> bool {
        self.interface.as_deref().is_none_or(|i| i == ifname)
    }
}

/// An IRQ line that belongs to a NIC.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NicIrq {
    pub irq: String,
    pub ifname: String,
    pub name: String,
    pub per_cpu: Vec<u64>,
    /// CPUs the line is routed to (`/proc/irq/<n>/effective_affinity_list`, else
    /// `smp_affinity_list`); empty when unreadable.
    pub affinity: Vec<usize>,
}

fn irq_affinity(irq: &str) -> Vec<usize> {
    ["effective_affinity_list", "smp_affinity_list"]
        .iter()
        .find_map(|file| fs::read_to_string(format!("/proc/irq/{irq}/{file}")).ok())
        .map(|text| CpuSet::parse_list(&text).to_vec())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConntrackSample {
    pub count: u64,
    pub max: u64,
    /// /proc/net/stat/nf_conntrack summed over CPUs, by column name.
    pub stats: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub net_dev: Vec<NetDev>,
    pub interfaces: Vec<InterfaceInfo>,
    pub nics: BTreeMap<String, NicInfo>,
    pub qdiscs: Vec<Qdisc>,
    /// snmp, netstat and snmp6 (as group `Snmp6`).
    pub counters: Counters,
    pub softnet: Vec<Softnet>,
    /// CPU ids of /proc/softirqs columns.
    pub softirq_cpus: Vec<usize>,
    pub net_rx: Vec<u64>,
    pub net_tx: Vec<u64>,
    pub irq_cpus: Vec<usize>,
    pub irqs: Vec<NicIrq>,
    pub conntrack: Option<ConntrackSample>,
    /// Every TCP and UDP socket with its memory and drop counter (sock_diag); `None` when
    /// the dump failed. Both samples have it: a socket's drops in the window are the growth
    /// of its own counter between them.
    pub sockets: Option<Vec<InetSocket>>,
}

fn read(path: &str, skipped: &mut Vec<Skipped>) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            skipped.push(Skipped {
                source: path.to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

/// /proc/net/snmp6: one `Name value` per line; kept as group `Snmp6`.
fn parse_snmp6(text: &str, into: &mut Counters) {
    let group = into.entry("Snmp6".to_string()).or_default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if let Ok(v) = value.parse() {
                group.insert(name.to_string(), v);
            }
        }
    }
}

fn softirq_row(rows: &[CpuRow], label: &str) -> Vec<u64> {
    rows.iter()
        .find(|r| r.label == label)
        .map(|r| r.per_cpu.clone())
        .unwrap_or_default()
}

/// IRQ lines belonging to the interfaces: MSI vectors listed in sysfs, or a line whose device
/// name mentions the interface or its bus device (`eth0-TxRx-0`, `virtio0-input.0`).
fn nic_irqs(rows: &[CpuRow], interfaces: &[InterfaceInfo]) -> Vec<NicIrq> {
    nic_irqs_under(Path::new(SYS_CLASS_NET), rows, interfaces)
}

/// The same, with the interfaces' sysfs directories under `root` (`/sys/class/net`).
fn nic_irqs_under(root: &Path, rows: &[CpuRow], interfaces: &[InterfaceInfo]) -> Vec<NicIrq> {
    let mut out = Vec::new();
    for info in interfaces {
        if info.name == "lo" {
            continue;
        }
        let msi: Vec<String> = sysfs::msi_irqs(root, &info.name)
            .iter()
            .map(|i| i.to_string())
            .collect();
        let device = sysfs::device_name(root, &info.name);
        for row in rows {
            let name = row.description.split_whitespace().last().unwrap_or("");
            let by_name = row.description.split_whitespace().any(|w| {
                w.starts_with(&format!("{}-", info.name))
                    || w == info.name
                    || device
                        .as_deref()
                        .is_some_and(|d| w.starts_with(&format!("{d}-")))
            });
            if msi.contains(&row.label) || by_name {
                // Config/control vectors carry no packets.
                if name.ends_with("-config") || name.contains("-ctrl") {
                    continue;
                }
                out.push(NicIrq {
                    irq: row.label.clone(),
                    ifname: info.name.clone(),
                    name: name.to_string(),
                    per_cpu: row.per_cpu.clone(),
                    affinity: irq_affinity(&row.label),
                });
            }
        }
    }
    out
}

/// Reads every source once; each that cannot be read adds to `skipped`.
pub fn take(scope: &Scope, skipped: &mut Vec<Skipped>) -> Snapshot {
    let net_dev = read_net_dev(scope, skipped);
    let root = Path::new(SYS_CLASS_NET);
    let interfaces: Vec<InterfaceInfo> = net_dev
        .iter()
        .map(|d| sysfs::read_interface(root, &d.name))
        .collect();
    let nics = read_nics(&interfaces, skipped);
    let qdiscs = read_qdiscs(&interfaces, skipped);
    let counters = read_counters(skipped);
    let softnet = read("/proc/net/softnet_stat", skipped)
        .map(|t| procfs::parse_softnet(&t))
        .unwrap_or_default();
    let (softirq_cpus, rows) = read_cpu_table("/proc/softirqs", skipped);
    let (irq_cpus, irq_rows) = read_cpu_table("/proc/interrupts", skipped);
    let conntrack = read_conntrack();
    let sockets = read_sockets(skipped);

    Snapshot {
        at: Instant::now(),
        irqs: nic_irqs(&irq_rows, &interfaces),
        net_dev,
        interfaces,
        nics,
        qdiscs,
        counters,
        softnet,
        net_rx: softirq_row(&rows, "NET_RX"),
        net_tx: softirq_row(&rows, "NET_TX"),
        softirq_cpus,
        irq_cpus,
        conntrack,
        sockets,
    }
}

fn read_sockets(skipped: &mut Vec<Skipped>) -> Option<Vec<InetSocket>> {
    netlink::inet_sockets()
        .map_err(|e| {
            skipped.push(Skipped {
                source: "sock_diag socket dump".into(),
                reason: e.to_string(),
            })
        })
        .ok()
}

/// NET_RX softirq runs per CPU (/proc/softirqs), alone: the baseline a trace reads before
/// attaching its hooks, so that every run it traces is in the counter's delta.
pub fn net_rx_runs() -> Vec<u64> {
    let (_, rows) = read_cpu_table("/proc/softirqs", &mut Vec::new());
    softirq_row(&rows, "NET_RX")
}

/// /proc/net/dev, only the interfaces in scope; they are the interfaces of the snapshot.
fn read_net_dev(scope: &Scope, skipped: &mut Vec<Skipped>) -> Vec<NetDev> {
    read("/proc/net/dev", skipped)
        .map(|t| procfs::parse_net_dev(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|d| scope.includes(&d.name))
        .collect()
}

/// Driver facts and statistics by interface. Devices without ethtool support (EOPNOTSUPP)
/// are simply absent: that is no failure to report.
fn read_nics(
    interfaces: &[InterfaceInfo],
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<String, NicInfo> {
    let mut nics = BTreeMap::new();
    for info in interfaces {
        if info.name == "lo" {
            continue;
        }
        match ethtool::read_nic(&info.name) {
            Ok(nic) => {
                nics.insert(info.name.clone(), nic);
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => skipped.push(Skipped {
                source: format!("ethtool {}", info.name),
                reason: e.to_string(),
            }),
        }
    }
    nics
}

/// The qdisc dump covers the whole namespace: keep those of the interfaces in scope, named.
fn read_qdiscs(interfaces: &[InterfaceInfo], skipped: &mut Vec<Skipped>) -> Vec<Qdisc> {
    match netlink::qdiscs() {
        Ok(mut qdiscs) => {
            let names: BTreeMap<i32, &str> = interfaces
                .iter()
                .filter_map(|i| Some((i.ifindex? as i32, i.name.as_str())))
                .collect();
            qdiscs.retain_mut(|q| match names.get(&q.ifindex) {
                Some(name) => {
                    q.ifname = name.to_string();
                    true
                }
                None => false,
            });
            qdiscs
        }
        Err(e) => {
            skipped.push(Skipped {
                source: "rtnetlink qdisc dump".into(),
                reason: e.to_string(),
            });
            Vec::new()
        }
    }
}

/// snmp and netstat, plus snmp6 when there is one: a kernel without IPv6 has no such file,
/// which is not worth a `skipped` line.
pub(crate) fn read_counters(skipped: &mut Vec<Skipped>) -> Counters {
    let mut counters = Counters::new();
    for path in ["/proc/net/snmp", "/proc/net/netstat"] {
        if let Some(text) = read(path, skipped) {
            procfs::parse_snmp(&text, &mut counters);
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/net/snmp6") {
        parse_snmp6(&text, &mut counters);
    }
    counters
}

/// /proc/softirqs or /proc/interrupts: the CPU ids of the columns, and the rows.
fn read_cpu_table(path: &str, skipped: &mut Vec<Skipped>) -> (Vec<usize>, Vec<CpuRow>) {
    read(path, skipped)
        .map(|t| procfs::parse_cpu_table(&t))
        .unwrap_or_default()
}

/// `None` when nf_conntrack is not loaded in this namespace (no count file), which is not a
/// failure to read: `netprobe report` names it in `skipped` itself.
fn read_conntrack() -> Option<ConntrackSample> {
    let count = fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").ok()?;
    Some(ConntrackSample {
        count: count.trim().parse().unwrap_or(0),
        max: fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
            .ok()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(0),
        stats: fs::read_to_string("/proc/net/stat/nf_conntrack")
            .map(|t| procfs::parse_conntrack_stat(&t))
            .unwrap_or_default(),
    })
}

/// The sysctls a network engineer checks first, as the running kernel has them.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.rmem_default",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_keepalive_time",
    "net.netfilter.nf_conntrack_max",
];

/// The sysctls of [`SYSCTLS`] as the running kernel has them, and the names of those read in
/// the initial network namespace: the global ones (net.core.netdev_max_backlog…) that a child
/// namespace's /proc/sys does not list, which are the host's whatever namespace netprobe runs in.
pub fn sysctls(skipped: &mut Vec<Skipped>) -> (BTreeMap<String, String>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut absent = Vec::new();
    for name in SYSCTLS {
        match fs::read_to_string(sysctl_path(name)) {
            Ok(v) => {
                out.insert(name.to_string(), one_line(&v));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => absent.push(*name),
            Err(e) => skipped.push(Skipped {
                source: format!("sysctl {name}"),
                reason: e.to_string(),
            }),
        }
    }
    let mut from_initial = Vec::new();
    let paths = absent.iter().map(|n| sysctl_path(n)).collect();
    for (name, value) in absent.iter().zip(read_in_initial_netns(paths)) {
        match value {
            Some(v) => {
                out.insert(name.to_string(), one_line(&v));
                from_initial.push(name.to_string());
            }
            None => skipped.push(Skipped {
                source: format!("sysctl {name}"),
                reason: "not present here nor in the initial network namespace (module not loaded, or the initial namespace not readable)".into(),
            }),
        }
    }
    (out, from_initial)
}

/// One numeric sysctl: this namespace's, or the host's for a global one a child namespace's
/// /proc/sys does not list (see [`sysctls`]).
pub fn sysctl_number(name: &str) -> Option<u64> {
    let path = sysctl_path(name);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            read_in_initial_netns(vec![path]).pop().flatten()?
        }
        Err(_) => return None,
    };
    text.trim().parse().ok()
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `paths` from inside the initial network namespace: /proc/sys lists the reading
/// thread's namespace, so one short-lived thread joins PID 1's (or, where PID 1 is not
/// readable, as a sandbox's init may not be, kthreadd's: kernel threads live in the initial
/// namespace), and netprobe's own threads stay where they are. `None` for a path that could
/// not be read there (not root, or absent there too). Nothing is spawned when there is
/// nothing to read.
fn read_in_initial_netns(paths: Vec<String>) -> Vec<Option<String>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let count = paths.len();
    let reader = std::thread::spawn(move || -> Vec<Option<String>> {
        let kthreadd = fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
        let ns = fs::File::open("/proc/1/ns/net").or_else(|e| {
            if kthreadd {
                fs::File::open("/proc/2/ns/net")
            } else {
                Err(e)
            }
        });
        let Ok(ns) = ns else {
            return vec![None; paths.len()];
        };
        // SAFETY: setns on a descriptor this thread owns; CLONE_NEWNET moves this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return vec![None; paths.len()];
        }
        paths.iter().map(|p| fs::read_to_string(p).ok()).collect()
    });
    reader.join().unwrap_or_else(|_| vec![None; count])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp6_lines() {
        let mut c = Counters::new();
        parse_snmp6(
            "Ip6InReceives 10\nUdp6RcvbufErrors 4\nUdp6InErrors 4\n",
            &mut c,
        );
        assert_eq!(c["Snmp6"]["Udp6RcvbufErrors"], 4);
    }

    #[test]
    fn nic_irq_lines_by_name_not_config() {
        let (_, rows) = procfs::parse_cpu_table(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/procfs/interrupts.4cpu"
            ))
            .unwrap(),
        );
        let eth0 = InterfaceInfo {
            name: "eth0".into(),
            ..Default::default()
        };
        // No sysfs directory for eth0 here: only the names in /proc/interrupts can match.
        let no_sysfs = std::env::temp_dir().join(format!("np-no-sysfs-{}", std::process::id()));
        let irqs = nic_irqs_under(&no_sysfs, &rows, &[eth0]);
        assert_eq!(
            irqs.iter().map(|i| i.irq.as_str()).collect::<Vec<_>>(),
            vec!["45", "46"]
        );
        assert_eq!(irqs[0].name, "eth0-TxRx-0");
    }
}
