//! Each rule on a report built by hand: it fires on its condition, and its neighbour (the
//! rule reading the closest counter) does not; one report's fixes agree on every knob.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::report::{
    ethtool::Rings,
    model::{
        ConntrackReport, Counter, CpuReport, Imbalance, InterfaceReport, NicLoss, NicReport,
        QdiscReport, Severity,
    },
    netlink::Qdisc,
    sockets::{Listener, Owner, OwnerCount, SocketReport, SocketRow},
    sysfs::InterfaceInfo,
};

fn rate(rate: f64) -> Counter {
    Counter { value: 0, rate }
}

/// Nothing wrong: one interface with its NIC (ring below its maximum), two CPUs, an empty
/// socket table, a conntrack table at 10%, the kernel's default sysctls.
fn quiet() -> Report {
    let eth0 = InterfaceInfo {
        name: "eth0".into(),
        carrier: Some(true),
        operstate: Some("up".into()),
        txqueuelen: Some(1000),
        rx_queues: 1,
        ..Default::default()
    };
    let sysctls = [
        ("net.core.netdev_max_backlog", "1000"),
        ("net.core.netdev_budget", "300"),
        ("net.core.netdev_budget_usecs", "2000"),
        ("net.core.somaxconn", "4096"),
        ("net.core.rmem_max", "212992"),
        ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
        ("net.ipv4.tcp_tw_reuse", "2"),
    ];
    Report {
        kind: "report",
        interval_s: 1.0,
        kernel: "test".into(),
        findings: Vec::new(),
        interfaces: vec![InterfaceReport {
            info: eth0,
            counters: BTreeMap::new(),
        }],
        nics: vec![NicReport {
            ifname: "eth0".into(),
            driver: "ixgbe".into(),
            version: String::new(),
            firmware: String::new(),
            bus: String::new(),
            rings: Some(Rings {
                rx: 512,
                rx_max: 4096,
                tx: 512,
                tx_max: 4096,
            }),
            loss: Vec::new(),
            stats: BTreeMap::new(),
        }],
        qdiscs: Vec::new(),
        cpus: (0..2)
            .map(|cpu| CpuReport {
                cpu,
                ..Default::default()
            })
            .collect(),
        imbalance: Imbalance::default(),
        irqs: Vec::new(),
        protocols: BTreeMap::new(),
        sockets: Some(SocketReport::default()),
        conntrack: Some(ConntrackReport {
            count: 100,
            max: 1000,
            usage_pct: 10.0,
            stats: BTreeMap::new(),
        }),
        sysctls: sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sysctls_from_initial_netns: Vec::new(),
        skipped: Vec::new(),
    }
}

fn set_protocol(report: &mut Report, group: &str, field: &str, per_s: f64) {
    report
        .protocols
        .entry(group.into())
        .or_default()
        .insert(field.into(), rate(per_s));
}

fn set_interface(report: &mut Report, counter: &str, per_s: f64) {
    report.interfaces[0]
        .counters
        .insert(counter.into(), rate(per_s));
}

fn nic_discards(report: &mut Report, per_s: f64) {
    report.nics[0].loss.push(NicLoss {
        name: "rx_missed_errors".into(),
        direction: "rx",
        queue: None,
        value: 0,
        rate: per_s,
    });
}

fn listener(queue: u32, max: u32) -> Listener {
    Listener {
        addr: "0.0.0.0".into(),
        port: 8080,
        accept_queue: queue,
        accept_queue_max: max,
        owners: vec![Owner {
            pid: 12,
            comm: "nginx".into(),
        }],
        ..Default::default()
    }
}

/// The ids that fired, sorted.
fn fired(report: &Report) -> Vec<&'static str> {
    let mut ids: Vec<&str> = evaluate(report).iter().map(|f| f.id).collect();
    ids.sort_unstable();
    ids
}

fn the(report: &Report, id: &str) -> Finding {
    evaluate(report)
        .into_iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id}"))
}

#[test]
fn a_quiet_report_has_no_findings() {
    assert_eq!(fired(&quiet()), Vec::<&str>::new());
}

#[test]
fn nic_discards_with_the_ring_at_its_maximum_are_not_an_undersized_ring() {
    let mut r = quiet();
    nic_discards(&mut r, 500.0);
    assert_eq!(fired(&r), vec!["nic_ring_undersized", "nic_rx_discards"]);
    assert_eq!(the(&r, "nic_rx_discards").fix, "ethtool -G eth0 rx 4096");
    r.nics[0].rings = Some(Rings {
        rx: 4096,
        rx_max: 4096,
        tx: 512,
        tx_max: 4096,
    });
    assert_eq!(fired(&r), vec!["nic_rx_discards"]);
    let f = the(&r, "nic_rx_discards");
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.fix.starts_with("ring already at its maximum"),
        "{}",
        f.fix
    );
}

#[test]
fn an_undersized_ring_fires_on_the_interface_counters_alone() {
    let mut r = quiet();
    // The driver's statistics show nothing (below nic_rx_discards' 100/s); sysfs misses 50/s.
    nic_discards(&mut r, 10.0);
    set_interface(&mut r, "statistics.rx_missed_errors", 50.0);
    assert_eq!(fired(&r), vec!["network_errors", "nic_ring_undersized"]);
    assert_eq!(
        the(&r, "nic_ring_undersized").evidence["rx_loss_per_s"],
        50.0
    );
    // The interface rule names the same ring, with the same value.
    assert_eq!(the(&r, "network_errors").fix, "ethtool -G eth0 rx 4096");
}

#[test]
fn transmit_drops_are_errors_and_receive_drops_only_evidence() {
    let mut r = quiet();
    set_interface(&mut r, "rx_drop", 500.0);
    assert_eq!(
        fired(&r),
        Vec::<&str>::new(),
        "rx_drop rises for benign reasons"
    );
    set_interface(&mut r, "tx_drop", 500.0);
    let f = the(&r, "network_errors");
    assert_eq!(
        (f.severity, f.evidence["rx_drop_per_s"].as_f64()),
        (Severity::Critical, Some(500.0))
    );
    assert_eq!(f.fix, "ip link set dev eth0 txqueuelen 2000");
    r.interfaces[0].info.carrier = Some(false);
    assert!(the(&r, "network_errors").fix.contains("no carrier"));
}

#[test]
fn qdisc_drops_fire_on_drops_not_on_overlimits() {
    let mut r = quiet();
    let tbf = Qdisc {
        ifindex: 2,
        ifname: "eth0".into(),
        kind: "tbf".into(),
        handle: "8001:".into(),
        parent: "root".into(),
        root: true,
        bytes: 0,
        packets: 0,
        drops: 0,
        overlimits: 0,
        requeues: 0,
        backlog: 0,
        qlen: 0,
    };
    r.qdiscs.push(QdiscReport {
        qdisc: tbf,
        drops_rate: 0.0,
        overlimits_rate: 5000.0,
        requeues_rate: 0.0,
    });
    assert_eq!(fired(&r), Vec::<&str>::new(), "shaping that drops nothing");
    r.qdiscs[0].drops_rate = 500.0;
    let f = the(&r, "qdisc_drops");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.fix.contains("tc qdisc change dev eth0 root tbf"),
        "{}",
        f.fix
    );
}

#[test]
fn backlog_drops_and_budget_squeezes_are_told_apart() {
    let mut r = quiet();
    r.cpus[1].dropped_rate = 15.0;
    assert_eq!(fired(&r), vec!["softnet_dropped"]);
    let f = the(&r, "softnet_dropped");
    assert_eq!(
        (f.severity, f.evidence["cpu"].as_u64()),
        (Severity::Critical, Some(1))
    );
    assert_eq!(f.fix, "sysctl -w net.core.netdev_max_backlog=2000");

    let mut r = quiet();
    r.cpus[0].time_squeeze_rate = 50.0;
    assert_eq!(fired(&r), vec!["softnet_time_squeeze"]);
    assert_eq!(
        the(&r, "softnet_time_squeeze").fix,
        "sysctl -w net.core.netdev_budget=600 net.core.netdev_budget_usecs=4000 (and spread RX over more CPUs)"
    );
}

#[test]
fn imbalance_needs_real_work_on_the_busiest_cpu() {
    let mut r = quiet();
    r.imbalance = Imbalance {
        net_rx_busiest_cpu: Some(3),
        net_rx_busiest_rate: IMBALANCE_MIN_RATE - 1.0,
        net_rx_mean_rate: 100.0,
        net_rx_ratio: 9.0,
        ..Default::default()
    };
    assert_eq!(fired(&r), Vec::<&str>::new());
    r.imbalance.net_rx_busiest_rate = 2000.0;
    let f = the(&r, "irq_imbalance");
    assert_eq!(
        (f.severity, f.evidence["rps"].as_str()),
        (Severity::Warning, Some("off"))
    );
    assert!(f.fix.starts_with("RPS is off on eth0"), "{}", f.fix);
    // Two CPUs in the report: the mask names both.
    assert!(f.fix.contains("echo 3 > $q"), "{}", f.fix);
}

#[test]
fn retransmits_and_listen_overflows_are_told_apart() {
    let mut r = quiet();
    set_protocol(&mut r, "Tcp", "RetransSegs", 20.0);
    assert_eq!(fired(&r), vec!["tcp_retransmits"]);
    let mut r = quiet();
    set_protocol(&mut r, "TcpExt", "ListenOverflows", 5.0);
    assert_eq!(fired(&r), vec!["listen_overflows"]);
    assert_eq!(
        the(&r, "listen_overflows").fix,
        "make the application accept faster; raise its listen() backlog and sysctl -w net.core.somaxconn=8192"
    );
}

/// Retransmits the peers reported as received twice are reordering, not loss: mostly
/// D-SACKed, only `tcp_reordering` fires; a few D-SACKed among real loss, both, with the loss
/// judged on what was not reported back.
#[test]
fn spurious_retransmits_are_reordering_not_loss() {
    let mut r = quiet();
    set_protocol(&mut r, "Tcp", "RetransSegs", 430.0);
    set_protocol(&mut r, "TcpExt", "TCPDSACKRecvSegs", 360.0);
    assert_eq!(fired(&r), vec!["tcp_reordering"]);
    let f = the(&r, "tcp_reordering");
    assert!(f.summary.contains("84% of 430"), "{}", f.summary);
    assert!(f.fix.starts_with("nothing is lost"), "{}", f.fix);
    let mut r = quiet();
    set_protocol(&mut r, "Tcp", "RetransSegs", 100.0);
    set_protocol(&mut r, "TcpExt", "TCPDSACKRecvSegs", 20.0);
    let mut both = fired(&r);
    both.sort();
    assert_eq!(both, vec!["tcp_reordering", "tcp_retransmits"]);
    assert_eq!(the(&r, "tcp_retransmits").severity, Severity::Critical);
    assert!(
        the(&r, "tcp_retransmits")
            .summary
            .starts_with("TCP retransmits 80 segments/s"),
        "{}",
        the(&r, "tcp_retransmits").summary
    );
}

#[test]
fn tcp_pruning_and_udp_buffer_errors_are_told_apart() {
    let mut r = quiet();
    set_protocol(&mut r, "TcpExt", "RcvPruned", 2.0);
    assert_eq!(fired(&r), vec!["tcp_rcvbuf_pruned"]);
    assert_eq!(
        the(&r, "tcp_rcvbuf_pruned").fix,
        "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 12582912\""
    );
    let mut r = quiet();
    set_protocol(&mut r, "Snmp6", "Udp6RcvbufErrors", 2.0);
    assert_eq!(fired(&r), vec!["udp_rcvbuf_errors"]);
    assert!(the(&r, "udp_rcvbuf_errors")
        .fix
        .starts_with("sysctl -w net.core.rmem_max=851968 "));
}

#[test]
fn time_wait_and_close_wait_are_told_apart() {
    let mut r = quiet();
    r.sockets.as_mut().unwrap().time_wait = 6000;
    assert_eq!(fired(&r), vec!["tcp_timewait"]);
    assert!(the(&r, "tcp_timewait")
        .fix
        .starts_with("sysctl -w net.ipv4.tcp_tw_reuse=1"));
    let mut r = quiet();
    let sockets = r.sockets.as_mut().unwrap();
    sockets.close_wait = 2;
    sockets.close_wait_owners = vec![OwnerCount {
        pid: 4242,
        comm: "leaky".into(),
        count: 2,
        local_ports: vec![8080],
    }];
    assert_eq!(fired(&r), vec!["tcp_closewait"]);
    assert!(the(&r, "tcp_closewait")
        .fix
        .starts_with("fix leaky (pid 4242)"));
}

#[test]
fn a_filling_accept_queue_is_not_yet_a_listen_overflow() {
    let mut r = quiet();
    r.sockets.as_mut().unwrap().listeners = vec![listener(9, 10)];
    assert_eq!(fired(&r), vec!["accept_queue_full"]);
    let f = the(&r, "accept_queue_full");
    assert_eq!(f.severity, Severity::Warning);
    // Its listen() backlog (10) is the limit, not somaxconn (4096): no sysctl to raise.
    assert_eq!(
        f.fix,
        "nginx (pid 12) on 0.0.0.0:8080 must accept() faster, or pass a larger backlog to listen() (e.g. 128): its listen() backlog 10 is the limit, not net.core.somaxconn (4096)"
    );
    assert!(!f.fix.contains("sysctl"), "{}", f.fix);
}

/// The listener: its queue drained between the samples, but its own drop counter
/// grew; it is named with its limit, and both findings give the one fix for it.
#[test]
fn a_listener_that_dropped_in_the_window_is_named_with_its_backlog() {
    let mut r = quiet();
    set_protocol(&mut r, "TcpExt", "ListenOverflows", 5.0);
    let mut dropping = listener(0, 4);
    (dropping.drops, dropping.limited_by) = (Some(35), Some("listen_backlog"));
    r.sockets.as_mut().unwrap().listeners = vec![listener(0, 128), dropping];
    assert_eq!(fired(&r), vec!["listen_overflows"]);
    let f = the(&r, "listen_overflows");
    let full = f.evidence["full_listeners"].as_array().unwrap();
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(
        (&full[0]["max"], &full[0]["drops"], &full[0]["limited_by"]),
        (&json!(4), &json!(35), &json!("listen_backlog"))
    );
    assert!(
        f.fix
            .starts_with("nginx (pid 12) on 0.0.0.0:8080 must accept() faster")
            && f.fix.contains("its listen() backlog 4 is the limit"),
        "{}",
        f.fix
    );
    assert!(!f.fix.contains("somaxconn="), "{}", f.fix);
}

fn udp_row(rcvbuf: u32, drops: u64, limited_by: &'static str, limit: u64) -> SocketRow {
    SocketRow {
        protocol: "udp",
        addr: "198.18.0.2".into(),
        port: 7002,
        rcvbuf: Some(rcvbuf),
        drops: Some(drops),
        limited_by: Some(limited_by),
        limit: Some(limit),
        owners: vec![Owner {
            pid: 42,
            comm: "np-holder".into(),
        }],
        ..Default::default()
    }
}

/// The UDP socket: SO_RCVBUF 1024 (rb2304) under a 4 MiB rmem_max. The fix names the
/// application's SO_RCVBUF; "raise rmem_max" would change nothing.
#[test]
fn a_tiny_so_rcvbuf_gets_the_applications_fix_not_rmem_max() {
    let mut r = quiet();
    r.sysctls
        .insert("net.core.rmem_max".into(), "4194304".into());
    r.sysctls
        .insert("net.core.rmem_default".into(), "212992".into());
    set_protocol(&mut r, "Udp", "RcvbufErrors", 300.0);
    r.sockets.as_mut().unwrap().overflowing_sockets = vec![udp_row(2304, 300, "so_rcvbuf", 1152)];
    let f = the(&r, "udp_rcvbuf_errors");
    let row = &f.evidence["fullest_sockets"][0];
    assert_eq!(
        (&row["rcvbuf"], &row["drops"], &row["owners"][0]["pid"]),
        (&json!(2304), &json!(300), &json!(42))
    );
    assert_eq!(
        f.fix,
        "udp 198.18.0.2:7002 of np-holder (pid 42) sets SO_RCVBUF 1152 (rcvbuf 2304, 300 drops in the window): have it set SO_RCVBUF 212992 (net.core.rmem_max 4194304 allows it; it is not the limit), or read faster"
    );
    assert!(!f.fix.contains("sysctl"), "{}", f.fix);
    assert!(f.summary.contains("np-holder (pid 42)"), "{}", f.summary);
}

/// A TCP socket's drop counter counts every segment TCP discards: however many, it is not the
/// socket the UDP receive-buffer fix is about.
#[test]
fn the_receive_buffer_fix_is_about_the_udp_socket() {
    let mut r = quiet();
    set_protocol(&mut r, "Udp", "RcvbufErrors", 300.0);
    let tcp = SocketRow {
        protocol: "tcp",
        port: 443,
        ..udp_row(131_072, 5000, "reader", 6_291_456)
    };
    r.sockets.as_mut().unwrap().overflowing_sockets =
        vec![tcp, udp_row(2304, 300, "so_rcvbuf", 1152)];
    let f = the(&r, "udp_rcvbuf_errors");
    assert!(f.fix.starts_with("udp 198.18.0.2:7002 "), "{}", f.fix);
    assert_eq!(f.evidence["fullest_sockets"].as_array().unwrap().len(), 1);
}

/// Only a buffer already at the cap gets "raise rmem_max".
#[test]
fn a_buffer_at_rmem_max_gets_rmem_max() {
    let mut r = quiet();
    set_protocol(&mut r, "Udp", "RcvbufErrors", 300.0);
    r.sockets.as_mut().unwrap().overflowing_sockets =
        vec![udp_row(2 * 212_992, 300, "rmem_max", 212_992)];
    assert_eq!(
        the(&r, "udp_rcvbuf_errors").fix,
        "sysctl -w net.core.rmem_max=851968 and have udp 198.18.0.2:7002 of np-holder (pid 42) set SO_RCVBUF (or read faster)"
    );
}

#[test]
fn a_filling_conntrack_table_and_refused_entries_are_told_apart() {
    let mut r = quiet();
    r.conntrack.as_mut().unwrap().usage_pct = 80.0;
    assert_eq!(fired(&r), vec!["conntrack_usage"]);
    let mut r = quiet();
    r.conntrack
        .as_mut()
        .unwrap()
        .stats
        .insert("insert_failed".into(), rate(5.0));
    assert_eq!(fired(&r), vec!["conntrack_drops"]);
    assert_eq!(
        the(&r, "conntrack_drops").fix,
        "sysctl -w net.netfilter.nf_conntrack_max=2000"
    );
}

/// `name=value` and `txqueuelen N` / `rx N` settings as a fix's text writes them.
fn settings_in(fix: &str) -> Vec<(String, String)> {
    let words: Vec<&str> = fix
        .split(|c: char| c.is_whitespace() || c == ';' || c == '"')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if let Some((name, value)) = word.split_once('=') {
            if name.contains('.') {
                out.push((name.to_string(), value.to_string()));
            }
        }
        if matches!(*word, "txqueuelen" | "rx") {
            if let (Some(dev), Some(value)) = (words.get(i.wrapping_sub(1)), words.get(i + 1)) {
                out.push((format!("{dev} {word}"), value.to_string()));
            }
        }
    }
    out
}

/// Every rule at once, and the knobs two of them share (somaxconn, nf_conntrack_max,
/// txqueuelen, the ring): one value each.
#[test]
fn one_report_proposes_one_value_per_knob() {
    let mut r = quiet();
    nic_discards(&mut r, 500.0);
    set_interface(&mut r, "tx_drop", 500.0);
    r.qdiscs.push(QdiscReport {
        qdisc: Qdisc {
            ifindex: 2,
            ifname: "eth0".into(),
            kind: "pfifo_fast".into(),
            handle: "0:".into(),
            parent: "root".into(),
            root: true,
            bytes: 0,
            packets: 0,
            drops: 0,
            overlimits: 0,
            requeues: 0,
            backlog: 0,
            qlen: 0,
        },
        drops_rate: 50.0,
        overlimits_rate: 0.0,
        requeues_rate: 0.0,
    });
    r.cpus[1].dropped_rate = 15.0;
    r.cpus[0].time_squeeze_rate = 50.0;
    set_protocol(&mut r, "TcpExt", "ListenOverflows", 5.0);
    // At somaxconn: both listener findings then turn that one knob.
    r.sockets.as_mut().unwrap().listeners = vec![listener(4096, 4096)];
    let ct = r.conntrack.as_mut().unwrap();
    ct.usage_pct = 95.0;
    ct.stats.insert("drop".into(), rate(5.0));

    let findings = evaluate(&r);
    assert!(findings.len() >= 9, "{:?}", fired(&r));
    let mut seen: BTreeMap<String, (&str, String)> = BTreeMap::new();
    let mut shared = 0;
    for f in &findings {
        for (knob, value) in settings_in(&f.fix) {
            match seen.get(&knob) {
                Some((first, v)) => {
                    assert_eq!(v, &value, "{knob}: {first} and {} disagree", f.id);
                    shared += 1;
                }
                None => {
                    seen.insert(knob, (f.id, value));
                }
            }
        }
    }
    assert!(shared >= 4, "{seen:?}");
}
