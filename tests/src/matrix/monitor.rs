//! `netprobe monitor` on every kernel: a UDP socket with SO_RCVBUF 1024, never read, flooded
//! from the peer namespace while the monitor runs inside the socket's namespace (1 s interval,
//! 3 intervals). Its `udp_rcvbuf` column must sum to the namespace's RcvbufErrors delta, no
//! other column may move, and a veth's missing hardware ring is said to be unavailable. The
//! eBPF side (count mode) must load on the kernel, and its drops of the socket's datagrams
//! (SOCKET_RCVBUFF; before drop reasons, UNRECORDED freed in UDP's code) in the monitor's
//! namespace must equal the same delta, with the CSV's headline naming that reason.

use std::fs;

use serde_json::{json, Value};

use super::Checks;
use crate::{
    column_sum, fresh_log, log_rows, send_udp, udp_socket_with_rcvbuf, Link, Monitor, LOSS_COLUMNS,
};

/// What the guest measures; judged by [`check`] on the host.
pub fn monitored_udp_overflow() -> Value {
    let link = Link::new("mxm", 70);
    let sink = link.b_port(7030);
    let socket = udp_socket_with_rcvbuf(&link.b, sink, 1024);
    let log = fresh_log("matrix");
    let before = link.b.snmp("Udp", "RcvbufErrors");
    let monitor = Monitor::start(
        &link.b,
        &[
            "veth0",
            "1",
            log.to_str().unwrap(),
            "--count",
            "3",
            "--json",
        ],
    );
    let started = monitor.started.clone();
    let sent = send_udp(&link.a, sink, &[0u8; 256], 500);
    let run = monitor.wait();
    let rcvbuf_errors = link.b.snmp("Udp", "RcvbufErrors") - before;
    drop(socket);
    let rows = if log.exists() {
        log_rows(&log)
    } else {
        Vec::new()
    };
    let _ = fs::remove_file(&log);
    let columns: serde_json::Map<String, Value> = LOSS_COLUMNS
        .iter()
        .chain(&["tcp_collapsed"])
        .map(|c| (c.to_string(), json!(column_sum(&rows, c))))
        .collect();
    let objects: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = objects.last().cloned().unwrap_or(Value::Null);
    let socket_drops: u64 = objects
        .iter()
        .flat_map(|o| {
            o["kernel"]["drop_sites"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|s| s["own_netns"] == true && is_udp_rcvbuf_drop(s))
        .filter_map(|s| s["count"].as_u64())
        .sum();
    let headlines: Vec<Value> = rows
        .iter()
        .filter(|r| r["udp_rcvbuf"] != "0")
        .map(|r| json!(r["top_drop_reason"]))
        .collect();
    json!({
        "success": run.status.success(),
        "stderr": run.stderr.chars().take(1000).collect::<String>(),
        "sent": sent,
        "rcvbuf_errors": rcvbuf_errors,
        "rows": rows.len(),
        "columns": columns,
        "unavailable": last["unavailable"].clone(),
        "started": started,
        "ebpf_socket_drops": socket_drops,
        "headlines": headlines,
    })
}

/// A drop of a datagram at a full socket buffer: SOCKET_RCVBUFF, or on kernels without drop
/// reasons (before 5.17) one freed in UDP's receive code.
fn is_udp_rcvbuf_drop(site: &Value) -> bool {
    let location = site["location"].as_str().unwrap_or("");
    site["reason"] == "SOCKET_RCVBUFF"
        || (site["reason"] == "UNRECORDED"
            && (location.starts_with("udp") || location.starts_with("__udp")))
}

/// Exact column, still others, and the veth's ring said to be unavailable.
pub(super) fn check(c: &mut Checks, v: &Value) {
    let columns = &v["columns"];
    c.that(v["success"] == true && v["rows"] == 3, || {
        format!("netprobe monitor: {v}")
    });
    c.that(
        v["rcvbuf_errors"].as_u64().is_some_and(|e| e > 0)
            && columns["udp_rcvbuf"] == v["rcvbuf_errors"],
        || format!("monitor udp_rcvbuf vs RcvbufErrors: {v}"),
    );
    c.that(
        columns
            .as_object()
            .is_some_and(|m| m.iter().all(|(k, n)| k == "udp_rcvbuf" || n == 0)),
        || format!("monitor: a column other than udp_rcvbuf moved: {columns}"),
    );
    c.that(
        v["started"]
            .as_str()
            .is_some_and(|s| s.contains("eBPF count mode")),
        || format!("monitor: the eBPF side did not load: {}", v["started"]),
    );
    c.that(v["ebpf_socket_drops"] == v["rcvbuf_errors"], || {
        format!(
            "monitor eBPF socket-buffer drops {} vs RcvbufErrors {}",
            v["ebpf_socket_drops"], v["rcvbuf_errors"]
        )
    });
    c.that(
        v["headlines"].as_array().is_some_and(|h| {
            !h.is_empty() && h.iter().all(|r| r == "SOCKET_RCVBUFF" || r == "UNRECORDED")
        }),
        || {
            format!(
                "monitor headline of the overflow intervals: {}",
                v["headlines"]
            )
        },
    );
    c.that(
        v["unavailable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|x| x["column"] == "nic_missed")),
        || {
            format!(
                "monitor: a veth's nic_missed not said unavailable: {}",
                v["unavailable"]
            )
        },
    );
}
