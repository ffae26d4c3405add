//! Drop storms: every drop counted exactly in the kernel, a sample streamed, and the stream
//! saying so as it happens. Run as root with `--test-threads=1`.

use std::time::Duration;

use netprobe_integration::*;
use serde_json::Value;

/// The summary's exact count for `reason`.
fn reason_count(summary: &Value, reason: &str) -> u64 {
    summary["drops"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == reason)
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0)
}

/// The final bundle's finding `id`, if any.
fn finding<'a>(out: &'a TraceOutput, id: &str) -> Option<&'a Value> {
    let bundles = out.of_type("findings");
    bundles.last()?["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
}

fn storm_lines<'a>(out: &'a TraceOutput, state: &str) -> Vec<&'a Value> {
    out.of_type("storm")
        .into_iter()
        .filter(|s| s["state"] == state)
        .collect()
}

/// `--max-rate 20`: a UDP storm to a closed port streams at most 20 drops per second per
/// CPU, says "sampling" while it lasts and "over" after, and every count (summary, finding)
/// is the kernel's own Udp NoPorts, exactly.
#[test]
fn max_rate_streams_a_sample_and_keeps_every_count_exact() {
    const DATAGRAMS: usize = 120_000;
    const RATE: u64 = 20;
    let link = Link::new("stm", 72);
    let tracer = Tracer::start(&["--netns", &link.b.name, "--port", "9", "--max-rate", "20"]);
    let no_ports_before = link.b.snmp("Udp", "NoPorts");
    let started = std::time::Instant::now();
    let sent = send_udp(&link.a, link.b_port(9), b"storm", DATAGRAMS);
    assert_eq!(sent, DATAGRAMS);
    // Two looks after the storm: the second one says it is over.
    std::thread::sleep(Duration::from_millis(2300));
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    let out = tracer.stop();
    let seconds = started.elapsed().as_secs_f64().ceil() as u64 + 1;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        no_ports, DATAGRAMS as u64,
        "every datagram hit the closed port"
    );

    let s = out.summary();
    let acc = &s["events"]["drop"];
    let (counted, streamed, lost, sampled_out) = (
        acc["counted"].as_u64().unwrap(),
        acc["streamed"].as_u64().unwrap(),
        acc["lost"].as_u64().unwrap(),
        acc["sampled_out"].as_u64().unwrap(),
    );
    eprintln!("max-rate: NoPorts +{no_ports}, counted {counted}, streamed {streamed}, sampled out {sampled_out}, lost {lost}");
    assert_eq!(reason_count(s, "NO_SOCKET"), no_ports, "{s}");
    assert_eq!(counted, no_ports, "{s}");
    assert_eq!(streamed + lost + sampled_out, counted, "{s}");
    assert_eq!(lost, 0, "{s}");
    assert_eq!(out.drops_with_reason("NO_SOCKET").len() as u64, streamed);
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        streamed >= RATE && streamed <= RATE * cpus * seconds,
        "{streamed} streamed in {seconds} s at {RATE}/s per CPU"
    );
    let site = &s["sampled"]["sites"][0];
    assert_eq!(site["reason"], "NO_SOCKET");
    assert_eq!(site["drops"].as_u64(), Some(no_ports));
    assert_eq!(site["sampled_out"].as_u64(), Some(sampled_out));

    let sampling = storm_lines(&out, "sampling");
    assert!(
        !sampling.is_empty(),
        "no storm line: {:?}",
        out.of_type("storm")
    );
    for line in &sampling {
        assert_eq!(line["reason"], "NO_SOCKET", "{line}");
        assert_eq!(line["interface"], "veth0", "{line}");
        assert_eq!(line["netns"].as_u64(), Some(link.b.inode()), "{line}");
        assert_eq!(
            (line["limit"].as_u64(), &line["why"]),
            (Some(RATE), &Value::from("max_rate"))
        );
    }
    let said: u64 = sampling.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert!(
        said <= no_ports && said + RATE * cpus >= no_ports,
        "said {said} of {no_ports}"
    );
    let over = storm_lines(&out, "over");
    assert_eq!(over.len(), 1, "{:?}", out.of_type("storm"));
    assert_eq!(over[0]["count"].as_u64(), Some(said));

    // The finding counts every drop, not the sample; nothing is said lost.
    let no_socket = finding(&out, "drops_socket_no_socket").expect("the closed port's finding");
    assert_eq!(
        no_socket["evidence"]["events"]["drops"].as_u64(),
        Some(no_ports),
        "{no_socket}"
    );
    assert!(storm_lines(&out, "events_lost").is_empty());
}

/// No --max-rate, and a reader that stops reading (SIGSTOP) during a storm at two sites: past
/// half the ring unread, each site streams a sample, so both sites reach the stream, no event
/// is lost, and the counts stay exact (NoPorts, the nft rule's counter).
#[test]
fn a_reader_behind_gets_a_sample_of_every_site_and_loses_nothing() {
    const DATAGRAMS: usize = 60_000;
    let link = Link::new("stb", 73);
    let refused = NftTable::input(&link.b, "np_storm", "udp dport 10 counter drop");
    let tracer = Tracer::start(&["--netns", &link.b.name]);
    let no_ports_before = link.b.snmp("Udp", "NoPorts");
    signal(tracer.pid(), libc::SIGSTOP);
    let to_closed = send_udp(&link.a, link.b_port(9), b"closed", DATAGRAMS);
    let to_refused = send_udp(&link.a, link.b_port(10), b"refused", DATAGRAMS);
    assert_eq!((to_closed, to_refused), (DATAGRAMS, DATAGRAMS));
    std::thread::sleep(Duration::from_millis(200));
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    let nft = refused.packets();
    signal(tracer.pid(), libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(1500));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    assert_eq!((no_ports, nft), (DATAGRAMS as u64, DATAGRAMS as u64));

    let s = out.summary();
    let acc = &s["events"]["drop"];
    let (streamed, lost, sampled_out) = (
        acc["streamed"].as_u64().unwrap(),
        acc["lost"].as_u64().unwrap(),
        acc["sampled_out"].as_u64().unwrap(),
    );
    eprintln!("reader behind: streamed {streamed}, sampled out {sampled_out}, lost {lost}");
    assert_eq!(reason_count(s, "NO_SOCKET"), no_ports, "{s}");
    assert_eq!(reason_count(s, "NETFILTER_DROP"), nft, "{s}");
    assert_eq!(lost, 0, "sampling keeps the ring from filling: {s}");
    assert!(sampled_out > 0, "{s}");
    for reason in ["NO_SOCKET", "NETFILTER_DROP"] {
        assert!(
            !out.drops_with_reason(reason).is_empty(),
            "a sample of {reason} reached the stream"
        );
        let line = storm_lines(&out, "sampling")
            .into_iter()
            .find(|l| l["reason"] == reason)
            .unwrap_or_else(|| panic!("no storm line for {reason}: {:?}", out.of_type("storm")));
        assert_eq!(line["why"], "reader_behind", "{line}");
    }
    let refused_finding = finding(&out, "drops_netfilter_netfilter_drop").expect("nft's finding");
    assert_eq!(
        refused_finding["evidence"]["events"]["drops"].as_u64(),
        Some(nft)
    );
}
