//! Connections whose SYNs are never answered are `connect_failures` at the client, with where
//! the SYNs die (a firewall at the server's input; or nowhere netprobe sees, at a listener whose
//! accept queue is full), the SYN retransmits equal to the client's TCPSynRetrans; and not
//! `outbound_loss`, nor flows with no losing direction. A connection that completes after a
//! dropped SYN is no failure. Run as root with `--test-threads=1`.

use std::{net::TcpListener, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");
const FAILING: usize = 4;
const FAILING_V6: usize = 2;
/// Long enough for one SYN retransmit (1 s), shorter than the second (3 s).
const GIVE_UP: Duration = Duration::from_millis(2500);

/// The client's side: its bundle, summary and TCPSynRetrans growth over the trace.
struct ClientView {
    bundle: Value,
    summary: Value,
    syn_retrans: u64,
}

/// Traces `during` with a netprobe inside the client's namespace, its counter beside it.
fn traced_at(client: &Netns, during: impl FnOnce()) -> ClientView {
    let before = client.netstat("TcpExt", "TCPSynRetrans");
    let tracer = Tracer::start_in(client, &[]);
    during();
    let out = tracer.stop();
    assert!(out.success, "netprobe failed: {}", out.stderr);
    ClientView {
        bundle: out.first_bundle(),
        summary: out.summary().clone(),
        syn_retrans: client.netstat("TcpExt", "TCPSynRetrans") - before,
    }
}

/// SYN retransmits in the summary's flows to `port` (all ports: `None`).
fn summary_syns(summary: &Value, port: Option<u16>) -> u64 {
    summary["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| port.is_none_or(|p| f["dport"] == p))
        .map(|f| f["kinds"]["syn"].as_u64().unwrap_or(0))
        .sum()
}

/// The checks every scenario shares: one `connect_failures` in the client's namespace, with
/// the failing flows' counts exact; their SYN retransmits what the summary and the kernel count;
/// no finding of data loss; each failing flow `outbound (handshake)`, `failed`.
fn check_failures(view: &ClientView, client: u64, port: u16, failing: usize) -> Value {
    let f = finding_about(&view.bundle, "connect_failures", Some(client));
    let events = &f["evidence"]["events"];
    assert_eq!(events["flows"], failing as u64, "{f}");
    assert_eq!(events["failed"], failing as u64, "{f}");
    assert_eq!(events["pending"], 0, "{f}");
    assert_eq!(f["flows"].as_array().unwrap().len(), failing, "{f}");
    for flow in f["flows"].as_array().unwrap() {
        assert!(flow.as_str().unwrap().ends_with(&format!(":{port}")), "{f}");
    }
    let syns = summary_syns(&view.summary, Some(port));
    assert!(
        syns >= failing as u64,
        "every attempt retransmitted: {syns}"
    );
    assert_eq!(events["syn_retransmits"], syns, "{f}");
    assert_eq!(
        f["evidence"]["counters"]["TcpExt.TCPSynRetrans"],
        view.syn_retrans
    );
    assert_eq!(summary_syns(&view.summary, None), view.syn_retrans);
    for wrong in [
        "outbound_loss",
        "inbound_ack_loss",
        "retransmits_fail_locally",
    ] {
        assert!(
            findings(&view.bundle, wrong).is_empty(),
            "{wrong}: {}",
            view.bundle["findings"]
        );
    }
    let flows = bundle_flows_to(&view.bundle, port);
    assert_eq!(flows.len(), failing, "{}", view.bundle["flows"]);
    for flow in &flows {
        assert_eq!(flow["losing_direction"], "outbound (handshake)", "{flow}");
        assert_eq!(flow["handshake"], "failed", "{flow}");
    }
    f
}

/// b's firewall drops every SYN to one port: a's connects time out. A second port's first
/// SYN is dropped too, for half a second: that connection completes on the retransmit.
#[test]
fn syns_dropped_by_a_firewall_are_connect_failures() {
    let link = Link::new("cfw", 37);
    link.static_neighbours();
    let (dead, late) = (7201, 7202);
    let wall = NftTable::input(
        &link.b,
        "np_cf_wall",
        &format!("tcp dport {dead} counter drop"),
    );
    let to_late = link.b_port(late);
    let listener = link.b.run(move || TcpListener::bind(to_late).unwrap());
    let view = traced_at(&link.a, || {
        NftTable::input(
            &link.b,
            "np_cf_late",
            &format!("tcp dport {late} counter drop"),
        )
        .delete_after(Duration::from_millis(500));
        let late_conn = link.a.spawn(move || {
            std::net::TcpStream::connect_timeout(&to_late, Duration::from_secs(5)).ok()
        });
        // IPv6 too: its flows are found again by the same socket-state program.
        let (a, to6) = (link.a.shared(), link.socket(2, dead, true));
        let v6 = std::thread::spawn(move || connect_attempts(&a, to6, FAILING_V6, GIVE_UP));
        let results = connect_attempts(&link.a, link.b_port(dead), FAILING, GIVE_UP);
        let results_v6 = v6.join().unwrap();
        for r in results.iter().chain(&results_v6) {
            assert!(r.is_none(), "a SYN got through the wall");
        }
        assert!(
            late_conn.join().unwrap().is_some(),
            "the late connection failed"
        );
    });
    drop(listener);
    let f = check_failures(&view, link.a.inode(), dead, FAILING + FAILING_V6);
    let printed = f["flows"].as_array().unwrap().iter();
    let v6_flows = printed.filter(|p| p.as_str().unwrap().starts_with('['));
    assert_eq!(v6_flows.count(), FAILING_V6, "{f}");
    assert_eq!(f["layer"], "netfilter", "{f}");
    assert_eq!(f["severity"], "critical", "{f}");
    let died = &f["evidence"]["events"]["syn_drops"][0];
    assert_eq!(died["netns"], link.b.inode(), "{f}");
    assert_eq!(died["reason"], "NETFILTER_DROP", "{f}");
    assert_eq!(
        died["drops"],
        wall.packets(),
        "every SYN the rule dropped: {f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("nft"), "{f}");

    // The control: the late connection retransmitted its SYN and completed. Not a failure.
    assert!(
        summary_syns(&view.summary, Some(late)) >= 1,
        "{}",
        view.summary
    );
    assert_eq!(
        f["evidence"]["events"]["completed_after_retransmit"], 1,
        "{f}"
    );
    let late_flows = bundle_flows_to(&view.bundle, late);
    assert_eq!(late_flows.len(), 1, "{}", view.bundle["flows"]);
    assert_eq!(late_flows[0]["handshake"], "completed");
    assert_eq!(
        late_flows[0]["losing_direction"],
        "outbound (handshake, completed)"
    );
}

/// b listens with the smallest backlog and never accepts: once its accept queue is full, the
/// kernel drops new SYNs without a drop event. The failures are named; where the SYNs die is
/// not seen here, and the finding says so instead of guessing a layer.
#[test]
fn syns_refused_by_a_full_accept_queue_are_connect_failures() {
    let link = Link::new("cfq", 38);
    link.static_neighbours();
    let port = 7203;
    let server = link.b_port(port);
    let _holder = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "0"]);
    // Fill the queue (a backlog of 0 holds one connection) before the trace.
    let filled = connect_attempts(&link.a, server, 1, Duration::from_secs(2));
    assert!(filled[0].is_some(), "the first connection fills the queue");
    let overflows = link.b.netstat("TcpExt", "ListenOverflows");
    let view = traced_at(&link.a, || {
        let results = connect_attempts(&link.a, server, FAILING, GIVE_UP);
        assert!(
            results.iter().all(Option::is_none),
            "the full queue took a connection"
        );
    });
    let f = check_failures(&view, link.a.inode(), port, FAILING);
    assert!(link.b.netstat("TcpExt", "ListenOverflows") - overflows >= view.syn_retrans);
    assert_eq!(f["layer"], "unknown", "{f}");
    assert_eq!(
        f["evidence"]["events"]["syn_drops"],
        serde_json::json!([]),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("accept queue"), "{f}");
    drop(filled);
}

/// The same full listener in the clients' own namespace (over its own address, through
/// loopback): netprobe's report sees it, and the finding names it, its queue and its owner.
#[test]
fn a_full_listener_in_this_namespace_is_named() {
    let link = Link::new("cfl", 39);
    let port = 7205;
    let server = link.b_port(port);
    let holder = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "0"]);
    let filled = connect_attempts(&link.b, server, 1, Duration::from_secs(2));
    assert!(filled[0].is_some(), "the first connection fills the queue");
    let view = traced_at(&link.b, || {
        let results = connect_attempts(&link.b, server, FAILING, GIVE_UP);
        assert!(
            results.iter().all(Option::is_none),
            "the full queue took a connection"
        );
    });
    let f = check_failures(&view, link.b.inode(), port, FAILING);
    let listener = &f["evidence"]["events"]["listener"];
    assert_eq!(
        listener["port"], port,
        "{f} {}",
        view.bundle["report"]["sockets"]
    );
    assert_eq!(
        (
            listener["accept_queue"].as_u64(),
            listener["accept_queue_max"].as_u64()
        ),
        (Some(1), Some(0)),
        "{f}"
    );
    assert_eq!(listener["owners"][0]["pid"], holder.pid(), "{f}");
    assert_eq!(f["layer"], "socket", "{f}");
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("np-holder (pid {})", holder.pid())),
        "{fix}"
    );
    assert!(fix.contains("accept() faster"), "{fix}");
    drop(filled);
}
