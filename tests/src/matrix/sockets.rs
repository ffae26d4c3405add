//! The socket rows on every kernel: a UDP socket this process holds with SO_RCVBUF 1024, never
//! read, flooded from the peer namespace. `netprobe report`, run inside the namespace, must name
//! it from its own drop counter (sock_diag's SK_MEMINFO): the same count as the namespace's
//! `Udp RcvbufErrors`, with the application's SO_RCVBUF as the limit and the fix.

use std::time::Duration;

use serde_json::{json, Value};

use super::Checks;
use crate::{findings, report_in_after, send_udp, udp_socket_with_rcvbuf, Link};

/// What the guest measures; judged by [`check`] on the host.
pub fn overflowing_udp_socket() -> Value {
    let link = Link::new("mxu", 69);
    let sink = link.b_port(7020);
    let socket = udp_socket_with_rcvbuf(&link.b, sink, 1024);
    let before = link.b.snmp("Udp", "RcvbufErrors");
    let ns = link.a.shared();
    // A slow guest takes well over the usual 150 ms to start the report and take its first
    // sample: the flood waits longer, or it can fall before the window entirely.
    let (report, sent) = report_in_after(&link.b, "3", Duration::from_millis(1500), move || {
        send_udp(&ns, sink, &[0u8; 256], 500)
    });
    let rcvbuf_errors = link.b.snmp("Udp", "RcvbufErrors") - before;
    drop(socket);
    let row = report["sockets"]["overflowing_sockets"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["port"] == 7020))
        .cloned()
        .unwrap_or(Value::Null);
    let fix = findings(&report, "udp_rcvbuf_errors")
        .first()
        .map(|f| f["fix"].clone())
        .unwrap_or(Value::Null);
    json!({
        "sent": sent,
        "rcvbuf_errors": rcvbuf_errors,
        "pid": std::process::id(),
        "row": row,
        "fix": fix,
    })
}

/// The socket is named, owned by the process that holds it, its own drop counter is the
/// namespace's RcvbufErrors (the only socket there), and the fix names SO_RCVBUF. Its drops in
/// the report's window are at most that (the flood starts 1.5 s after the report, which a slow
/// guest's first sample has so far always beaten).
pub(super) fn check(c: &mut Checks, v: &Value) {
    let row = &v["row"];
    let in_window = row["drops"].as_u64().unwrap_or(0);
    c.that(
        v["rcvbuf_errors"].as_u64().is_some_and(|e| e > 0)
            && row["drops_total"] == v["rcvbuf_errors"]
            && in_window > 0
            && row["drops_total"].as_u64().is_some_and(|t| in_window <= t)
            && row["limited_by"] == "so_rcvbuf"
            && row["owners"][0]["pid"] == v["pid"],
        || format!("the overflowing UDP socket's row: {v}"),
    );
    c.that(
        v["fix"]
            .as_str()
            .is_some_and(|f| f.contains("sets SO_RCVBUF") && !f.contains("rmem_max=")),
        || format!("the overflowing UDP socket's fix: {}", v["fix"]),
    );
}
