//! Reconciliation rows that cannot be held to their relation say why.

use super::*;

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

/// Duplicates after a FIN: `tcp_probe` does not see them, the kernel counts them in
/// DelayedACKLost as it drops them (TCP_OLD_DATA, TCP_OLD_SEQUENCE), so the row adds those
/// drops of sockets past ESTABLISHED, and only those.
#[test]
fn duplicates_after_a_fin_come_from_the_drops_of_closing_sockets() {
    use netprobe_common::vocab::TcpState;
    let now = Instant::now();
    // Two duplicates on an established socket, seen by tcp_probe.
    let mut totals = KernelTotals::default();
    totals.receive_flows.push((
        FlowKey {
            flow: flow(2, 5001, 1, 40000),
            netns: OWN,
            _pad0: 0,
        },
        ReceiveTotals {
            duplicate: 2,
            ..Default::default()
        },
    ));
    let window = window_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
    let drop_in = |reason: &str, state: TcpState| {
        let mut d = ingress_drop(
            ("198.18.0.1", 40000),
            ("198.18.0.2", 5001),
            reason,
            Layer::Tcp,
            0,
            "tcp",
        );
        d.socket_state = Some(state.raw());
        d
    };
    let mut tally = DropTally::default();
    tally.add(&drop_in("TCP_OLD_DATA", TcpState::CloseWait));
    tally.add(&drop_in("TCP_OLD_SEQUENCE", TcpState::FinWait2));
    // Linux 6.1: one reason for stale and beyond-window segments; the kernel side marks the
    // stale one.
    let mut stale = drop_in("TCP_INVALID_SEQUENCE", TcpState::FinWait1);
    stale.old_sequence = true;
    tally.add(&stale);
    tally.add(&drop_in("TCP_INVALID_SEQUENCE", TcpState::FinWait1));
    // Already counted by tcp_probe (established), or not a duplicate at all.
    tally.add(&drop_in("TCP_OLD_DATA", TcpState::Established));
    tally.add(&drop_in("TCP_OFO_DROP", TcpState::CloseWait));
    tally.add(&drop_in("TCP_OLD_DATA", TcpState::TimeWait));
    assert_eq!(tally.late_duplicates.get(&OWN), Some(&3));

    let before = snapshot(now, &[]);
    let after = snapshot(
        now + Duration::from_secs(1),
        &[("TcpExt", "DelayedACKLost", 5)],
    );
    let row = |bundle: &FindingsJson| {
        bundle
            .reconciliation
            .iter()
            .find(|r| r.what == "duplicate segments received (this namespace)")
            .unwrap()
            .clone()
    };
    let dup = row(&bundle_of(&window, &tally, &before, &after));
    assert_eq!((dup.events, dup.counters), (5, 5), "{dup:?}");
    assert!(dup.must_match && dup.matches, "{dup:?}");

    // Without rx_sk those drops name no socket: the row says so instead of asserting.
    let report = report_model::build(&before, &after, "test".into());
    let mut inputs_without = bundle_inputs(&window, &tally, &before, &after, report);
    inputs_without.drops_name_their_socket = false;
    let dup = row(&build(inputs_without));
    assert!(!dup.must_match, "{dup:?}");
    assert!(dup
        .not_exact_because
        .as_deref()
        .unwrap()
        .contains("no rx_sk argument"));
}
