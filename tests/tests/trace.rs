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
/// The sender's TcpExt counters that stand beside a retransmit kind, in this order.
const KIND_COUNTERS: [&str; 4] = [
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPTimeouts",
    "TCPLossProbes",
];

fn sum_u64(events: &[&Value], field: &str) -> u64 {
    events.iter().map(|e| e[field].as_u64().unwrap()).sum()
}

/// The sender's counters that the trace is checked against.
struct SenderCounters {
    retrans_segs: u64,
    kinds: [u64; 4],
}

impl SenderCounters {
    fn read(ns: &Netns) -> Self {
        Self {
            retrans_segs: ns.snmp("Tcp", "RetransSegs"),
            kinds: KIND_COUNTERS.map(|name| ns.netstat("TcpExt", name)),
        }
    }
}

/// One lossy transfer a → b, its three tracers, and what the kernel counted meanwhile.
struct LossyRun {
    v6: bool,
    /// a's namespace: the sender's.
    netns: u64,
    receiver_netns: u64,
    server: SocketAddr,
    transfer: Transfer,
    before: SenderCounters,
    after: SenderCounters,
    nft_dropped: u64,
    /// Firings the kernel ran no program for (this sandbox's PID 1 context, see `witness`):
    /// the flow's retransmits and the netfilter drops, as ftrace saw them.
    withheld_retransmits: u64,
    withheld_drops: u64,
    /// Traced by port.
    out: TraceOutput,
    /// Traced by a's namespace.
    sender: TraceOutput,
    /// Traced by another port.
    filtered: TraceOutput,
}

impl LossyRun {
    fn family(&self) -> &'static str {
        if self.v6 {
            "ipv6"
        } else {
            "ipv4"
        }
    }

    /// Exact unless the kernel skipped some of our invocations (reported per program).
    fn agrees(&self, ours: u64, kernel: u64, what: &str) {
        let skipped = self.out.kernel_skipped_of_hook("tcp:tcp_retransmit_skb");
        if skipped == 0 && self.withheld_retransmits == 0 {
            assert_eq!(ours, kernel, "{what}");
        } else {
            assert!(ours <= kernel, "{what}: {ours} > {kernel}");
        }
    }

    fn kernel_retrans_segs(&self) -> u64 {
        self.after.retrans_segs - self.before.retrans_segs
    }

    /// Growth of `KIND_COUNTERS[i]` over the run.
    fn kind_counter(&self, i: usize) -> u64 {
        self.after.kinds[i] - self.before.kinds[i]
    }
}

/// One lossy transfer a → b (data lost entering b), traced three ways at once: by port, by
/// a's namespace, and by another port.
fn lossy_run(v6: bool, subnet: u8) -> LossyRun {
    let link = Link::new(if v6 { "l6" } else { "l4" }, subnet);
    let loss = NftTable::input_loss(&link.b, "netprobe_test", PORT, 3);
    let netns = link.a.inode();
    let receiver_netns = link.b.inode();

    let traced = Tracer::start(&["--port", &PORT.to_string()]);
    let sender_only = Tracer::start(&["--netns", &link.a.name]);
    let other_port = Tracer::start(&["--port", &OTHER_PORT.to_string()]);

    let before = SenderCounters::read(&link.a);
    let witness = Ftrace::start(&["tcp/tcp_retransmit_skb", "skb/kfree_skb"]);
    let server = link.socket(2, PORT, v6);
    let transfer = bulk_transfer(&link.a, &link.b, server, BYTES);
    // Let any in-flight event reach the ring before the window closes.
    std::thread::sleep(Duration::from_millis(200));
    let after = SenderCounters::read(&link.a);
    let nft_dropped = loss.packets();
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());

    let out = traced.stop();
    let sender = sender_only.stop();
    let filtered = other_port.stop();
    assert!(out.success, "netprobe failed: {}", out.stderr);
    assert!(
        filtered.success,
        "netprobe --port failed: {}",
        filtered.stderr
    );
    LossyRun {
        v6,
        netns,
        receiver_netns,
        server,
        transfer,
        before,
        after,
        nft_dropped,
        withheld_retransmits: withheld.count("tcp_retransmit_skb:", &format!("dport={PORT} ")),
        withheld_drops: withheld.count("kfree_skb:", "NETFILTER_DROP"),
        out,
        sender,
        filtered,
    }
}

/// Checks every number of one lossy transfer against the kernel's counters.
fn lossy_transfer_matches_kernel_counters(v6: bool, subnet: u8) {
    let run = lossy_run(v6, subnet);
    let retransmits = check_retransmits(&run);
    let sent: Vec<&Value> = retransmits
        .iter()
        .copied()
        .filter(|r| r["err"] == 0)
        .collect();
    run.agrees(
        sum_u64(&sent, "segs"),
        run.kernel_retrans_segs(),
        "sum of segs over sent retransmits vs RetransSegs delta",
    );
    let nf_drops = check_drops(&run);
    check_summary(&run, &sent);
    check_other_tracers(&run, &retransmits);
    check_kinds(&run, &sent);
    eprintln!(
        "{}: {} retransmit events ({} sent), sum(segs) {} = RetransSegs delta {}; \
         NETFILTER_DROP events {} = nft counter {} ({} with the receiving socket's state)",
        run.family(),
        retransmits.len(),
        sent.len(),
        sum_u64(&sent, "segs"),
        run.kernel_retrans_segs(),
        nf_drops.len(),
        run.nft_dropped,
        nf_drops.iter().filter(|d| d.get("state").is_some()).count()
    );

    // --- nothing of netprobe stays in the kernel.
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// Retransmits: exactly this flow, this namespace, and RetransSegs to the segment. Returns
/// the sender's retransmits.
fn check_retransmits(run: &LossyRun) -> Vec<&Value> {
    let out = &run.out;
    // The sender's retransmits; the receiver may add its own (its input rule can drop the
    // ACK of its SYN-ACK or of its FIN), counted in its own namespace.
    let all_retransmits = out.of_type("retransmit");
    let (retransmits, receiver_side): (Vec<&Value>, Vec<&Value>) = all_retransmits
        .iter()
        .partition(|r| r["netns"].as_u64() == Some(run.netns));
    for r in &receiver_side {
        // The receiver's own segments (its SYN-ACK, or its FIN when the rule ate the ACK).
        assert_eq!(
            (r["netns"].as_u64(), r["sport"].as_u64()),
            (Some(run.receiver_netns), Some(PORT as u64)),
            "{r}"
        );
    }
    assert!(
        !retransmits.is_empty(),
        "3% loss over {BYTES} bytes must retransmit: RetransSegs {}->{}, nft dropped {}, summary {}",
        run.before.retrans_segs,
        run.after.retrans_segs,
        run.nft_dropped,
        out.summary()
    );
    let local = run.transfer.local;
    for r in &retransmits {
        assert_eq!(r["netns"].as_u64(), Some(run.netns), "{r}");
        assert_eq!(r["family"], run.family(), "{r}");
        assert_eq!(r["saddr"], local.ip().to_string(), "{r}");
        assert_eq!(r["sport"].as_u64(), Some(local.port() as u64), "{r}");
        assert_eq!(r["daddr"], run.server.ip().to_string(), "{r}");
        assert_eq!(r["dport"].as_u64(), Some(PORT as u64), "{r}");
        assert!(r["segs"].as_u64().unwrap() >= 1, "{r}");
    }
    retransmits
}

/// Drops: one NETFILTER_DROP event per packet the nft rule counted. Returns them.
fn check_drops(run: &LossyRun) -> Vec<&Value> {
    let nf_drops = run.out.drops_with_reason("NETFILTER_DROP");
    assert!(run.nft_dropped > 0);
    assert_eq!(
        nf_drops.len() as u64 + run.withheld_drops,
        run.nft_dropped,
        "NETFILTER_DROP events (+{} withheld by the kernel) vs nft counter",
        run.withheld_drops
    );
    for d in &nf_drops {
        assert_eq!(d["netns"].as_u64(), Some(run.receiver_netns), "{d}");
        assert_eq!(d["dport"].as_u64(), Some(PORT as u64), "{d}");
        assert_eq!(d["saddr"], run.transfer.local.ip().to_string(), "{d}");
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
        assert_eq!(d["protocol"], run.family(), "{d}");
        // Symbolized (the exact function varies by kernel: nf_hook_slow, nft_do_chain…).
        assert!(d["location"].as_str().unwrap().contains("+0x"), "{d}");
    }
    nf_drops
}

/// The summary: kernel-side totals agree with the stream and with the kernel counters.
fn check_summary(run: &LossyRun, sent: &[&Value]) {
    let summary = run.out.summary();
    assert_eq!(summary["events_lost"], 0, "{summary}");
    for kind in ["retransmit", "drop"] {
        let acc = &summary["events"][kind];
        assert_eq!(acc["counted"], acc["streamed"], "{kind}: {summary}");
    }
    let flows: Vec<&Value> = summary["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["netns"].as_u64() == Some(run.netns))
        .collect();
    assert_eq!(
        flows.len(),
        1,
        "one flow retransmitted by the sender: {summary}"
    );
    assert_eq!(
        flows[0]["sport"].as_u64(),
        Some(run.transfer.local.port() as u64)
    );
    assert_eq!(flows[0]["sent"].as_u64(), Some(sent.len() as u64));
    // The sender's flow in the kernel's table, against the sender's RetransSegs (the run-wide
    // total also holds the receiver's own retransmits).
    run.agrees(
        flows[0]["segs"].as_u64().unwrap(),
        run.kernel_retrans_segs(),
        "flow table segs vs RetransSegs",
    );
    let by_reason = summary["drops"]["by_reason"].as_array().unwrap();
    let nf = by_reason
        .iter()
        .find(|r| r["reason"] == "NETFILTER_DROP")
        .expect("reason row");
    assert_eq!(nf["count"].as_u64(), Some(run.nft_dropped));
    let by_cpu_total: u64 = summary["drops"]["by_cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(by_cpu_total, summary["drops"]["total"].as_u64().unwrap());
}

/// The sender-namespace tracer saw the same retransmits and none of b's drops; the
/// other-port tracer ran the whole time and saw nothing of this flow.
fn check_other_tracers(run: &LossyRun, retransmits: &[&Value]) {
    let (sender, netns) = (&run.sender, run.netns);
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

    let filtered = &run.filtered;
    assert_eq!(filtered.of_type("hooks").len(), 1);
    let s = filtered.summary();
    assert_eq!(s["events"]["retransmit"]["counted"], 0, "{s}");
    assert_eq!(s["events"]["drop"]["counted"], 0, "{s}");
    assert!(filtered.of_type("retransmit").is_empty() && filtered.of_type("drop").is_empty());
}

/// Where the kernel counts the same thing as a kind: fast retransmits (Recovery) are
/// TCPFastRetrans segments, the slow-start retransmits after an RTO are TCPSlowStartRetrans
/// segments, the RTO timer's own retransmits are TCPTimeouts.
fn check_kinds(run: &LossyRun, sent: &[&Value]) {
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
        "{} kinds: fast segs {} vs TCPFastRetrans +{}; rto/other segs {} vs TCPSlowStartRetrans +{}; rto/timer {} vs TCPTimeouts +{}; tlp {} vs TCPLossProbes +{}; other {}",
        run.family(),
        segs_of("fast", None),
        run.kind_counter(0),
        segs_of("rto", Some("other")),
        run.kind_counter(1),
        count_of("rto", "timer"),
        run.kind_counter(2),
        count_of("tlp", "timer"),
        run.kind_counter(3),
        sent.iter().filter(|r| r["kind"] == "other").count(),
    );
    run.agrees(
        segs_of("fast", None),
        run.kind_counter(0),
        "fast segs vs TCPFastRetrans",
    );
    run.agrees(
        segs_of("rto", Some("other")),
        run.kind_counter(1),
        "rto/other segs vs TCPSlowStartRetrans",
    );
    // TCPTimeouts also counts timer firings that retransmit nothing: at most, not exactly.
    assert!(
        count_of("rto", "timer") as u64 <= run.kind_counter(2),
        "rto/timer vs TCPTimeouts"
    );
    assert!(
        count_of("tlp", "timer") as u64 <= run.kind_counter(3),
        "tlp vs TCPLossProbes"
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
    let by_port = Tracer::start(&["--netns", &link.b.name, "--port", "7001"]);
    let by_reason = Tracer::start(&["--netns", &link.b.name, "--reason", "no_socket"]);
    let by_other_reason = Tracer::start(&["--netns", &link.b.name, "--reason", "NETFILTER_DROP"]);
    assert_eq!(send_udp(&link.a, link.b_port(7001), b"probe", 30), 30);
    assert_eq!(send_udp(&link.a, link.b_port(7002), b"probe", 20), 20);
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
    signal(tracer.pid(), libc::SIGSTOP);
    let sent = send_udp(&link.a, link.b_port(7100), b"overflow", DATAGRAMS as usize);
    assert_eq!(sent as u64, DATAGRAMS);
    std::thread::sleep(Duration::from_millis(200));
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    signal(tracer.pid(), libc::SIGCONT);
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let s = out.summary();
    let acc = &s["events"]["drop"];
    let counted = acc["counted"].as_u64().unwrap();
    let streamed = acc["streamed"].as_u64().unwrap();
    let lost = acc["lost"].as_u64().unwrap();
    // Past half the ring unread, the site is sampled (storm sampling): counted, not streamed.
    let sampled_out = acc["sampled_out"].as_u64().unwrap();
    eprintln!("overflow: {DATAGRAMS} datagrams, NoPorts +{no_ports}, counted {counted}, streamed {streamed}, lost {lost}, sampled out {sampled_out}");
    assert_eq!(no_ports, DATAGRAMS, "every datagram hit a closed port");
    assert_eq!(
        counted, no_ports,
        "kernel count exact despite overflow: {s}"
    );
    assert!(
        lost + sampled_out > 0,
        "a 4 KiB ring cannot hold {DATAGRAMS} events: {s}"
    );
    assert_eq!(streamed + lost + sampled_out, counted, "{s}");
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
