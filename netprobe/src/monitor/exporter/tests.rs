use std::time::{Duration, Instant};

use netprobe_common::vocab::{Direction, Layer};

use super::*;
use crate::{
    model::classify::DropRole,
    monitor::{
        counters::LinkState,
        delta::Readings,
        interval::{self, Context},
        kernel_side::attribution::{Backlog, CpuCount, DropRow, NetRxCpu},
        schedule::Timing,
    },
};

fn start(filter: Option<&str>, ebpf: bool) -> Exporter {
    Exporter::new(&Start {
        interface: "veth0",
        interface_filter: filter,
        hooks: if ebpf {
            vec![
                ("skb:kfree_skb".into(), true),
                ("tcp:tcp_receive_reset".into(), false),
            ]
        } else {
            Vec::new()
        },
        kernel_release: "6.18.0-test".into(),
    })
    .unwrap()
}

/// A sample with softnet_stat's two CPUs (dropped, time_squeeze) and RcvbufErrors.
fn sample(at: Instant, softnet: [(u64, u64); 2], rcvbuf: u64) -> Sample {
    let mut readings = Readings::default();
    readings.set(Column::UdpRcvbuf, "Udp/RcvbufErrors", rcvbuf);
    let mut time_squeeze = BTreeMap::new();
    for (cpu, (dropped, squeezed)) in softnet.into_iter().enumerate() {
        readings.set(Column::Softirq, format!("cpu{cpu}"), dropped);
        time_squeeze.insert(cpu as u32, squeezed);
    }
    Sample {
        at,
        link: LinkState {
            ifindex: Some(2),
            operstate: Some("up".into()),
            renamed_to: None,
        },
        readings,
        time_squeeze,
        nic: Default::default(),
        problems: Vec::new(),
    }
}

fn interval_between(before: &Sample, after: &Sample) -> Interval {
    interval::build(
        before,
        after,
        Context {
            timestamp: "2026-12-07 08:00:00".into(),
            iteration: 1,
            interface: "veth0",
            threshold: 100,
            period: Duration::from_secs(1),
            timing: Timing {
                late: Duration::ZERO,
                periods: 1,
            },
            stopped_by: None,
        },
    )
}

fn kernel(rcvbuf_drops: u64) -> Attribution {
    Attribution {
        drops: vec![DropRow {
            reason: "SOCKET_RCVBUFF".into(),
            layer: Layer::Socket,
            direction: Direction::Ingress,
            role: DropRole::Loss,
            cpu: 1,
            interface: Some("veth0".into()),
            own_netns: true,
            netns: 1,
            location: "__udp_enqueue_schedule_skb+0x10".into(),
            count: rcvbuf_drops,
        }],
        by_kind: vec![(RetransmitKind::Rto, 2)],
        backlog: Some(Backlog {
            overflowed: vec![CpuCount { cpu: 1, count: 3 }],
            enqueued: vec![CpuCount { cpu: 0, count: 3 }],
            fix: String::new(),
        }),
        net_rx: vec![NetRxCpu {
            cpu: 0,
            runs: 4,
            ms: 1500.0,
        }],
        events_lost: 1,
        peer_retransmits: (5, 7),
        ..Attribution::default()
    }
}

fn scrape(exporter: &Exporter) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &exporter.registry()).unwrap();
    text
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn intervals_add_up_since_start() {
    let mut exporter = start(None, true);
    let t0 = Instant::now();
    let s0 = sample(t0, [(10, 100), (20, 200)], 5);
    let s1 = sample(t0 + Duration::from_secs(1), [(10, 101), (23, 200)], 45);
    let s2 = sample(t0 + Duration::from_secs(2), [(10, 101), (23, 204)], 50);
    exporter.baseline(&s0);
    let text = scrape(&exporter);
    assert!(
        has(
            &text,
            r#"netprobe_cpu_backlog_drops_total{cpu="1",side="overflowed"} 0"#
        ),
        "{text}"
    );
    assert!(
        has(&text, r#"netprobe_net_rx_seconds_total{cpu="1"} 0.0"#),
        "{text}"
    );
    for (before, after, drops) in [(&s0, &s1, 40), (&s1, &s2, 5)] {
        let mut interval = interval_between(before, after);
        interval.kernel = Some(kernel(drops));
        exporter.record(&interval, before, after);
    }
    let text = scrape(&exporter);
    for line in [
        r#"netprobe_stack_drops_total{interface="veth0",category="udp_rcvbuf"} 45"#,
        r#"netprobe_stack_drops_total{interface="veth0",category="softirq"} 3"#,
        // Created at 0 from the start: a first drop is an increase, not a new series.
        r#"netprobe_stack_drops_total{interface="veth0",category="nic_rx"} 0"#,
        r#"netprobe_drops_total{reason="SOCKET_RCVBUFF",layer="socket",direction="ingress",netns="own"} 45"#,
        // Overflowed from softnet_stat (the samples), enqueued from the eBPF side.
        r#"netprobe_cpu_backlog_drops_total{cpu="1",side="overflowed"} 3"#,
        r#"netprobe_cpu_backlog_drops_total{cpu="0",side="overflowed"} 0"#,
        r#"netprobe_cpu_backlog_drops_total{cpu="0",side="enqueued"} 6"#,
        r#"netprobe_softnet_times_squeezed_total{cpu="0"} 1"#,
        r#"netprobe_softnet_times_squeezed_total{cpu="1"} 4"#,
        r#"netprobe_net_rx_seconds_total{cpu="0"} 3.0"#,
        r#"netprobe_tcp_retransmitted_segments_total{kind="rto"} 4"#,
        r#"netprobe_tcp_retransmitted_segments_total{kind="fast"} 0"#,
        "netprobe_events_lost_total 2",
        r#"netprobe_tcp_peer_retransmitted_segments_total{class="duplicate"} 10"#,
        r#"netprobe_tcp_peer_retransmitted_segments_total{class="fills_hole"} 14"#,
        r#"netprobe_hook_active{hook="skb:kfree_skb"} 1"#,
        r#"netprobe_hook_active{hook="tcp:tcp_receive_reset"} 0"#,
        r#"netprobe_build_info{version="0.1.0",kernel="6.18.0-test"} 1"#,
        "# UNIT netprobe_net_rx_seconds seconds",
        "# EOF",
    ] {
        assert!(has(&text, line), "no {line:?} in\n{text}");
    }
}

#[test]
fn metrics_interface_leaves_other_interfaces_out() {
    let mut exporter = start(Some("eth.*|bond0"), false);
    let t0 = Instant::now();
    let s0 = sample(t0, [(0, 0), (0, 0)], 5);
    let s1 = sample(t0 + Duration::from_secs(1), [(0, 0), (0, 0)], 9);
    exporter.record(&interval_between(&s0, &s1), &s0, &s1);
    let text = scrape(&exporter);
    assert!(!text.contains("netprobe_stack_drops_total{"), "{text}");
    // Host-wide series stay; without the eBPF side, no per-kind or NET_RX series.
    assert!(has(
        &text,
        r#"netprobe_softnet_times_squeezed_total{cpu="1"} 0"#
    ));
    assert!(
        !text.contains("netprobe_tcp_retransmitted_segments_total{"),
        "{text}"
    );
    assert!(!text.contains("netprobe_net_rx_seconds_total{"), "{text}");
    // Anchored: `veth` does not match `veth0`, `veth.` does.
    assert!(start(Some("veth"), false).interface.is_none());
    assert!(start(Some("veth."), false).interface.is_some());
}

#[test]
fn a_bad_regex_is_named() {
    let err = Exporter::new(&Start {
        interface: "eth0",
        interface_filter: Some("eth("),
        hooks: Vec::new(),
        kernel_release: String::new(),
    })
    .err()
    .expect("an unclosed group");
    assert!(
        err.to_string()
            .starts_with("--metrics-interface \"eth(\": "),
        "{err}"
    );
}
