//! `netprobe trace` against the real kernel: real programs, real loss, real counters.
//! Run as root with `--test-threads=1` (`cargo xtask test` does): the leftover-program checks
//! look at the whole kernel.

use std::{net::SocketAddr, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

const PORT: u16 = 5001;
const OTHER_PORT: u16 = 5999;
/// Enough data over a 3% lossy path to produce dozens of retransmits in a couple of seconds.
const BYTES: u64 = 24 << 20;

fn sum_u64(events: &[&Value], field: &str) -> u64 {
    events.iter().map(|e| e[field].as_u64().unwrap()).sum()
}

/// One lossy transfer a → b (data lost entering b), traced three ways at once: by port, by
/// a's namespace, and by another port. Checks every number against the kernel's counters.
fn lossy_transfer_matches_kernel_counters(v6: bool, subnet: u8) {
    let link = Link::new(if v6 { "l6" } else { "l4" }, subnet);
    nft_in(&link.b.name, &input_loss_ruleset("netprobe_test", PORT, 3));
    let netns = link.a.inode();
    let receiver_netns = link.b.inode();

    let traced = Tracer::start(&["--port", &PORT.to_string()]);
    let sender_only = Tracer::start(&["--netns", &link.a.name]);
    let other_port = Tracer::start(&["--port", &OTHER_PORT.to_string()]);

    let retrans_before = link.a.snmp("Tcp", "RetransSegs");
    let ext = |name: &'static str| link.a.netstat("TcpExt", name);
    let ext_before = [
        ext("TCPFastRetrans"),
        ext("TCPSlowStartRetrans"),
        ext("TCPTimeouts"),
        ext("TCPLossProbes"),
    ];
    let server = SocketAddr::new(link.addr(2, v6), PORT);
    let transfer = bulk_transfer(&link.a, &link.b, server, BYTES);
    // Let any in-flight event reach the ring before the window closes.
    std::thread::sleep(Duration::from_millis(200));
    let retrans_after = link.a.snmp("Tcp", "RetransSegs");
    let ext_after = [
        ext("TCPFastRetrans"),
        ext("TCPSlowStartRetrans"),
        ext("TCPTimeouts"),
        ext("TCPLossProbes"),
    ];
    let nft_dropped = nft_counter_packets(&link.b.name, "netprobe_test");

    let out = traced.stop();
    let sender = sender_only.stop();
    let filtered = other_port.stop();
    assert!(out.success, "netprobe failed: {}", out.stderr);
    assert!(
        filtered.success,
        "netprobe --port failed: {}",
        filtered.stderr
    );

    // --- retransmits: exactly this flow, this namespace, and RetransSegs to the segment.
    // The sender's retransmits; the receiver may add its own (its input rule can drop the
    // ACK of its SYN-ACK or of its FIN), counted in its own namespace.
    let all_retransmits = out.of_type("retransmit");
    let (retransmits, receiver_side): (Vec<&Value>, Vec<&Value>) = all_retransmits
        .iter()
        .partition(|r| r["netns"].as_u64() == Some(netns));
    for r in &receiver_side {
        // The receiver's own segments (its SYN-ACK, or its FIN when the rule ate the ACK).
        assert_eq!(
            (r["netns"].as_u64(), r["sport"].as_u64()),
            (Some(receiver_netns), Some(PORT as u64)),
            "{r}"
        );
    }
    let family = if v6 { "ipv6" } else { "ipv4" };
    assert!(
        !retransmits.is_empty(),
        "3% loss over {BYTES} bytes must retransmit: RetransSegs {retrans_before}->{retrans_after}, nft dropped {nft_dropped}, summary {}",
        out.summary()
    );
    for r in &retransmits {
        assert_eq!(r["netns"].as_u64(), Some(netns), "{r}");
        assert_eq!(r["family"], family, "{r}");
        assert_eq!(r["saddr"], transfer.local.ip().to_string(), "{r}");
        assert_eq!(
            r["sport"].as_u64(),
            Some(transfer.local.port() as u64),
            "{r}"
        );
        assert_eq!(r["daddr"], server.ip().to_string(), "{r}");
        assert_eq!(r["dport"].as_u64(), Some(PORT as u64), "{r}");
        assert!(r["segs"].as_u64().unwrap() >= 1, "{r}");
    }
    let sent: Vec<&Value> = retransmits
        .iter()
        .copied()
        .filter(|r| r["err"] == 0)
        .collect();
    let kernel_retrans_segs = retrans_after - retrans_before;
    // Exact unless the kernel skipped some of our invocations (reported per program).
    let rtx_skipped = out.summary()["kernel_skipped"]["netprobe_rtx"]
        .as_u64()
        .unwrap();
    let agrees = |ours: u64, kernel: u64, what: &str| {
        if rtx_skipped == 0 {
            assert_eq!(ours, kernel, "{what}");
        } else {
            assert!(ours <= kernel, "{what}: {ours} > {kernel}");
        }
    };
    agrees(
        sum_u64(&sent, "segs"),
        kernel_retrans_segs,
        "sum of segs over sent retransmits vs RetransSegs delta",
    );

    // --- drops: one NETFILTER_DROP event per packet the nft rule counted.
    let drops = out.of_type("drop");
    let nf_drops: Vec<&Value> = drops
        .iter()
        .copied()
        .filter(|d| d["reason"] == "NETFILTER_DROP")
        .collect();
    assert!(nft_dropped > 0);
    assert_eq!(
        nf_drops.len() as u64,
        nft_dropped,
        "NETFILTER_DROP events vs nft counter"
    );
    for d in &nf_drops {
        assert_eq!(d["netns"].as_u64(), Some(receiver_netns), "{d}");
        assert_eq!(d["dport"].as_u64(), Some(PORT as u64), "{d}");
        assert_eq!(d["saddr"], transfer.local.ip().to_string(), "{d}");
        assert_eq!(d["ifname"], "veth0", "{d}");
        // Early demux may already have attached the receiving socket; its state must then be
        // one this server-side connection passes through: a request socket while the
        // handshake's last ACK is in flight, established, or closing after the client's FIN.
        if let Some(state) = d.get("state") {
            let state = state.as_str().unwrap();
            assert!(
                ["NEW_SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"].contains(&state),
                "{d}"
            );
        }
        assert_eq!(d["ip_proto"], "tcp", "{d}");
        assert_eq!(d["protocol"], family, "{d}");
        // Symbolized (the exact function varies by kernel: nf_hook_slow, nft_do_chain…).
        assert!(d["location"].as_str().unwrap().contains("+0x"), "{d}");
    }

    // --- summary: kernel-side totals agree with the stream and with the kernel counters.
    let summary = out.summary();
    assert_eq!(summary["events_lost"], 0, "{summary}");
    for kind in ["retransmit", "drop"] {
        let acc = &summary["events"][kind];
        assert_eq!(acc["counted"], acc["streamed"], "{kind}: {summary}");
    }
    let flows: Vec<&Value> = summary["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["netns"].as_u64() == Some(netns))
        .collect();
    assert_eq!(
        flows.len(),
        1,
        "one flow retransmitted by the sender: {summary}"
    );
    assert_eq!(
        flows[0]["sport"].as_u64(),
        Some(transfer.local.port() as u64)
    );
    assert_eq!(flows[0]["sent"].as_u64(), Some(sent.len() as u64));
    // The sender's flow in the kernel's table, against the sender's RetransSegs (the run-wide
    // total also holds the receiver's own retransmits).
    agrees(
        flows[0]["segs"].as_u64().unwrap(),
        kernel_retrans_segs,
        "flow table segs vs RetransSegs",
    );
    let by_reason = summary["drops"]["by_reason"].as_array().unwrap();
    let nf = by_reason
        .iter()
        .find(|r| r["reason"] == "NETFILTER_DROP")
        .expect("reason row");
    assert_eq!(nf["count"].as_u64(), Some(nft_dropped));
    let by_cpu_total: u64 = summary["drops"]["by_cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(by_cpu_total, summary["drops"]["total"].as_u64().unwrap());

    // --- the sender-namespace tracer saw the same retransmits and none of b's drops.
    let sender_retransmits = sender.of_type("retransmit");
    assert_eq!(
        sender_retransmits.len(),
        retransmits.len(),
        "stderr: {}",
        sender.stderr
    );
    assert!(sender_retransmits
        .iter()
        .all(|r| r["netns"].as_u64() == Some(netns)));
    assert!(sender
        .of_type("drop")
        .iter()
        .all(|d| d["netns"].as_u64() == Some(netns)));
    assert!(!sender
        .of_type("drop")
        .iter()
        .any(|d| d["reason"] == "NETFILTER_DROP"));

    // --- the other-port tracer ran the whole time and saw nothing of this flow.
    assert_eq!(filtered.of_type("hooks").len(), 1);
    let s = filtered.summary();
    assert_eq!(s["events"]["retransmit"]["counted"], 0, "{s}");
    assert_eq!(s["events"]["drop"]["counted"], 0, "{s}");
    assert!(filtered.of_type("retransmit").is_empty() && filtered.of_type("drop").is_empty());

    let segs_of = |kind: &str, trigger: Option<&str>| -> u64 {
        sent.iter()
            .filter(|r| r["kind"] == kind && trigger.is_none_or(|t| r["trigger"] == t))
            .map(|r| r["segs"].as_u64().unwrap())
            .sum()
    };
    let count_of = |kind: &str, trigger: &str| {
        sent.iter()
            .filter(|r| r["kind"] == kind && r["trigger"] == trigger)
            .count()
    };
    eprintln!(
        "{family} kinds: fast segs {} vs TCPFastRetrans +{}; rto/other segs {} vs TCPSlowStartRetrans +{}; rto/timer {} vs TCPTimeouts +{}; tlp {} vs TCPLossProbes +{}; other {}",
        segs_of("fast", None),
        ext_after[0] - ext_before[0],
        segs_of("rto", Some("other")),
        ext_after[1] - ext_before[1],
        count_of("rto", "timer"),
        ext_after[2] - ext_before[2],
        count_of("tlp", "timer"),
        ext_after[3] - ext_before[3],
        sent.iter().filter(|r| r["kind"] == "other").count(),
    );
    // Where the kernel counts the same thing as a kind: fast retransmits (Recovery) are
    // TCPFastRetrans segments, the slow-start retransmits after an RTO are
    // TCPSlowStartRetrans segments, the RTO timer's own retransmits are TCPTimeouts.
    agrees(
        segs_of("fast", None),
        ext_after[0] - ext_before[0],
        "fast segs vs TCPFastRetrans",
    );
    agrees(
        segs_of("rto", Some("other")),
        ext_after[1] - ext_before[1],
        "rto/other segs vs TCPSlowStartRetrans",
    );
    // TCPTimeouts also counts timer firings that retransmit nothing: at most, not exactly.
    assert!(
        count_of("rto", "timer") as u64 <= ext_after[2] - ext_before[2],
        "rto/timer vs TCPTimeouts"
    );
    assert!(
        count_of("tlp", "timer") as u64 <= ext_after[3] - ext_before[3],
        "tlp vs TCPLossProbes"
    );
    eprintln!(
        "{family}: {} retransmit events ({} sent), sum(segs) {} = RetransSegs delta {}; \
         NETFILTER_DROP events {} = nft counter {} ({} with the receiving socket's state)",
        retransmits.len(),
        sent.len(),
        sum_u64(&sent, "segs"),
        kernel_retrans_segs,
        nf_drops.len(),
        nft_dropped,
        nf_drops.iter().filter(|d| d.get("state").is_some()).count()
    );

    // --- nothing of netprobe stays in the kernel.
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

#[test]
fn lossy_tcp_ipv4_matches_retranssegs_and_nft_counter() {
    lossy_transfer_matches_kernel_counters(false, 11);
}

#[test]
fn lossy_tcp_ipv6_matches_retranssegs_and_nft_counter() {
    lossy_transfer_matches_kernel_counters(true, 12);
}

/// A port and a reason filter select exactly the matching drops (UDP to closed ports).
#[test]
fn port_and_reason_filters_select_in_kernel() {
    let link = Link::new("flt", 13);
    let send_udp = |port: u16, count: usize| {
        let to = SocketAddr::new(link.addr(2, false), port);
        link.a.run(move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..count {
                sock.send_to(b"probe", to).unwrap();
            }
        });
    };
    let by_port = Tracer::start(&["--netns", &link.b.name, "--port", "7001"]);
    let by_reason = Tracer::start(&["--netns", &link.b.name, "--reason", "no_socket"]);
    let by_other_reason = Tracer::start(&["--netns", &link.b.name, "--reason", "NETFILTER_DROP"]);
    send_udp(7001, 30);
    send_udp(7002, 20);
    std::thread::sleep(Duration::from_millis(200));
    let (by_port, by_reason, by_other_reason) =
        (by_port.stop(), by_reason.stop(), by_other_reason.stop());

    let port_drops = by_port.of_type("drop");
    assert_eq!(port_drops.len(), 30, "stderr: {}", by_port.stderr);
    assert!(port_drops
        .iter()
        .all(|d| d["dport"] == 7001 && d["reason"] == "NO_SOCKET" && d["ip_proto"] == "udp"));
    assert!(port_drops.iter().all(|d| d["ifname"] == "veth0"));

    let reason_drops = by_reason.of_type("drop");
    assert_eq!(reason_drops.len(), 50);
    assert!(by_other_reason.of_type("drop").is_empty());
    assert_eq!(by_other_reason.summary()["drops"]["total"], 0);
}

/// Killed with SIGKILL, netprobe cannot clean up: the kernel must drop its programs because
/// every attachment is tied to a file descriptor of the process.
#[test]
fn sigkill_leaves_nothing_attached() {
    let tracer = Tracer::start(&[]);
    let loaded = loaded_netprobe_programs();
    assert!(loaded.contains(&"netprobe_rtx".to_string()), "{loaded:?}");
    assert!(loaded.contains(&"netprobe_drop".to_string()), "{loaded:?}");
    tracer.kill();
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// SIGTERM and --duration end with a summary and a clean detach.
#[test]
fn sigterm_and_duration_exit_cleanly() {
    let mut tracer = Tracer::start(&[]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid(), libc::SIGTERM) };
    let out = tracer.wait();
    assert!(out.success, "{}", out.stderr);
    out.summary();
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );

    let mut timed = Tracer::start(&["--duration", "0.5"]);
    let out = timed.wait();
    assert!(out.success, "{}", out.stderr);
    let ms = out.summary()["duration_ms"].as_u64().unwrap();
    assert!((400..5000).contains(&ms), "duration_ms {ms}");
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

fn assert_one_line_failure(args: &[&str], needle: &str) {
    let (ok, stdout, stderr) = netprobe_once(args);
    assert!(!ok, "{args:?} should fail");
    assert!(stdout.is_empty(), "{args:?} printed to stdout: {stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

/// Bad input and a missing BTF: one clear line, non-zero exit, nothing attached.
#[test]
fn clear_failures() {
    assert_one_line_failure(
        &["trace", "--btf", "/nonexistent/vmlinux"],
        "no kernel BTF at /nonexistent/vmlinux",
    );
    assert_one_line_failure(&["trace", "--port", "0"], "not a port number");
    assert_one_line_failure(&["trace", "--port", "http"], "not a port number");
    assert_one_line_failure(
        &["trace", "--addr", "198.18.0.300"],
        "not an IPv4 or IPv6 address",
    );
    assert_one_line_failure(
        &["trace", "--netns", "np-no-such-namespace"],
        "no network namespace",
    );
    assert_one_line_failure(&["trace", "--reason", "NOT_A_REASON"], "no drop reason");
    assert_one_line_failure(&["trace", "--duration", "0"], "positive number");
    assert_one_line_failure(&["trace", "--report-every", "0"], "positive number");
    assert_one_line_failure(&["trace", "--report-every", "nan"], "positive number");
    assert_one_line_failure(&["trace", "--ring-size", "5000"], "power of two");
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// Not root: refused with one line, before touching the kernel.
#[test]
fn refuses_without_root() {
    let out = netprobe_unprivileged(&["trace", "--duration", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The stream overflows (reader frozen with SIGSTOP, 4 KiB ring): the kernel-side totals stay
/// exact against the kernel's own Udp NoPorts counter, and every missing event is counted.
#[test]
fn overflow_keeps_exact_counts_and_reports_loss() {
    const DATAGRAMS: u64 = 5000;
    let link = Link::new("ovf", 14);
    let tracer = Tracer::start(&[
        "--netns",
        &link.b.name,
        "--port",
        "7100",
        "--ring-size",
        "4096",
    ]);
    let no_ports_before = link.b.snmp("Udp", "NoPorts");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid(), libc::SIGSTOP) };
    let to = SocketAddr::new(link.addr(2, false), 7100);
    link.a.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..DATAGRAMS {
            sock.send_to(b"overflow", to).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid(), libc::SIGCONT) };
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let s = out.summary();
    let acc = &s["events"]["drop"];
    let counted = acc["counted"].as_u64().unwrap();
    let streamed = acc["streamed"].as_u64().unwrap();
    let lost = acc["lost"].as_u64().unwrap();
    eprintln!("overflow: {DATAGRAMS} datagrams, NoPorts +{no_ports}, counted {counted}, streamed {streamed}, lost {lost}");
    assert_eq!(no_ports, DATAGRAMS, "every datagram hit a closed port");
    assert_eq!(
        counted, no_ports,
        "kernel count exact despite overflow: {s}"
    );
    assert!(lost > 0, "a 4 KiB ring cannot hold {DATAGRAMS} events: {s}");
    assert_eq!(streamed + lost, counted, "{s}");
    assert_eq!(out.of_type("drop").len() as u64, streamed);
    assert_eq!(s["events_lost"].as_u64(), Some(lost));
    let no_socket = s["drops"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "NO_SOCKET")
        .unwrap();
    assert_eq!(no_socket["count"].as_u64(), Some(DATAGRAMS));
}

/// Every drop names its direction and layer, from real drops at both ends of a link:
/// a's own OUTPUT filter (egress/netfilter), b's INPUT filter (ingress/netfilter), a tiny tbf on
/// a (egress/qdisc), UDP to a closed port on b (ingress/socket) and on a's loopback
/// (local/socket).
#[test]
fn drops_carry_direction_and_layer() {
    let link = Link::new("dir", 15);
    nft_in(
        &link.a.name,
        "table inet np_out {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    tcp dport 6001 drop\n  }\n}\n",
    );
    nft_in(
        &link.b.name,
        "table inet np_in {\n  chain in {\n    type filter hook input priority 0; policy accept;\n    tcp dport 6002 drop\n  }\n}\n",
    );
    add_tiny_tbf(&link.a, "veth0");
    let (a_ns, b_ns) = (link.a.inode(), link.b.inode());

    let tracer = Tracer::start(&[]);
    let peer = link.addr(2, false);
    link.a.run(move || {
        for port in [6001, 6002] {
            let _ = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(peer, port),
                Duration::from_millis(300),
            );
        }
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..300 {
            let _ = udp.send_to(&[0u8; 1000], SocketAddr::new(peer, 7));
        }
        for _ in 0..5 {
            let _ = udp.send_to(b"lo", "127.0.0.1:7");
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let drops = out.of_type("drop");
    let find = |what: &str, pick: &dyn Fn(&Value) -> bool| -> Vec<(String, String)> {
        let found: Vec<(String, String)> = drops
            .iter()
            .filter(|d| pick(d))
            .map(|d| {
                (
                    d["direction"].as_str().unwrap().to_string(),
                    d["layer"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(!found.is_empty(), "no drop for {what}");
        found
    };
    let all_are = |found: Vec<(String, String)>, direction: &str, layer: &str| {
        assert!(
            found.iter().all(|(d, l)| d == direction && l == layer),
            "expected {direction}/{layer}: {found:?}"
        );
    };
    let in_ns = |d: &Value, ns: u64| d["netns"].as_u64() == Some(ns);
    all_are(
        find("a's OUTPUT filter", &|d| {
            in_ns(d, a_ns) && d["reason"] == "NETFILTER_DROP" && d["dport"] == 6001
        }),
        "egress",
        "netfilter",
    );
    all_are(
        find("b's INPUT filter", &|d| {
            in_ns(d, b_ns) && d["reason"] == "NETFILTER_DROP" && d["dport"] == 6002
        }),
        "ingress",
        "netfilter",
    );
    all_are(
        find("a's tbf", &|d| {
            in_ns(d, a_ns) && d["reason"].as_str().unwrap().starts_with("QDISC")
        }),
        "egress",
        "qdisc",
    );
    all_are(
        find("closed port on b", &|d| {
            in_ns(d, b_ns) && d["reason"] == "NO_SOCKET" && d["dport"] == 7
        }),
        "ingress",
        "socket",
    );
    all_are(
        find("closed port on a's loopback", &|d| {
            in_ns(d, a_ns) && d["reason"] == "NO_SOCKET" && d["ifname"] == "lo"
        }),
        "local",
        "socket",
    );
}

/// NET_RX per CPU from the in-kernel softirq timing, checked against /proc/softirqs read
/// around the trace (the trace window lies inside that window, so its counts can only be
/// lower, and with traffic inside it they make up most of it); NAPI polls of the backlog that
/// veth delivers through.
#[test]
fn net_rx_softirq_and_napi_per_cpu() {
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
    let link = Link::new("sirq", 16);
    let before = net_rx_per_cpu();
    let tracer = Tracer::start(&["--port", "5003"]);
    bulk_transfer(
        &link.a,
        &link.b,
        SocketAddr::new(link.addr(2, false), 5003),
        32 << 20,
    );
    let out = tracer.stop();
    let after = net_rx_per_cpu();
    assert!(out.success, "{}", out.stderr);
    let hooks = out.of_type("hooks")[0]["hooks"].as_array().unwrap().clone();
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

/// The owner of a flow is the process holding the socket, named from the socket's inode, not
/// the task that happened to be on the CPU (retransmits mostly run from timers and softirqs).
#[test]
fn retransmits_and_drops_name_the_owning_process() {
    const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");
    let link = Link::new("own", 17);
    nft_in(&link.b.name, &input_loss_ruleset("netprobe_test", 5006, 3));
    let server = SocketAddr::new(link.addr(2, false), 5006);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = link.b.spawn(move || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 5006)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    ready_rx.recv().unwrap();
    let tracer = Tracer::start(&["--port", "5006"]);
    let holder = Holder::start(&link.a, HOLDER, &["send", &server.to_string(), "24"]);
    assert_eq!(sink.join().unwrap(), 24 << 20);
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let retransmits = out.of_type("retransmit");
    assert!(!retransmits.is_empty(), "3% loss must retransmit");
    for r in &retransmits {
        assert_eq!(r["pid"].as_u64(), Some(holder.pid() as u64), "{r}");
        assert_eq!(r["comm"], "np-holder", "{r}");
    }
    let flows = out.summary()["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        flows[0]["owner"]["pid"].as_u64(),
        Some(holder.pid() as u64),
        "{flows:?}"
    );
    // Drops at the receiver that carry the established socket name the sink: this process.
    let owned_drops: Vec<&Value> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d.get("pid").is_some())
        .collect();
    for d in &owned_drops {
        assert_eq!(d["pid"].as_u64(), Some(std::process::id() as u64), "{d}");
    }
    eprintln!(
        "owner: {} retransmits all owned by np-holder pid {}; {} drops named the receiving process",
        retransmits.len(),
        holder.pid(),
        owned_drops.len()
    );
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
    let drops = backlog["drop_events"].as_u64().unwrap();
    eprintln!(
        "backlog: {backlog} skipped: {} events: {}",
        out.summary()["kernel_skipped"],
        out.summary()["events"]
    );
    assert!(drops > 0, "a backlog of 8 must overflow: {backlog}");
    let softnet = backlog["softnet_dropped"].as_u64().unwrap();
    let skipped = out.summary()["kernel_skipped"]["netprobe_drop"]
        .as_u64()
        .unwrap();
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
    let events: Vec<&Value> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d["reason"] == "CPU_BACKLOG")
        .collect();
    assert_eq!(events.len() as u64, drops, "every drop streamed");
    // Every drop accounted for by origin:
    // - the datagrams into b, enqueued from the sender's CPU 0 onto CPU 1 by RPS;
    // - b's ICMP port-unreachable replies into a, sent while b runs on CPU 1, onto CPU 1's own
    //   (full) backlog;
    // - anything else can only be IPv6 control traffic the kernel sends on a new link (MLD,
    //   router solicitations) from a timer on any CPU.
    let (b_ns, a_ns) = (link.b.inode(), link.a.inode());
    let mut datagrams = 0;
    for d in &events {
        let origin = (
            d["netns"].as_u64(),
            d["ip_proto"].as_str(),
            d["dport"].as_u64(),
        );
        if origin == (Some(b_ns), Some("udp"), Some(9)) {
            assert_eq!(d["cpu"].as_u64(), Some(0), "{d}");
            assert_eq!(
                (d["direction"].as_str(), d["layer"].as_str()),
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

    // The findings name the overflowing CPU, the enqueuing CPUs and the steering, with the fix.
    let bundle = out.of_type("findings")[0].clone();
    let finding = finding_about(&bundle, "backlog_overflow", None);
    assert_eq!(finding["cpus"], serde_json::json!([1]), "{finding}");
    assert_eq!(
        (finding["direction"].as_str(), finding["layer"].as_str()),
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
    let row = reconciliation_row(&bundle, "softnet_stat dropped");
    assert_eq!(
        (row["events"].as_u64(), row["counters"].as_u64()),
        (Some(drops), Some(softnet)),
        "{row}"
    );
}

/// Runs `f` with a ruleset in place in `ns`, removing the table after `hold`.
fn with_rule_for(ns: &Netns, table: &str, rule: &str, hold: Duration) {
    nft_in(
        &ns.name,
        &format!("table inet {table} {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    {rule}\n  }}\n}}\n"),
    );
    let name = ns.name.clone();
    let table = table.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        // The scenario may be over and its namespace (with the table) gone already.
        let _ = std::process::Command::new("ip")
            .args([
                "netns", "exec", &name, "nft", "delete", "table", "inet", &table,
            ])
            .output();
    });
}

/// A sink on `port` in `b` that reads until EOF.
fn sink(b: &Netns, port: u16) -> std::thread::JoinHandle<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = b.spawn(move || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut all).unwrap();
        all.len() as u64
    });
    rx.recv().unwrap();
    handle
}

/// Connects from `a`, sends `payload` bytes in one write, waits `linger`, then closes and
/// waits for the peer's FIN. (A FIN sent right behind lost data is SACKed and puts the
/// sender into fast recovery: lingering keeps a scenario to one kind of retransmit.)
fn send_once(a: &Netns, to: SocketAddr, payload: usize, linger: Duration) {
    a.run(move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        std::io::Write::write_all(&mut s, &vec![7u8; payload]).unwrap();
        std::thread::sleep(linger);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    });
}

fn kinds_of(out: &TraceOutput, netns: u64, port: u16) -> Vec<&Value> {
    out.of_type("retransmit")
        .into_iter()
        .filter(|r| {
            r["netns"].as_u64() == Some(netns) && (r["dport"] == port || r["sport"] == port)
        })
        .collect()
}

/// One single-kind scenario: a connects to a sink in b on `port` and sends `payload` bytes
/// while `rule` (in `rule_in`, removed after `hold`) causes the loss.
struct Scenario<'a> {
    counted_in: &'a Netns,
    /// The TcpExt counter for this kind, read in `counted_in` before and after.
    counter: &'static str,
    port: u16,
    rule_in: &'a Netns,
    rule: &'static str,
    hold: Duration,
    payload: usize,
    linger: Duration,
}

/// Runs a scenario; returns the TcpExt counter's growth over it.
fn one_kind(link: &Link, s: Scenario) -> u64 {
    let before = s.counted_in.netstat("TcpExt", s.counter);
    let receiver = sink(&link.b, s.port);
    with_rule_for(s.rule_in, &format!("np_kind_{}", s.port), s.rule, s.hold);
    send_once(
        &link.a,
        SocketAddr::new(link.addr(2, false), s.port),
        s.payload,
        s.linger,
    );
    receiver.join().unwrap();
    s.counted_in.netstat("TcpExt", s.counter) - before
}

/// Scenarios that each produce one kind of retransmit, checked against the namespace's own
/// TcpExt counter for that kind.
#[test]
fn retransmit_kinds_match_tcpext() {
    let link = Link::new("kind", 19);
    // Each scenario starts from fresh RTT estimates: otherwise tcp_metrics hands the slow
    // handshakes' RTT to the next connection to the same peer, and its first RTO is seconds.
    link.a.sysctl("net.ipv4.tcp_no_metrics_save", "1");
    let tracer = Tracer::start(&[]);
    let (a_ns, b_ns) = (link.a.inode(), link.b.inode());

    // RTO: no loss probes in a (tcp_early_retrans=0, this namespace only); b drops a's data
    // for 0.5 s: the retransmission timer fires.
    link.a.sysctl("net.ipv4.tcp_early_retrans", "0");
    let timeouts = one_kind(
        &link,
        Scenario {
            counted_in: &link.a,
            counter: "TCPTimeouts",
            port: 6103,
            rule_in: &link.b,
            rule: "tcp dport 6103 ip length > 100 drop",
            hold: Duration::from_millis(500),
            payload: 500,
            linger: Duration::from_millis(1500),
        },
    );
    link.a.sysctl("net.ipv4.tcp_early_retrans", "3");

    // SYN: b drops the SYNs for 1.2 s; a retransmits its SYN from the timer.
    let syn_retrans = one_kind(
        &link,
        Scenario {
            counted_in: &link.a,
            counter: "TCPSynRetrans",
            port: 6101,
            rule_in: &link.b,
            rule: "tcp dport 6101 tcp flags & (syn | ack) == syn drop",
            hold: Duration::from_millis(1200),
            payload: 100,
            linger: Duration::ZERO,
        },
    );

    // SYN-ACK: a drops the SYN-ACKs for 1.2 s; b retransmits them (timer, and in answer to
    // a's own SYN retransmit).
    let synack_retrans = one_kind(
        &link,
        Scenario {
            counted_in: &link.b,
            counter: "TCPSynRetrans",
            port: 6102,
            rule_in: &link.a,
            rule: "tcp sport 6102 tcp flags & (syn | ack) == syn | ack drop",
            hold: Duration::from_millis(1200),
            payload: 100,
            linger: Duration::ZERO,
        },
    );

    // TLP: a lone 500-byte segment (552 bytes on the wire) is lost once; the quota lets its
    // probe through.
    let probes = one_kind(
        &link,
        Scenario {
            counted_in: &link.a,
            counter: "TCPLossProbes",
            port: 6104,
            rule_in: &link.b,
            rule: "tcp dport 6104 ip length 552 quota until 1000 bytes drop",
            hold: Duration::from_secs(5),
            payload: 500,
            linger: Duration::from_millis(500),
        },
    );

    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    // Events the kernel skipped (another BPF program was running on that CPU) are reported
    // per program; the counters may exceed the events by exactly those.
    let skipped = |program: &str| out.summary()["kernel_skipped"][program].as_u64().unwrap();
    let (rtx_skipped, synack_skipped) = (skipped("netprobe_rtx"), skipped("netprobe_synack"));
    let accounted = |events: usize, kernel: u64, skipped: u64| {
        let events = events as u64;
        assert!(
            events <= kernel && kernel <= events + skipped,
            "events {events}, kernel {kernel}, skipped by the kernel {skipped}"
        );
    };
    let summarize = |events: &[&Value]| -> Vec<(String, String)> {
        events
            .iter()
            .map(|r| {
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["trigger"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    let syn = kinds_of(&out, a_ns, 6101);
    eprintln!("syn: {:?}, TCPSynRetrans +{syn_retrans}", summarize(&syn));
    assert!(!syn.is_empty());
    assert!(
        syn.iter()
            .all(|r| r["kind"] == "syn" && r["trigger"] == "timer"),
        "{:?}",
        summarize(&syn)
    );
    accounted(syn.len(), syn_retrans, rtx_skipped);

    let synack = kinds_of(&out, b_ns, 6102);
    eprintln!(
        "synack: {:?}, TCPSynRetrans +{synack_retrans}",
        summarize(&synack)
    );
    assert!(!synack.is_empty());
    assert!(
        synack.iter().all(|r| r["kind"] == "synack"),
        "{:?}",
        summarize(&synack)
    );
    accounted(synack.len(), synack_retrans, synack_skipped);

    let rto = kinds_of(&out, a_ns, 6103);
    eprintln!("rto: {:?}, TCPTimeouts +{timeouts}", summarize(&rto));
    assert!(!rto.is_empty());
    assert!(
        rto.iter()
            .all(|r| r["kind"] == "rto" && r["trigger"] == "timer"),
        "{:?}",
        summarize(&rto)
    );
    accounted(rto.len(), timeouts, rtx_skipped);

    let tlp = kinds_of(&out, a_ns, 6104);
    eprintln!("tlp: {:?}, TCPLossProbes +{probes}", summarize(&tlp));
    assert_eq!(
        summarize(&tlp),
        vec![("tlp".to_string(), "timer".to_string())]
    );
    assert_eq!(probes, 1);
}

/// Text mode, for people: interim findings every --report-every, one final bundle after the
/// summary, each naming the loss it saw with its fix.
#[test]
fn text_mode_prints_findings_so_far_and_at_the_end() {
    let link = Link::new("txt", 30);
    let udp_to = SocketAddr::new(link.addr(2, false), 7301);
    // Closed port in b: NO_SOCKET drops, named in the findings, sent once netprobe traces.
    let (ok, stdout, stderr) = netprobe_traced(
        &[
            "--duration",
            "1.6",
            "--report-every",
            "0.5",
            "--port",
            "7301",
        ],
        || {
            link.a.run(move || {
                let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..20 {
                    udp.send_to(b"x", udp_to).unwrap();
                }
            })
        },
    );
    assert!(ok, "{stderr}");
    let interim = stdout.matches("== netprobe findings (so far").count();
    assert!(interim >= 2, "--report-every 0.5 over 1.6 s: {stdout}");
    assert_eq!(
        stdout.matches("== netprobe findings (final").count(),
        1,
        "{stdout}"
    );
    let last = stdout.rsplit("== netprobe findings (final").next().unwrap();
    assert!(
        last.contains("drops_udp_no_socket") || last.contains("drops_socket_no_socket"),
        "{last}"
    );
    assert!(
        last.contains("nothing listens on the destination port"),
        "{last}"
    );
    assert!(
        last.contains("reconciliation (events vs counters, same window):"),
        "{last}"
    );
    // The summary comes before the final bundle.
    assert!(
        stdout.find("== netprobe summary").unwrap()
            < stdout.find("== netprobe findings (final").unwrap()
    );
}

/// Hooks turned off by the user are reported inactive with the flag that turned them off,
/// and never loaded.
#[test]
fn hooks_turned_off_are_reported_and_not_loaded() {
    let tracer = Tracer::start(&["--without-cpu-hooks", "--without-receive-hook"]);
    let loaded = loaded_netprobe_programs();
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    let hooks = out.of_type("hooks")[0]["hooks"].as_array().unwrap().clone();
    for (name, flag) in [
        ("irq:softirq_entry", "--without-cpu-hooks"),
        ("irq:softirq_exit", "--without-cpu-hooks"),
        ("napi:napi_poll", "--without-cpu-hooks"),
        ("tcp:tcp_probe", "--without-receive-hook"),
    ] {
        let hook = hooks.iter().find(|h| h["hook"] == name).unwrap();
        assert_eq!(hook["active"], false, "{hook}");
        assert!(hook["detail"].as_str().unwrap().contains(flag), "{hook}");
    }
    for program in [
        "netprobe_sirq_in",
        "netprobe_sirq_out",
        "netprobe_napi",
        "netprobe_rcv",
    ] {
        assert!(
            !loaded.contains(&program.to_string()),
            "{program} loaded: {loaded:?}"
        );
    }
    assert!(loaded.contains(&"netprobe_drop".to_string()), "{loaded:?}");
    let rtx = hooks
        .iter()
        .find(|h| h["hook"] == "tcp:tcp_retransmit_skb")
        .unwrap();
    assert!(
        rtx["detail"]
            .as_str()
            .unwrap()
            .contains("softirq hooks inactive"),
        "{rtx}"
    );
}
