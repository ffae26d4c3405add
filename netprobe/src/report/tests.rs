//! Rules on hand-built snapshots one second apart.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::fixes::{LiveValues, RxRing};

use super::{
    ethtool::{NicInfo, NicStat, Rings},
    model::{self, Report, Severity},
    procfs::{DirCounters, NetDev, Softnet},
    rules,
    sample::{ConntrackSample, Snapshot},
    sockets::{Listener, Owner, OwnerCount, SocketReport},
    sysfs::InterfaceInfo,
};

fn snapshot(at: Instant) -> Snapshot {
    let mut counters = BTreeMap::new();
    counters.insert(
        "Tcp".to_string(),
        // Big values since boot: must not trigger anything by themselves.
        [
            ("RetransSegs".to_string(), 9_000_000i64),
            ("OutSegs".to_string(), 90_000_000),
        ]
        .into(),
    );
    Snapshot {
        at,
        net_dev: vec![NetDev {
            name: "eth0".into(),
            rx: DirCounters {
                packets: 1_000_000,
                drop: 5_000,
                ..Default::default()
            },
            tx: DirCounters {
                packets: 1_000_000,
                ..Default::default()
            },
        }],
        interfaces: vec![InterfaceInfo {
            name: "eth0".into(),
            ifindex: Some(2),
            txqueuelen: Some(1000),
            rx_queues: 1,
            ..Default::default()
        }],
        nics: [(
            "eth0".to_string(),
            NicInfo {
                driver: "ixgbe".into(),
                rings: Some(Rings {
                    rx: 512,
                    rx_max: 4096,
                    tx: 512,
                    tx_max: 4096,
                }),
                stats: vec![
                    NicStat {
                        name: "rx_missed_errors".into(),
                        value: 70_000,
                    },
                    NicStat {
                        name: "rx_packets".into(),
                        value: 1,
                    },
                ],
                ..Default::default()
            },
        )]
        .into(),
        qdiscs: Vec::new(),
        counters,
        softnet: vec![
            Softnet {
                cpu: 0,
                processed: 100,
                ..Default::default()
            },
            Softnet {
                cpu: 1,
                processed: 100,
                dropped: 7,
                ..Default::default()
            },
        ],
        softirq_cpus: vec![0, 1],
        net_rx: vec![10, 10],
        net_tx: vec![0, 0],
        irq_cpus: vec![0, 1],
        irqs: Vec::new(),
        conntrack: Some(ConntrackSample {
            count: 100,
            max: 1000,
            stats: BTreeMap::new(),
        }),
        sockets: None,
    }
}

fn judged(a: &Snapshot, b: &Snapshot, sockets: Option<SocketReport>) -> Report {
    let mut report = model::build(a, b, "test".into());
    report.sysctls = [
        (
            "net.core.netdev_max_backlog".to_string(),
            "1000".to_string(),
        ),
        (
            "net.netfilter.nf_conntrack_max".to_string(),
            "1000".to_string(),
        ),
        ("net.core.netdev_budget".to_string(), "300".to_string()),
        (
            "net.core.netdev_budget_usecs".to_string(),
            "2000".to_string(),
        ),
    ]
    .into();
    report.sockets = sockets;
    report.findings = rules::evaluate(&report);
    report
}

fn ids(report: &Report) -> Vec<(&str, &str)> {
    report
        .findings
        .iter()
        .map(|f| (f.id, f.severity.name()))
        .collect()
}

#[test]
fn a_quiet_window_has_no_findings_whatever_the_totals_since_boot() {
    let t = Instant::now();
    let a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(1));
    b.net_dev[0].rx.packets += 1000;
    let report = judged(&a, &b, Some(SocketReport::default()));
    assert_eq!(ids(&report), vec![]);
    assert_eq!(report.counter("Tcp", "RetransSegs").value, 9_000_000);
    assert_eq!(report.counter("Tcp", "RetransSegs").rate, 0.0);
}

#[test]
fn rates_over_the_window_trigger_with_exact_fixes() {
    let t = Instant::now();
    let a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(2));
    // 120 retransmits in 2 s = 60/s: critical.
    b.counters
        .get_mut("Tcp")
        .unwrap()
        .insert("RetransSegs".into(), 9_000_120);
    b.counters
        .get_mut("Tcp")
        .unwrap()
        .insert("OutSegs".into(), 90_010_000);
    // CPU 1's backlog drops 30 in 2 s = 15/s: critical.
    b.softnet[1].dropped += 30;
    // The NIC misses 1000 packets in 2 s = 500/s: warning, and its ring is below max.
    b.nics.get_mut("eth0").unwrap().stats[0].value += 1000;
    b.interfaces[0]
        .statistics
        .insert("rx_missed_errors".into(), 1000);
    // Conntrack at 95%.
    b.conntrack.as_mut().unwrap().count = 950;

    let report = judged(&a, &b, None);
    let found = ids(&report);
    assert!(
        found.contains(&("tcp_retransmits", "critical")),
        "{found:?}"
    );
    assert!(
        found.contains(&("softnet_dropped", "critical")),
        "{found:?}"
    );
    assert!(found.contains(&("nic_rx_discards", "warning")), "{found:?}");
    assert!(
        found.contains(&("nic_ring_undersized", "warning")),
        "{found:?}"
    );
    assert!(
        found.contains(&("conntrack_usage", "critical")),
        "{found:?}"
    );

    let by_id = |id: &str| report.findings.iter().find(|f| f.id == id).unwrap();
    assert_eq!(by_id("nic_ring_undersized").fix, "ethtool -G eth0 rx 4096");
    assert_eq!(by_id("nic_rx_discards").fix, "ethtool -G eth0 rx 4096");
    assert_eq!(
        by_id("softnet_dropped").fix,
        "sysctl -w net.core.netdev_max_backlog=2000"
    );
    assert_eq!(by_id("softnet_dropped").evidence["cpu"], 1);
    assert_eq!(
        by_id("conntrack_usage").fix,
        "sysctl -w net.netfilter.nf_conntrack_max=2000"
    );
    assert_eq!(
        by_id("tcp_retransmits").evidence["retrans_segs_per_s"],
        60.0
    );
    // Critical findings first, then by layer.
    assert_eq!(report.findings[0].severity, Severity::Critical);
}

#[test]
fn close_wait_names_the_owner_and_imbalance_needs_real_work() {
    let t = Instant::now();
    let a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(1));
    // 5000 NET_RX/s all on CPU 0: 2× the mean of two CPUs — the most two CPUs can show.
    b.net_rx = vec![5010, 10];
    let sockets = SocketReport {
        close_wait: 3,
        close_wait_owners: vec![OwnerCount {
            pid: 4242,
            comm: "leaky".into(),
            count: 3,
            local_ports: vec![8080],
        }],
        ..Default::default()
    };
    let report = judged(&a, &b, Some(sockets));
    let cw = report
        .findings
        .iter()
        .find(|f| f.id == "tcp_closewait")
        .expect("close-wait finding");
    assert_eq!(cw.severity, Severity::Warning);
    assert!(cw.summary.contains("leaky (pid 4242)"), "{}", cw.summary);
    assert!(cw.fix.contains("leaky (pid 4242)"), "{}", cw.fix);
    // Ratio 2 < 5: no imbalance finding, even though the busy CPU is above the floor.
    assert!(!ids(&report).iter().any(|(id, _)| *id == "irq_imbalance"));
    let _ = Owner {
        pid: 1,
        comm: String::new(),
    };
}

#[test]
fn imbalance_on_many_cpus_points_at_rps() {
    let t = Instant::now();
    let mut a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(1));
    a.softirq_cpus = (0..16).collect();
    b.softirq_cpus = (0..16).collect();
    a.net_rx = vec![0; 16];
    b.net_rx = vec![10; 16];
    b.net_rx[3] = 20_000;
    b.net_dev[0].rx.packets += 20_000;
    let report = judged(&a, &b, None);
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "irq_imbalance")
        .expect("imbalance");
    assert_eq!(f.severity, Severity::Warning, "{:?}", f.evidence);
    assert_eq!(f.evidence["busiest_cpu"], 3);
    assert_eq!(f.evidence["rps"], "off");
    assert!(
        f.fix.contains("/sys/class/net/eth0/queues/rx-*/rps_cpus"),
        "{}",
        f.fix
    );
    assert!(f.fix.contains("echo ffff "), "{}", f.fix);
}

#[test]
fn text_puts_findings_first_and_colours_only_when_asked() {
    use super::render::{text, Style};
    let t = Instant::now();
    let a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(1));
    b.softnet[1].dropped += 50;
    let report = judged(&a, &b, None);
    let plain = text(&report, &Style { color: false });
    assert!(!plain.contains('\x1b'), "no escape codes without colour");
    let findings_at = plain.find("Findings").unwrap();
    assert!(findings_at < plain.find("\nNIC").unwrap());
    assert!(
        plain.contains("CRITICAL [backlog] softnet_dropped: CPU 1"),
        "{plain}"
    );
    assert!(
        plain.contains("fix: sysctl -w net.core.netdev_max_backlog=2000"),
        "{plain}"
    );
    // Layers in order, from the wire up.
    let order = [
        "\nNIC",
        "\nDriver / rings",
        "\nSoftirq / CPU",
        "\nIP",
        "\nTCP / UDP",
        "\nSockets",
        "\nConntrack",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|h| plain.find(h).unwrap_or_else(|| panic!("{h}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let coloured = text(&report, &Style { color: true });
    assert!(coloured.contains("\x1b[1;31mCRITICAL\x1b[0m"));
}

#[test]
fn live_values_are_what_the_report_read() {
    let t = Instant::now();
    let a = snapshot(t);
    let mut b = snapshot(t + Duration::from_secs(1));
    b.interfaces[0].rps_cpus = [("rx-0", "3"), ("rx-1", "4")]
        .map(|(q, m)| (q.to_string(), m.to_string()))
        .into();
    // The table's own limit wins over the sysctl (both are read; they differ only here).
    b.conntrack.as_mut().unwrap().max = 2048;
    let listener = |max| Listener {
        addr: "0.0.0.0".into(),
        port: 80,
        accept_queue: 0,
        accept_queue_max: max,
        ..Default::default()
    };
    let sockets = SocketReport {
        listeners: vec![listener(128), listener(511)],
        ..Default::default()
    };
    let mut report = judged(&a, &b, Some(sockets));
    report
        .sysctls
        .insert("net.ipv4.tcp_rmem".into(), "4096 131072 6291456".into());
    let live = LiveValues::from(&report);
    assert_eq!(
        (live.netdev_max_backlog, live.netdev_budget, live.somaxconn),
        (Some(1000), Some(300), None)
    );
    assert_eq!(live.tcp_rmem, Some([4096, 131_072, 6_291_456]));
    assert_eq!(live.nf_conntrack_max, Some(2048));
    assert_eq!(live.largest_accept_queue_limit, Some(511));
    assert_eq!(live.cpus.to_vec(), vec![0, 1]);
    let eth0 = live.device("eth0").unwrap();
    assert_eq!(
        eth0.rx_ring,
        Some(RxRing {
            current: 512,
            max: 4096
        })
    );
    assert_eq!(
        (eth0.txqueuelen, eth0.rps.to_vec()),
        (Some(1000), vec![0, 1, 2])
    );
}
