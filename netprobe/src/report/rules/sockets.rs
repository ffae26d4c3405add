//! Socket states: TIME_WAIT pile-ups, CLOSE_WAIT leaks, full accept queues.

use super::{Context, Observation};
use crate::{
    fixes::Condition,
    report::{model::Finding, sockets::owner_text},
};
use netprobe_common::vocab::{Direction, Layer};

pub(super) fn tcp_timewait(cx: &Context) -> Vec<Finding> {
    let Some(s) = &cx.report.sockets else {
        return Vec::new();
    };
    let tw_max = cx.report.sysctl_number("net.ipv4.tcp_max_tw_buckets");
    let reuse = cx.report.sysctl_number("net.ipv4.tcp_tw_reuse");
    cx.judge(Observation {
        id: "tcp_timewait",
        layer: Layer::Socket,
        direction: Direction::Ingress,
        value: s.time_wait as f64,
        summary: format!("{} sockets in TIME_WAIT", s.time_wait),
        evidence: evidence! {"time_wait" => s.time_wait, "top_local_ports" => s.time_wait_ports, "tcp_max_tw_buckets" => tw_max, "tcp_tw_reuse" => reuse},
        explanation: "Many short connections close on this side; each leaves a TIME_WAIT socket for 60 s. Enough of them exhaust ephemeral ports towards one destination.",
        condition: Condition::TimeWaitPileUp,
    })
    .into_iter()
    .collect()
}

pub(super) fn tcp_closewait(cx: &Context) -> Vec<Finding> {
    let Some(s) = &cx.report.sockets else {
        return Vec::new();
    };
    let holder = s.close_wait_owners.first();
    let summary = match holder {
        Some(h) if h.pid != 0 => format!(
            "{} sockets in CLOSE_WAIT; {} (pid {}) holds {}",
            s.close_wait, h.comm, h.pid, h.count
        ),
        _ => format!("{} sockets in CLOSE_WAIT", s.close_wait),
    };
    cx.judge(Observation {
        id: "tcp_closewait",
        layer: Layer::Socket,
        direction: Direction::Ingress,
        value: s.close_wait as f64,
        summary,
        evidence: evidence! {"close_wait" => s.close_wait, "holders" => s.close_wait_owners, "owners_complete" => s.owners_complete},
        explanation: "The peer closed these connections but the local application never called close(): a socket leak that grows until the process runs out of file descriptors.",
        condition: Condition::CloseWaitLeak {
            holder: holder.map(|h| (h.comm.as_str(), h.pid)),
        },
    })
    .into_iter()
    .collect()
}

pub(super) fn accept_queue_full(cx: &Context) -> Vec<Finding> {
    let Some(s) = &cx.report.sockets else {
        return Vec::new();
    };
    let somaxconn = cx.report.sysctl_number("net.core.somaxconn");
    s.listeners
        .iter()
        .filter(|l| l.accept_queue_max > 0)
        .filter_map(|l| {
            let fill = l.accept_queue as f64 * 100.0 / l.accept_queue_max as f64;
            let owner = owner_text(&l.owners);
            let who = l.who();
            cx.judge(Observation {
                id: "accept_queue_full",
                layer: Layer::Socket,
                direction: Direction::Ingress,
                value: fill,
                summary: format!("listener {}:{} accept queue {}/{} ({:.0}%), owned by {owner}", l.addr, l.port, l.accept_queue, l.accept_queue_max, fill),
                evidence: evidence! {"addr" => l.addr, "port" => l.port, "accept_queue" => l.accept_queue, "accept_queue_max" => l.accept_queue_max, "owners" => l.owners, "somaxconn" => somaxconn, "drops" => l.drops, "limited_by" => l.limited_by},
                explanation: "Completed connections wait for the application to accept() them; when the queue is full new handshakes are dropped (ListenOverflows).",
                condition: Condition::AcceptQueueFull { owner: &who, limit: l.accept_queue_max },
            })
        })
        .collect()
}
