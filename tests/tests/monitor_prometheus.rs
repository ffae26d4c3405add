//! `netprobe monitor --listen` scraped by a real Prometheus (Debian's package) every second:
//! drops caused in a namespace (a UDP receive buffer overflowing, a full accept queue,
//! nftables drops) and Prometheus's own `increase()` over a window aligned to two scrapes
//! equal the kernel counters' deltas over the same span, exactly; `promtool check metrics`
//! passes on a scrape. Run as root with `--test-threads=1`.

use std::{
    collections::BTreeMap,
    io::Write,
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netprobe_integration::*;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");
/// Each test's namespace has a loopback of its own: fixed ports cannot clash.
const LISTEN: &str = "127.0.0.1:9464";
/// The series every scrape has: its samples' timestamps are the scrapes'.
const EVERY_SCRAPE: &str = "netprobe_build_info";

/// The kernel's own counts this test compares with: (udp_rcvbuf, accept_queue) as the
/// monitor's columns read them, and the nft rule's counter.
fn kernel_counts(ns: &Netns, nft: &NftTable) -> BTreeMap<&'static str, u64> {
    let counters = ns.monitor_counters();
    BTreeMap::from([
        ("udp_rcvbuf", counters["udp_rcvbuf"]),
        ("accept_queue", counters["accept_queue"]),
        ("nft", nft.packets()),
    ])
}

/// Reads `kernel_counts` until they hold still for 2 s (the last SYN-ACK retransmits and
/// FINs are over): then nothing moves them but the test.
fn settled_counts(ns: &Netns, nft: &NftTable) -> BTreeMap<&'static str, u64> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = kernel_counts(ns, nft);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < end, "counters never settled: {last:?}");
        thread::sleep(Duration::from_millis(250));
        let now = kernel_counts(ns, nft);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    last
}

/// 40 clients at a backlog-4 listener that never accepts: ListenOverflows. The listener
/// then goes, so that no late segment of these clients overflows it again.
fn overflow_accept_queue(link: &Link, listener: Holder, server: std::net::SocketAddr) {
    let clients: Vec<_> = (0..40)
        .map(|_| {
            link.a.spawn(move || {
                TcpStream::connect_timeout(&server, Duration::from_millis(1200)).ok()
            })
        })
        .collect();
    for c in clients {
        let _ = c.join().unwrap();
    }
    drop(listener);
}

fn wait_for_series(prometheus: &Prometheus, expr: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while prometheus.value(expr, unix_now()).is_none() {
        assert!(Instant::now() < end, "{expr} never scraped");
        thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_increase_equals_the_kernel_counters_deltas() {
    let link = Link::new("pxp", 93);
    let sink = link.b_port(7301);
    let _udp = Holder::start(&link.b, HOLDER, &["udp-sink", &sink.to_string(), "4096"]);
    let server = link.b_port(7302);
    let listener = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "4"]);
    let nft = NftTable::input(&link.b, "px_nft", "udp dport 7303 counter drop");
    let monitor = Monitor::start(&link.b, &["veth0", "1", "--no-log", "--listen", LISTEN]);
    assert!(
        monitor.started.contains("eBPF count mode"),
        "{}",
        monitor.started
    );
    let prometheus = Prometheus::start(&link.b, LISTEN);
    // A drop reason's series appears with its first drop, and increase() cannot count a
    // series' first value: one drop first, so that the window's are all increases.
    send_udp(&link.a, link.b_port(7303), b"warm-up", 1);
    send_udp(&link.a, sink, &[0u8; 512], 50);
    let nft_series = r#"netprobe_drops_total{reason="NETFILTER_DROP",netns="own"}"#;
    let rcvbuf_series = r#"netprobe_drops_total{reason="SOCKET_RCVBUFF",netns="own"}"#;
    wait_for_series(&prometheus, nft_series);
    wait_for_series(&prometheus, rcvbuf_series);

    let before = settled_counts(&link.b, &nft);
    // A scrape more than one monitor interval after the reading: the monitor has sampled
    // since, and nothing dropped in between.
    let t1 = prometheus.scrape_after(EVERY_SCRAPE, unix_now() + 2.5);
    while unix_now() < t1 + 0.5 {
        thread::sleep(Duration::from_millis(100));
    }
    let witness = Ftrace::start(&["skb/kfree_skb"]);
    assert_eq!(send_udp(&link.a, sink, &[0u8; 512], 3000), 3000);
    overflow_accept_queue(&link, listener, server);
    assert_eq!(send_udp(&link.a, link.b_port(7303), b"drop", 200), 200);
    let after = settled_counts(&link.b, &nft);
    let t2 = prometheus.scrape_after(EVERY_SCRAPE, unix_now() + 2.5);
    assert_eq!(
        kernel_counts(&link.b, &nft),
        after,
        "counters moved after settling"
    );
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());

    let delta = |k: &str| after[k] - before[k];
    let window_ms = ((t2 - t1) * 1000.0).round() as u64;
    let increase = |series: &str| {
        prometheus
            .value(&format!("increase({series}[{window_ms}ms])"), t2)
            .unwrap_or_else(|| panic!("no {series} in the window"))
    };
    let stack = |category: &str| {
        increase(&format!(
            r#"netprobe_stack_drops_total{{interface="veth0",category="{category}"}}"#
        ))
    };
    eprintln!(
        "window {window_ms} ms; kernel {before:?} -> {after:?}; withheld {}",
        withheld.total()
    );
    assert!(delta("udp_rcvbuf") > 100, "a 4 KB buffer must overflow");
    assert!(delta("accept_queue") > 0, "a backlog of 4 must overflow");
    assert_eq!(delta("nft"), 200);
    assert_eq!(stack("udp_rcvbuf"), delta("udp_rcvbuf") as f64);
    assert_eq!(stack("accept_queue"), delta("accept_queue") as f64);
    assert_eq!(stack("syn_queue"), 0.0);
    assert_eq!(
        increase(nft_series) + withheld.count("kfree_skb:", "NETFILTER_DROP") as f64,
        delta("nft") as f64
    );
    assert_eq!(
        increase(rcvbuf_series) + withheld.count("kfree_skb:", "SOCKET_RCVBUFF") as f64,
        delta("udp_rcvbuf") as f64
    );

    // The scrape itself, as promtool reads it.
    let text = scrape_in(&link.b, &format!("http://{LISTEN}/metrics"));
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    drop(prometheus);
    signal(monitor.pid(), libc::SIGTERM);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
}

/// One series' value in a classic-format scrape.
fn scraped(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// With `--listen`, count mode attaches the receive hook: a transfer into the monitor's
/// namespace that loses 3 % of its segments on the way in makes the sender retransmit, and
/// the receiver's `netprobe_tcp_peer_retransmitted_segments_total` counts the retransmits that
/// arrived: some fill holes, and never more than the sender's RetransSegs grew (a retransmit
/// can be lost again; GRO may merge several into one).
#[test]
fn peer_retransmits_are_counted_by_the_receiver() {
    let link = Link::new("pxr", 94);
    let server = link.b_port(7311);
    let _loss = NftTable::input_loss(&link.b, "px_loss", 7311, 3);
    let monitor = Monitor::start(&link.b, &["veth0", "1", "--no-log", "--listen", LISTEN]);
    assert!(
        monitor.started.contains("eBPF count mode"),
        "{}",
        monitor.started
    );
    let url = format!("http://{LISTEN}/metrics");
    let series = |class: &str| {
        format!(r#"netprobe_tcp_peer_retransmitted_segments_total{{class="{class}"}}"#)
    };
    let first = scrape_in(&link.b, &url);
    let (dup0, fills0) = (
        scraped(&first, &series("duplicate")),
        scraped(&first, &series("fills_hole")),
    );
    let sent_before = link.a.snmp("Tcp", "RetransSegs");
    bulk_transfer(&link.a, &link.b, server, 20 << 20);
    assert!(link.b.wait_tcp_quiet(7311, Duration::from_secs(20)));
    let sent = link.a.snmp("Tcp", "RetransSegs") - sent_before;
    // Two monitor intervals: the transfer's last segments are in a sample.
    thread::sleep(Duration::from_millis(2500));
    let last = scrape_in(&link.b, &url);
    let duplicate = scraped(&last, &series("duplicate")) - dup0;
    let fills_hole = scraped(&last, &series("fills_hole")) - fills0;
    eprintln!(
        "sender RetransSegs +{sent}; receiver: {fills_hole} filled holes, {duplicate} duplicates"
    );
    assert!(sent > 0, "3 % loss must cause retransmits");
    assert!(fills_hole > 0, "retransmits that fill holes");
    assert!(fills_hole + duplicate <= sent, "more received than sent");
    signal(monitor.pid(), libc::SIGTERM);
    assert!(monitor.wait().status.success());
}
