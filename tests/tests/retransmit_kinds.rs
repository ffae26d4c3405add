//! Retransmit kinds (SYN, SYN-ACK, RTO, TLP), each from a scenario that produces that kind
//! alone, checked against the namespace's own TcpExt counter for it. Run as root with
//! `--test-threads=1`.

use std::{net::SocketAddr, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

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
    let to = link.b_port(s.port);
    let receiver = TcpSink::start(&link.b, to);
    NftTable::input(s.rule_in, &format!("np_kind_{}", s.port), s.rule).delete_after(s.hold);
    send_once(&link.a, to, s.payload, s.linger);
    receiver.received();
    s.counted_in.netstat("TcpExt", s.counter) - before
}

/// Each kind's counter growth over its scenario.
struct KindCounters {
    syn_retrans: u64,
    synack_retrans: u64,
    timeouts: u64,
    probes: u64,
}

/// The four scenarios, one after the other, on one link.
fn run_scenarios(link: &Link) -> KindCounters {
    // RTO: no loss probes in a (tcp_early_retrans=0, this namespace only); b drops a's data
    // for 0.5 s: the retransmission timer fires.
    link.a.sysctl("net.ipv4.tcp_early_retrans", "0");
    let timeouts = one_kind(
        link,
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
        link,
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
        link,
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
        link,
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
    KindCounters {
        syn_retrans,
        synack_retrans,
        timeouts,
        probes,
    }
}

/// (kind, trigger) of each event.
fn summarize(events: &[&Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["trigger"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Events the kernel skipped (another BPF program was running on that CPU) are reported per
/// program, and those it ran no program for at all (this host's PID 1 context) are counted by
/// ftrace; the counters may exceed the events by exactly those.
fn accounted(events: usize, kernel: u64, skipped: u64) {
    let events = events as u64;
    assert!(
        events <= kernel && kernel <= events + skipped,
        "events {events}, kernel {kernel}, skipped by the kernel {skipped}"
    );
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
    // ftrace beside netprobe: a firing this host's sandbox kernel ran no program for (its PID 1
    // agent's context, see `witness`) is counted, not guessed.
    let witness = Ftrace::start(&["tcp/tcp_retransmit_skb", "tcp/tcp_retransmit_synack"]);
    let (a_ns, b_ns) = (link.a.inode(), link.b.inode());
    let counters = run_scenarios(&link);
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());
    let withheld_on = |event: &str, port: &str| withheld.count(event, port);
    let rtx_skipped = out.kernel_skipped_of_hook("tcp:tcp_retransmit_skb");
    let synack_skipped = out.kernel_skipped("netprobe_synack");

    let syn = out.on_port("retransmit", a_ns, 6101);
    let syn_retrans = counters.syn_retrans;
    eprintln!("syn: {:?}, TCPSynRetrans +{syn_retrans}", summarize(&syn));
    assert!(!syn.is_empty());
    assert!(
        syn.iter()
            .all(|r| r["kind"] == "syn" && r["trigger"] == "timer"),
        "{:?}",
        summarize(&syn)
    );
    let syn_withheld = withheld_on("tcp_retransmit_skb:", "dport=6101 ");
    accounted(syn.len(), syn_retrans, rtx_skipped + syn_withheld);

    let synack = out.on_port("retransmit", b_ns, 6102);
    let synack_retrans = counters.synack_retrans;
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
    let synack_withheld = withheld_on("tcp_retransmit_synack:", "sport=6102 ");
    accounted(
        synack.len(),
        synack_retrans,
        synack_skipped + synack_withheld,
    );

    let rto = out.on_port("retransmit", a_ns, 6103);
    let timeouts = counters.timeouts;
    eprintln!("rto: {:?}, TCPTimeouts +{timeouts}", summarize(&rto));
    assert!(!rto.is_empty());
    assert!(
        rto.iter()
            .all(|r| r["kind"] == "rto" && r["trigger"] == "timer"),
        "{:?}",
        summarize(&rto)
    );
    let rto_withheld = withheld_on("tcp_retransmit_skb:", "dport=6103 ");
    eprintln!(
        "withheld by the kernel: syn {syn_withheld}, synack {synack_withheld}, rto {rto_withheld}"
    );
    accounted(rto.len(), timeouts, rtx_skipped + rto_withheld);

    let tlp = out.on_port("retransmit", a_ns, 6104);
    let probes = counters.probes;
    eprintln!("tlp: {:?}, TCPLossProbes +{probes}", summarize(&tlp));
    assert_eq!(probes, 1);
    if withheld_on("tcp_retransmit_skb:", "dport=6104 ") == 0 {
        assert_eq!(
            summarize(&tlp),
            vec![("tlp".to_string(), "timer".to_string())]
        );
    } else {
        assert!(tlp.is_empty(), "{:?}", summarize(&tlp));
    }
}

/// A dual-stack listener (`[::]`, the usual server socket) answering an IPv4 client: its
/// request socket has the listener's family (AF_INET6) and v4-mapped addresses. Each SYN-ACK
/// retransmit must name the IPv4 flow, as every other event of that connection does, and
/// their number TCPSynRetrans.
#[test]
fn a_dual_stack_listeners_synack_retransmits_name_the_ipv4_flow() {
    let link = Link::new("dual", 35);
    link.b.sysctl("net.ipv6.bindv6only", "0");
    let tracer = Tracer::start(&[]);
    let before = link.b.netstat("TcpExt", "TCPSynRetrans");
    let receiver = TcpSink::start(&link.b, link.socket(2, 6105, true));
    NftTable::input(
        &link.a,
        "np_dual",
        "tcp sport 6105 tcp flags & (syn | ack) == syn | ack drop",
    )
    .delete_after(Duration::from_millis(1200));
    send_once(&link.a, link.b_port(6105), 100, Duration::ZERO);
    receiver.received();
    let synack_retrans = link.b.netstat("TcpExt", "TCPSynRetrans") - before;
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    let synack = out.on_port("retransmit", link.b.inode(), 6105);
    eprintln!("synack: {synack:?}, TCPSynRetrans +{synack_retrans}");
    assert!(!synack.is_empty());
    for r in &synack {
        assert_eq!(r["kind"], "synack", "{r}");
        assert_eq!(r["family"], "ipv4", "{r}");
        assert_eq!(r["saddr"], link.addr(2, false).to_string(), "{r}");
        assert_eq!(r["daddr"], link.addr(1, false).to_string(), "{r}");
        assert_eq!(r["sport"], 6105, "{r}");
    }
    accounted(
        synack.len(),
        synack_retrans,
        out.kernel_skipped("netprobe_synack"),
    );
}
