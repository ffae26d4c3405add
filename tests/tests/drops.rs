//! Where packets are dropped: every drop names its direction and layer. Run as root with
//! `--test-threads=1`.

use std::{
    io::Write,
    net::SocketAddr,
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream},
    },
    time::Duration,
};

use netprobe_integration::*;
use serde_json::Value;

/// Real drops at both ends of a link, each of one kind: a's own OUTPUT filter drops TCP to
/// 6001, b's INPUT filter TCP to 6002, a tiny tbf on a's veth UDP to b, nothing listens on
/// b's UDP port 7 nor on a's loopback ones (7 over IPv4, 8 over IPv6).
fn drop_at_both_ends(link: &Link, args: &[&str]) -> TraceOutput {
    NftTable::output(&link.a, "np_out", "tcp dport 6001 drop");
    NftTable::input(&link.b, "np_in", "tcp dport 6002 drop");
    add_tiny_tbf(&link.a, "veth0");

    let tracer = Tracer::start(args);
    let peer = link.addr(2, false);
    link.a.run(move || {
        for port in [6001, 6002] {
            let _ = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(peer, port),
                Duration::from_millis(300),
            );
        }
    });
    send_udp(&link.a, SocketAddr::new(peer, 7), &[0u8; 1000], 300);
    send_udp(&link.a, "127.0.0.1:7".parse().unwrap(), b"lo", 5);
    // IPv6 too, whose ports sit after a 40-byte header.
    send_udp(&link.a, "[::1]:8".parse().unwrap(), b"lo6", 5);
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    out
}

/// Every drop names its direction and layer, from real drops at both ends of a link:
/// a's own OUTPUT filter (egress/netfilter), b's INPUT filter (ingress/netfilter), a tiny tbf on
/// a (egress/qdisc), UDP to a closed port on b (ingress/socket) and on a's loopback
/// (local/socket). On the BTF-typed tracepoint this kernel allows.
#[test]
fn drops_carry_direction_and_layer() {
    let link = Link::new("dir", 15);
    let out = drop_at_both_ends(&link, &[]);
    assert_eq!(out.attach_of("skb:kfree_skb"), "tp_btf");
    drops_are_placed(&link, &out);
}

/// The same on the raw tracepoint, the hook where tp_btf is refused: its device span, header
/// and port reads name the same places, devices and ports.
#[test]
fn drops_carry_direction_and_layer_on_the_raw_tracepoint() {
    let link = Link::new("dirr", 76);
    let out = drop_at_both_ends(&link, &["--tracepoint-hooks", "raw"]);
    assert_eq!(out.attach_of("skb:kfree_skb"), "raw_tracepoint");
    drops_are_placed(&link, &out);
}

fn drops_are_placed(link: &Link, out: &TraceOutput) {
    let (a_ns, b_ns) = (link.a.inode(), link.b.inode());

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
            in_ns(d, b_ns)
                && d["reason"] == "NO_SOCKET"
                && d["dport"] == 7
                && d["ifname"] == "veth0"
        }),
        "ingress",
        "socket",
    );
    all_are(
        find("IPv6 to a closed port on a's loopback", &|d| {
            in_ns(d, a_ns)
                && d["family"] == "ipv6"
                && d["reason"] == "NO_SOCKET"
                && d["dport"] == 8
                && d["daddr"] == "::1"
                && d["ifname"] == "lo"
        }),
        "local",
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

/// Makes `clients` unix-domain connections to a listener in `ns`, each writing once, then
/// closes the listener without accepting: `unix_release_sock` frees every queued connection
/// request and the data queued behind it through `kfree_skb`, as a busy host's closing
/// sockets do. Not one of those skbs is a network packet.
fn unix_frees_in(ns: &Netns, clients: usize) {
    ns.run(move || {
        // An abstract name belongs to the network namespace: nothing outside it connects.
        let name = format!("netprobe-test-unix-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixListener::bind_addr(&addr).expect("bind unix listener");
        let connected: Vec<UnixStream> = (0..clients)
            .map(|_| {
                let mut client = UnixStream::connect_addr(&addr).expect("unix connect");
                client.write_all(b"never read").expect("unix write");
                client
            })
            .collect();
        drop(listener);
        drop(connected);
    });
}

/// What is not network loss: unix-domain socket frees during a trace are counted apart in
/// the summary's `non_network`, by reason and location, and are neither drop events nor in
/// `drops`; a packet an nft rule drops in the same namespace and trace is still a drop. The
/// trace is filtered to the test namespace, where the unix sockets live (their thread joined
/// it), so that the host's own unix traffic cannot blur the counts.
#[test]
fn unix_socket_frees_are_not_drops() {
    const CLIENTS: usize = 8;
    const DATAGRAMS: usize = 3;
    let ns = Netns::new("unix");
    let nft = NftTable::input(&ns, "np_in", "udp dport 6003 counter drop");

    let tracer = Tracer::start(&["--netns", &ns.name]);
    unix_frees_in(&ns, CLIENTS);
    let sent = send_udp(&ns, "127.0.0.1:6003".parse().unwrap(), b"np", DATAGRAMS);
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    assert_eq!(sent, DATAGRAMS, "every datagram sent");
    let summary = out.summary();

    // The unix frees: counted apart, named.
    let non_network = &summary["non_network"];
    let sites = non_network["by_reason"].as_array().expect("by_reason");
    let at_unix: u64 = sites
        .iter()
        .filter(|s| s["location"].as_str().unwrap().starts_with("unix_"))
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(
        at_unix >= CLIENTS as u64,
        "{CLIENTS} connections' frees at unix_*: {non_network}"
    );
    assert!(
        non_network["total"].as_u64().unwrap() >= at_unix,
        "{non_network}"
    );
    assert_eq!(summary["events"]["non_network_table_full"], 0, "{summary}");

    // …and not drops: no drop event of theirs, and the drops are the streamed events.
    let drops = out.of_type("drop");
    let unix_drops: Vec<&&Value> = drops
        .iter()
        .filter(|d| d["location"].as_str().unwrap().starts_with("unix_"))
        .collect();
    assert!(
        unix_drops.is_empty(),
        "unix frees streamed as drops: {unix_drops:?}"
    );
    for d in &drops {
        assert!(
            ["ipv4", "ipv6", "arp"].contains(&d["protocol"].as_str().unwrap())
                || d.get("state").is_some(),
            "a drop that is neither an IP/ARP packet nor a socket's: {d}"
        );
    }
    let accounting = &summary["events"]["drop"];
    assert_eq!(accounting["lost"], 0, "{summary}");
    assert_eq!(
        accounting["counted"].as_u64(),
        Some(drops.len() as u64),
        "{summary}"
    );
    assert_eq!(
        summary["drops"]["total"].as_u64(),
        Some(drops.len() as u64),
        "{summary}"
    );

    // The network drop in the same trace is still a drop, one event per packet nft dropped.
    let filtered: Vec<&&Value> = drops
        .iter()
        .filter(|d| d["reason"] == "NETFILTER_DROP" && d["dport"] == 6003)
        .collect();
    assert_eq!(filtered.len() as u64, nft.packets(), "{drops:?}");
    assert_eq!(filtered.len(), DATAGRAMS, "{drops:?}");
    assert!(filtered
        .iter()
        .all(|d| d["netns"].as_u64() == Some(ns.inode())));
}
