//! Storm sampling on every kernel: a UDP storm to a closed port, traced with `--max-rate 5`
//! inside the storm's namespace. Every drop must be counted (= Udp NoPorts), a sample of at
//! most 5 per second per CPU streamed, nothing lost, and the stream must say `sampling`
//! while the storm lasts and `over` after it; the finding counts every drop.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Checks;
use crate::{send_udp, Link, Tracer};

const RATE: u64 = 5;
const DATAGRAMS: usize = 20_000;

/// What the guest measures; judged by [`check`] on the host.
pub fn sampled_udp_storm() -> Value {
    let link = Link::new("mxr", 74);
    let tracer = Tracer::start(&["--netns", &link.b.name, "--port", "9", "--max-rate", "5"]);
    let no_ports_before = link.b.snmp("Udp", "NoPorts");
    let started = Instant::now();
    let sent = send_udp(&link.a, link.b_port(9), b"storm", DATAGRAMS);
    // Two looks after the storm: the second says it is over.
    std::thread::sleep(Duration::from_millis(2300));
    let no_ports = link.b.snmp("Udp", "NoPorts") - no_ports_before;
    let out = tracer.stop();
    let seconds = started.elapsed().as_secs_f64().ceil() as u64 + 1;
    let storms = out.of_type("storm");
    let said = |state: &str| -> Vec<&Value> {
        storms
            .iter()
            .copied()
            .filter(|s| s["state"] == state)
            .collect()
    };
    let sampling = said("sampling");
    let finding_drops: Vec<u64> = out
        .of_type("findings")
        .last()
        .and_then(|b| b["findings"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f["evidence"]["events"]["drops"].as_u64())
        .collect();
    let summary = out
        .of_type("summary")
        .first()
        .map(|s| (*s).clone())
        .unwrap_or(Value::Null);
    json!({
        "success": out.success,
        "stderr": out.stderr.chars().take(1000).collect::<String>(),
        "sent": sent,
        "no_ports": no_ports,
        "seconds": seconds,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "events": summary["events"]["drop"].clone(),
        "streamed_events": out.of_type("drop").len(),
        "sampling_lines": sampling.len(),
        "sampling_limits_ok": sampling.iter().all(|l| l["limit"] == RATE && l["why"] == "max_rate"),
        "sampling_said": sampling.iter().filter_map(|l| l["count"].as_u64()).sum::<u64>(),
        "over": said("over").iter().map(|l| l["count"].clone()).collect::<Vec<_>>(),
        "lost_lines": said("events_lost").len(),
        "finding_drops": finding_drops,
    })
}

/// Exact counts, a bounded sample, nothing lost, the storm said and its end.
pub(super) fn check(c: &mut Checks, v: &Value) {
    let n = |key: &str| v[key].as_u64().unwrap_or(0);
    let e = &v["events"];
    let ev = |key: &str| e[key].as_u64().unwrap_or(u64::MAX);
    c.that(
        v["success"] == true && n("sent") == DATAGRAMS as u64,
        || format!("storm: netprobe trace --max-rate or the storm failed: {v}"),
    );
    c.that(
        n("no_ports") == DATAGRAMS as u64 && ev("counted") == n("no_ports"),
        || format!("storm: counted vs Udp NoPorts: {v}"),
    );
    c.that(
        ev("lost") == 0
            && ev("sampled_out") > 0
            && ev("streamed") + ev("sampled_out") == ev("counted")
            && ev("streamed") == n("streamed_events")
            && ev("streamed") <= RATE * n("cpus") * n("seconds"),
        || format!("storm: streamed/sampled/lost: {v}"),
    );
    c.that(
        n("sampling_lines") > 0
            && v["sampling_limits_ok"] == true
            && n("sampling_said") <= n("no_ports")
            && n("sampling_said") + RATE * n("cpus") >= n("no_ports")
            && v["over"]
                .as_array()
                .is_some_and(|o| o.len() == 1 && o[0] == v["sampling_said"])
            && n("lost_lines") == 0,
        || format!("storm: the stream's storm lines: {v}"),
    );
    c.that(
        v["finding_drops"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| *x == v["no_ports"])),
        || format!("storm: no finding counts every drop: {v}"),
    );
}
