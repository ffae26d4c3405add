//! Parsers for the /proc files the report reads. Pure functions over text, so they are tested
//! on captured fixtures of several kernel versions and shapes.

use std::collections::BTreeMap;

/// `group → field → value`, e.g. `Tcp → RetransSegs → 42` (snmp and netstat share the shape).
pub type Counters = BTreeMap<String, BTreeMap<String, i64>>;

/// /proc/net/snmp and /proc/net/netstat: pairs of lines `Group: names…` / `Group: values…`.
/// Every field is kept by name, including ones this version of netprobe does not know.
/// `IcmpMsg` has no fixed fields and may be missing; lines that do not pair up are skipped.
pub fn parse_snmp(text: &str, into: &mut Counters) {
    let mut lines = text.lines().peekable();
    while let Some(names) = lines.next() {
        let Some((group, names)) = names.split_once(':') else {
            continue;
        };
        let Some(values) = lines.peek() else { break };
        let Some((vgroup, values)) = values.split_once(':') else {
            continue;
        };
        if vgroup != group {
            continue;
        }
        lines.next();
        let fields = into.entry(group.trim().to_string()).or_default();
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<i64>() {
                fields.insert(name.to_string(), v);
            }
        }
    }
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub rx: DirCounters,
    pub tx: DirCounters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirCounters {
    pub bytes: u64,
    pub packets: u64,
    pub errs: u64,
    pub drop: u64,
    pub fifo: u64,
    /// rx: frame errors; tx: collisions.
    pub frame_or_colls: u64,
    /// rx: compressed; tx: carrier errors.
    pub other: u64,
}

/// /proc/net/dev. rx columns: bytes packets errs drop fifo frame compressed multicast;
/// tx: bytes packets errs drop fifo colls carrier compressed.
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.trim().to_string(),
                rx: DirCounters {
                    bytes: v[0],
                    packets: v[1],
                    errs: v[2],
                    drop: v[3],
                    fifo: v[4],
                    frame_or_colls: v[5],
                    other: v[6],
                },
                tx: DirCounters {
                    bytes: v[8],
                    packets: v[9],
                    errs: v[10],
                    drop: v[11],
                    fifo: v[12],
                    frame_or_colls: v[13],
                    other: v[14],
                },
            })
        })
        .collect()
}

/// One CPU's line of /proc/net/softnet_stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Softnet {
    pub cpu: usize,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    pub received_rps: u64,
    pub flow_limit_count: u64,
    /// Current backlog length (Linux ≥ 5.10; `None` before).
    pub backlog_len: Option<u64>,
}

/// /proc/net/softnet_stat: hex columns, one line per *online* CPU. Column 0 processed, 1
/// dropped, 2 time_squeeze, 9 received_rps (≥ 2.6.36), 10 flow_limit_count (≥ 3.11),
/// 11 backlog length and 12 the CPU id (≥ 5.10). Without the CPU id column, lines are
/// numbered in order (exact unless CPUs are offline).
pub fn parse_softnet(text: &str) -> Vec<Softnet> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let cols: Vec<u64> = line
                .split_whitespace()
                .map(|c| u64::from_str_radix(c, 16))
                .collect::<Result<_, _>>()
                .ok()?;
            if cols.len() < 3 {
                return None;
            }
            let col = |i: usize| cols.get(i).copied().unwrap_or(0);
            Some(Softnet {
                cpu: if cols.len() >= 13 {
                    col(12) as usize
                } else {
                    index
                },
                processed: col(0),
                dropped: col(1),
                time_squeeze: col(2),
                received_rps: col(9),
                flow_limit_count: col(10),
                backlog_len: (cols.len() >= 12).then(|| col(11)),
            })
        })
        .collect()
}

/// Per-CPU counts of one row of /proc/softirqs or /proc/interrupts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuRow {
    /// Row label: softirq name (`NET_RX`) or IRQ number (`24`).
    pub label: String,
    /// The rest of an /proc/interrupts line: controller, trigger and device name(s).
    pub description: String,
    pub per_cpu: Vec<u64>,
}

/// /proc/softirqs and /proc/interrupts: a header line of `CPUn` names, then `label: counts…
/// [description]`. Rows with fewer counts than CPUs (ERR, MIS) keep what they have.
pub fn parse_cpu_table(text: &str) -> (Vec<usize>, Vec<CpuRow>) {
    let mut lines = text.lines();
    let cpus: Vec<usize> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let rows = lines
        .filter_map(|line| {
            let (label, rest) = line.split_once(':')?;
            let mut per_cpu = Vec::with_capacity(cpus.len());
            let mut words = rest.split_whitespace().peekable();
            while per_cpu.len() < cpus.len() {
                match words.peek().and_then(|w| w.parse::<u64>().ok()) {
                    Some(v) => {
                        per_cpu.push(v);
                        words.next();
                    }
                    None => break,
                }
            }
            Some(CpuRow {
                label: label.trim().to_string(),
                description: words.collect::<Vec<_>>().join(" "),
                per_cpu,
            })
        })
        .collect();
    (cpus, rows)
}

/// /proc/net/stat/nf_conntrack: a header of column names, then one hex line per CPU. Summed
/// over CPUs, by name (the column set changed across kernels).
pub fn parse_conntrack_stat(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let mut sums = BTreeMap::new();
    for line in lines {
        for (name, value) in names.iter().zip(line.split_whitespace()) {
            if let Ok(v) = u64::from_str_radix(value, 16) {
                *sums.entry(name.to_string()).or_insert(0) += v;
            }
        }
    }
    // `entries` is the same global count repeated on every line, not a per-CPU counter.
    if let Some(first) = text.lines().nth(1) {
        if let Some(pos) = names.iter().position(|n| *n == "entries") {
            if let Some(v) = first
                .split_whitespace()
                .nth(pos)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
            {
                sums.insert("entries".into(), v);
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/procfs");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn snmp_and_netstat_keep_every_field_including_unknown_ones() {
        let mut c = Counters::new();
        parse_snmp(&fixture("snmp.6.18"), &mut c);
        parse_snmp(&fixture("netstat.6.18"), &mut c);
        assert_eq!(c["Tcp"]["RetransSegs"], 3);
        assert_eq!(c["Tcp"]["MaxConn"], -1, "signed values survive");
        assert_eq!(c["Udp"]["RcvbufErrors"], 0);
        assert!(c["TcpExt"].contains_key("TCPLossProbes"));
        assert!(c.contains_key("IpExt") && c.contains_key("MPTcpExt"));
        // A field this netprobe has never heard of is kept by name.
        let mut future = Counters::new();
        parse_snmp(
            "TcpExt: SyncookiesSent TCPBrandNewCounter\nTcpExt: 1 77\n",
            &mut future,
        );
        assert_eq!(future["TcpExt"]["TCPBrandNewCounter"], 77);
    }

    #[test]
    fn old_kernel_snmp_without_mptcp() {
        let mut c = Counters::new();
        parse_snmp(&fixture("netstat.4.19"), &mut c);
        assert!(!c.contains_key("MPTcpExt"));
        assert_eq!(c["TcpExt"]["ListenOverflows"], 17);
        assert_eq!(c["TcpExt"]["ListenDrops"], 17);
    }

    #[test]
    fn net_dev_columns() {
        let devs = parse_net_dev(&fixture("net_dev.many"));
        assert_eq!(devs.len(), 6);
        let eth = devs.iter().find(|d| d.name == "eth0").unwrap();
        assert_eq!(
            (eth.rx.bytes, eth.rx.packets, eth.rx.errs, eth.rx.drop),
            (1213371651, 1020390, 2, 17)
        );
        assert_eq!((eth.rx.fifo, eth.rx.frame_or_colls), (3, 4));
        assert_eq!(
            (eth.tx.bytes, eth.tx.packets, eth.tx.errs, eth.tx.drop),
            (42793232, 447036, 5, 6)
        );
        assert!(devs.iter().any(|d| d.name == "bond0.100"));
    }

    #[test]
    fn softnet_old_and_new_column_counts() {
        // 4.19: 11 columns, no CPU id → line order.
        let old = parse_softnet(&fixture("softnet_stat.4.19"));
        assert_eq!(old.len(), 4);
        assert_eq!(old[2].cpu, 2);
        assert_eq!(old[1].dropped, 0x2a);
        assert_eq!(old[1].time_squeeze, 0x10);
        assert_eq!(old[3].flow_limit_count, 0);
        assert_eq!(old[0].backlog_len, None);
        // 6.x: 13 columns with the CPU id (here CPUs 2 and 3 offline: ids jump).
        let new = parse_softnet(&fixture("softnet_stat.6.18.offline"));
        assert_eq!(
            new.iter().map(|s| s.cpu).collect::<Vec<_>>(),
            vec![0, 1, 4, 5]
        );
        assert_eq!(new[2].dropped, 0x1f4);
        assert_eq!(new[2].received_rps, 0x3e8);
        assert_eq!(new[0].backlog_len, Some(0));
        // 2.6-era 10 columns still parse the first three.
        let ancient = parse_softnet("0000a000 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n");
        assert_eq!(
            (
                ancient[0].processed,
                ancient[0].dropped,
                ancient[0].time_squeeze
            ),
            (0xa000, 1, 2)
        );
    }

    #[test]
    fn many_cpu_softirqs_and_interrupts() {
        let (cpus, rows) = parse_cpu_table(&fixture("softirqs.64cpu"));
        assert_eq!(cpus.len(), 64);
        let net_rx = rows.iter().find(|r| r.label == "NET_RX").unwrap();
        assert_eq!(net_rx.per_cpu.len(), 64);
        assert_eq!(net_rx.per_cpu[0], 900000);
        assert_eq!(net_rx.per_cpu[63], 63);

        let (cpus, rows) = parse_cpu_table(&fixture("interrupts.4cpu"));
        assert_eq!(cpus, vec![0, 1, 2, 3]);
        let q0 = rows.iter().find(|r| r.label == "45").unwrap();
        assert_eq!(q0.per_cpu, vec![123456, 0, 0, 7]);
        assert!(q0.description.contains("eth0-TxRx-0"), "{}", q0.description);
        let err = rows.iter().find(|r| r.label == "ERR").unwrap();
        assert_eq!(err.per_cpu, vec![0]);
    }

    #[test]
    fn conntrack_stat_sums_cpus_by_name() {
        let s = parse_conntrack_stat(&fixture("nf_conntrack_stat"));
        assert_eq!(s["entries"], 0x21);
        assert_eq!(s["drop"], 3);
        assert_eq!(s["insert_failed"], 0x10 + 1);
        assert_eq!(s["early_drop"], 2);
    }
}
