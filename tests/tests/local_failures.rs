//! Retransmits the sender itself refuses to send: its own OUTPUT chain drops them, or its qdisc
//! is full. The kernel counts them in RetransSegs and TCPRetransFail before they fail; netprobe
//! says which attempts those were (outcome `failed_after_counted`), reconciles both counters
//! exactly and names the local layer. Run as root with `--test-threads=1`.

use netprobe_integration::*;
use serde_json::Value;

const NFT_PORT: u16 = 5201;
const QDISC_PORT: u16 = 5202;

/// A transfer from `link.a` to `link.b` with a netprobe inside `link.a`: what it printed, and
/// how many of the sender's retransmits the kernel ran no program for (ftrace saw them; see
/// `witness`: this CI host's sandbox kernel withholds its PID 1 agent's context).
fn traced_transfer(link: &Link, port: u16, bytes: u64) -> (TraceOutput, u64) {
    let witness = Ftrace::start(&["tcp/tcp_retransmit_skb"]);
    let at_sender = Tracer::start_in(&link.a, &[]);
    bulk_transfer(&link.a, &link.b, link.b_port(port), bytes);
    assert!(
        link.a
            .wait_tcp_quiet(port, std::time::Duration::from_secs(10)),
        "the sender's socket never went quiet"
    );
    let out = at_sender.stop();
    assert!(out.success, "{}", out.stderr);
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default()).count(
        "tcp_retransmit_skb:",
        &format!("saddr={} ", link.addr(1, false)),
    );
    (out, withheld)
}

fn final_bundle(out: &TraceOutput) -> &Value {
    let bundles = out.of_type("findings");
    bundles
        .iter()
        .copied()
        .find(|b| b["final"] == true)
        .unwrap_or_else(|| panic!("no final bundle: {bundles:?}"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The two rows that count failed attempts: exact and held, but for the attempts the kernel
/// withheld (each at least one segment the events lack), and not empty. Returns the counters'
/// RetransSegs and TCPRetransFail, and the segments the events count.
fn check_failure_rows(
    bundle: &Value,
    ns: &Netns,
    before: (u64, u64),
    withheld: u64,
) -> (u64, u64, u64) {
    let segs_row = reconciliation_row(bundle, "Tcp RetransSegs");
    let fail_row = reconciliation_row(bundle, "TcpExt TCPRetransFail");
    for row in [&segs_row, &fail_row] {
        if withheld == 0 {
            assert_eq!(row["must_match"], true, "{row}");
            assert_eq!(row["events"], row["counters"], "{row}");
            assert_eq!(row["matches"], true, "{row}");
        } else {
            // A withheld attempt also leaves the socket's next failure unclassifiable: the row
            // then says so instead of promising exactness.
            let says_why = row["not_exact_because"]
                .as_str()
                .is_some_and(|w| w.contains("could not be told counted or not"));
            assert!(row["must_match"] == true || says_why, "{row}");
            assert!(n(&row["events"]) <= n(&row["counters"]), "{row}");
        }
    }
    let missing = n(&segs_row["counters"]) - n(&segs_row["events"]);
    assert!(
        (withheld == 0) == (missing == 0) && missing >= withheld,
        "{withheld} withheld attempts, {missing} segments missing: {segs_row}"
    );
    assert!(n(&fail_row["events"]) > 0, "{fail_row}");
    // The rows' counter side is this namespace's own counters over the window.
    let retrans_segs = ns.snmp("Tcp", "RetransSegs") - before.0;
    let retrans_fail = ns.netstat("TcpExt", "TCPRetransFail") - before.1;
    assert_eq!(n(&segs_row["counters"]), retrans_segs, "{segs_row}");
    assert_eq!(n(&fail_row["counters"]), retrans_fail, "{fail_row}");
    (retrans_segs, retrans_fail, n(&segs_row["events"]))
}

/// The summary's outcomes agree with the events and the row: sent + failed-after-counted
/// segments are the row's events (the counter, checked by `check_failure_rows`), and kinds
/// count only what was sent.
fn check_outcomes(out: &TraceOutput, seen_segs: u64, cause: &str, err: i64) -> Value {
    let r = &out.summary()["retransmits"];
    let o = &r["outcomes"];
    let failed = &o["failed_after_counted"];
    assert_eq!(n(&o["sent"]["segs"]) + n(&failed["segs"]), seen_segs, "{o}");
    assert!(n(&failed["by_cause"][cause]) > 0, "{o}");
    let kinds: u64 = r["by_kind"].as_object().unwrap().values().map(n).sum();
    assert_eq!(kinds, n(&r["sent"]), "kinds count what was sent: {r}");
    // Each streamed failure says its outcome beside its error.
    let events = out.of_type("retransmit");
    let counted: Vec<&&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "failed_after_counted")
        .collect();
    assert!(!counted.is_empty(), "no failed_after_counted events");
    assert!(
        counted.iter().any(|e| e["err"].as_i64() == Some(err)),
        "no failure with err {err}: {counted:?}"
    );
    assert!(events
        .iter()
        .all(|e| (e["err"] == 0) == (e["outcome"] == "sent")));
    o.clone()
}

/// The finding names the sender's own layer and its drops there.
fn check_finding(bundle: &Value, layer: &str, fix_has: &str) -> Value {
    let f = finding_about(bundle, "retransmits_fail_locally", bundle["netns"].as_u64());
    assert_eq!(direction_layer(&f), (Some("egress"), Some(layer)), "{f}");
    assert!(f["fix"].as_str().unwrap().contains(fix_has), "{f}");
    assert!(f["evidence"]["events"]["failed_after_counted"].as_u64() > Some(0));
    let drops = f["evidence"]["events"]["egress_drops"].as_array().unwrap();
    assert!(
        drops
            .iter()
            .any(|d| d["layer"] == layer && n(&d["tcp_drops"]) > 0),
        "{f}"
    );
    assert!(findings(bundle, "inbound_ack_loss").is_empty(), "{bundle}");
    own_outbound(bundle)
}

/// The sender's own outbound-loss finding.
fn own_outbound(bundle: &Value) -> Value {
    finding_about(bundle, "outbound_loss", bundle["netns"].as_u64())
}

/// The sender's own OUTPUT chain drops 25 % of what it sends to the port, while the
/// receiver's input loses 5 % of it. What OUTPUT refuses, TCP learns at once: first sends are
/// sent again as new data (no retransmit), but the retransmits that recover the receiver's
/// losses are counted first, then refused.
#[test]
fn retransmits_refused_by_the_senders_own_firewall_reconcile_exactly() {
    let link = Link::new("lfn", 32);
    let rule = format!("tcp dport {NFT_PORT} numgen random mod 100 < 25 counter drop");
    let table = NftTable::output(&link.a, "np_lfail", &rule);
    NftTable::input_loss(&link.b, "np_lfin", NFT_PORT, 5);
    let before = (
        link.a.snmp("Tcp", "RetransSegs"),
        link.a.netstat("TcpExt", "TCPRetransFail"),
    );
    let (out, withheld) = traced_transfer(&link, NFT_PORT, 32 << 20);
    assert!(table.packets() > 0, "the rule dropped nothing");
    let bundle = final_bundle(&out);
    let (retrans_segs, retrans_fail, seen_segs) =
        check_failure_rows(bundle, &link.a, before, withheld);
    let outcomes = check_outcomes(&out, seen_segs, "netfilter", -1);
    // The data the retransmits recover was lost at the receiver's input, not in this OUTPUT
    // chain (what it refuses is sent again as new data): the outbound finding links the
    // retransmits to the receiver's drops and never to this namespace's own.
    let outbound = check_finding(bundle, "netfilter", "nft list ruleset");
    let summary = outbound["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("on the way in, in netns {}", link.b.inode()))
            && !summary.contains("on the way out"),
        "{outbound}"
    );
    eprintln!(
        "own OUTPUT 25%: RetransSegs {retrans_segs} ({withheld} attempts withheld by the kernel), TCPRetransFail {retrans_fail}, outcomes {outcomes}"
    );
}

/// A tiny tbf on the sender's veth: its qdisc refuses what TCP sends, retransmits included.
#[test]
fn retransmits_refused_by_a_full_qdisc_reconcile_exactly() {
    let link = Link::new("lfq", 33);
    add_tiny_tbf(&link.a, "veth0");
    let before = (
        link.a.snmp("Tcp", "RetransSegs"),
        link.a.netstat("TcpExt", "TCPRetransFail"),
    );
    let (out, withheld) = traced_transfer(&link, QDISC_PORT, 256 << 10);
    let bundle = final_bundle(&out);
    let (retrans_segs, retrans_fail, seen_segs) =
        check_failure_rows(bundle, &link.a, before, withheld);
    let outcomes = check_outcomes(&out, seen_segs, "qdisc", 1);
    // Here the qdisc is also where the first sends were lost (tbf drops part of a GSO skb
    // and still reports it queued): the outbound finding names it too.
    let outbound = check_finding(bundle, "qdisc", "tc");
    assert_eq!(
        direction_layer(&outbound),
        (Some("egress"), Some("qdisc")),
        "{outbound}"
    );
    eprintln!(
        "tiny tbf: RetransSegs {retrans_segs} ({withheld} attempts withheld by the kernel), TCPRetransFail {retrans_fail}, outcomes {outcomes}"
    );
}
