//! The bundle from typed fixtures: rules, rows, steering, reconciliation and fixes.

mod causes;
mod connect;
mod fixes;
mod reconcile;
mod rules;
mod steering;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use netprobe_common::{
    vocab::{Direction, Layer},
    Flow, FlowKey, ReceiveTotals, RetransmitTotals,
};

use super::{steering::steering, *};
use crate::{
    kernel::{
        btf::DropReasons,
        loader::{
            catalogue::{
                DROP_HOOK, RECEIVE_HOOK, RETRANSMIT_HOOK, RTO_TIMER_HOOK, SOCK_STATE_HOOK,
                SOFTIRQ_ENTRY_HOOK, SOFTIRQ_EXIT_HOOK, SYNACK_HOOK,
            },
            KernelTotals,
        },
    },
    model::{
        self,
        event::{Drop, Stamp},
        flow::Endpoint,
        tally::DropTally,
        window::{SoftnetDeltas, Window, WindowInputs},
    },
    report::{model as report_model, procfs::Counters, sample::Snapshot},
};

pub(super) fn snapshot(at: Instant, counters: &[(&str, &str, i64)]) -> Snapshot {
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
        sockets: None,
    }
}

/// A flow between two test addresses (198.18.0.`local` and 198.18.0.`remote`).
pub(super) fn flow(local: u8, sport: u16, remote: u8, dport: u16) -> Flow {
    Flow::ipv4([198, 18, 0, local], sport, [198, 18, 0, remote], dport)
}

/// netprobe's own namespace in these fixtures.
pub(super) const OWN: u32 = 7;

/// Every hook a reconciliation row can depend on, active (or the one named, inactive).
pub(super) fn hooks_with_inactive(
    inactive: Option<&str>,
) -> Vec<crate::kernel::loader::HookStatus> {
    [
        RETRANSMIT_HOOK.id,
        SOCK_STATE_HOOK.id,
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
        } else if hook == RETRANSMIT_HOOK.id {
            format!("attached; {}", crate::kernel::loader::OUTCOMES_CLASSIFIED)
        } else {
            "attached".into()
        },
        verified_insns: None,
        load_ms: None,
    })
    .collect()
}

pub(super) fn window_of(
    totals: &KernelTotals,
    reasons: &DropReasons,
    softnet: &SoftnetDeltas,
) -> Window {
    Window::build(
        totals,
        WindowInputs {
            hooks: hooks_with_inactive(None),
            ..WindowInputs::quiet(reasons, softnet)
        },
        &mut |_| None,
    )
}

/// A drop in `OWN`, on the way in, classified (`src`/`dst`: address, port).
pub(super) fn ingress_drop(
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
        old_sequence: false,
    }
}

/// The final bundle of a one-second window in `OWN`, with the counter report of the same
/// window (its rules not run).
pub(super) fn bundle_of(
    window: &Window,
    drops: &DropTally,
    before: &Snapshot,
    after: &Snapshot,
) -> FindingsJson {
    let report = report_model::build(before, after, "test".into());
    bundle_with(window, drops, before, after, report)
}

/// The same with a given counter report.
pub(super) fn bundle_with(
    window: &Window,
    drops: &DropTally,
    before: &Snapshot,
    after: &Snapshot,
    report: Report,
) -> FindingsJson {
    build(bundle_inputs(window, drops, before, after, report))
}

/// What [`bundle_with`] builds from, for tests that change one input.
pub(super) fn bundle_inputs<'a>(
    window: &'a Window,
    drops: &'a DropTally,
    before: &'a Snapshot,
    after: &'a Snapshot,
    report: Report,
) -> Inputs<'a> {
    Inputs {
        window,
        drops,
        report,
        counters_before: &before.counters,
        counters_now: &after.counters,
        net_rx_before: &before.net_rx,
        net_rx_now: &after.net_rx,
        own_netns: OWN,
        filtered: false,
        drops_name_their_socket: true,
        is_final: true,
        window_s: 1.0,
        top: 5,
    }
}

/// The final bundle of a one-second `window` with netprobe in `own` and no counter growth:
/// for other modules' tests of what the rules make of their windows.
pub(crate) fn bundle_for_window(window: &Window, drops: &DropTally, own: u32) -> FindingsJson {
    let now = Instant::now();
    let (before, after) = (
        snapshot(now, &[]),
        snapshot(now + Duration::from_secs(1), &[]),
    );
    let report = report_model::build(&before, &after, "test".into());
    build(Inputs {
        own_netns: own,
        ..bundle_inputs(window, drops, &before, &after, report)
    })
}
