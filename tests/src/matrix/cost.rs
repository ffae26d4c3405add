//! Kernel cost per drop on every kernel, from the kernel's own `bpf_stats`: a UDP storm to a
//! closed port under `netprobe monitor` (count mode) and under a streaming `netprobe trace`
//! (the drop and retransmit hooks only). Measured, not judged against a figure: under qemu's emulation the
//! nanoseconds are not the hardware's, but the two modes and the hooks chosen are compared on
//! the same kernel. The check is that each was measured over every drop of the storm.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::Checks;
use crate::{send_udp, sh, Link, Monitor, SysctlGuard, Tracer};

const DATAGRAMS: usize = 20_000;

/// (name, id, run_cnt, run_time_ns) of every netprobe drop program loaded now.
fn drop_programs() -> Vec<(String, u64, u64, u64)> {
    let v: Value =
        serde_json::from_str(&sh("bpftool", &["prog", "show", "-j"])).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("netprobe_drop"))
        })
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["id"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
                p["run_time_ns"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The storm's cost in the drop program loaded after `before` was listed.
fn measured(before: &HashSet<u64>, link: &Link) -> Value {
    let sent = send_udp(&link.a, link.b_port(9), b"cost", DATAGRAMS);
    let after: Vec<_> = drop_programs()
        .into_iter()
        .filter(|p| !before.contains(&p.1))
        .collect();
    match after.first() {
        Some((name, _, runs, ns)) => json!({
            "sent": sent,
            "program": name,
            "runs": runs,
            "ns_per_drop": ns.checked_div(*runs).unwrap_or(0),
        }),
        None => json!({ "sent": sent, "program": null }),
    }
}

pub fn drop_cost() -> Value {
    let _stats = SysctlGuard::set("kernel.bpf_stats_enabled", "1");
    let link = Link::new("mxk", 75);
    let before: HashSet<u64> = drop_programs().iter().map(|p| p.1).collect();
    let monitor = Monitor::start(&link.b, &["veth0", "1", "--no-log", "--count", "2"]);
    let count_mode = measured(&before, &link);
    let _ = monitor.wait();
    let tracer = Tracer::start(&["--without-cpu-hooks", "--without-receive-hook"]);
    let stream = measured(&before, &link);
    let _ = tracer.stop();
    json!({ "count": count_mode, "stream": stream })
}

/// Both modes measured over the whole storm.
pub(super) fn check(c: &mut Checks, v: &Value) {
    for mode in ["count", "stream"] {
        let m = &v[mode];
        c.that(
            m["program"].is_string() && m["runs"].as_u64().unwrap_or(0) >= DATAGRAMS as u64,
            || format!("kernel cost, {mode} mode: not measured over the storm: {v}"),
        );
    }
}
