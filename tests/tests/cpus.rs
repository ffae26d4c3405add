//! Per-CPU attribution: NET_RX softirq time and NAPI polls, and per-CPU backlog overflow
//! named by the overflowing and the enqueuing CPU. Run as root with `--test-threads=1`.

use std::time::Duration;

use netprobe_integration::*;
use serde_json::Value;

/// NET_RX runs per CPU, from /proc/softirqs.
fn net_rx_per_cpu() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/softirqs").unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("NET_RX:"))
        .unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// NET_RX per CPU from the in-kernel softirq timing, checked against /proc/softirqs read
/// around the trace (the trace window lies inside that window, so its counts can only be
/// lower, and with traffic inside it they make up most of it); NAPI polls of the backlog that
/// veth delivers through.
#[test]
fn net_rx_softirq_and_napi_per_cpu() {
    let link = Link::new("sirq", 16);
    let before = net_rx_per_cpu();
    let tracer = Tracer::start(&["--port", "5003"]);
    bulk_transfer(&link.a, &link.b, link.b_port(5003), 32 << 20);
    let out = tracer.stop();
    let after = net_rx_per_cpu();
    assert!(out.success, "{}", out.stderr);
    let hooks = out.hooks();
    for name in ["irq:softirq_entry", "irq:softirq_exit", "napi:napi_poll"] {
        let hook = hooks.iter().find(|h| h["hook"] == name).unwrap();
        assert_eq!(hook["active"], true, "{hook}");
    }

    let cpus = out.summary()["cpus"].as_array().unwrap().clone();
    let mut traced_runs = 0;
    for c in &cpus {
        let cpu = c["cpu"].as_u64().unwrap() as usize;
        let runs = c["net_rx_runs"].as_u64().unwrap();
        let kernel = after[cpu] - before[cpu];
        assert!(
            runs <= kernel,
            "cpu{cpu}: traced {runs} NET_RX runs, /proc/softirqs counted {kernel}"
        );
        let (total, max) = (
            c["net_rx_total_ns"].as_u64().unwrap(),
            c["net_rx_max_ns"].as_u64().unwrap(),
        );
        assert!(max <= total && (runs == 0) == (total == 0), "{c}");
        assert!(max < 1_000_000_000, "a NET_RX run over a second: {c}");
        assert!(
            c["napi_full_budget"].as_u64().unwrap() <= c["napi_polls"].as_u64().unwrap(),
            "{c}"
        );
        traced_runs += runs;
    }
    let kernel_runs: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    eprintln!("NET_RX runs: traced {traced_runs}, /proc/softirqs {kernel_runs} around the trace; cpus {cpus:?}");
    assert!(
        traced_runs * 2 >= kernel_runs,
        "traced {traced_runs} of {kernel_runs}"
    );
    // veth hands packets to the per-CPU backlog, which NAPI polls as "(no_device)".
    let backlog_polls: u64 = cpus
        .iter()
        .flat_map(|c| c["napi"].as_array().unwrap().iter())
        .filter(|n| n["dev"] == "(no_device)")
        .map(|n| n["polls"].as_u64().unwrap())
        .sum();
    assert!(backlog_polls > 0, "{cpus:?}");
}

/// RPS steers every packet of b's veth to CPU 1 while the sender runs on CPU 0, and the input
/// backlog is tiny: the backlog drops are enqueued from CPU 0 (where the drop events fire) and
/// overflow CPU 1 (where softnet_stat counts them); both sides agree exactly.
#[test]
fn rps_backlog_drops_name_the_overflowing_and_enqueuing_cpus() {
    assert!(
        std::thread::available_parallelism().unwrap().get() >= 2,
        "needs two CPUs"
    );
    let link = Link::new("rps", 18);
    link.static_neighbours();
    steer_rx_to_cpu1(&link.b);
    let _backlog = SysctlGuard::set("net.core.netdev_max_backlog", "8");
    let tracer = Tracer::start(&[]);
    udp_flood_from_cpu0(&link, 20_000);
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let backlog = out.summary()["backlog"].clone();
    let (drops, softnet) = check_backlog_counts(&out, &backlog);
    let events: Vec<&Value> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d["reason"] == "CPU_BACKLOG")
        .collect();
    assert_eq!(events.len() as u64, drops, "every drop streamed");
    check_backlog_origins(&link, &events);
    // The enqueuing side equals the streamed events tallied by the CPU they fired on.
    let mut by_cpu = std::collections::BTreeMap::new();
    for d in &events {
        *by_cpu.entry(d["cpu"].as_u64().unwrap()).or_insert(0u64) += 1;
    }
    let enqueuing: Vec<Value> = by_cpu
        .iter()
        .map(|(cpu, count)| serde_json::json!({"cpu": cpu, "count": count}))
        .collect();
    assert_eq!(backlog["enqueuing_cpus"], Value::Array(enqueuing));
    check_backlog_finding(&out.first_bundle(), drops, softnet);
}

/// The summary's backlog row: drop events beside softnet_stat's dropped, exact unless the
/// kernel skipped the drop hook, all on CPU 1. Returns (drop events, softnet dropped).
fn check_backlog_counts(out: &TraceOutput, backlog: &Value) -> (u64, u64) {
    let drops = backlog["drop_events"].as_u64().unwrap();
    eprintln!(
        "backlog: {backlog} skipped: {} events: {}",
        out.summary()["kernel_skipped"],
        out.summary()["events"]
    );
    assert!(drops > 0, "a backlog of 8 must overflow: {backlog}");
    let softnet = backlog["softnet_dropped"].as_u64().unwrap();
    let skipped = out.kernel_skipped_of_hook("skb:kfree_skb");
    if skipped == 0 {
        assert_eq!(backlog["must_match"], true, "{backlog}");
        assert_eq!(softnet, drops, "events vs softnet_stat: {backlog}");
    } else {
        // The kernel said it skipped the drop hook: exactness is off, and said so.
        assert_eq!(backlog["must_match"], false, "{backlog}");
        assert!(backlog["not_exact_because"].is_string(), "{backlog}");
        assert!(
            drops <= softnet && softnet <= drops + skipped,
            "{backlog}, {skipped} skipped"
        );
    }
    assert_eq!(
        backlog["overflowing_cpus"],
        serde_json::json!([{"cpu": 1, "count": softnet}])
    );
    (drops, softnet)
}

/// Every drop accounted for by origin:
/// - the datagrams into b, enqueued from the sender's CPU 0 onto CPU 1 by RPS;
/// - b's ICMP port-unreachable replies into a, sent while b runs on CPU 1, onto CPU 1's own
///   (full) backlog;
/// - anything else can only be IPv6 control traffic the kernel sends on a new link (MLD,
///   router solicitations) from a timer on any CPU.
fn check_backlog_origins(link: &Link, events: &[&Value]) {
    let (b_ns, a_ns) = (link.b.inode(), link.a.inode());
    let mut datagrams = 0;
    for d in events {
        let origin = (
            d["netns"].as_u64(),
            d["ip_proto"].as_str(),
            d["dport"].as_u64(),
        );
        if origin == (Some(b_ns), Some("udp"), Some(9)) {
            assert_eq!(d["cpu"].as_u64(), Some(0), "{d}");
            assert_eq!(
                direction_layer(d),
                (Some("ingress"), Some("backlog")),
                "{d}"
            );
            datagrams += 1;
        } else if (origin.0, origin.1) == (Some(a_ns), Some("icmp")) {
            assert_eq!(d["cpu"].as_u64(), Some(1), "{d}");
        } else {
            // ICMPv6, or MLD behind its hop-by-hop header (next header 0: netprobe does not
            // walk IPv6 extension headers).
            assert_eq!(d["family"].as_str(), Some("ipv6"), "{d}");
            assert!(
                matches!(d["ip_proto"].as_str(), Some("icmpv6" | "0")),
                "{d}"
            );
        }
    }
    assert!(datagrams > 0);
}

/// The findings name the overflowing CPU, the enqueuing CPUs and the steering, with the fix.
fn check_backlog_finding(bundle: &Value, drops: u64, softnet: u64) {
    let finding = finding_about(bundle, "backlog_overflow", None);
    assert_eq!(finding["cpus"], serde_json::json!([1]), "{finding}");
    assert_eq!(
        direction_layer(&finding),
        (Some("ingress"), Some("backlog"))
    );
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains("sysctl -w net.core.netdev_max_backlog="),
        "{finding}"
    );
    assert_eq!(
        finding["evidence"]["counters"]["net.core.netdev_max_backlog"], 8,
        "{finding}"
    );
    let row = reconciliation_row(bundle, "softnet_stat dropped");
    assert_eq!(
        (row["events"].as_u64(), row["counters"].as_u64()),
        (Some(drops), Some(softnet)),
        "{row}"
    );
}
