//! The end-of-trace summary for people: the same window as `{"type":"summary"}`.

use std::fmt::Write as _;

use super::SiteJson;
use crate::model::window::{CpuCount, FailedAttempts, Mode, Window};

/// The summary for people.
pub fn text(w: &Window, top: usize) -> String {
    let mut out = String::new();
    for section in [
        retransmits,
        received,
        drops,
        non_network,
        sampled,
        cpus,
        backlog,
        accounting,
    ] {
        section(&mut out, w, top);
    }
    out
}

/// What this host sent again, busiest flows first.
fn retransmits(out: &mut String, w: &Window, top: usize) {
    let r = &w.retransmits;
    let _ = writeln!(
        out,
        "\n== netprobe summary ({}{:.1} s) ==",
        if w.mode == Mode::Count {
            "count mode, "
        } else {
            ""
        },
        w.duration_ms as f64 / 1000.0
    );
    let _ =
        writeln!(
        out,
        "retransmits: {} sent ({} segments, {} bytes), {} failed attempts ({}), {} flows; by kind: {}",
        r.sent,
        r.segs,
        r.bytes,
        r.failed.count(),
        failed_text(&r.failed),
        r.flows.len(),
        r.by_kind.iter().map(|(k, n)| format!("{} {n}", k.name())).collect::<Vec<_>>().join(", ")
    );
    for f in r.flows.iter().take(top) {
        let _ = writeln!(
            out,
            "  {:>8} sent {:>6} failed {:>8} segs  {} > {}  netns={}",
            f.sent,
            f.failed.count(),
            f.segs,
            f.flow.src,
            f.flow.dst,
            f.flow.netns
        );
    }
}

/// `N failed after counted (S segments; netfilter N), N aborted, N unclassified`.
fn failed_text(f: &FailedAttempts) -> String {
    let causes: Vec<String> = f.causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let mut text = format!(
        "{} failed after counted ({} segments{}{}), {} aborted",
        f.after_counted.count,
        f.after_counted.segs,
        if causes.is_empty() { "" } else { "; " },
        causes.join(", "),
        f.aborted.count
    );
    if f.unclassified.count > 0 {
        text.push_str(&format!(", {} unclassified", f.unclassified.count));
    }
    text
}

/// What peers sent again, and holes, as this host received it.
fn received(out: &mut String, w: &Window, top: usize) {
    let rx = &w.received.totals;
    let _ = writeln!(
        out,
        "received out of sequence: {} duplicate ({} partial, {} bytes), {} filled holes ({} bytes), {} holes opened ({} bytes), {} out-of-order segments",
        rx.duplicate + rx.duplicate_partial,
        rx.duplicate_partial,
        rx.duplicate_bytes,
        rx.fills_hole,
        rx.fills_hole_bytes,
        rx.holes,
        rx.hole_bytes,
        rx.out_of_order
    );
    if w.received.duplicates_after_fin > 0 {
        let _ = writeln!(
            out,
            "  and {} duplicates after a FIN (dropped as old data by closing sockets)",
            w.received.duplicates_after_fin
        );
    }
    for f in w.received.flows.iter().take(top) {
        let _ = writeln!(
            out,
            "  {:>8} dup {:>6} fills {:>6} holes  {} > {}  netns={}",
            f.counts.duplicate + f.counts.duplicate_partial,
            f.counts.fills_hole,
            f.counts.holes,
            f.flow.dst,
            f.flow.src,
            f.flow.netns
        );
    }
}

/// Drops by reason and CPU.
fn drops(out: &mut String, w: &Window, top: usize) {
    let _ = writeln!(out, "drops: {}", w.drops.total);
    for d in w.drops.by_reason.iter().take(top) {
        let _ = writeln!(out, "  {:>10}  {}", d.count, d.reason);
    }
    if !w.drops.by_cpu.is_empty() {
        let cpus: Vec<String> = w
            .drops
            .by_cpu
            .iter()
            .map(|c| format!("cpu{}={}", c.cpu, c.count))
            .collect();
        let _ = writeln!(out, "  by cpu: {}", cpus.join(" "));
    }
    if w.mode == Mode::Count && !w.drop_sites.is_empty() {
        let _ = writeln!(out, "  by site:");
        for site in w.drop_sites.iter().take(top) {
            let _ = writeln!(out, "  {}", SiteJson::new(site).text());
        }
    }
}

/// The frees that are not network drops, on one line: apart from the drops, never hidden.
fn non_network(out: &mut String, w: &Window, top: usize) {
    let n = &w.non_network;
    let sites: Vec<String> = n
        .by_site
        .iter()
        .take(top)
        .map(|s| format!("{} {} at {}", s.count, s.reason, s.location))
        .collect();
    let _ = writeln!(
        out,
        "non-network frees (unix-domain, netlink… skbs; not drops): {}{}",
        n.total,
        if sites.is_empty() {
            String::new()
        } else {
            format!("; {}", sites.join(", "))
        }
    );
}

/// Receive work per CPU.
fn cpus(out: &mut String, w: &Window, _top: usize) {
    for c in &w.cpus {
        let devices: Vec<String> = c
            .napi
            .iter()
            .map(|n| format!("{} {} polls/{} full", n.dev, n.polls, n.full_budget))
            .collect();
        let _ = writeln!(
            out,
            "cpu{}: NET_RX {} runs, {:.1} ms (max {} µs); NAPI {}; softnet time_squeeze +{}, backlog dropped +{}",
            c.cpu,
            c.net_rx_runs,
            c.net_rx_total_ns as f64 / 1e6,
            c.net_rx_max_ns / 1000,
            if devices.is_empty() { "-".to_string() } else { devices.join(", ") },
            c.time_squeeze,
            c.backlog_dropped
        );
    }
}

/// Backlog drops from both sides.
fn backlog(out: &mut String, w: &Window, _top: usize) {
    let b = &w.backlog;
    if b.drop_events + b.softnet_dropped > 0 {
        let list = |cpus: &[CpuCount]| {
            cpus.iter()
                .map(|c| format!("cpu{}={}", c.cpu, c.count))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "backlog: {} drops (softnet_stat: {}); overflowed on {}; enqueued from {}{}",
            b.drop_events,
            b.softnet_dropped,
            list(&b.overflowing_cpus),
            list(&b.enqueuing_cpus),
            b.not_exact_because
                .as_ref()
                .map(|why| format!(" (not exact: {why})"))
                .unwrap_or_default()
        );
    }
}

/// Storm sampling: the sites that streamed only a sample.
fn sampled(out: &mut String, w: &Window, top: usize) {
    super::sampled::text(out, &w.sampled, top);
}

/// What the stream lost, and what the kernel did not count.
fn accounting(out: &mut String, w: &Window, _top: usize) {
    let e = &w.events;
    if w.mode == Mode::Count {
        let _ = writeln!(
            out,
            "events: count mode, none streamed by design; counted in the kernel: {} retransmits, {} drops, {} received out of sequence",
            e.retransmit.counted, e.drop.counted, e.receive.counted
        );
        // The first note is the line above's.
        for note in crate::trace::count::notes(w).iter().skip(1) {
            let _ = writeln!(out, "note: {note}");
        }
    } else if w.events.lost() > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} events lost (ring buffer full: {} retransmit, {} drop); totals above are exact, the stream is not. Raise --ring-size.",
            w.events.lost(), e.retransmit.lost, e.drop.lost
        );
    } else {
        let _ = writeln!(out, "events: none lost");
    }
    if e.flow_table_full > 0 || e.reason_table_full > 0 || e.non_network_table_full > 0 {
        let _ = writeln!(
            out,
            "WARNING: kernel tables full: {} retransmits missing from per-flow totals, {} drops from per-reason totals, {} non-network frees from theirs",
            e.flow_table_full, e.reason_table_full, e.non_network_table_full
        );
    }
    let skipped: u64 = w.kernel_skipped.values().sum();
    if skipped > 0 {
        let which: Vec<String> = w
            .kernel_skipped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "WARNING: the kernel skipped {skipped} hook invocations (another BPF program was running on that CPU): {}",
            which.join(", ")
        );
    }
    if e.decode_errors > 0 {
        let _ = writeln!(out, "WARNING: {} records did not decode", e.decode_errors);
    }
}
