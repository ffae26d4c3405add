//! The rules over both sides: which finding, which direction, layer and CPUs.

use super::*;

/// Only timer-driven retransmits, and the peer's segments for the flow dropped on the way
/// in: the ACKs are lost, not the data.
#[test]
fn timer_retransmits_with_acks_dropped_on_the_way_in_are_ack_loss() {
    let totals = KernelTotals {
        flows: vec![(
            FlowKey {
                flow: flow(1, 40000, 2, 5001),
                netns: OWN,
                _pad0: 0,
            },
            RetransmitTotals {
                sent: 3,
                segs: 3,
                kinds: [0, 2, 0, 1, 0, 0, 0, 0],
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let mut drops = DropTally::default();
    for _ in 0..6 {
        drops.add(&ingress_drop(
            ("198.18.0.2", 5001),
            ("198.18.0.1", 40000),
            "NETFILTER_DROP",
            Layer::Netfilter,
            0,
            "tcp",
        ));
    }
    let now = Instant::now();
    let (before, after) = (
        snapshot(now, &[]),
        snapshot(now + Duration::from_secs(1), &[]),
    );
    let bundle = bundle_of(&window, &drops, &before, &after);
    let f = bundle
        .findings
        .iter()
        .find(|f| f.id == "inbound_ack_loss")
        .unwrap();
    assert_eq!((f.direction, f.layer), ("ingress", "netfilter"));
    assert!(
        f.summary.contains(
            "the peer's ACKs were dropped by the netfilter layer (NETFILTER_DROP, 6 drops) on the way in, in this namespace"
        ),
        "{}",
        f.summary
    );
    // Linked to the flow whose retransmits they caused.
    assert_eq!(
        f.evidence["events"]["causes"][0],
        "3 retransmitted segments of 198.18.0.1:40000 > 198.18.0.2:5001 ← the peer's ACKs dropped by the netfilter layer (NETFILTER_DROP, 6 drops) on the way in, in this namespace"
    );
    assert!(f.fix.contains("nft list ruleset"));
    assert!(!bundle.findings.iter().any(|f| f.id == "outbound_loss"));
}

/// Loss both ways on one flow, ACK loss, a backlog overflow and firewall drops: each named
/// with its direction, layer and CPUs; every counted number reconciled.
#[test]
fn both_sides_merge_into_findings_and_reconcile() {
    let totals = KernelTotals {
        flows: vec![(
            FlowKey {
                flow: flow(2, 5001, 1, 40000),
                netns: OWN,
                _pad0: 0,
            },
            RetransmitTotals {
                sent: 5,
                segs: 6,
                kinds: [0, 1, 4, 0, 0, 0, 0, 0],
                kind_segs: [0, 1, 5, 0, 0, 0, 0, 0],
                timer_kinds: [0, 1, 0, 0, 0, 0, 0, 0],
                timer_segs: [0, 1, 0, 0, 0, 0, 0, 0],
                ..Default::default()
            },
        )],
        receive_flows: vec![
            (
                FlowKey {
                    flow: flow(2, 5001, 1, 40000),
                    netns: OWN,
                    _pad0: 0,
                },
                ReceiveTotals {
                    duplicate: 1,
                    fills_hole: 3,
                    out_of_order: 4,
                    holes: 2,
                    ..Default::default()
                },
            ),
            (
                // Another namespace's flow: named as such, without counters of its own.
                FlowKey {
                    flow: flow(3, 22, 1, 50000),
                    netns: 99,
                    _pad0: 0,
                },
                ReceiveTotals {
                    fills_hole: 1,
                    out_of_order: 1,
                    holes: 1,
                    ..Default::default()
                },
            ),
        ],
        reasons: vec![(9, vec![4, 0])],
        ..Default::default()
    };
    let reasons = DropReasons::from_pairs(&[(9, "CPU_BACKLOG"), (12, "NETFILTER_DROP")], &[]);
    let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (0, 4))].into();
    let window = window_of(&totals, &reasons, &softnet);
    let mut drops = DropTally::default();
    let drop = |reason: &str, layer, cpu, proto: &str| {
        ingress_drop(
            ("198.18.0.1", 40000),
            ("198.18.0.2", 5001),
            reason,
            layer,
            cpu,
            proto,
        )
    };
    for _ in 0..3 {
        drops.add(&drop("NETFILTER_DROP", Layer::Netfilter, 1, "tcp"));
    }
    drops.add(&drop("CPU_BACKLOG", Layer::Backlog, 0, "udp"));
    let now = Instant::now();
    let before = snapshot(
        now,
        &[
            ("Tcp", "RetransSegs", 100),
            ("TcpExt", "DelayedACKLost", 5),
            ("TcpExt", "TCPOFOQueue", 1),
            ("TcpExt", "TCPFastRetrans", 10),
            ("TcpExt", "TCPTimeouts", 3),
        ],
    );
    let after = snapshot(
        now + Duration::from_secs(1),
        &[
            ("Tcp", "RetransSegs", 106),
            ("TcpExt", "DelayedACKLost", 6),
            ("TcpExt", "TCPOFOQueue", 5),
            ("TcpExt", "TCPFastRetrans", 15),
            ("TcpExt", "TCPTimeouts", 5),
        ],
    );
    let bundle = bundle_of(&window, &drops, &before, &after);

    let rows: BTreeMap<&str, (u64, u64, bool, bool)> = bundle
        .reconciliation
        .iter()
        .map(|r| (r.what, (r.events, r.counters, r.must_match, r.matches)))
        .collect();
    assert_eq!(
        rows["retransmitted segments (this namespace)"],
        (6, 6, true, true)
    );
    assert_eq!(
        rows["duplicate segments received (this namespace)"],
        (1, 1, true, true)
    );
    assert_eq!(
        rows["out-of-order segments received (this namespace)"],
        (4, 4, true, true)
    );
    assert_eq!(rows["input backlog drops (all CPUs)"], (4, 4, true, true));
    assert_eq!(
        rows["fast-retransmitted segments (Recovery)"],
        (5, 5, true, true)
    );
    assert_eq!(
        rows["slow-start retransmitted segments after an RTO"],
        (0, 0, true, true)
    );
    // TCPTimeouts also counts timeouts that sent nothing: a bound, and it holds.
    assert_eq!(rows["RTO timer retransmits"], (1, 2, true, true));
    let rto = bundle
        .reconciliation
        .iter()
        .find(|r| r.what == "RTO timer retransmits")
        .unwrap();
    assert_eq!(rto.relation, Relation::AtMost);
    assert_eq!(rto.not_exact_because, None);

    let by_id: BTreeMap<&str, &BundleFinding> = bundle
        .findings
        .iter()
        .filter(|f| f.netns != 99)
        .map(|f| (f.id.as_str(), f))
        .collect();
    let foreign = bundle
        .findings
        .iter()
        .find(|f| f.netns == 99)
        .expect("the other namespace's inbound loss");
    assert_eq!(foreign.id, "inbound_loss");
    assert!(
        foreign.summary.contains("into netns 99"),
        "{}",
        foreign.summary
    );
    assert!(foreign.evidence["counters"]
        .as_str()
        .unwrap()
        .starts_with("not read"));
    assert_eq!(foreign.flows, vec!["198.18.0.1:50000 > 198.18.0.3:22"]);
    let inbound = by_id["inbound_loss"];
    assert_eq!((inbound.direction, inbound.layer), ("ingress", "netfilter"));
    assert_eq!(inbound.cpus, vec![1]);
    assert_eq!(inbound.flows, vec!["198.18.0.1:40000 > 198.18.0.2:5001"]);
    assert!(inbound.fix.contains("nft list ruleset"));
    let outbound = by_id["outbound_loss"];
    assert_eq!(outbound.direction, "egress");
    assert!(
        outbound.summary.contains("not dropped in this namespace"),
        "{}",
        outbound.summary
    );
    assert!(
        outbound.summary.contains("fast 4, rto 1"),
        "{}",
        outbound.summary
    );
    assert!(by_id.contains_key("ack_loss_or_spurious_retransmits"));
    let backlog = by_id["backlog_overflow"];
    assert_eq!(
        (backlog.cpus.clone(), backlog.severity),
        (vec![1], "critical")
    );
    assert!(
        backlog.fix.contains("net.core.netdev_max_backlog="),
        "{}",
        backlog.fix
    );
    assert!(by_id.contains_key("drops_netfilter_netfilter_drop"));
    // And not the findings that would name the wrong cause.
    assert!(
        !by_id.contains_key("inbound_ack_loss"),
        "fast retransmits: the peer's SACKs arrived, the data was lost, not the ACKs"
    );
    assert!(
        !by_id.contains_key("drops_backlog_cpu_backlog"),
        "backlog drops are the backlog_overflow finding, not a second one"
    );
    assert!(
        !by_id.contains_key("napi_budget_exhausted"),
        "no time_squeeze in the window"
    );
    assert_eq!(bundle.findings[0].severity, "critical", "critical first");

    assert_eq!(bundle.flows[0].losing_direction, "both");
    let cpu1 = bundle.cpus.iter().find(|c| c.cpu == 1).unwrap();
    assert_eq!((cpu1.backlog_overflowed, cpu1.drops), (4, 0));
    let cpu0 = bundle.cpus.iter().find(|c| c.cpu == 0).unwrap();
    assert_eq!(cpu0.backlog_enqueue_drops, 4);
    assert!(bundle.text().contains("[critical] backlog_overflow"));
}

/// Retransmits counted and then refused by this namespace's own OUTPUT chain, while what they
/// recover was lost beyond it: `retransmits_fail_locally` names netfilter, its egress drops and
/// the fix; `outbound_loss` does not blame the OUTPUT chain; both counters reconcile.
#[test]
fn retransmits_refused_on_the_way_out_are_named_and_reconciled() {
    let failing = |failed_counted: u64| KernelTotals {
        flows: vec![(
            FlowKey {
                flow: flow(1, 40000, 2, 5001),
                netns: OWN,
                _pad0: 0,
            },
            RetransmitTotals {
                sent: 5,
                segs: 9,
                kinds: [0, 0, 5, 0, 0, 0, 0, 0],
                kind_segs: [0, 0, 9, 0, 0, 0, 0, 0],
                failed_counted,
                failed_counted_segs: 4 * failed_counted,
                failed_kinds: [0, 0, failed_counted as u32, 0, 0, 0, 0, 0],
                failed_causes: [failed_counted as u32, 0, 0, 0],
                aborted: 2,
                aborted_segs: 2,
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let mut drops = DropTally::default();
    for _ in 0..3 {
        drops.add(&Drop {
            direction: Direction::Egress,
            ..ingress_drop(
                ("198.18.0.1", 40000),
                ("198.18.0.2", 5001),
                "NETFILTER_DROP",
                Layer::Netfilter,
                1,
                "tcp",
            )
        });
    }
    let now = Instant::now();
    let before = snapshot(
        now,
        &[
            ("Tcp", "RetransSegs", 100),
            ("TcpExt", "TCPRetransFail", 10),
        ],
    );
    let after = snapshot(
        now + Duration::from_secs(1),
        &[
            ("Tcp", "RetransSegs", 121),
            ("TcpExt", "TCPRetransFail", 22),
        ],
    );
    let totals = failing(3);
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let bundle = bundle_of(&window, &drops, &before, &after);
    let f = bundle
        .findings
        .iter()
        .find(|f| f.id == "retransmits_fail_locally")
        .unwrap();
    assert_eq!(
        (f.direction, f.layer, f.severity),
        ("egress", "netfilter", "critical")
    );
    assert!(f.fix.contains("nft list ruleset"), "{}", f.fix);
    assert_eq!(f.evidence["events"]["failed_after_counted"], 3);
    assert_eq!(f.evidence["events"]["egress_drops"][0]["tcp_drops"], 3);
    let outbound = bundle
        .findings
        .iter()
        .find(|f| f.id == "outbound_loss")
        .unwrap();
    assert!(
        outbound
            .summary
            .contains("not dropped in this namespace on the way out"),
        "{}",
        outbound.summary
    );
    // 9 sent + 12 counted before failing = RetransSegs; the 12 = TCPRetransFail.
    let row = |counter: &str| {
        bundle
            .reconciliation
            .iter()
            .find(|r| r.counter == counter)
            .unwrap()
            .clone()
    };
    for (counter, events) in [("Tcp RetransSegs", 21), ("TcpExt TCPRetransFail", 12)] {
        let r = row(counter);
        assert_eq!(
            (r.events, r.counters, r.must_match, r.matches),
            (events, events, true, true),
            "{r:?}"
        );
    }

    // Nothing refused: no such finding, and the OUTPUT chain's drops are still not the cause.
    let totals = failing(0);
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let bundle = bundle_of(&window, &drops, &before, &before);
    assert!(!bundle
        .findings
        .iter()
        .any(|f| f.id == "retransmits_fail_locally"));
}

/// Frees the kernel counted as non-network (unix-domain queues purged on close) make no
/// finding and no CPU's drops, however many; NOT_SPECIFIED drops of IP packets nobody was
/// meant to take (IPv6 multicast to groups never joined) stay drops but make no finding.
#[test]
fn non_network_frees_and_unspecified_drops_make_no_finding() {
    let unix_close = netprobe_common::NonNetworkKey {
        reason: 4,
        _pad0: 0,
        location: 0xffff_ffff_8212_cc10,
    };
    let totals = KernelTotals {
        reasons: vec![(2, vec![12, 0])],
        non_network: vec![(unix_close, 5000)],
        ..Default::default()
    };
    let reasons = DropReasons::from_pairs(&[(2, "NOT_SPECIFIED"), (4, "SOCKET_CLOSE")], &[]);
    let softnet = SoftnetDeltas::new();
    let window = window_of(&totals, &reasons, &softnet);
    assert_eq!(window.non_network.total, 5000);
    let mut drops = DropTally::default();
    for _ in 0..12 {
        drops.add(&ingress_drop(
            ("fe80::1", 0),
            ("ff02::16", 0),
            "NOT_SPECIFIED",
            Layer::Ip,
            0,
            "udp",
        ));
    }
    let now = Instant::now();
    let bundle = bundle_of(
        &window,
        &drops,
        &snapshot(now, &[]),
        &snapshot(now + Duration::from_secs(1), &[]),
    );
    let ids: Vec<&str> = bundle.findings.iter().map(|f| f.id.as_str()).collect();
    assert!(ids.iter().all(|id| !id.starts_with("drops_")), "{ids:?}");
    let cpu_drops: u64 = bundle.cpus.iter().map(|c| c.drops).sum();
    assert_eq!(
        cpu_drops, 12,
        "the drops only, not the 5000 non-network frees"
    );
}
