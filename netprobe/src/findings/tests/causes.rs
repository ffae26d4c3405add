//! Naming the real cause: reordering is not loss, and a flow's retransmits are joined with the
//! drops of its own packets wherever netprobe saw them, never with a teardown's.

use super::*;

fn key(local: u8, sport: u16, remote: u8, dport: u16, netns: u32) -> FlowKey {
    FlowKey {
        flow: flow(local, sport, remote, dport),
        netns,
        _pad0: 0,
    }
}

/// `segs` fast-retransmitted segments, of which the peer reported `dsacked` as received twice.
fn fast(segs: u32, dsacked: u32) -> RetransmitTotals {
    RetransmitTotals {
        sent: 10,
        segs: segs as u64,
        kinds: [0, 0, 10, 0, 0, 0, 0, 0],
        kind_segs: [0, 0, segs, 0, 0, 0, 0, 0],
        dsack_dups_first: 1000,
        dsack_dups_latest: 1000 + dsacked,
        reord_seen_first: 5,
        reord_seen_latest: 12,
        ..Default::default()
    }
}

fn ids(bundle: &FindingsJson) -> Vec<&str> {
    bundle.findings.iter().map(|f| f.id.as_str()).collect()
}

fn finding<'a>(bundle: &'a FindingsJson, id: &str) -> &'a BundleFinding {
    bundle
        .findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id} in {:?}", ids(bundle)))
}

fn one_second(window: &Window, drops: &DropTally) -> FindingsJson {
    let now = Instant::now();
    let before = snapshot(now, &[("TcpExt", "TCPDSACKRecvSegs", 0)]);
    let after = snapshot(
        now + Duration::from_secs(1),
        &[("TcpExt", "TCPDSACKRecvSegs", 90)],
    );
    bundle_of(window, drops, &before, &after)
}

/// A clean transfer reordered across CPUs: the sender's retransmits were mostly reported back
/// as received twice, the receiver's holes were filled before the re-sent copies arrived. One
/// `reordering` finding per end, and none of the loss findings.
/// The receiver saw few duplicates (the late originals came before most re-sent copies
/// were sent), but the sender's end is on this host too and its socket says 90 of its 100
/// re-sent segments were D-SACKed: reordering, not inbound loss. With the sender's
/// retransmits not D-SACKed, the same receiver counts are inbound loss.
#[test]
fn the_senders_dsacks_on_this_host_settle_the_receivers_holes() {
    let receiver = |dsacked| KernelTotals {
        flows: vec![(key(1, 40000, 2, 5001, OWN), fast(100, dsacked))],
        receive_flows: vec![(
            key(2, 5001, 1, 40000, 99),
            ReceiveTotals {
                duplicate: 2,
                fills_hole: 10,
                out_of_order: 12,
                holes: 10,
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let findings = |dsacked| {
        let window = window_of(
            &receiver(dsacked),
            &DropReasons::default(),
            &SoftnetDeltas::new(),
        );
        ids(&one_second(&window, &DropTally::default()))
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let spurious = findings(90);
    assert!(
        !spurious.iter().any(|id| id == "inbound_loss"),
        "{spurious:?}"
    );
    assert!(spurious.iter().any(|id| id == "reordering"), "{spurious:?}");
    let lossy = findings(0);
    assert!(lossy.iter().any(|id| id == "inbound_loss"), "{lossy:?}");
}

#[test]
fn reordering_is_not_loss() {
    let totals = KernelTotals {
        flows: vec![(key(1, 40000, 2, 5001, OWN), fast(100, 90))],
        receive_flows: vec![(
            key(2, 5001, 1, 40000, 99),
            ReceiveTotals {
                duplicate: 9,
                fills_hole: 10,
                out_of_order: 12,
                holes: 10,
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let mut drops = DropTally::default();
    // The duplicates TCP discards at the receiver are the consequence, not a finding.
    drops.add(&ingress_drop(
        ("198.18.0.1", 40000),
        ("198.18.0.2", 5001),
        "TCP_OLD_SEQUENCE",
        Layer::Tcp,
        0,
        "tcp",
    ));
    let bundle = one_second(&window, &drops);
    for wrong in [
        "outbound_loss",
        "inbound_loss",
        "inbound_ack_loss",
        "ack_loss_or_spurious_retransmits",
        "drops_tcp_tcp_old_sequence",
    ] {
        assert!(
            !ids(&bundle).contains(&wrong),
            "{wrong}: {:?}",
            ids(&bundle)
        );
    }
    let sender = bundle
        .findings
        .iter()
        .find(|f| f.id == "reordering" && f.netns == OWN)
        .unwrap();
    assert_eq!(sender.direction, "egress");
    assert_eq!(sender.evidence["events"]["dsacked_segs"], 90);
    assert_eq!(sender.evidence["events"]["reordering_seen"], 7);
    assert_eq!(sender.evidence["counters"]["TcpExt.TCPDSACKRecvSegs"], 90);
    assert!(sender.fix.contains("nothing is lost"), "{}", sender.fix);
    let receiver = bundle
        .findings
        .iter()
        .find(|f| f.id == "reordering" && f.netns == 99)
        .unwrap();
    assert_eq!(receiver.direction, "ingress");
    assert_eq!(receiver.evidence["events"]["duplicate"], 9);
    for row in &bundle.flows {
        assert_eq!(row.losing_direction, "none (reordering)", "{row:?}");
    }
    assert_eq!(bundle.flows[0].dsacked_segs, 90);
}

/// The same share of D-SACKs, but the flow's own segments were seen dropped at the peer: loss,
/// named there, and no `reordering`.
#[test]
fn drops_of_the_flow_outweigh_dsacks() {
    let totals = KernelTotals {
        flows: vec![(key(1, 40000, 2, 5001, OWN), fast(100, 90))],
        ..Default::default()
    };
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let mut drops = DropTally::default();
    drops.add(&dropped_at_the_peers_input());
    let bundle = one_second(&window, &drops);
    assert!(!ids(&bundle).contains(&"reordering"), "{:?}", ids(&bundle));
    let f = finding(&bundle, "outbound_loss");
    assert_eq!(f.layer, "netfilter");
    assert!(f.summary.contains("in netns 99"), "{}", f.summary);
}

/// Every packet of a request/response flow dropped by the peer's INPUT chain (another
/// namespace) while the client closed: the retransmits are linked to those drops; the FIN its
/// close purged (QUEUE_PURGE, an ACK-direction drop) explains nothing and is no finding.
#[test]
fn retransmits_are_linked_to_the_drops_of_their_flow() {
    let totals = KernelTotals {
        flows: vec![(
            key(1, 40000, 2, 5001, OWN),
            RetransmitTotals {
                sent: 4,
                segs: 4,
                kinds: [0, 3, 0, 1, 0, 0, 0, 0],
                kind_segs: [0, 3, 0, 1, 0, 0, 0, 0],
                timer_kinds: [0, 3, 0, 1, 0, 0, 0, 0],
                timer_segs: [0, 3, 0, 1, 0, 0, 0, 0],
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let mut drops = DropTally::default();
    for _ in 0..4 {
        drops.add(&dropped_at_the_peers_input());
    }
    drops.add(&ingress_drop(
        ("198.18.0.2", 5001),
        ("198.18.0.1", 40000),
        "QUEUE_PURGE",
        Layer::Socket,
        0,
        "tcp",
    ));
    let bundle = one_second(&window, &drops);
    for wrong in ["inbound_ack_loss", "drops_socket_queue_purge"] {
        assert!(
            !ids(&bundle).contains(&wrong),
            "{wrong}: {:?}",
            ids(&bundle)
        );
    }
    let f = finding(&bundle, "outbound_loss");
    assert_eq!((f.direction, f.layer), ("egress", "netfilter"));
    assert_eq!(
        f.evidence["events"]["causes"][0],
        "4 retransmitted segments of 198.18.0.1:40000 > 198.18.0.2:5001 ← its segments dropped by the netfilter layer (NETFILTER_DROP, 4 drops) on the way in, in netns 99"
    );
    assert!(f.fix.contains("nft list ruleset"), "{}", f.fix);
    let row = &bundle.flows[0];
    assert_eq!(row.drops.len(), 1, "{row:?}");
    assert_eq!((row.drops[0].packets, row.drops[0].netns), ("sent", 99));
}

/// One of the flow's segments dropped by the peer's INPUT chain, in the peer's namespace 99.
fn dropped_at_the_peers_input() -> Drop {
    let mut drop = ingress_drop(
        ("198.18.0.1", 40000),
        ("198.18.0.2", 5001),
        "NETFILTER_DROP",
        Layer::Netfilter,
        1,
        "tcp",
    );
    drop.netns = 99;
    if let Some(flow) = drop.flow.as_mut() {
        flow.netns = 99;
    }
    drop
}
