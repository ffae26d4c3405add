//! Where packets are dropped: every drop names its direction and layer. Run as root with
//! `--test-threads=1`.

use std::{net::SocketAddr, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

/// Real drops at both ends of a link, each of one kind: a's own OUTPUT filter drops TCP to
/// 6001, b's INPUT filter TCP to 6002, a tiny tbf on a's veth UDP to b, nothing listens on
/// b's UDP port 7 nor on a's loopback one.
fn drop_at_both_ends(link: &Link) -> TraceOutput {
    NftTable::output(&link.a, "np_out", "tcp dport 6001 drop");
    NftTable::input(&link.b, "np_in", "tcp dport 6002 drop");
    add_tiny_tbf(&link.a, "veth0");

    let tracer = Tracer::start(&[]);
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
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    out
}

/// Every drop names its direction and layer, from real drops at both ends of a link:
/// a's own OUTPUT filter (egress/netfilter), b's INPUT filter (ingress/netfilter), a tiny tbf on
/// a (egress/qdisc), UDP to a closed port on b (ingress/socket) and on a's loopback
/// (local/socket).
#[test]
fn drops_carry_direction_and_layer() {
    let link = Link::new("dir", 15);
    let out = drop_at_both_ends(&link);
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
