//! The table's promises: one proposal per knob whatever the condition, every proposal
//! computed from the live value, nothing guessed when the live value is unknown.

use std::collections::BTreeMap;

use super::*;
use crate::model::cpuset::CpuSet;

const DEVICE: &str = "eth0";

/// A distinct number for every variant: adding one fails to compile here until it is
/// numbered, and `every_condition_is_listed` then fails until `every_condition` has it.
fn ordinal(condition: &Condition) -> usize {
    match condition {
        Condition::BacklogOverflow => 0,
        Condition::SteeredBacklogOverflow => 1,
        Condition::NapiBudgetExhausted => 2,
        Condition::ReceiveImbalance { .. } => 3,
        Condition::RxRingOverflow { .. } => 4,
        Condition::TransmitDrops { .. } => 5,
        Condition::DeviceErrors { .. } => 6,
        Condition::QdiscDrops { .. } => 7,
        Condition::FirewallDrops => 8,
        Condition::ListenOverflow => 9,
        Condition::AcceptQueueFull { .. } => 10,
        Condition::SocketRcvbufFull => 11,
        Condition::TcpRcvbufPruned => 12,
        Condition::NoListener => 13,
        Condition::TimeWaitPileUp => 14,
        Condition::CloseWaitLeak { .. } => 15,
        Condition::ConntrackTableFull => 16,
        Condition::TcpRetransmits => 17,
        Condition::LostBeforeArrival => 18,
        Condition::LostOnThePath => 19,
        Condition::AckLossOrSpuriousRetransmits => 20,
        Condition::OtherDrop { .. } => 21,
        Condition::Reordering => 22,
        Condition::HandshakeUnanswered => 23,
    }
}
const VARIANTS: usize = 24;

/// Every condition, each variant with every subject it can have about `DEVICE` (named, or
/// not), as one bundle could hold them all at once.
fn every_condition() -> Vec<Condition<'static>> {
    let qdisc = |kind| QdiscRef {
        device: DEVICE,
        kind,
        parent: None,
    };
    vec![
        Condition::BacklogOverflow,
        Condition::SteeredBacklogOverflow,
        Condition::NapiBudgetExhausted,
        Condition::ReceiveImbalance {
            device: Some(DEVICE),
        },
        Condition::ReceiveImbalance { device: None },
        Condition::RxRingOverflow {
            device: Some(DEVICE),
        },
        Condition::RxRingOverflow { device: None },
        Condition::TransmitDrops { device: DEVICE },
        Condition::DeviceErrors { device: DEVICE },
        Condition::QdiscDrops {
            qdisc: Some(qdisc("pfifo_fast")),
        },
        Condition::QdiscDrops {
            qdisc: Some(qdisc("tbf")),
        },
        Condition::QdiscDrops {
            qdisc: Some(QdiscRef {
                device: DEVICE,
                kind: "fq_codel",
                parent: Some("1:"),
            }),
        },
        Condition::QdiscDrops { qdisc: None },
        Condition::FirewallDrops,
        Condition::ListenOverflow,
        Condition::AcceptQueueFull {
            owner: "nginx (pid 12)",
            limit: 511,
        },
        Condition::SocketRcvbufFull,
        Condition::TcpRcvbufPruned,
        Condition::NoListener,
        Condition::TimeWaitPileUp,
        Condition::CloseWaitLeak {
            holder: Some(("leaky", 4242)),
        },
        Condition::CloseWaitLeak { holder: None },
        Condition::ConntrackTableFull,
        Condition::TcpRetransmits,
        Condition::LostBeforeArrival,
        Condition::LostOnThePath,
        Condition::HandshakeUnanswered,
        Condition::AckLossOrSpuriousRetransmits,
        Condition::Reordering,
        Condition::OtherDrop {
            layer: Layer::Ip,
            reason: "IP_INHDR",
        },
    ]
}

/// A host as it boots, `scale` times over (1: the kernel's defaults).
fn live(scale: u64) -> LiveValues {
    LiveValues {
        netdev_max_backlog: Some(1000 * scale),
        netdev_budget: Some(300 * scale),
        netdev_budget_usecs: Some(2000 * scale),
        somaxconn: Some(4096 * scale),
        largest_accept_queue_limit: Some(511),
        rmem_max: Some(212_992 * scale),
        rmem_default: Some(212_992),
        tcp_rmem: Some([4096, 131_072, 6_291_456 * scale]),
        tcp_tw_reuse: Some(2),
        nf_conntrack_max: Some(65_536 * scale),
        cpus: CpuSet::first(4),
        devices: [(
            DEVICE.to_string(),
            DeviceValues {
                txqueuelen: Some(1000 * scale),
                carrier: Some(true),
                operstate: Some("up".into()),
                rx_ring: Some(RxRing {
                    current: 512,
                    max: 4096,
                }),
                rps: CpuSet::default(),
                driver: Some("ixgbe".into()),
                root_qdisc: Some("mq".into()),
            },
        )]
        .into(),
        overflowing_socket: None,
        overflowing_listener: None,
    }
}

/// Nothing readable: another namespace, no driver support.
fn unknown() -> LiveValues {
    LiveValues {
        devices: [(DEVICE.to_string(), DeviceValues::default())].into(),
        ..Default::default()
    }
}

fn all_settings(live: &LiveValues) -> Vec<(Condition<'static>, Setting)> {
    every_condition()
        .into_iter()
        .flat_map(|c| fix(c, live).settings.into_iter().map(move |s| (c, s)))
        .collect()
}

#[test]
fn every_condition_is_listed() {
    let mut seen: Vec<usize> = every_condition().iter().map(ordinal).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..VARIANTS).collect::<Vec<_>>());
}

/// The defect this table fixes: `netdev_max_backlog` doubled by one finding and ×4 (at
/// least 4096) by another, `netdev_budget` doubled and fixed at 600 in the same bundle.
#[test]
fn no_two_conditions_propose_different_values_for_one_knob() {
    let mut cases = vec![unknown()];
    cases.extend([1, 8, 1_000].map(live));
    let mut tiny = live(1);
    tiny.netdev_max_backlog = Some(8);
    tiny.somaxconn = Some(128);
    cases.push(tiny);
    for live in &cases {
        let mut proposals: BTreeMap<(Knob, Option<String>), (Condition, Option<Level>)> =
            BTreeMap::new();
        for (condition, setting) in all_settings(live) {
            let key = (setting.knob, setting.device.clone());
            match proposals.get(&key) {
                Some((first, proposed)) => assert_eq!(
                    proposed, &setting.proposed,
                    "{key:?}: {first:?} and {condition:?} disagree for {live:?}"
                ),
                None => {
                    proposals.insert(key, (condition, setting.proposed));
                }
            }
        }
        // The knobs that had two policies are among those checked.
        for knob in [Knob::NetdevMaxBacklog, Knob::NetdevBudget, Knob::Somaxconn] {
            assert!(proposals.keys().any(|(k, _)| *k == knob), "{knob:?}");
        }
    }
}

#[test]
fn every_proposal_rises_above_the_live_value() {
    for live in [1, 8, 1_000].map(live) {
        let settings = all_settings(&live);
        assert!(settings.len() > 10, "{settings:?}");
        for (condition, setting) in settings {
            let Some(proposed) = setting.proposed.as_ref() else {
                // Only a device the condition does not name has no live value.
                assert_eq!(
                    (&setting.device, &setting.current),
                    (&None, &None),
                    "{condition:?}"
                );
                continue;
            };
            match (&setting.current, proposed) {
                (Some(Level::Count(c)), Level::Count(p)) if setting.knob.raises() => {
                    assert!(p > c, "{condition:?}: {setting:?}")
                }
                (Some(Level::Cpus(c)), Level::Cpus(p)) => {
                    assert!(p.is_superset(c) && p.len() > c.len(), "{setting:?}")
                }
                (None, Level::Cpus(p)) => assert_eq!(p, &live.cpus),
                (Some(Level::Count(c)), Level::Count(p)) => assert_ne!(p, c, "{setting:?}"),
                _ => panic!("{condition:?}: {setting:?} has no live value beside it"),
            }
            assert!(
                fix(condition, &live)
                    .command
                    .contains(&proposed.to_string()),
                "{condition:?}: the command shows the proposal"
            );
        }
    }
}

#[test]
fn proposals_follow_the_live_value() {
    let at = |backlog| {
        let mut live = live(1);
        live.netdev_max_backlog = Some(backlog);
        fix(Condition::BacklogOverflow, &live).command
    };
    assert_eq!(at(1000), "sysctl -w net.core.netdev_max_backlog=2000");
    assert_eq!(at(8192), "sysctl -w net.core.netdev_max_backlog=16384");
    // Far below the default, the default is where it starts.
    assert_eq!(at(8), "sysctl -w net.core.netdev_max_backlog=1000");
    // The old fixed 600/4000 proposed nothing new on a host already there.
    assert_eq!(
        fix(Condition::NapiBudgetExhausted, &live(2)).command,
        "sysctl -w net.core.netdev_budget=1200 net.core.netdev_budget_usecs=8000 (and spread RX over more CPUs)"
    );
    assert_eq!(
        fix(Condition::TcpRcvbufPruned, &live(1)).command,
        "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 12582912\""
    );
    assert_eq!(
        fix(Condition::SocketRcvbufFull, &live(1)).command,
        "sysctl -w net.core.rmem_max=851968 and have the application set SO_RCVBUF (or read faster)"
    );
    assert_eq!(
        fix(
            Condition::RxRingOverflow {
                device: Some(DEVICE)
            },
            &live(1)
        )
        .command,
        "ethtool -G eth0 rx 4096"
    );
    assert_eq!(
        fix(Condition::TransmitDrops { device: DEVICE }, &live(1)).command,
        "ip link set dev eth0 txqueuelen 2000"
    );
}

#[test]
fn somaxconn_is_raised_past_every_listener() {
    let mut live = live(1);
    // somaxconn lowered after a listener took 8192.
    live.somaxconn = Some(1024);
    live.largest_accept_queue_limit = Some(8192);
    let listen = fix(Condition::ListenOverflow, &live);
    let accept = fix(
        Condition::AcceptQueueFull {
            owner: "its owner",
            limit: 8192,
        },
        &live,
    );
    let proposed = |f: &Fix| f.setting(Knob::Somaxconn).unwrap().proposed.clone();
    assert_eq!(proposed(&listen), Some(Level::Count(16384)));
    assert_eq!(proposed(&listen), proposed(&accept));
    assert!(accept
        .command
        .ends_with("(limit 8192) and sysctl -w net.core.somaxconn=16384"));
}

#[test]
fn unknown_live_values_are_not_guessed() {
    let live = unknown();
    for (condition, setting) in all_settings(&live) {
        if setting.knob == Knob::TcpTwReuse || setting.knob == Knob::RpsCpus {
            // A switch, and the CPUs (always known): their proposals need no live value.
            continue;
        }
        assert_eq!(setting.proposed, None, "{condition:?}: {setting:?}");
        assert!(
            fix(condition, &live).command.contains('<'),
            "{condition:?}: the command says how to compute the value"
        );
    }
    assert_eq!(
        fix(Condition::BacklogOverflow, &live).command,
        "sysctl -w net.core.netdev_max_backlog=<2×current>"
    );
    assert_eq!(
        fix(
            Condition::RxRingOverflow {
                device: Some(DEVICE)
            },
            &live
        )
        .command,
        "ethtool -G eth0 rx <max from ethtool -g eth0>"
    );
    assert_eq!(
        fix(Condition::SteeredBacklogOverflow, &live).command,
        "sysctl -w net.core.netdev_max_backlog=<2×current>; and spread the steering: for q in /sys/class/net/<dev>/queues/rx-*/rps_cpus; do echo 1 > $q; done"
    );
}

#[test]
fn knobs_already_at_their_limit_get_other_advice() {
    let mut live = live(1);
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.rx_ring = Some(RxRing {
        current: 4096,
        max: 4096,
    });
    eth0.rps = CpuSet::first(2);
    live.tcp_tw_reuse = Some(1);
    live.nf_conntrack_max = Some(0);
    let ring = fix(
        Condition::RxRingOverflow {
            device: Some(DEVICE),
        },
        &live,
    );
    assert!(ring.settings.is_empty());
    assert!(ring.command.starts_with("ring already at its maximum"));
    assert!(ring.command.contains("ethtool -L eth0 combined"));
    let tw = fix(Condition::TimeWaitPileUp, &live);
    assert_eq!(
        (tw.settings.len(), tw.command.as_str()),
        (
            0,
            "reuse connections (keep-alive, pooling) in the application"
        )
    );
    // No limit: raising it would impose one.
    let ct = fix(Condition::ConntrackTableFull, &live);
    assert!(ct.settings.is_empty() && ct.command.contains("is 0 (no limit)"));
    let imbalance = fix(
        Condition::ReceiveImbalance {
            device: Some(DEVICE),
        },
        &live,
    );
    assert_eq!(
        imbalance.command,
        "spread eth0's IRQs over CPUs (irqbalance, or /proc/irq/<n>/smp_affinity) and widen rps_cpus to f"
    );
}

#[test]
fn transmit_drops_without_carrier_or_queue_name_the_link() {
    let mut live = live(1);
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.carrier = Some(false);
    eth0.operstate = Some("lowerlayerdown".into());
    let dead = fix(Condition::TransmitDrops { device: DEVICE }, &live);
    assert!(dead.settings.is_empty());
    assert!(dead
        .command
        .starts_with("eth0 has no carrier (operstate lowerlayerdown)"));
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.carrier = Some(true);
    eth0.txqueuelen = Some(0);
    let queueless = fix(Condition::TransmitDrops { device: DEVICE }, &live);
    assert!(queueless.settings.is_empty());
    assert!(queueless.command.contains("ip link show eth0"));
    // The qdisc on the same device still gets a queue of the default length.
    let pfifo = fix(
        Condition::QdiscDrops {
            qdisc: Some(QdiscRef {
                device: DEVICE,
                kind: "pfifo_fast",
                parent: None,
            }),
        },
        &live,
    );
    assert_eq!(pfifo.command, "ip link set dev eth0 txqueuelen 1000");
}

#[test]
fn transmit_drops_of_a_veth_or_noqueue_device_never_lengthen_a_queue() {
    let mut live = live(1);
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.driver = Some("veth".into());
    eth0.root_qdisc = Some("noqueue".into());
    let veth = fix(Condition::TransmitDrops { device: DEVICE }, &live);
    assert!(!veth.command.contains("txqueuelen"), "{}", veth.command);
    assert!(
        veth.command
            .contains("sysctl -w net.core.netdev_max_backlog=2000"),
        "{}",
        veth.command
    );
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.driver = Some("bridge".into());
    let noqueue = fix(Condition::TransmitDrops { device: DEVICE }, &live);
    assert!(
        !noqueue.command.contains("txqueuelen"),
        "{}",
        noqueue.command
    );
    assert!(noqueue.settings.is_empty());
    // The same device with a real queue gets one twice as long.
    let eth0 = live.devices.get_mut(DEVICE).unwrap();
    eth0.root_qdisc = Some("pfifo_fast".into());
    let queued = fix(Condition::TransmitDrops { device: DEVICE }, &live);
    assert!(queued.command.contains("txqueuelen"), "{}", queued.command);
}

#[test]
fn drop_layers_map_onto_conditions() {
    let of = |layer, reason| Condition::for_drop(layer, reason);
    assert_eq!(
        of(Layer::Netfilter, "NETFILTER_DROP"),
        Condition::FirewallDrops
    );
    assert_eq!(
        of(Layer::Backlog, "CPU_BACKLOG"),
        Condition::BacklogOverflow
    );
    assert_eq!(
        of(Layer::Socket, "SOCKET_RCVBUFF"),
        Condition::SocketRcvbufFull
    );
    assert_eq!(of(Layer::Udp, "NO_SOCKET"), Condition::NoListener);
    assert_eq!(
        of(Layer::Nic, "DEV_READY"),
        Condition::RxRingOverflow { device: None }
    );
    assert_eq!(
        fix(of(Layer::Ip, "IP_INHDR"), &unknown()).command,
        "dropped by the kernel's ip code (IP_INHDR)"
    );
    assert!(fix(of(Layer::Netfilter, "NETFILTER_DROP"), &unknown())
        .command
        .contains("nft list ruleset"));
}

/// The sockets: SO_RCVBUF 1024 (rcvbuf 2304) under a 4 MiB rmem_max, and a listener
/// whose listen() backlog of 4 is far below somaxconn. Each fix names that limit with its
/// value and turns no sysctl; the general advice stays for when no socket is known.
#[test]
fn socket_fixes_name_the_limit_not_a_sysctl_above_it() {
    use crate::model::socket_limits::ReceiveLimit;
    let mut live = live(1);
    live.rmem_max = Some(4 << 20);
    live.overflowing_socket = Some(OverflowingSocket {
        who: "udp 198.18.0.2:7002 of app (pid 7)".into(),
        rcvbuf: 2304,
        drops: 328_378,
        limit: ReceiveLimit::SoRcvbuf { so_rcvbuf: 1152 },
    });
    live.overflowing_listener = Some(OverflowingListener {
        who: "app (pid 7) on 0.0.0.0:80".into(),
        limit: 4,
    });
    let rcvbuf = fix(Condition::SocketRcvbufFull, &live);
    assert!(rcvbuf.settings.is_empty(), "{rcvbuf:?}");
    assert_eq!(
        rcvbuf.command,
        "udp 198.18.0.2:7002 of app (pid 7) sets SO_RCVBUF 1152 (rcvbuf 2304, 328378 drops in the window): have it set SO_RCVBUF 212992 (net.core.rmem_max 4194304 allows it; it is not the limit), or read faster"
    );
    // The drop events' condition is the same cause: the same fix.
    assert_eq!(
        fix(Condition::for_drop(Layer::Socket, "SOCKET_RCVBUFF"), &live),
        rcvbuf
    );
    let listen = fix(Condition::ListenOverflow, &live);
    assert!(listen.setting(Knob::Somaxconn).is_none(), "{listen:?}");
    assert_eq!(
        listen,
        fix(
            Condition::AcceptQueueFull {
                owner: "app (pid 7) on 0.0.0.0:80",
                limit: 4
            },
            &live
        )
    );
    assert!(listen
        .command
        .contains("listen() backlog 4 is the limit, not net.core.somaxconn (4096)"));
    // At the cap, rmem_max is the limit and the fix raises it.
    live.overflowing_socket.as_mut().unwrap().limit = ReceiveLimit::RmemMax { rmem_max: 4 << 20 };
    let capped = fix(Condition::SocketRcvbufFull, &live);
    assert_eq!(
        capped
            .setting(Knob::RmemMax)
            .and_then(|s| s.proposed.clone()),
        Some(Level::Count(16 << 20))
    );
}
