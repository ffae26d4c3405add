//! Which direction loses packets, seen from both ends of one connection: the sender's
//! retransmits, the receiver's view of the peer's retransmits (`peer_retransmit`) and of holes
//! (`ooo`), and the drops at the host that dropped. Run as root with `--test-threads=1`.

use std::{net::SocketAddr, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

const PORT: u16 = 5101;
const ACK_PORT: u16 = 5102;
const BYTES: u64 = 16 << 20;

/// TcpExt counters of the receiving side that the receive program's totals stand beside.
struct ReceiverCounters {
    delayed_ack_lost: u64,
    ofo_queue: u64,
    ofo_drop: u64,
}

impl ReceiverCounters {
    fn read(ns: &Netns) -> Self {
        Self {
            delayed_ack_lost: ns.netstat("TcpExt", "DelayedACKLost"),
            ofo_queue: ns.netstat("TcpExt", "TCPOFOQueue"),
            ofo_drop: ns.netstat("TcpExt", "TCPOFODrop"),
        }
    }
}

/// One transfer over a path that loses data into the receiver, traced three ways: by port
/// (host-wide), and by a netprobe inside each end.
struct OnePath<'a> {
    sender: &'a Netns,
    receiver: &'a Netns,
    receiver_addr: SocketAddr,
    v6: bool,
    before: ReceiverCounters,
    after: ReceiverCounters,
    out: TraceOutput,
    at_receiver: TraceOutput,
    at_sender: TraceOutput,
}

impl<'a> OnePath<'a> {
    /// `sender` pushes data to `receiver`, whose input drops 3% of it.
    fn run(link: &'a Link, sender_is_a: bool, v6: bool) -> Self {
        let (sender, receiver) = if sender_is_a {
            (&link.a, &link.b)
        } else {
            (&link.b, &link.a)
        };
        let receiver_host = if sender_is_a { 2 } else { 1 };
        NftTable::input_loss(receiver, "np_dir", PORT, 3);
        let before = ReceiverCounters::read(receiver);
        let tracer = Tracer::start(&["--port", &PORT.to_string()]);
        // Each end also runs its own netprobe, whose findings read that end's counters.
        let at_receiver = Tracer::start_in(receiver, &["--report-every", "0.5"]);
        let receiver_traced_from = std::time::Instant::now();
        let at_sender = Tracer::start_in(sender, &[]);
        let to = link.socket(receiver_host, PORT, v6);
        bulk_transfer(sender, receiver, to, BYTES);
        // Both ends closed and every FIN acknowledged: nothing more can be sent, so the
        // traces and the counters read after them cover the same segments.
        for ns in [sender, receiver] {
            assert!(
                ns.wait_tcp_quiet(PORT, Duration::from_secs(10)),
                "{} still sending",
                ns.name
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        // The receiver's trace covers at least two report intervals, however fast the
        // transfer: its interim bundles are checked too.
        let covered = Duration::from_millis(1200);
        if let Some(rest) = covered.checked_sub(receiver_traced_from.elapsed()) {
            std::thread::sleep(rest);
        }
        let out = tracer.stop();
        let (at_receiver, at_sender) = (at_receiver.stop(), at_sender.stop());
        let after = ReceiverCounters::read(receiver);
        assert!(out.success, "{}", out.stderr);
        OnePath {
            sender,
            receiver,
            receiver_addr: to,
            v6,
            before,
            after,
            out,
            at_receiver,
            at_sender,
        }
    }
}

/// Loss on one path only: asserts every side of netprobe's attribution, from the one trace
/// of both namespaces.
fn loss_on_one_path(link: &Link, sender_is_a: bool, v6: bool) {
    let path = OnePath::run(link, sender_is_a, v6);
    check_bundles(
        &path.at_receiver,
        &path.at_sender,
        path.receiver,
        path.sender,
    );
    let out = &path.out;
    let data_retransmits = check_sender_retransmits(&path);
    let (fills, peer, ooo) = check_receiver_view(&path);
    let drops = check_drops_at_receiver(&path);
    let holes = check_receiver_counters(&path, peer + ooo);
    assert_eq!(holes, ooo as u64);
    let received = &out.summary()["received"];
    eprintln!(
        "{}{}: {} data retransmits by the sender; receiver saw {} fills_hole, {} duplicates, {} holes, {} out-of-order segs; {} netfilter drops",
        if sender_is_a { "a->b" } else { "b->a" },
        if v6 { " (IPv6)" } else { "" },
        data_retransmits,
        fills,
        received["duplicate"],
        holes,
        received["out_of_order"],
        drops
    );
}

/// Our retransmits: all the sender's data (the receiver may re-send its own SYN-ACK or FIN
/// when the rule ate the ACK of it, and those carry no data). Returns how many.
fn check_sender_retransmits(path: &OnePath) -> usize {
    let out = &path.out;
    let sender_ns = path.sender.inode();
    let retransmits = out.of_type("retransmit");
    let data_retransmits: Vec<&&Value> = retransmits
        .iter()
        .filter(|r| r["bytes"].as_u64().unwrap() > 0)
        .collect();
    assert!(!data_retransmits.is_empty(), "{}", out.summary());
    for r in &data_retransmits {
        assert_eq!(r["netns"].as_u64(), Some(sender_ns), "{r}");
        assert_eq!(r["dport"].as_u64(), Some(PORT as u64), "{r}");
    }
    data_retransmits.len()
}

/// The peer's retransmits, as the receiver sees them: holes filled, in the receiver's
/// namespace, on the receiving socket (local port PORT); and the holes themselves. Returns
/// how many events of each: (fills_hole, peer_retransmit, ooo).
fn check_receiver_view(path: &OnePath) -> (usize, usize, usize) {
    let out = &path.out;
    let (sender_ns, receiver_ns) = (path.sender.inode(), path.receiver.inode());
    let family = if path.v6 { "ipv6" } else { "ipv4" };
    let receiver_addr = path.receiver_addr.ip().to_string();
    let peer = out.of_type("peer_retransmit");
    let fills: Vec<&&Value> = peer.iter().filter(|p| p["class"] == "fills_hole").collect();
    assert!(
        !fills.is_empty(),
        "loss into the receiver must show holes filled: {}",
        out.summary()
    );
    for p in &peer {
        assert_eq!(p["netns"].as_u64(), Some(receiver_ns), "{p}");
        assert_eq!(p["sport"].as_u64(), Some(PORT as u64), "{p}");
        // The flow read from the receiving socket (BTF offsets of sock_common).
        assert_eq!(
            (p["family"].as_str(), p["saddr"].as_str()),
            (Some(family), Some(receiver_addr.as_str())),
            "{p}"
        );
    }
    let ooo = out.of_type("ooo");
    assert!(!ooo.is_empty());
    for o in &ooo {
        assert_eq!(o["netns"].as_u64(), Some(receiver_ns), "{o}");
        assert_eq!(o["class"], "opens_hole");
        assert!(o["hole_bytes"].as_u64().unwrap() > 0, "{o}");
    }
    // Nothing went missing on the way into the sender: it saw no holes.
    let received = &out.summary()["received"];
    for flow in received["flows"].as_array().unwrap() {
        if flow["netns"].as_u64() == Some(sender_ns) {
            assert_eq!(
                (flow["fills_hole"].as_u64(), flow["holes"].as_u64()),
                (Some(0), Some(0)),
                "{flow}"
            );
        }
    }
    (fills.len(), peer.len(), ooo.len())
}

/// Exact agreement with the receiver's own counters over the same window; the exact
/// per-flow totals and the stream (`streamed` receive events) agree when nothing was lost.
/// Returns the holes counted.
fn check_receiver_counters(path: &OnePath, streamed: usize) -> u64 {
    let out = &path.out;
    let (before, after) = (&path.before, &path.after);
    let received = &out.summary()["received"];
    // On established sockets from tcp_probe, after the FIN from the closing socket's drops.
    assert_eq!(
        received["duplicate"].as_u64().unwrap() + received["duplicate_after_fin"].as_u64().unwrap(),
        after.delayed_ack_lost - before.delayed_ack_lost,
        "duplicates vs DelayedACKLost: {received}"
    );
    assert_eq!(
        received["out_of_order"].as_u64().unwrap(),
        (after.ofo_queue - before.ofo_queue) + (after.ofo_drop - before.ofo_drop),
        "out-of-order segments vs TCPOFOQueue + TCPOFODrop: {received}"
    );
    let events = &out.summary()["events"]["receive"];
    assert_eq!(events["lost"], 0);
    assert_eq!(events["counted"].as_u64().unwrap(), streamed as u64);
    received["holes"].as_u64().unwrap()
}

/// The drops: at the receiver, on the way in, by netfilter. Returns how many.
fn check_drops_at_receiver(path: &OnePath) -> usize {
    let receiver_ns = path.receiver.inode();
    let drops = path.out.drops_with_reason("NETFILTER_DROP");
    assert!(!drops.is_empty());
    for d in &drops {
        assert_eq!(d["netns"].as_u64(), Some(receiver_ns), "{d}");
        assert_eq!(
            direction_layer(d),
            (Some("ingress"), Some("netfilter")),
            "{d}"
        );
    }
    drops.len()
}

#[test]
fn loss_on_the_path_into_b_then_into_a() {
    let link = Link::new("dir", 27);
    loss_on_one_path(&link, true, false);
    // Same hosts, the other way round (a fresh table in a).
    loss_on_one_path(&link, false, false);
}

#[test]
fn loss_on_the_path_into_b_over_ipv6() {
    let link = Link::new("dir6", 29);
    loss_on_one_path(&link, true, true);
}

/// A paced transfer a → b (~13 MB/s for ~2 s) during which every segment from b into a (b's
/// ACKs) is dropped for 0.8 s, in the middle of it. Returns the trace, with b's counters
/// before and after.
fn transfer_through_an_ack_blackout(
    link: &Link,
) -> (TraceOutput, ReceiverCounters, ReceiverCounters) {
    let before = ReceiverCounters::read(&link.b);
    let tracer = Tracer::start(&["--port", &ACK_PORT.to_string()]);
    let to = link.b_port(ACK_PORT);
    let sink = TcpSink::pinned(&link.b, to, 0);
    let sender = link.a.spawn(move || {
        pin_to_cpu(0);
        let mut conn = std::net::TcpStream::connect(to).unwrap();
        let chunk = vec![1u8; 1 << 16];
        for _ in 0..300 {
            std::io::Write::write_all(&mut conn, &chunk).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut rest).unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    let blackout = NftTable::input(
        &link.a,
        "np_ack",
        &format!("tcp sport {ACK_PORT} counter drop"),
    );
    std::thread::sleep(Duration::from_millis(800));
    blackout.delete();
    sender.join().unwrap();
    assert_eq!(sink.received(), 300 << 16);
    for ns in [&link.a, &link.b] {
        assert!(
            ns.wait_tcp_quiet(ACK_PORT, Duration::from_secs(10)),
            "{} still sending",
            ns.name
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    let after = ReceiverCounters::read(&link.b);
    assert!(out.success, "{}", out.stderr);
    (out, before, after)
}

/// ACK loss: every segment from b into a (b's ACKs) is dropped for a while in the middle of a
/// paced transfer a → b. a's timers fire and it re-sends data b already has: b sees
/// duplicates, never a hole, and a's retransmits are timer-driven (TLP or RTO).
#[test]
fn ack_loss_shows_duplicates_at_the_receiver() {
    let link = Link::new("ack", 28);
    let (out, before, after) = transfer_through_an_ack_blackout(&link);
    let (a_ns, b_ns) = (link.a.inode(), link.b.inode());

    let retransmits = out.of_type("retransmit");
    assert!(!retransmits.is_empty(), "{}", out.summary());
    for r in &retransmits {
        assert_eq!(r["netns"].as_u64(), Some(a_ns), "{r}");
        assert!(
            r["kind"] == "rto" || r["kind"] == "tlp",
            "ACK loss is seen by timers: {r}"
        );
    }
    let duplicates: Vec<&Value> = out
        .of_type("peer_retransmit")
        .into_iter()
        .filter(|p| p["class"] == "duplicate")
        .collect();
    assert!(!duplicates.is_empty(), "{}", out.summary());
    for d in &duplicates {
        assert_eq!(d["netns"].as_u64(), Some(b_ns), "{d}");
        assert_eq!(d["sport"].as_u64(), Some(ACK_PORT as u64), "{d}");
        assert!(d["old_bytes"].as_u64().unwrap() > 0, "{d}");
    }
    let received = &out.summary()["received"];
    assert_eq!(
        (received["fills_hole"].as_u64(), received["holes"].as_u64()),
        (Some(0), Some(0)),
        "no data was lost on the way into b: {received}"
    );
    // On established sockets from tcp_probe, after the FIN from the closing socket's drops.
    assert_eq!(
        received["duplicate"].as_u64().unwrap() + received["duplicate_after_fin"].as_u64().unwrap(),
        after.delayed_ack_lost - before.delayed_ack_lost,
        "duplicates vs DelayedACKLost: {received}"
    );
    let drops = check_lost_acks(&out, a_ns);
    eprintln!(
        "ACK loss: {} ACKs dropped into a; a retransmitted {} times ({:?}); b saw {} duplicates",
        drops,
        retransmits.len(),
        out.summary()["retransmits"]["by_kind"],
        duplicates.len()
    );
}

/// The lost ACKs: dropped on the way into a; and the findings put the cause there. Returns
/// how many were dropped.
fn check_lost_acks(out: &TraceOutput, a_ns: u64) -> usize {
    let drops = out.drops_with_reason("NETFILTER_DROP");
    assert!(!drops.is_empty());
    for d in &drops {
        assert_eq!(
            (
                d["netns"].as_u64(),
                d["sport"].as_u64(),
                d["direction"].as_str()
            ),
            (Some(a_ns), Some(ACK_PORT as u64), Some("ingress")),
            "{d}"
        );
    }
    let bundle = out.first_bundle();
    let ack_finding = finding_about(&bundle, "inbound_ack_loss", Some(a_ns));
    assert_eq!(
        direction_layer(&ack_finding),
        (Some("ingress"), Some("netfilter")),
        "{ack_finding}"
    );
    assert!(
        ack_finding["summary"].as_str().unwrap().contains(&format!(
            "the peer's ACKs were dropped by the netfilter layer (NETFILTER_DROP, {} drops) on the way in, in netns {a_ns}",
            drops.len()
        )),
        "{ack_finding}"
    );
    drops.len()
}

/// The findings bundles of the two ends: the receiver names inbound loss dropped by netfilter on
/// its own input, the sender outbound loss beyond itself; both reconcile exactly.
fn check_bundles(
    at_receiver: &TraceOutput,
    at_sender: &TraceOutput,
    receiver: &Netns,
    sender: &Netns,
) {
    assert!(
        at_receiver.success && at_sender.success,
        "{}{}",
        at_receiver.stderr,
        at_sender.stderr
    );
    let bundles = at_receiver.of_type("findings");
    assert!(
        bundles.len() >= 2,
        "--report-every 0.5 over at least 1.2 s: interim bundles too"
    );
    let finals: Vec<&&Value> = bundles.iter().filter(|b| b["final"] == true).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        bundles.last().unwrap()["final"],
        true,
        "the final bundle ends the stream"
    );
    for (bundle, ns) in [
        (*finals[0], receiver),
        (at_sender.of_type("findings")[0], sender),
    ] {
        check_reconciled(bundle, ns);
    }
    check_receiver_bundle(finals[0]);
    check_sender_bundle(at_sender.of_type("findings")[0], receiver);
}

/// A bundle of the netprobe inside `ns`: about `ns`, with its report, every row that must
/// match matching, and the veth's steering.
fn check_reconciled(bundle: &Value, ns: &Netns) {
    assert_eq!(bundle["netns"].as_u64(), Some(ns.inode()));
    assert_eq!(bundle["report"]["type"], "report");
    for row in bundle["reconciliation"].as_array().unwrap() {
        if row["must_match"] == true {
            if row["relation"] == "equal" {
                assert_eq!(row["events"], row["counters"], "{row}");
            } else {
                assert_eq!(row["relation"], "at_most", "{row}");
                assert!(row["events"].as_u64() <= row["counters"].as_u64(), "{row}");
            }
            assert_eq!(row["matches"], true, "{row}");
        }
    }
    let steering = bundle["steering"].as_array().unwrap();
    assert!(
        steering.iter().any(|s| s["interface"] == "veth0"),
        "{steering:?}"
    );
}

/// The finding about the namespace whose netprobe wrote the bundle (the hooks are global:
/// each bundle also names the other end's namespace, without its counters).
fn own_finding(bundle: &Value, id: &str) -> Value {
    finding_about(bundle, id, bundle["netns"].as_u64())
}

/// The receiver's final bundle: inbound loss, dropped by netfilter, on this flow, with the
/// out-of-order row reconciled.
fn check_receiver_bundle(receiver_bundle: &Value) {
    let inbound = own_finding(receiver_bundle, "inbound_loss");
    assert_eq!(
        direction_layer(&inbound),
        (Some("ingress"), Some("netfilter")),
        "{inbound}"
    );
    assert!(
        inbound["fix"]
            .as_str()
            .unwrap()
            .contains("nft list ruleset"),
        "{inbound}"
    );
    assert!(
        inbound["flows"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{PORT}")),
        "{inbound}"
    );
    assert!(
        inbound["evidence"]["events"]["fills_hole"]
            .as_u64()
            .unwrap()
            > 0
    );
    let ooo_row = reconciliation_row(receiver_bundle, "TcpExt TCPOFOQueue + TCPOFODrop");
    assert!(
        ooo_row["events"].as_u64().unwrap() > 0 && ooo_row["must_match"] == true,
        "{ooo_row}"
    );
}

/// The sender's bundle: outbound loss beyond itself, its retransmit rows reconciled, and the
/// receiver's inbound loss named without counters it cannot read.
fn check_sender_bundle(sender_bundle: &Value, receiver: &Netns) {
    // The sender's netprobe also sees the receiver's side (the hooks are global), names its
    // namespace, and says it has no counters for it.
    let remote_inbound = finding_about(sender_bundle, "inbound_loss", Some(receiver.inode()));
    assert!(
        remote_inbound["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("into netns {}", receiver.inode())),
        "{remote_inbound}"
    );
    assert!(remote_inbound["evidence"]["counters"]
        .as_str()
        .unwrap()
        .starts_with("not read"));
    // The sender's retransmits are linked to the drops of its own segments at the receiver,
    // whose kernel this netprobe sees too.
    let outbound = own_finding(sender_bundle, "outbound_loss");
    assert_eq!(
        direction_layer(&outbound),
        (Some("egress"), Some("netfilter")),
        "{outbound}"
    );
    assert!(
        outbound["summary"]
            .as_str()
            .unwrap()
            .contains("its segments were dropped by the netfilter layer (NETFILTER_DROP, ")
            && outbound["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("on the way in, in netns {}", receiver.inode())),
        "{outbound}"
    );
    let retrans_row = reconciliation_row(sender_bundle, "Tcp RetransSegs");
    assert!(
        retrans_row["events"].as_u64().unwrap() > 0 && retrans_row["must_match"] == true,
        "{retrans_row}"
    );
    // The sender's retransmit kinds against its TcpExt: fast retransmits (Recovery) are
    // TCPFastRetrans segments exactly (the must_match rows were all checked equal above).
    let fast_row = reconciliation_row(sender_bundle, "TcpExt TCPFastRetrans");
    assert!(
        fast_row["events"].as_u64().unwrap() > 0 && fast_row["must_match"] == true,
        "{fast_row}"
    );
    let flows = sender_bundle["flows"].as_array().unwrap();
    assert_eq!(flows[0]["losing_direction"], "outbound", "{flows:?}");
}
