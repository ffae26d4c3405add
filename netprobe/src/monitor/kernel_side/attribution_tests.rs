use netprobe_common::{Flow as RawFlow, AF_INET, DROP_HAS_DEV, DROP_HAS_SOCK, KIND_FAST, KIND_RTO};

use super::*;
use crate::kernel::btf::DropReasons;
use netprobe_common::DropSiteKey;

const OWN: u32 = 0xf000_0001;
const OTHER: u32 = 0xf000_0002;

fn names() -> SiteNames {
    let reasons = DropReasons::from_pairs(
        &[
            (3, "SOCKET_RCVBUFF"),
            (5, "CPU_BACKLOG"),
            (7, "QUEUE_PURGE"),
            (9, "NETFILTER_DROP"),
        ],
        &[],
    );
    let kallsyms = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/kallsyms.monitor"
    ));
    SiteNames::new(reasons, kallsyms)
}

fn site(reason: u32, location: u64, netns: u32) -> DropSiteKey {
    DropSiteKey {
        reason,
        netns,
        location,
        // No device in a namespace the test has: the interface is never looked up in sysfs.
        ifindex: 0,
        skb_iif: 2,
        flags: DROP_HAS_SOCK,
        _pad0: [0; 7],
    }
}

fn flow(netns: u32, sport: u16) -> FlowKey {
    let mut raw = RawFlow {
        family: AF_INET,
        sport,
        dport: 5001,
        ..RawFlow::default()
    };
    raw.saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
    raw.daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
    FlowKey {
        flow: raw,
        netns,
        _pad0: 0,
    }
}

fn totals(segs: u64, failed: u64, rto: u32, fast: u32) -> RetransmitTotals {
    let mut t = RetransmitTotals {
        segs,
        failed_counted_segs: failed,
        ..RetransmitTotals::default()
    };
    t.kind_segs[KIND_RTO as usize] = rto;
    t.kind_segs[KIND_FAST as usize] = fast;
    t
}

fn context<'a>(softnet: &'a [CpuCount], live: &'a LiveValues) -> Context<'a> {
    Context {
        own_netns: OWN,
        softnet_dropped: softnet,
        live,
    }
}

/// Per-CPU growth: an existing site counts what it grew by, a new one all it has; the
/// headline leaves a socket's teardown out.
#[test]
fn drops_grow_per_cpu_and_teardown_is_no_loss() {
    let rcvbuf = site(3, 0xffff_ffff_8100_0010, OWN);
    let purge = site(7, 0xffff_ffff_8400_0004, OWN);
    let before = KernelSample {
        sites: [(rcvbuf, vec![10, 5])].into(),
        ..KernelSample::default()
    };
    let after = KernelSample {
        sites: [(rcvbuf, vec![10, 45]), (purge, vec![500, 0])].into(),
        ..KernelSample::default()
    };
    let live = LiveValues::default();
    let a = between(&before, &after, &mut names(), &context(&[], &live));
    let summary: Vec<(&str, u32, u64, DropRole)> = a
        .drops
        .iter()
        .map(|r| (r.reason.as_str(), r.cpu, r.count, r.role))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("QUEUE_PURGE", 0, 500, DropRole::Teardown),
            ("SOCKET_RCVBUFF", 1, 40, DropRole::Loss)
        ]
    );
    assert_eq!(a.kernel_drops(), 40);
    assert_eq!(a.top_drop_reason(), Some(("SOCKET_RCVBUFF", 40)));
    assert_eq!(a.top_drop_cpu(), Some((1, 40)));
    let row = &a.drops[1];
    assert_eq!(
        (row.layer, row.direction),
        (Layer::Socket, Direction::Ingress)
    );
    assert_eq!(row.location, "__udp_enqueue_schedule_skb+0x10");
    assert_eq!(
        a.detail(Column::UdpRcvbuf).as_deref(),
        Some("SOCKET_RCVBUFF 40 on CPU 1")
    );
    // No drop of a column's kind: no detail, rather than a wrong one.
    assert_eq!(a.detail(Column::Qdisc), None);
    assert!(a.backlog.is_none());
}

/// Only the monitor's namespace counts in `retrans_segs` (RetransSegs is per namespace);
/// segments refused after counting are in it, the kinds are the sent ones; a flow new in
/// the interval counts in full.
#[test]
fn retransmits_are_the_namespace_s_with_kinds_and_busiest_flow() {
    let (mine, new, theirs) = (flow(OWN, 40000), flow(OWN, 40001), flow(OTHER, 40002));
    let before = KernelSample {
        flows: [(mine, totals(10, 0, 4, 6)), (theirs, totals(1, 0, 1, 0))].into(),
        ..KernelSample::default()
    };
    let after = KernelSample {
        flows: [
            (mine, totals(30, 2, 4, 26)),
            (new, totals(3, 0, 3, 0)),
            (theirs, totals(100, 0, 100, 0)),
        ]
        .into(),
        ..KernelSample::default()
    };
    let live = LiveValues::default();
    let a = between(&before, &after, &mut names(), &context(&[], &live));
    assert_eq!(a.retrans_segs, 22 + 3);
    assert_eq!(
        a.by_kind,
        vec![(RetransmitKind::Rto, 3), (RetransmitKind::Fast, 20)]
    );
    assert_eq!(
        a.top_flows,
        vec![
            FlowSegs {
                flow: "198.18.0.1:40000 > 198.18.0.2:5001".into(),
                segs: 22
            },
            FlowSegs {
                flow: "198.18.0.1:40001 > 198.18.0.2:5001".into(),
                segs: 3
            }
        ]
    );
}

/// CPU 1's backlog overflowed (softnet_stat) while CPU 0 enqueued (the drop hook): steered,
/// so the fix turns the backlog and the steering; the same CPU on both sides is not steered.
#[test]
fn backlog_names_both_sides_and_the_steering_only_when_steered() {
    let mut backlog_site = site(5, 0xffff_ffff_8200_0020, OTHER);
    backlog_site.flags = DROP_HAS_DEV;
    backlog_site.ifindex = 4;
    let after = KernelSample {
        sites: [(backlog_site, vec![500, 0])].into(),
        ..KernelSample::default()
    };
    let live = LiveValues {
        netdev_max_backlog: Some(8),
        cpus: crate::model::cpuset::CpuSet::first(2),
        ..LiveValues::default()
    };
    let overflowed = [CpuCount { cpu: 1, count: 500 }];
    let a = between(
        &KernelSample::default(),
        &after,
        &mut names(),
        &context(&overflowed, &live),
    );
    let detail = a.detail(Column::Softirq).unwrap();
    assert!(
        detail.starts_with("CPU 1 backlog full, enqueued from CPU 0; fix: sysctl -w net.core.netdev_max_backlog=1000")
            && detail.contains("spread the steering"),
        "{detail}"
    );
    assert_eq!(a.drops[0].interface.as_deref(), Some("ifindex 4"));
    assert!(!a.drops[0].own_netns);

    let same_cpu = [CpuCount { cpu: 0, count: 500 }];
    let a = between(
        &KernelSample::default(),
        &after,
        &mut names(),
        &context(&same_cpu, &live),
    );
    let detail = a.detail(Column::Softirq).unwrap();
    assert!(
        detail.starts_with("CPU 0 backlog full, enqueued from CPU 0; fix: "),
        "{detail}"
    );
    assert!(!detail.contains("steering"), "{detail}");
}

/// A site that did not fit the table is counted by reason, and the interval says so.
#[test]
fn a_full_table_still_counts_by_reason_and_says_so() {
    let before = KernelSample {
        reasons_only: [(9, vec![1, 0])].into(),
        site_table_full: 1,
        ..KernelSample::default()
    };
    let after = KernelSample {
        reasons_only: [(9, vec![1, 6])].into(),
        site_table_full: 7,
        ..KernelSample::default()
    };
    let live = LiveValues::default();
    let a = between(&before, &after, &mut names(), &context(&[], &live));
    let row = &a.drops[0];
    assert_eq!(
        (row.reason.as_str(), row.cpu, row.count),
        ("NETFILTER_DROP", 1, 6)
    );
    // Its namespace is unknown: listed, never in the namespace's headline.
    assert!(!row.own_netns);
    assert_eq!(a.top_drop_reason(), None);
    assert_eq!(
        a.notes,
        vec!["kernel table full: 6 drop sites (counted by reason only)"]
    );
}
