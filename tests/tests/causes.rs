//! Findings that name the real cause (issue 12): a clean transfer reordered across the two CPUs
//! is `reordering`, never loss; a firewall blackout of one request/response flow is that
//! flow's retransmits linked to the drops of its own segments at the peer, never ACK loss
//! blamed on the FIN its close purged; drops in the sender's own OUTPUT chain cause no
//! retransmits at all. Run as root with `--test-threads=1`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use netprobe_integration::*;
use serde_json::Value;

const REORDER_PORT: u16 = 5401;
const BLACKOUT_PORT: u16 = 5402;
const OUTPUT_PORT: u16 = 5403;

fn final_bundle(out: &TraceOutput) -> Value {
    let bundles = out.of_type("findings");
    bundles
        .iter()
        .copied()
        .find(|b| b["final"] == true)
        .cloned()
        .unwrap_or_else(|| panic!("no final bundle: {bundles:?}"))
}

fn ids_about(bundle: &Value, netns: u64) -> Vec<String> {
    bundle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["netns"].as_u64() == Some(netns))
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The flow row of the bundle whose local end has `port` and lives in `netns`.
fn flow_row(bundle: &Value, netns: u64, port: u16) -> Value {
    bundle["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["netns"].as_u64() == Some(netns)
                && f["local"].as_str().unwrap().ends_with(&format!(":{port}"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no flow on port {port} in {netns}: {}", bundle["flows"]))
}

/// A clean transfer whose sender moves between the CPUs as it writes: veth delivers each
/// segment through the transmitting CPU's backlog, so segments overtake each other, the
/// receiver SACKs around the holes and the sender retransmits what was only late. Nothing is
/// dropped anywhere. Both ends' netprobes say `reordering`, and neither says loss.
#[test]
fn a_clean_transfer_reordered_across_cpus_is_not_loss() {
    let link = Link::new("reo", 50);
    let (a, b) = (link.a.inode(), link.b.inode());
    let dsacks_before = link.a.netstat("TcpExt", "TCPDSACKRecvSegs");
    let retrans_before = link.a.snmp("Tcp", "RetransSegs");
    let at_sender = Tracer::start_in(&link.a, &[]);
    let transfer =
        bulk_transfer_across_cpus(&link.a, &link.b, link.b_port(REORDER_PORT), 768 << 20);
    assert!(link.a.wait_tcp_quiet(REORDER_PORT, Duration::from_secs(10)));
    let out = at_sender.stop();
    assert!(out.success, "{}", out.stderr);
    let retransmitted = link.a.snmp("Tcp", "RetransSegs") - retrans_before;
    let dsacked = link.a.netstat("TcpExt", "TCPDSACKRecvSegs") - dsacks_before;
    // The scenario did what it is for: segments were re-sent, most of them reported back
    // as received twice, and nothing was lost on the way.
    assert!(
        retransmitted > 0 && dsacked * 2 >= retransmitted,
        "RetransSegs {retransmitted}, TCPDSACKRecvSegs {dsacked}"
    );
    // (TCP's own discards of the duplicates are the consequence, not loss.)
    let lost: Vec<&Value> = [a, b]
        .into_iter()
        .flat_map(|netns| out.on_port("drop", netns, REORDER_PORT))
        .filter(|d| d["layer"] != "tcp")
        .collect();
    assert!(lost.is_empty(), "{lost:?}");

    let bundle = final_bundle(&out);
    let sender_ids = ids_about(&bundle, a);
    let receiver_ids = ids_about(&bundle, b);
    for wrong in ["outbound_loss", "inbound_ack_loss", "tcp_retransmits"] {
        assert!(!sender_ids.iter().any(|id| id == wrong), "{sender_ids:?}");
    }
    for wrong in ["inbound_loss", "ack_loss_or_spurious_retransmits"] {
        assert!(
            !receiver_ids.iter().any(|id| id == wrong),
            "{receiver_ids:?}"
        );
    }
    assert!(
        sender_ids.iter().any(|id| id == "tcp_reordering"),
        "{sender_ids:?}"
    );
    let reordering = finding_about(&bundle, "reordering", Some(a));
    assert_eq!(reordering["direction"], "egress", "{reordering}");
    // The flow's own D-SACKed segments, read from its socket at each retransmit, never more
    // than the namespace's counter over the same window, and most of what it re-sent.
    let row = flow_row(&bundle, a, transfer.local.port());
    let (segs, flow_dsacked) = (n(&row["retransmitted_segs"]), n(&row["dsacked_segs"]));
    assert!(
        flow_dsacked <= dsacked && flow_dsacked * 2 >= segs,
        "{row}; TCPDSACKRecvSegs {dsacked}"
    );
    assert_eq!(row["losing_direction"], "none (reordering)", "{row}");
    assert_eq!(
        n(&reordering["evidence"]["counters"]["TcpExt.TCPDSACKRecvSegs"]),
        dsacked
    );
    assert!(reordering["fix"]
        .as_str()
        .unwrap()
        .starts_with("nothing is lost"));
}

/// Request/response on one connection while the server's INPUT chain drops every packet of
/// it for 1.5 s: a loss probe and RTOs, then the client closes. The client's finding is
/// `outbound_loss` linked to exactly the rule's drops in the server's namespace; not
/// `inbound_ack_loss`, and the FIN its close freed (QUEUE_PURGE) is no finding.
#[test]
fn a_firewall_blackout_is_linked_to_the_flows_retransmits() {
    let link = Link::new("blk", 51);
    let (a, b) = (link.a.inode(), link.b.inode());
    let to = link.b_port(BLACKOUT_PORT);
    let sink = TcpSink::with(
        &link.b,
        to,
        SinkOptions {
            reply: true,
            ..SinkOptions::default()
        },
    );
    let at_client = Tracer::start_in(&link.a, &[]);
    let client = link.a.spawn(move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        let mut answer = [0u8; 1];
        for _ in 0..40 {
            conn.write_all(&[b'q'; 50]).unwrap();
            conn.read_exact(&mut answer).expect("answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let rule = NftTable::input(
        &link.b,
        "np_blackout",
        &format!("tcp dport {BLACKOUT_PORT} counter drop"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let dropped = rule.packets();
    rule.delete();
    client.join().expect("client");
    sink.received();
    assert!(link
        .a
        .wait_tcp_quiet(BLACKOUT_PORT, Duration::from_secs(10)));
    let out = at_client.stop();
    assert!(out.success, "{}", out.stderr);
    assert!(dropped >= 2, "the blackout dropped {dropped} packets");

    let bundle = final_bundle(&out);
    let client_ids = ids_about(&bundle, a);
    for wrong in ["inbound_ack_loss", "drops_socket_queue_purge"] {
        assert!(!client_ids.iter().any(|id| id == wrong), "{client_ids:?}");
    }
    let outbound = finding_about(&bundle, "outbound_loss", Some(a));
    assert_eq!(
        direction_layer(&outbound),
        (Some("egress"), Some("netfilter")),
        "{outbound}"
    );
    let cause = format!(
        "← its segments dropped by the netfilter layer (NETFILTER_DROP, {dropped} drops) on the way in, in netns {b}"
    );
    let causes = outbound["evidence"]["events"]["causes"].as_array().unwrap();
    assert!(
        causes.len() == 1 && causes[0].as_str().unwrap().contains(&cause),
        "{cause}: {outbound}"
    );
    assert!(outbound["fix"]
        .as_str()
        .unwrap()
        .contains("nft list ruleset"));
    let row = flow_row(&bundle, a, n(&flow_port(&out, a)) as u16);
    let drops = row["drops"].as_array().unwrap();
    assert_eq!(drops.len(), 1, "{row}");
    assert_eq!(
        (
            &drops[0]["packets"],
            n(&drops[0]["netns"]),
            n(&drops[0]["count"])
        ),
        (&Value::from("sent"), b, dropped),
        "nft dropped {dropped}; {row}; causes {causes:?}"
    );
    let kinds = &row["retransmits"];
    assert!(
        n(&kinds["rto"]) >= 1 && n(&row["retransmitted_segs"]) >= dropped - 1,
        "{row}"
    );
}

/// The client's local port: from its retransmits.
fn flow_port(out: &TraceOutput, netns: u64) -> Value {
    out.of_type("retransmit")
        .into_iter()
        .find(|r| r["netns"].as_u64() == Some(netns))
        .map(|r| r["sport"].clone())
        .unwrap_or_else(|| panic!("no retransmit in {netns}"))
}

/// What a drop in the sender's own OUTPUT chain does, from the kernel's own counters: TCP gets
/// the error at once and sends the data again as new data, not as a retransmit. If refused
/// segments were retransmitted, RetransSegs would reach the refused segments; it stays far
/// below (0 in most runs: what retransmits there are, are veth's occasional reordering, most
/// of them D-SACKed). netprobe counts every refusal and never names the OUTPUT chain as the
/// cause of loss.
#[test]
fn drops_in_the_senders_own_output_chain_cause_no_retransmits() {
    let link = Link::new("odr", 52);
    let a = link.a.inode();
    let retrans_before = link.a.snmp("Tcp", "RetransSegs");
    let rule = NftTable::output(
        &link.a,
        "np_output_drop",
        &format!("tcp dport {OUTPUT_PORT} numgen random mod 100 < 5 counter drop"),
    );
    let at_sender = Tracer::start_in(&link.a, &[]);
    bulk_transfer_pinned(&link.a, &link.b, link.b_port(OUTPUT_PORT), 20 << 20, 0);
    assert!(link.a.wait_tcp_quiet(OUTPUT_PORT, Duration::from_secs(10)));
    let out = at_sender.stop();
    assert!(out.success, "{}", out.stderr);
    let (dropped, dropped_bytes) = (rule.packets(), rule.bytes());
    // Segments of at most one MSS (1448 payload bytes) in the refused skbs.
    let refused_segments = dropped_bytes / 1500;
    assert!(
        refused_segments > 20,
        "the OUTPUT rule refused {dropped_bytes} bytes"
    );
    let retransmitted = link.a.snmp("Tcp", "RetransSegs") - retrans_before;
    assert!(
        retransmitted * 5 < refused_segments,
        "{retransmitted} retransmitted of {refused_segments} refused segments; {}",
        out.summary()["retransmits"]
    );
    let refused: Vec<&Value> = out
        .on_port("drop", a, OUTPUT_PORT)
        .into_iter()
        .filter(|d| d["reason"] == "NETFILTER_DROP")
        .collect();
    assert_eq!(refused.len() as u64, dropped);
    assert!(
        refused.iter().all(|d| d["direction"] == "egress"),
        "{refused:?}"
    );
    let bundle = final_bundle(&out);
    let ids = ids_about(&bundle, a);
    assert!(!ids.iter().any(|id| id == "inbound_ack_loss"), "{ids:?}");
    // A retransmit (of veth's occasional reordering) that the rule refuses is a local failure,
    // named as one; without one, there is none.
    let refused_retransmits =
        n(&out.summary()["retransmits"]["outcomes"]["failed_after_counted"]["attempts"]);
    assert_eq!(
        ids.iter().any(|id| id == "retransmits_fail_locally"),
        refused_retransmits > 0,
        "{ids:?}; {refused_retransmits} retransmits refused"
    );
    let blamed: Vec<&Value> = bundle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "outbound_loss" && f["layer"] == "netfilter")
        .collect();
    assert!(blamed.is_empty(), "{blamed:?}");
}
