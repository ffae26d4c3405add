//! The summary from typed kernel totals: JSON and text.

use netprobe_common::{
    Flow, FlowKey, NonNetworkKey, ReceiveTotals, RetransmitTotals, COUNTER_DROP_LOST,
    COUNTER_DROP_SEEN, COUNTER_NON_NETWORK_TABLE_FULL, COUNTER_RETRANSMIT_LOST,
    COUNTER_RETRANSMIT_SEEN,
};

use super::*;
use crate::{
    kernel::{
        btf::DropReasons,
        kallsyms::Symbolizer,
        loader::{KernelTotals, DROP_PROGRAM},
    },
    model::window::{SoftnetDeltas, Streamed, WindowInputs},
};

#[test]
fn per_cpu_receive_work_beside_softnet() {
    use netprobe_common::{NapiTotals, NetRxTotals};
    let totals = KernelTotals {
        net_rx: vec![
            NetRxTotals {
                runs: 10,
                total_ns: 5_000_000,
                max_ns: 900_000,
            },
            NetRxTotals::default(),
        ],
        napi: vec![
            (
                "(no_device)".into(),
                vec![
                    NapiTotals {
                        polls: 12,
                        full_budget: 2,
                        work: 300,
                    },
                    NapiTotals::default(),
                ],
            ),
            (
                "eth0".into(),
                vec![
                    NapiTotals {
                        polls: 3,
                        full_budget: 0,
                        work: 9,
                    },
                    NapiTotals::default(),
                ],
            ),
        ],
        ..Default::default()
    };
    let softnet: SoftnetDeltas = [(0, (1, 0)), (1, (0, 0)), (3, (0, 7))].into();
    let s_w = Window::build(
        &totals,
        WindowInputs {
            duration_ms: 10,
            ..WindowInputs::quiet(&DropReasons::default(), &softnet)
        },
        &mut |_| None,
    );
    let s = SummaryJson::new(&s_w);
    assert_eq!(
        s.cpus.len(),
        2,
        "idle CPU 1 and 2 left out, CPU 3 has backlog drops"
    );
    let c0 = &s.cpus[0];
    assert_eq!(
        (c0.net_rx_runs, c0.net_rx_total_ns, c0.net_rx_max_ns),
        (10, 5_000_000, 900_000)
    );
    assert_eq!(
        (c0.napi_polls, c0.napi_full_budget, c0.time_squeeze),
        (15, 2, 1)
    );
    assert_eq!(
        c0.napi[0],
        NapiDevice {
            dev: "(no_device)",
            polls: 12,
            full_budget: 2,
            packets: 300
        }
    );
    assert_eq!((s.cpus[1].cpu, s.cpus[1].backlog_dropped), (3, 7));
    assert!(text(&s_w, 5).contains("cpu0: NET_RX 10 runs, 5.0 ms (max 900 µs); NAPI (no_device) 12 polls/2 full, eth0 3 polls/0 full; softnet time_squeeze +1"), "{}", text(&s_w, 5));
}

#[test]
fn backlog_drops_from_both_sides() {
    let reasons = DropReasons::from_pairs(&[(71, "CPU_BACKLOG"), (3, "NO_SOCKET")], &[]);
    let totals = KernelTotals {
        reasons: vec![(71, vec![40, 0]), (3, vec![5, 5])],
        ..Default::default()
    };
    // Enqueued from CPU 0, overflowed on CPU 1.
    let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (3, 40))].into();
    let s_w = Window::build(
        &totals,
        WindowInputs {
            duration_ms: 10,
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |_| None,
    );
    let s = SummaryJson::new(&s_w);
    assert_eq!(
        s.backlog,
        BacklogSummary {
            drop_events: 40,
            softnet_dropped: 40,
            must_match: true,
            not_exact_because: None,
            overflowing_cpus: vec![CpuCount { cpu: 1, count: 40 }],
            enqueuing_cpus: vec![CpuCount { cpu: 0, count: 40 }],
        }
    );
    assert!(
        text(&s_w, 5).contains(
            "backlog: 40 drops (softnet_stat: 40); overflowed on cpu1=40; enqueued from cpu0=40"
        ),
        "{}",
        text(&s_w, 5)
    );

    // A skipped drop hook may have missed some of them: no longer an exact match.
    let skipped_w = Window::build(
        &totals,
        WindowInputs {
            duration_ms: 10,
            kernel_skipped: vec![
                (DROP_PROGRAM, 1),
                (crate::kernel::loader::catalogue::NAPI_HOOK.program, 5),
            ],
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |_| None,
    );
    let skipped = SummaryJson::new(&skipped_w);
    assert!(!skipped.backlog.must_match);
    assert_eq!(
        skipped.backlog.not_exact_because,
        Some("the kernel skipped the drop hook 1 times (another BPF program was running on that CPU)")
    );
    assert!(
        text(&skipped_w, 5).contains("not exact: the kernel skipped"),
        "{}",
        text(&skipped_w, 5)
    );
}

#[test]
fn totals_by_flow_reason_and_cpu_with_loss() {
    let flow = Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001);
    let totals = KernelTotals {
        counters: vec![
            (COUNTER_RETRANSMIT_SEEN, "retransmit_seen", 12),
            (COUNTER_RETRANSMIT_LOST, "retransmit_lost", 2),
            (COUNTER_DROP_SEEN, "drop_seen", 10),
            (COUNTER_DROP_LOST, "drop_lost", 1),
        ],
        flows: vec![(
            FlowKey {
                flow,
                netns: 7,
                _pad0: 0,
            },
            RetransmitTotals {
                sent: 11,
                segs: 13,
                bytes: 15000,
                sock_ino: 99,
                failed_counted: 2,
                failed_counted_segs: 3,
                failed_busy_segs: 1,
                aborted: 4,
                aborted_segs: 4,
                kinds: [0, 2, 9, 1, 0, 0, 0, 0],
                kind_segs: [0, 2, 10, 1, 0, 0, 0, 0],
                timer_kinds: [0, 1, 0, 1, 0, 0, 0, 0],
                timer_segs: [0, 1, 0, 1, 0, 0, 0, 0],
                failed_kinds: [0, 0, 2, 0, 0, 0, 0, 0],
                failed_causes: [1, 1, 0, 0],
                ..Default::default()
            },
        )],
        reasons: vec![(12, vec![4, 3]), (3, vec![0, 3])],
        receive_flows: vec![(
            FlowKey {
                flow: Flow {
                    sport: 5001,
                    dport: 40000,
                    ..flow
                },
                netns: 8,
                _pad0: 0,
            },
            ReceiveTotals {
                duplicate: 1,
                fills_hole: 3,
                fills_hole_bytes: 4344,
                out_of_order: 9,
                holes: 2,
                hole_bytes: 2896,
                sock_ino: 99,
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let reasons = DropReasons::from_pairs(&[(12, "NETFILTER_DROP"), (3, "NO_SOCKET")], &[]);
    let softnet = SoftnetDeltas::new();
    let s_w = Window::build(
        &totals,
        WindowInputs {
            streamed: Streamed {
                retransmits: 10,
                drops: 9,
                receives: 4,
                decode_errors: 0,
            },
            duration_ms: 1500,
            kernel_skipped: vec![(DROP_PROGRAM, 0)],
            duplicates_after_fin: 3,
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |ino| {
            (ino == 99).then(|| Owner {
                pid: 5,
                comm: "app".into(),
            })
        },
    );
    let s = SummaryJson::new(&s_w);
    assert_eq!(
        (s.retransmits.sent, s.retransmits.failed, s.retransmits.segs),
        (11, 6, 13)
    );
    // Outcomes apart: kinds count only what was sent; the failed attempts by outcome, cause
    // and kind, with the -EBUSY segments TCPRetransFail leaves out.
    let outcomes = serde_json::to_value(&s.retransmits.flows[0].outcomes).unwrap();
    assert_eq!(
        outcomes,
        serde_json::json!({
            "sent": {"attempts": 11, "segs": 13},
            "failed_after_counted": {"attempts": 2, "segs": 3, "busy_segs": 1,
                "by_cause": {"netfilter": 1, "qdisc": 1}, "by_kind": {"fast": 2}},
            "aborted": {"attempts": 4, "segs": 4},
            "unclassified": {"attempts": 0, "segs": 0},
        })
    );
    assert_eq!(s.retransmits.outcomes, s.retransmits.flows[0].outcomes);
    assert_eq!(s.retransmits.flows[0].saddr, "198.18.0.1");
    assert_eq!(
        s.retransmits.flows[0].kind_detail["rto"],
        KindDetail {
            segs: 2,
            timer: 1,
            timer_segs: 1
        }
    );
    assert_eq!(s.retransmits.flows[0].kind_detail["fast"].segs, 10);
    // The receive side: totals, the flow from the receiving socket, its owner.
    let r = &s.received;
    assert_eq!(
        (
            r.totals.duplicate,
            r.totals.fills_hole,
            r.totals.fills_hole_bytes,
            r.totals.out_of_order,
            r.totals.holes
        ),
        (1, 3, 4344, 9, 2)
    );
    assert_eq!(
        (
            r.flows[0].sport,
            r.flows[0].netns,
            r.flows[0].owner.as_ref().map(|o| o.pid)
        ),
        (5001, 8, Some(5))
    );
    assert_eq!(
        s.retransmits.flows[0].kinds,
        BTreeMap::from([("rto", 2), ("fast", 9), ("tlp", 1)])
    );
    assert_eq!(
        s.retransmits.by_kind,
        BTreeMap::from([("rto", 2), ("fast", 9), ("tlp", 1)])
    );
    assert_eq!(
        s.retransmits.flows[0].owner,
        Some(&Owner {
            pid: 5,
            comm: "app".into()
        })
    );
    assert_eq!(s.drops.total, 10);
    assert_eq!(s.drops.by_reason[0].reason, "NETFILTER_DROP");
    assert_eq!(s.drops.by_reason[0].count, 7);
    assert_eq!(
        s.drops
            .by_cpu
            .iter()
            .map(|c| (c.cpu, c.count))
            .collect::<Vec<_>>(),
        vec![(0, 4), (1, 6)]
    );
    assert_eq!(
        s.events.retransmit,
        KindAccountingJson {
            counted: 12,
            streamed: Some(10),
            lost: Some(2),
            sampled_out: Some(0)
        }
    );
    assert_eq!(s.events_lost, 3);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["received"]["duplicate_after_fin"], 3);
    assert_eq!(json["received"]["duplicate"], 1, "established ones apart");
    assert!(
        text(&s_w, 5).contains("and 3 duplicates after a FIN"),
        "{}",
        text(&s_w, 5)
    );
    let text = text(&s_w, 5);
    assert!(text.contains("3 events lost"), "{text}");
    assert!(text.contains("11 sent (13 segments"), "{text}");
}

/// Non-network frees: in their own table, named like drops, beside the drops and never in
/// them; an empty table when there are none.
#[test]
fn non_network_frees_apart_from_the_drops() {
    let key = |reason, location| NonNetworkKey {
        reason,
        _pad0: 0,
        location,
    };
    let totals = KernelTotals {
        counters: vec![(COUNTER_NON_NETWORK_TABLE_FULL, "non_network_table_full", 2)],
        reasons: vec![(12, vec![4, 0])],
        non_network: vec![
            (key(2, 0xffff_ffff_8212_fb90), 3),
            (key(4, 0xffff_ffff_8212_cc10), 20),
        ],
        ..Default::default()
    };
    let reasons = DropReasons::from_pairs(
        &[
            (2, "NOT_SPECIFIED"),
            (4, "SOCKET_CLOSE"),
            (12, "NETFILTER_DROP"),
        ],
        &[],
    );
    let symbols = Symbolizer::parse(
        "ffffffff8212cbe0 t unix_release_sock\nffffffff8212fb50 t unix_stream_connect\n",
    );
    let softnet = SoftnetDeltas::new();
    let w = Window::build(
        &totals,
        WindowInputs {
            symbols: &symbols,
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |_| None,
    );
    let json = serde_json::to_value(SummaryJson::new(&w)).unwrap();
    assert_eq!(
        json["non_network"],
        serde_json::json!({
            "total": 23,
            "by_reason": [
                {"reason": "SOCKET_CLOSE", "code": 4, "location": "unix_release_sock+0x30", "count": 20},
                {"reason": "NOT_SPECIFIED", "code": 2, "location": "unix_stream_connect+0x40", "count": 3},
            ]
        })
    );
    assert_eq!(
        json["drops"]["total"], 4,
        "the drops are the network ones only"
    );
    assert_eq!(json["events"]["non_network_table_full"], 2);
    let top_one = text(&w, 1);
    assert!(
        top_one.contains(
            "non-network frees (unix-domain, netlink… skbs; not drops): 23; 20 SOCKET_CLOSE at unix_release_sock+0x30\n"
        ),
        "top 1 only: {top_one}"
    );
    assert!(
        top_one.contains("2 non-network frees from theirs"),
        "{top_one}"
    );

    // None: still there, empty.
    let quiet = Window::build(
        &KernelTotals::default(),
        WindowInputs::quiet(&reasons, &softnet),
        &mut |_| None,
    );
    let json = serde_json::to_value(SummaryJson::new(&quiet)).unwrap();
    assert_eq!(
        json["non_network"],
        serde_json::json!({"total": 0, "by_reason": []})
    );
    assert!(
        text(&quiet, 5).contains("non-network frees (unix-domain, netlink… skbs; not drops): 0\n"),
        "{}",
        text(&quiet, 5)
    );
}
