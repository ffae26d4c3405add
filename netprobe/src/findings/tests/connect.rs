//! `connect_failures`: handshakes whose SYNs were sent again and never completed, against
//! those that completed late, and the flows' losing direction.

use super::*;

/// A client flow (198.18.0.1:`sport` → 198.18.0.2:7000) that sent `syns` SYNs again, with how
/// its handshakes ended.
fn syn_flow(sport: u16, syns: u32, completed: u32, failed: u32) -> (FlowKey, RetransmitTotals) {
    let mut kinds = [0; 8];
    kinds[netprobe_common::KIND_SYN as usize] = syns;
    (
        FlowKey {
            flow: flow(1, sport, 2, 7000),
            netns: OWN,
            _pad0: 0,
        },
        RetransmitTotals {
            sent: syns as u64,
            segs: syns as u64,
            kinds,
            kind_segs: kinds,
            timer_kinds: kinds,
            timer_segs: kinds,
            handshakes_completed: completed,
            handshakes_failed: failed,
            ..Default::default()
        },
    )
}

/// The bundle of a window with these flows and these drops, its counters quiet.
fn bundle_for(flows: Vec<(FlowKey, RetransmitTotals)>, drops: &DropTally) -> FindingsJson {
    let totals = KernelTotals {
        flows,
        ..Default::default()
    };
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let now = Instant::now();
    let (before, after) = (
        snapshot(now, &[]),
        snapshot(now + Duration::from_secs(1), &[]),
    );
    bundle_of(&window, drops, &before, &after)
}

/// A SYN from 198.18.0.1:`sport` to port 7000 dropped by a firewall in netns 99.
fn syn_dropped_at_the_server(sport: u16) -> Drop {
    let mut drop = ingress_drop(
        ("198.18.0.1", sport),
        ("198.18.0.2", 7000),
        "NETFILTER_DROP",
        Layer::Netfilter,
        1,
        "tcp",
    );
    drop.netns = 99;
    if let Some(f) = drop.flow.as_mut() {
        f.netns = 99;
    }
    drop
}

#[test]
fn unanswered_syns_are_connect_failures_with_where_they_die() {
    let mut drops = DropTally::default();
    for sport in [40001, 40001, 40002, 40002, 40003, 40004] {
        drops.add(&syn_dropped_at_the_server(sport));
    }
    // Three failed, one still waiting, one completed on its retransmit.
    let bundle = bundle_for(
        vec![
            syn_flow(40001, 2, 0, 1),
            syn_flow(40002, 2, 0, 1),
            syn_flow(40003, 1, 0, 1),
            syn_flow(40004, 1, 0, 0),
            syn_flow(40005, 1, 1, 0),
        ],
        &drops,
    );
    let f = bundle
        .findings
        .iter()
        .find(|f| f.id == "connect_failures")
        .expect("connect_failures");
    assert_eq!((f.severity, f.netns), ("critical", OWN));
    assert_eq!((f.direction, f.layer), ("egress", "netfilter"));
    let events = &f.evidence["events"];
    assert_eq!(events["flows"], 4);
    assert_eq!(
        (events["failed"].as_u64(), events["pending"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        events["syn_retransmits"], 6,
        "the late one's is not a failure's"
    );
    assert_eq!(events["completed_after_retransmit"], 1);
    assert_eq!(events["syn_drops"][0]["netns"], 99);
    assert_eq!(events["syn_drops"][0]["reason"], "NETFILTER_DROP");
    // The late connection's first SYN was dropped too, but it is no failure: not counted.
    assert_eq!(events["syn_drops"][0]["drops"], 6);
    assert!(
        f.summary.contains("3 attempts failed, 1 still waiting"),
        "{}",
        f.summary
    );
    assert!(
        f.summary
            .contains("dropped in netns 99 at the netfilter layer"),
        "{}",
        f.summary
    );
    assert!(f.fix.contains("nft list ruleset"), "{}", f.fix);
    assert_eq!(f.flows.len(), 4);
    assert!(
        !f.flows.iter().any(|p| p.contains(":40005")),
        "{:?}",
        f.flows
    );
    assert!(
        f.flows.iter().all(|p| p.starts_with("198.18.0.1:")),
        "as the SYNs travelled"
    );
    for wrong in ["outbound_loss", "inbound_ack_loss"] {
        assert!(!bundle.findings.iter().any(|f| f.id == wrong), "{wrong}");
    }
    for row in &bundle.flows {
        let (direction, end) = if row.local.ends_with(":40005") {
            ("outbound (handshake, completed)", "completed")
        } else if row.local.ends_with(":40004") {
            ("outbound (handshake)", "pending")
        } else {
            ("outbound (handshake)", "failed")
        };
        assert_eq!(
            (row.losing_direction, row.handshake),
            (direction, Some(end))
        );
    }
}

#[test]
fn a_handshake_completed_after_a_syn_retransmit_is_no_failure() {
    let bundle = bundle_for(vec![syn_flow(40005, 1, 1, 0)], &DropTally::default());
    assert!(
        !bundle.findings.iter().any(|f| f.id == "connect_failures"),
        "{:?}",
        bundle.findings
    );
    assert_eq!(
        bundle.flows[0].losing_direction,
        "outbound (handshake, completed)"
    );
}

/// SYNs still unanswered at the bundle's time, no drop of them seen: a warning that names no
/// layer, and a fix that sends the reader to the peer's listener and the path.
#[test]
fn unanswered_syns_without_drops_name_no_layer() {
    let bundle = bundle_for(vec![syn_flow(40004, 1, 0, 0)], &DropTally::default());
    let f = bundle
        .findings
        .iter()
        .find(|f| f.id == "connect_failures")
        .expect("connect_failures");
    assert_eq!((f.severity, f.layer), ("warning", "unknown"));
    assert_eq!(f.evidence["events"]["syn_drops"], serde_json::json!([]));
    assert!(f.summary.contains("no drop of them seen"), "{}", f.summary);
    assert!(f.fix.contains("accept queue"), "{}", f.fix);
}

/// Flows with other retransmits and no SYN sent again are not about handshakes.
#[test]
fn data_retransmits_are_not_handshakes() {
    let (key, mut totals) = syn_flow(40006, 0, 0, 0);
    totals.sent = 2;
    totals.kinds[netprobe_common::KIND_RTO as usize] = 2;
    let bundle = bundle_for(vec![(key, totals)], &DropTally::default());
    assert!(!bundle.findings.iter().any(|f| f.id == "connect_failures"));
    assert_eq!(bundle.flows[0].handshake, None);
    assert_eq!(bundle.flows[0].losing_direction, "outbound");
}

/// Without the socket-state hook no handshake is seen to end: an unanswered SYN is neither
/// failed nor pending, and no failure is claimed.
#[test]
fn without_the_state_hook_a_handshake_end_is_unknown() {
    let totals = KernelTotals {
        flows: vec![syn_flow(40004, 2, 0, 0)],
        ..Default::default()
    };
    let (reasons, softnet) = (DropReasons::default(), SoftnetDeltas::new());
    let window = Window::build(
        &totals,
        WindowInputs {
            hooks: hooks_with_inactive(Some(SOCK_STATE_HOOK.id)),
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |_| None,
    );
    let now = Instant::now();
    let (before, after) = (
        snapshot(now, &[]),
        snapshot(now + Duration::from_secs(1), &[]),
    );
    let bundle = bundle_of(&window, &DropTally::default(), &before, &after);
    assert!(!bundle.findings.iter().any(|f| f.id == "connect_failures"));
    assert_eq!(bundle.flows[0].handshake, Some("unknown"));
    assert_eq!(bundle.flows[0].losing_direction, "outbound (handshake)");
}
