//! The bundle from typed fixtures: rules, rows, steering and reconciliation.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use netprobe_common::{
    vocab::{Direction, Layer},
    Flow, FlowKey, ReceiveTotals, RetransmitTotals, AF_INET,
};

use super::{steering::mask_cpus, steering::steering, *};
use crate::{
    kernel::{
        btf::DropReasons,
        loader::{
            catalogue::{
                DROP_HOOK, RECEIVE_HOOK, RETRANSMIT_HOOK, RTO_TIMER_HOOK, SOFTIRQ_ENTRY_HOOK,
                SOFTIRQ_EXIT_HOOK, SYNACK_HOOK,
            },
            KernelTotals,
        },
    },
    model::{
        self,
        event::{Drop, Stamp},
        flow::Endpoint,
        tally::DropTally,
        window::{SoftnetDeltas, Streamed, Window, WindowInputs},
    },
    report::{model as report_model, procfs::Counters, sample::Snapshot},
};

fn snapshot(at: Instant, counters: &[(&str, &str, i64)]) -> Snapshot {
    let mut c = Counters::new();
    for (group, field, value) in counters {
        c.entry(group.to_string())
            .or_default()
            .insert(field.to_string(), *value);
    }
    Snapshot {
        at,
        net_dev: Vec::new(),
        interfaces: Vec::new(),
        nics: BTreeMap::new(),
        qdiscs: Vec::new(),
        counters: c,
        softnet: Vec::new(),
        softirq_cpus: vec![0, 1],
        net_rx: vec![10, 10],
        net_tx: vec![0, 0],
        irq_cpus: vec![0, 1],
        irqs: Vec::new(),
        conntrack: None,
    }
}

fn flow(local: u8, sport: u16, remote: u8, dport: u16) -> Flow {
    let mut f = Flow {
        family: AF_INET,
        sport,
        dport,
        ..Default::default()
    };
    f.saddr[..4].copy_from_slice(&[198, 18, 0, local]);
    f.daddr[..4].copy_from_slice(&[198, 18, 0, remote]);
    f
}

/// netprobe's own namespace in these fixtures.
const OWN: u32 = 7;

/// Every hook a reconciliation row can depend on, active (or the one named, inactive).
fn hooks_with_inactive(inactive: Option<&str>) -> Vec<crate::kernel::loader::HookStatus> {
    [
        RETRANSMIT_HOOK.id,
        SYNACK_HOOK.id,
        DROP_HOOK.id,
        RECEIVE_HOOK.id,
        SOFTIRQ_ENTRY_HOOK.id,
        SOFTIRQ_EXIT_HOOK.id,
        RTO_TIMER_HOOK.id,
    ]
    .into_iter()
    .map(|hook| crate::kernel::loader::HookStatus {
        hook: hook.to_string(),
        attach: "raw_tracepoint",
        program: "netprobe_x",
        active: Some(hook) != inactive,
        detail: if Some(hook) == inactive {
            "turned off (--without-receive-hook)".into()
        } else {
            "attached".into()
        },
        verified_insns: None,
        load_ms: None,
    })
    .collect()
}

fn window_of(totals: &KernelTotals, reasons: &DropReasons, softnet: &SoftnetDeltas) -> Window {
    Window::build(
        totals,
        WindowInputs {
            streamed: Streamed::default(),
            hooks: hooks_with_inactive(None),
            reasons,
            softnet,
            filtered: false,
            duration_ms: 1000,
            kernel_skipped: Vec::new(),
        },
        &mut |_| None,
    )
}

/// A drop in `OWN`, on the way in, classified (`src`/`dst`: address, port).
fn ingress_drop(
    src: (&str, u16),
    dst: (&str, u16),
    reason: &str,
    layer: Layer,
    cpu: u32,
    proto: &str,
) -> Drop {
    let end = |(addr, port): (&str, u16)| Endpoint {
        addr: addr.parse().unwrap(),
        port: Some(port),
    };
    Drop {
        at: Stamp { ts_ns: 0, cpu },
        netns: OWN,
        flow: Some(model::flow::Flow {
            netns: OWN,
            src: end(src),
            dst: end(dst),
        }),
        ip_proto: Some(if proto == "tcp" { 6 } else { 17 }),
        reason_code: 0,
        reason: reason.into(),
        location: "nft_do_chain+0x10".into(),
        direction: Direction::Ingress,
        layer,
        ethertype: 0x0800,
        device: None,
        socket_state: None,
        sock_ino: 0,
    }
}

/// The final bundle of a one-second window in `OWN`.
fn bundle_of(
    window: &Window,
    drops: &DropTally,
    before: &Snapshot,
    after: &Snapshot,
) -> FindingsJson {
    build(Inputs {
        window,
        drops,
        report: report_model::build(before, after, "test".into()),
        counters_before: &before.counters,
        counters_now: &after.counters,
        net_rx_before: &before.net_rx,
        net_rx_now: &after.net_rx,
        own_netns: OWN,
        filtered: false,
        is_final: true,
        window_s: 1.0,
        top: 5,
    })
}

#[test]
fn steering_names_irq_routing_and_rps() {
    use crate::report::{sample::NicIrq, sysfs::InterfaceInfo};
    let now = Instant::now();
    let mut before = snapshot(now, &[]);
    let iface = |name: &str, rps: &[(&str, &str)]| InterfaceInfo {
        name: name.into(),
        rps_cpus: rps
            .iter()
            .map(|(q, m)| (q.to_string(), m.to_string()))
            .collect(),
        ..Default::default()
    };
    before.interfaces = vec![iface("eth0", &[]), iface("eth1", &[("rx-0", "2")])];
    let irq = |n: &str, ifname: &str, name: &str, per_cpu: Vec<u64>, affinity: Vec<usize>| NicIrq {
        irq: n.into(),
        ifname: ifname.into(),
        name: name.into(),
        per_cpu,
        affinity,
    };
    before.irqs = vec![
        irq("38", "eth0", "virtio2-input.0", vec![0, 100], vec![1]),
        irq("39", "eth0", "virtio2-output.0", vec![50, 0], vec![0]),
        irq("40", "eth1", "eth1-TxRx-0", vec![7, 7], vec![0]),
        irq("41", "eth1", "eth1-TxRx-1", vec![7, 7], vec![1]),
    ];
    let mut after = snapshot(now + Duration::from_secs(1), &[]);
    after.interfaces = before.interfaces.clone();
    after.irqs = before.irqs.clone();
    after.irqs[0].per_cpu = vec![0, 180];
    let report = report_model::build(&before, &after, "test".into());
    let st = steering(&report);
    assert_eq!(
        st[0].summary,
        "eth0: all RX interrupts routed to CPU 1; interrupts during the window all on CPU 1, RPS off"
    );
    assert_eq!(
        st[0].rx_irqs.len(),
        1,
        "the output queue's line carries no receive work"
    );
    assert_eq!(
        st[1].summary,
        "eth1: 2 receive IRQ lines routed to CPUs [0, 1] (no NIC interrupts during the window), RPS steers everything to CPU 1"
    );
}

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
        f.summary
            .contains("ACKs are dropped on their way into this namespace"),
        "{}",
        f.summary
    );
    assert!(f.fix.contains("nft list ruleset"));
    assert!(!bundle.findings.iter().any(|f| f.id == "outbound_loss"));
}

#[test]
fn rps_masks_name_their_cpus() {
    assert_eq!(mask_cpus("2"), vec![1]);
    assert_eq!(mask_cpus("f"), vec![0, 1, 2, 3]);
    assert_eq!(mask_cpus("00000001,00000000"), vec![32]);
    assert!(mask_cpus("0").is_empty());
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
    assert_eq!(bundle.findings[0].severity, "critical", "critical first");

    assert_eq!(bundle.flows[0].losing_direction, "both");
    let cpu1 = bundle.cpus.iter().find(|c| c.cpu == 1).unwrap();
    assert_eq!((cpu1.backlog_overflowed, cpu1.drops), (4, 0));
    let cpu0 = bundle.cpus.iter().find(|c| c.cpu == 0).unwrap();
    assert_eq!(cpu0.backlog_enqueue_drops, 4);
    assert!(bundle.text().contains("[critical] backlog_overflow"));
}

/// A row whose hook is inactive says so instead of asserting; a bound that does not hold
/// is reported as not holding.
#[test]
fn rows_name_their_missing_inputs_and_bounds_are_checked() {
    let now = Instant::now();
    let mut window = window_of(
        &KernelTotals::default(),
        &DropReasons::default(),
        &SoftnetDeltas::new(),
    );
    window.hooks = hooks_with_inactive(Some(RECEIVE_HOOK.id));
    let before = snapshot(now, &[]);
    let after = snapshot(
        now + Duration::from_secs(1),
        &[
            ("TcpExt", "DelayedACKLost", 3),
            ("TcpExt", "TCPTimeouts", 0),
        ],
    );
    let bundle = bundle_of(&window, &DropTally::default(), &before, &after);
    let row = |what: &str| {
        bundle
            .reconciliation
            .iter()
            .find(|r| r.what == what)
            .unwrap()
            .clone()
    };
    let dup = row("duplicate segments received (this namespace)");
    assert!(!dup.must_match && !dup.matches);
    assert_eq!(
        dup.not_exact_because.as_deref(),
        Some("hook tcp:tcp_probe is inactive: turned off (--without-receive-hook)")
    );
    let retrans = row("retransmitted segments (this namespace)");
    assert!(retrans.must_match && retrans.matches && retrans.not_exact_because.is_none());

    // Without the RTO timer hooked, which retransmits are the timer's own is inferred: the
    // slow-start row says so, the total stays exact.
    window.hooks = hooks_with_inactive(Some(RTO_TIMER_HOOK.id));
    let bundle = bundle_of(&window, &DropTally::default(), &before, &after);
    let split = bundle
        .reconciliation
        .iter()
        .find(|r| r.what == "slow-start retransmitted segments after an RTO")
        .unwrap();
    assert!(!split.must_match, "{split:?}");
    assert!(split
        .not_exact_because
        .as_deref()
        .unwrap()
        .starts_with("hook function:tcp_retransmit_timer is inactive"));
    assert!(
        bundle
            .reconciliation
            .iter()
            .find(|r| r.what == "retransmitted segments (this namespace)")
            .unwrap()
            .must_match
    );

    // 0 timer retransmits ≤ 0 timeouts holds; make the events exceed the counter.
    let mut totals = KernelTotals::default();
    let mut rto = RetransmitTotals::default();
    rto.kinds[netprobe_common::KIND_RTO as usize] = 1;
    rto.timer_kinds[netprobe_common::KIND_RTO as usize] = 1;
    totals.flows.push((
        FlowKey {
            flow: flow(1, 40000, 2, 5001),
            netns: OWN,
            _pad0: 0,
        },
        rto,
    ));
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let bundle = bundle_of(&window, &DropTally::default(), &before, &after);
    let bound = bundle
        .reconciliation
        .iter()
        .find(|r| r.what == "RTO timer retransmits")
        .unwrap();
    assert_eq!((bound.events, bound.counters), (1, 0));
    assert!(bound.must_match && !bound.matches, "{bound:?}");
}

/// Every `name=value` a bundle's fixes would set, from the `sysctl -w` commands in them.
fn proposed_settings(bundle: &FindingsJson) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for f in &bundle.findings {
        for command in f
            .fix
            .split(';')
            .filter_map(|c| c.split("sysctl -w ").nth(1))
        {
            for word in command.split_whitespace() {
                if let Some((name, value)) = word.split_once('=') {
                    out.push((name.to_string(), value.to_string(), f.id.clone()));
                }
            }
        }
    }
    out
}

/// The report's rules and the bundle's own rules see the same overflow and the same NAPI
/// squeeze: every knob they both turn gets one value.
#[test]
fn one_bundle_proposes_one_value_per_knob() {
    use crate::report::{procfs::Softnet, rules};
    let reasons = DropReasons::from_pairs(&[(9, "CPU_BACKLOG")], &[]);
    let totals = KernelTotals {
        reasons: vec![(9, vec![40, 0])],
        napi: vec![(
            "(no_device)".into(),
            vec![
                netprobe_common::NapiTotals::default(),
                netprobe_common::NapiTotals {
                    polls: 100,
                    full_budget: 30,
                    work: 6400,
                },
            ],
        )],
        ..Default::default()
    };
    let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (12, 40))].into();
    let window = window_of(&totals, &reasons, &softnet);
    let mut tally = DropTally::default();
    for _ in 0..40 {
        tally.add(&ingress_drop(
            ("198.18.0.1", 40000),
            ("198.18.0.2", 5001),
            "CPU_BACKLOG",
            Layer::Backlog,
            0,
            "udp",
        ));
    }
    let now = Instant::now();
    let softnet_at = |dropped, time_squeeze| {
        vec![
            Softnet {
                cpu: 0,
                processed: 1000,
                ..Default::default()
            },
            Softnet {
                cpu: 1,
                processed: 1000,
                dropped,
                time_squeeze,
                ..Default::default()
            },
        ]
    };
    let mut before = snapshot(now, &[]);
    before.softnet = softnet_at(0, 0);
    let mut after = snapshot(now + Duration::from_secs(1), &[]);
    after.softnet = softnet_at(40, 12);
    let mut report = report_model::build(&before, &after, "test".into());
    report.sysctls = [
        ("net.core.netdev_max_backlog", "1000"),
        ("net.core.netdev_budget", "300"),
        ("net.core.netdev_budget_usecs", "2000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    report.findings = rules::evaluate(&report);
    let bundle = build(Inputs {
        window: &window,
        drops: &tally,
        report,
        counters_before: &before.counters,
        counters_now: &after.counters,
        net_rx_before: &before.net_rx,
        net_rx_now: &after.net_rx,
        own_netns: OWN,
        filtered: false,
        is_final: true,
        window_s: 1.0,
        top: 5,
    });
    let ids: Vec<&str> = bundle.findings.iter().map(|f| f.id.as_str()).collect();
    for both_sides in [
        "backlog_overflow",
        "softnet_dropped",
        "napi_budget_exhausted",
    ] {
        assert!(ids.contains(&both_sides), "{both_sides} missing: {ids:?}");
    }
    let settings = proposed_settings(&bundle);
    let mut by_knob: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (name, value, id) in &settings {
        by_knob.entry(name).or_default().push((value, id));
    }
    let backlog = &by_knob["net.core.netdev_max_backlog"];
    assert!(
        backlog.len() >= 2,
        "the report and the bundle both fix the backlog: {backlog:?}"
    );
    for (knob, proposals) in &by_knob {
        let first = proposals[0].0;
        assert!(
            proposals.iter().all(|(value, _)| *value == first),
            "{knob} gets two values in one bundle: {proposals:?}"
        );
    }
    // Computed from the live value, not a constant.
    assert_eq!(backlog[0].0, "2000");
}
