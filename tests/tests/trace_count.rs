//! `netprobe trace --count` against the real kernel: the programs in count mode, no event
//! line, and a summary and findings whose numbers are the kernel's own counters over the same
//! window. ftrace beside netprobe counts what this host's sandbox kernel runs no program for
//! (see `witness`). Run as root with `--test-threads=1`.

use std::{thread, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

/// The only lines count mode prints: the hooks first, then summaries and bundles.
fn assert_no_event_lines(out: &TraceOutput) {
    assert_eq!(out.records[0]["type"], "hooks", "{}", out.records[0]);
    for record in &out.records {
        let kind = record["type"].as_str().unwrap_or("");
        assert!(
            ["hooks", "summary", "findings"].contains(&kind),
            "an event line in count mode: {record}"
        );
    }
    let summary = out.summary();
    assert_eq!(summary["mode"], "count");
    assert_eq!(summary["events_lost"], 0);
    for kind in ["retransmit", "drop", "receive"] {
        let accounting = &summary["events"][kind];
        assert!(
            accounting.get("streamed").is_none() && accounting.get("lost").is_none(),
            "nothing streamed, so nothing lost: {accounting}"
        );
    }
    let notes = summary["notes"].to_string();
    assert!(notes.contains("needs streaming mode"), "{notes}");
    assert_eq!(out.first_bundle()["mode"], "count");
}

/// The summary's drop sites matching `keep`, and their drops summed.
fn site_drops(summary: &Value, keep: impl Fn(&Value) -> bool) -> (Vec<Value>, u64) {
    let sites: Vec<Value> = summary["drops"]["by_site"]
        .as_array()
        .expect("count mode lists drops by site")
        .iter()
        .filter(|s| keep(s))
        .cloned()
        .collect();
    let total = sites.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    (sites, total)
}

fn reason_count(summary: &Value, reason: &str) -> u64 {
    summary["drops"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == reason)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

fn finding_ids(bundle: &Value) -> Vec<String> {
    bundle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// A UDP storm to a closed port of b: count mode's NO_SOCKET drops in b's namespace equal
/// b's own `Udp NoPorts` growth (plus any firing the kernel ran no program for), at the UDP
/// receive path (ingress, socket layer, on veth0); the same with the namespace and reason
/// filters; no event line; the findings name the closed port's drops and no other cause.
#[test]
fn udp_to_a_closed_port_counts_equal_no_ports() {
    let link = Link::new("cnu", 56);
    let b_ns = link.b.inode();
    let closed = link.b_port(7399);
    let no_ports_before = link.b.snmp("Udp", "NoPorts");
    let witness = Ftrace::start(&["skb/kfree_skb"]);
    // Inside b: the bundle's counters are b's.
    let tracer = Tracer::start_in(&link.b, &["--count"]);
    // The raw tracepoint's count path (where tp_btf is refused) on the same storm.
    let raw = Tracer::start_in(&link.b, &["--count", "--tracepoint-hooks", "raw"]);
    let filtered = Tracer::start(&[
        "--count",
        "--netns",
        &link.b.name,
        "--reason",
        "NO_SOCKET",
        "--report-every",
        "0.2",
    ]);
    let sent = send_udp(&link.a, closed, &[0u8; 256], 20_000);
    thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    let raw = raw.stop();
    let only_b = filtered.stop();
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default())
        .count("kfree_skb:", "NO_SOCKET");
    assert!(
        out.success && only_b.success && raw.success,
        "{}{}{}",
        out.stderr,
        only_b.stderr,
        raw.stderr
    );
    assert_no_event_lines(&out);
    assert_no_event_lines(&raw);
    assert_eq!(out.attach_of("skb:kfree_skb"), "tp_btf");
    assert_eq!(raw.attach_of("skb:kfree_skb"), "raw_tracepoint");
    let raw_sites = site_drops(raw.summary(), |s| {
        s["reason"] == "NO_SOCKET" && s["netns"].as_u64() == Some(b_ns)
    });
    assert_no_event_lines(&only_b);

    let summary = out.summary();
    let (sites, seen) = site_drops(summary, |s| {
        s["reason"] == "NO_SOCKET" && s["netns"].as_u64() == Some(b_ns)
    });
    eprintln!(
        "sent {sent}, Udp NoPorts +{no_ports}, count mode NO_SOCKET in b {seen} at {} sites, \
         filtered {}, withheld {withheld}",
        sites.len(),
        reason_count(only_b.summary(), "NO_SOCKET")
    );
    assert!(
        no_ports >= 10_000,
        "the storm reached b's closed port: {no_ports}"
    );
    // --report-every: interim bundles from the counts so far, then the final one.
    let bundles = only_b.of_type("findings");
    assert!(bundles.len() >= 2, "{} bundles", bundles.len());
    assert!(bundles[..bundles.len() - 1]
        .iter()
        .all(|b| b["final"] == false && b["mode"] == "count"));
    assert_eq!(
        seen + withheld,
        no_ports,
        "NO_SOCKET drops in b vs Udp NoPorts"
    );
    assert_eq!(
        raw_sites.1 + withheld,
        no_ports,
        "raw tracepoint: NO_SOCKET drops in b vs Udp NoPorts"
    );
    assert!(
        raw_sites.0.iter().all(|s| s["interface"] == "veth0"),
        "{raw_sites:?}"
    );
    for site in &sites {
        assert_eq!(
            (&site["direction"], &site["layer"], &site["interface"]),
            (
                &Value::from("ingress"),
                &Value::from("socket"),
                &Value::from("veth0")
            ),
            "{site}"
        );
        let location = site["location"].as_str().unwrap();
        assert!(
            location.contains("udp") && location.contains("+0x"),
            "{site}"
        );
        let on_cpus: u64 = site["cpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        assert_eq!(on_cpus, site["count"].as_u64().unwrap(), "{site}");
    }
    // By reason: every namespace's NO_SOCKET, b's among them; the filters keep b's only.
    assert!(reason_count(summary, "NO_SOCKET") >= seen);
    assert_eq!(
        reason_count(only_b.summary(), "NO_SOCKET") + withheld,
        no_ports,
        "--netns b --reason NO_SOCKET"
    );
    assert_eq!(
        only_b.summary()["drops"]["total"],
        reason_count(only_b.summary(), "NO_SOCKET"),
        "the reason filter keeps no other drop"
    );

    let bundle = out.of_type("findings").last().cloned().unwrap();
    let found = finding_about(bundle, "drops_socket_no_socket", None);
    assert_eq!(
        (&found["direction"], &found["layer"]),
        (&Value::from("ingress"), &Value::from("socket")),
        "{found}"
    );
    let ids = finding_ids(bundle);
    for wrong in ["backlog_overflow", "outbound_loss", "inbound_loss"] {
        assert!(!ids.iter().any(|id| id == wrong), "{wrong} in {ids:?}");
    }
    assert!(
        !ids.iter().any(|id| id.starts_with("drops_netfilter")),
        "{ids:?}"
    );
}

/// A TCP transfer a → b over b's 3 % input loss (nftables), traced in count mode from inside a:
/// retransmitted segments equal a's `RetransSegs` growth, in the summary and in the bundle's
/// reconciliation row; the netfilter drops equal the rule's counter; the loss finding names
/// the netfilter layer, never the path, the ACKs, a local refusal or the backlog.
#[test]
fn lossy_tcp_retransmits_equal_retrans_segs_and_the_finding_names_netfilter() {
    let link = Link::new("cnt", 57);
    let port = 7398;
    let loss = NftTable::input_loss(&link.b, "np_cnt", port, 3);
    let a_ns = link.a.inode();
    let retrans_before = link.a.snmp("Tcp", "RetransSegs");
    let witness = Ftrace::start(&["tcp/tcp_retransmit_skb", "skb/kfree_skb"]);
    let tracer = Tracer::start_in(&link.a, &["--count", "--port", &port.to_string()]);
    bulk_transfer(&link.a, &link.b, link.b_port(port), 24 << 20);
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let retrans = link.a.snmp("Tcp", "RetransSegs") - retrans_before;
    let nft_dropped = loss.packets();
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());
    let withheld_rtx = withheld.count("tcp_retransmit_skb:", "saddr=198.18.57.1 ");
    let withheld_nf = withheld.count("kfree_skb:", "NETFILTER_DROP");
    assert!(out.success, "{}", out.stderr);
    assert_no_event_lines(&out);

    let summary = out.summary();
    // a's flows: b may send its SYN-ACK or FIN again too (its rule can drop the ACK of
    // either), counted in b's namespace.
    let a_flows: Vec<&Value> = summary["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["netns"].as_u64() == Some(a_ns))
        .collect();
    let counted_segs: u64 = a_flows
        .iter()
        .map(|f| {
            f["segs"].as_u64().unwrap()
                + f["outcomes"]["failed_after_counted"]["segs"]
                    .as_u64()
                    .unwrap()
        })
        .sum();
    let (_, nf_seen) = site_drops(summary, |s| s["reason"] == "NETFILTER_DROP");
    eprintln!(
        "RetransSegs +{retrans}, count mode {counted_segs} (withheld firings {withheld_rtx}); \
         nft dropped {nft_dropped}, count mode {nf_seen} (withheld {withheld_nf})"
    );
    assert!(retrans > 0, "3 % loss must retransmit");
    if withheld_rtx == 0 {
        assert_eq!(
            counted_segs, retrans,
            "retransmitted segments vs RetransSegs"
        );
    } else {
        // A withheld firing hides its segments (one or more) from the programs.
        assert!(counted_segs < retrans && counted_segs + withheld_rtx * 64 >= retrans);
    }
    for flow in &a_flows {
        assert_eq!(flow["dport"].as_u64(), Some(port as u64), "{flow}");
    }
    assert_eq!(
        nf_seen + withheld_nf,
        nft_dropped,
        "NETFILTER_DROP vs nft counter"
    );

    let bundle = out.of_type("findings").last().cloned().unwrap();
    let row = reconciliation_row(bundle, "Tcp RetransSegs");
    if withheld_rtx == 0 {
        assert_eq!(row["matches"], true, "{row}");
    }
    let loss_finding = finding_about(bundle, "outbound_loss", Some(a_ns));
    let summary_text = loss_finding["summary"].as_str().unwrap();
    assert_eq!(loss_finding["layer"], "netfilter", "{loss_finding}");
    assert!(summary_text.contains("NETFILTER_DROP"), "{summary_text}");
    assert!(
        summary_text.contains("does not link drops to flows"),
        "{summary_text}"
    );
    assert!(
        !summary_text.contains("lost on the path") && !summary_text.contains("ACKs"),
        "{summary_text}"
    );
    let ids = finding_ids(bundle);
    for f in bundle["findings"].as_array().unwrap() {
        eprintln!(
            "finding {} ({}/{}, netns {}): {}",
            f["id"], f["direction"], f["layer"], f["netns"], f["summary"]
        );
    }
    // (`ack_loss_or_spurious_retransmits` may be true of b: veth reorders an unpinned
    // sender's segments, and b then gets some twice.)
    for wrong in [
        "inbound_ack_loss",
        "retransmits_fail_locally",
        "backlog_overflow",
    ] {
        assert!(!ids.iter().any(|id| id == wrong), "{wrong} in {ids:?}");
    }
    finding_about(bundle, "drops_netfilter_netfilter_drop", None);
}
