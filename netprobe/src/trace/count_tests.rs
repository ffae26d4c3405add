//! Count mode's conversions, pure: sites → names → tally, the window's accounting, and the
//! findings built from a site tally.

use std::path::Path;

use netprobe_common::{
    vocab::{Direction, Layer},
    FlowKey, RetransmitTotals, COUNTER_DROP_SITE_TABLE_FULL, COUNTER_RETRANSMIT_SEEN,
};

use super::*;
use crate::{
    kernel::kallsyms::Symbolizer,
    model::{
        classify::DropRole,
        flow::Flow,
        sites::SiteName,
        tally::TallySource,
        window::{SoftnetDeltas, WindowInputs},
    },
};

/// The fixture's kallsyms: nf_hook_slow at 0xffffffff83000000, the UDP enqueue at
/// 0xffffffff81000000.
const NF_HOOK_SLOW: u64 = 0xffff_ffff_8300_0010;
const UDP_ENQUEUE: u64 = 0xffff_ffff_8100_0020;
const RECEIVER: u32 = 4_026_532_001;
const SENDER: u32 = 4_026_532_002;

/// A site with a socket and no device (received: `skb_iif` set), never looked up in sysfs.
fn test_site(reason: u32, netns: u32, location: u64) -> netprobe_common::DropSiteKey {
    netprobe_common::DropSiteKey {
        reason,
        netns,
        location,
        ifindex: 0,
        skb_iif: 2,
        flags: netprobe_common::DROP_HAS_SOCK,
        _pad0: [0; 7],
    }
}

fn reasons() -> DropReasons {
    DropReasons::from_pairs(
        &[
            (3, "SOCKET_RCVBUFF"),
            (5, "NO_SOCKET"),
            (9, "NETFILTER_DROP"),
        ],
        &[],
    )
}

fn names() -> SiteNames {
    let kallsyms = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/kallsyms.monitor"
    ));
    SiteNames::new(reasons(), kallsyms)
}

fn named(reason: &str, layer: Layer, netns: u32, per_cpu: Vec<u64>) -> SiteDrops {
    SiteDrops {
        site: SiteName {
            reason: reason.into(),
            location: "nf_hook_slow+0x10".into(),
            layer,
            direction: Direction::Ingress,
            role: DropRole::Loss,
        },
        netns,
        interface: None,
        per_cpu,
    }
}

#[test]
fn sites_are_named_classified_and_busiest_first() {
    let sites = vec![
        (test_site(3, RECEIVER, UDP_ENQUEUE), vec![2, 0]),
        (test_site(9, RECEIVER, NF_HOOK_SLOW), vec![4, 3]),
        // A site that has not dropped (yet): left out.
        (test_site(5, RECEIVER, UDP_ENQUEUE), vec![0, 0]),
    ];
    let named = names().name_all(&sites, SENDER);
    let summary: Vec<(&str, &str, Layer, Direction, u64)> = named
        .iter()
        .map(|s| {
            (
                s.site.reason.as_str(),
                s.site.location.as_str(),
                s.site.layer,
                s.site.direction,
                s.total(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "NETFILTER_DROP",
                "nf_hook_slow+0x10",
                Layer::Netfilter,
                Direction::Ingress,
                7
            ),
            (
                "SOCKET_RCVBUFF",
                "__udp_enqueue_schedule_skb+0x20",
                Layer::Socket,
                Direction::Ingress,
                2
            ),
        ]
    );
}

#[test]
fn a_site_tally_groups_by_key_with_cpus_and_namespaces_and_no_flows() {
    let tally = DropTally::from_sites(&[
        named("NETFILTER_DROP", Layer::Netfilter, RECEIVER, vec![4, 3]),
        named("NETFILTER_DROP", Layer::Netfilter, SENDER, vec![0, 1]),
        named("NO_SOCKET", Layer::Socket, RECEIVER, vec![0, 0, 9]),
    ]);
    assert_eq!(tally.source, TallySource::Sites);
    assert!(!tally.links_flows());
    let nf = tally
        .groups
        .iter()
        .find(|(k, _)| &*k.reason == "NETFILTER_DROP")
        .map(|(_, g)| g)
        .unwrap();
    assert_eq!(nf.count, 8);
    assert_eq!(
        nf.cpus.iter().map(|(c, n)| (*c, *n)).collect::<Vec<_>>(),
        [(0, 4), (1, 4)]
    );
    assert_eq!(
        nf.netns.iter().map(|(c, n)| (*c, *n)).collect::<Vec<_>>(),
        [(RECEIVER, 7), (SENDER, 1)]
    );
    assert!(nf.flows.is_empty() && nf.tcp_by_netns.is_empty());
    // No flow can be linked: a site has no headers.
    let raw = netprobe_common::Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001);
    assert!(tally
        .losses_of(&Flow::from_raw(SENDER, &raw, true))
        .is_empty());
    let losses = tally.losses_by_netns();
    let by_netns: Vec<(&str, u32, u64)> = losses
        .iter()
        .map(|d| (&*d.key.reason, d.netns, d.count))
        .collect();
    assert_eq!(
        by_netns,
        [
            ("NO_SOCKET", RECEIVER, 9),
            ("NETFILTER_DROP", RECEIVER, 7),
            ("NETFILTER_DROP", SENDER, 1)
        ]
    );
}

/// A count-mode window: drops = the sites plus the reason-only ones; nothing streamed,
/// nothing lost; the summary says `count` and that drops are not linked to flows.
#[test]
fn a_count_window_counts_everything_and_loses_nothing() {
    let totals = KernelTotals {
        counters: vec![
            (COUNTER_RETRANSMIT_SEEN, "retransmit_seen", 12),
            (COUNTER_DROP_SITE_TABLE_FULL, "drop_site_table_full", 1),
        ],
        // The site's 7 and one drop whose site did not fit the table, as `kernel_totals`
        // folds them.
        reasons: vec![(9, vec![4, 4])],
        reasons_only: vec![(9, vec![0, 1])],
        sites: vec![(test_site(9, RECEIVER, NF_HOOK_SLOW), vec![4, 3])],
        ..Default::default()
    };
    let mut count = CountMode::new(reasons(), SENDER);
    count.names = names();
    let read = count.read(&totals);
    let window = count_window(&totals, read.sites);
    assert_eq!(window.drops.total, 8);
    assert_eq!(
        (
            window.events.drop.counted,
            window.events.drop.lost,
            window.events.lost()
        ),
        (8, 0, 0)
    );
    assert_eq!(window.events.retransmit.counted, 12);
    let json = serde_json::to_value(crate::trace::summary::SummaryJson::new(&window)).unwrap();
    assert_eq!(json["mode"], "count");
    assert_eq!(json["events"]["drop"], serde_json::json!({"counted": 8}));
    assert_eq!(json["events_lost"], 0);
    assert_eq!(json["drops"]["by_site"][0]["reason"], "NETFILTER_DROP");
    assert_eq!(json["drops"]["by_site"][0]["layer"], "netfilter");
    assert_eq!(json["drops"]["by_site"][0]["count"], 7);
    let notes = json["notes"].to_string();
    assert!(notes.contains("needs streaming mode"), "{notes}");
    assert!(notes.contains("1 drops did not fit"), "{notes}");
    let text = crate::trace::summary::text(&window, 5);
    assert!(text.contains("count mode, "), "{text}");
    assert!(text.contains("none streamed by design"), "{text}");
    assert!(
        !text.contains("events lost") && !text.contains("WARNING"),
        "{text}"
    );
}

fn count_window(totals: &KernelTotals, sites: Vec<SiteDrops>) -> Window {
    static NO_SYMBOLS: Symbolizer = Symbolizer::EMPTY;
    let reasons = reasons();
    let softnet = SoftnetDeltas::new();
    let mut window = Window::build(
        totals,
        WindowInputs {
            mode: Mode::Count,
            symbols: &NO_SYMBOLS,
            ..WindowInputs::quiet(&reasons, &softnet)
        },
        &mut |_| None,
    );
    window.drop_sites = sites;
    window
}

/// Count mode names the drops of the window as the cause of a flow's loss, and says it could
/// not link them; a UDP storm's NO_SOCKET drops are not offered as the cause of TCP loss.
#[test]
fn count_mode_findings_name_the_windows_drops_and_not_the_wrong_ones() {
    let mut flow = RetransmitTotals {
        sent: 10,
        segs: 10,
        ..Default::default()
    };
    flow.kinds[1] = 10;
    flow.kind_segs[1] = 10;
    let key = FlowKey {
        flow: netprobe_common::Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001),
        netns: SENDER,
        _pad0: 0,
    };
    let totals = KernelTotals {
        flows: vec![(key, flow)],
        ..Default::default()
    };
    let findings = |sites: Vec<SiteDrops>| {
        let window = count_window(&totals, sites.clone());
        let tally = DropTally::from_sites(&sites);
        let bundle = crate::findings::tests::bundle_for_window(&window, &tally, SENDER);
        let outbound = bundle
            .findings
            .iter()
            .find(|f| f.id == "outbound_loss")
            .cloned()
            .expect("outbound_loss");
        (bundle, outbound)
    };
    let (bundle, outbound) = findings(vec![
        named("NETFILTER_DROP", Layer::Netfilter, RECEIVER, vec![12]),
        named("NO_SOCKET", Layer::Socket, RECEIVER, vec![500]),
    ]);
    assert_eq!(outbound.layer, "netfilter", "{outbound:?}");
    assert!(
        outbound.summary.contains("NETFILTER_DROP, 12 drops"),
        "{}",
        outbound.summary
    );
    assert!(
        outbound.summary.contains("does not link drops to flows"),
        "{}",
        outbound.summary
    );
    assert!(
        !outbound.summary.contains("NO_SOCKET"),
        "{}",
        outbound.summary
    );
    assert!(
        !outbound.summary.contains("lost on the path"),
        "{}",
        outbound.summary
    );
    assert_eq!(bundle.mode, "count");
    assert!(bundle
        .notes
        .iter()
        .any(|n| n.contains("needs streaming mode")));
    // Only a UDP storm's drops: no cause named, the path is.
    let (_, outbound) = findings(vec![named("NO_SOCKET", Layer::Socket, RECEIVER, vec![500])]);
    assert_eq!(outbound.layer, "unknown", "{outbound:?}");
    assert!(
        !outbound.summary.contains("NO_SOCKET"),
        "{}",
        outbound.summary
    );
}
