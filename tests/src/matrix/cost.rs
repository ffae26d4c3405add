//! Kernel cost per drop on every kernel, from the kernel's own `bpf_stats`: a UDP storm to a
//! closed port under `netprobe monitor` (count mode: the BTF-typed drop hook where the kernel
//! allows it, else the raw one), under `trace --count` on the raw tracepoint, and under a
//! streaming `netprobe trace` (the drop and retransmit hooks only) on each of the two. Measured, not judged against a figure: under qemu's emulation the
//! nanoseconds are not the hardware's, but the two modes and the hooks chosen are compared on
//! the same kernel. The check is that each was measured over every drop of the storm.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::Checks;
use crate::{loaded_programs, send_udp, signal, Link, LoadedProgram, Monitor, SysctlGuard, Tracer};

const DATAGRAMS: usize = 20_000;

/// Every netprobe drop program loaded now, with its `bpf_stats`.
fn drop_programs() -> Vec<LoadedProgram> {
    loaded_programs()
        .into_iter()
        .filter(|p| p.name.starts_with("netprobe_drop"))
        .collect()
}

/// The storm's cost in the drop program loaded after `before` was listed.
fn measured(before: &HashSet<u64>, link: &Link) -> Value {
    let sent = send_udp(&link.a, link.b_port(9), b"cost", DATAGRAMS);
    let after: Vec<_> = drop_programs()
        .into_iter()
        .filter(|p| !before.contains(&p.id))
        .collect();
    match after.first() {
        Some(p) => json!({
            "sent": sent,
            "program": p.name,
            "runs": p.runs,
            "ns_per_drop": p.run_time_ns.checked_div(p.runs).unwrap_or(0),
        }),
        None => json!({ "sent": sent, "program": null }),
    }
}

pub fn drop_cost() -> Value {
    let _stats = SysctlGuard::set("kernel.bpf_stats_enabled", "1");
    let link = Link::new("mxk", 75);
    // Each run's program is told from the earlier runs' (freed a moment after they exit) by
    // the ids loaded before it started.
    let loaded = || -> HashSet<u64> { drop_programs().iter().map(|p| p.id).collect() };
    let before = loaded();
    // Until stopped: a fixed count of intervals could end before a slow guest sent the storm
    // (seen on 6.1 under qemu: the monitor's program gone when listed).
    let monitor = Monitor::start(&link.b, &["veth0", "1", "--no-log"]);
    let count_mode = measured(&before, &link);
    signal(monitor.pid(), libc::SIGTERM);
    let _ = monitor.wait();
    let traced = |args: &[&str]| {
        let before = loaded();
        let tracer = Tracer::start(args);
        let cost = measured(&before, &link);
        let _ = tracer.stop();
        cost
    };
    let raw = ["--tracepoint-hooks", "raw"];
    let count_raw = traced(&[&["--count", "--without-cpu-hooks"][..], &raw].concat());
    let stream_args = ["--without-cpu-hooks", "--without-receive-hook"];
    let stream = traced(&stream_args);
    let stream_raw = traced(&[&stream_args[..], &raw].concat());
    json!({ "count": count_mode, "count_raw": count_raw, "stream": stream, "stream_raw": stream_raw })
}

/// Every mode measured over the whole storm, each on the program it asked for: tp_btf's
/// where netprobe chooses (every kernel of the matrix allows it), the raw tracepoint's when
/// asked.
pub(super) fn check(c: &mut Checks, v: &Value) {
    for (mode, program) in [
        ("count", "netprobe_drop_btf"),
        ("count_raw", "netprobe_drop"),
        ("stream", "netprobe_drop_btf"),
        ("stream_raw", "netprobe_drop"),
    ] {
        let m = &v[mode];
        c.that(
            m["program"] == program && m["runs"].as_u64().unwrap_or(0) >= DATAGRAMS as u64,
            || format!("kernel cost, {mode} mode: not measured over the storm on {program}: {v}"),
        );
    }
}
