//! UDP: datagrams dropped at full receive buffers.

use super::{round, Context, Observation};
use crate::{
    fixes::Condition,
    report::{
        model::{Finding, Report},
        sockets::SocketRow,
    },
};
use netprobe_common::vocab::{Direction, Layer};

/// The sockets named in the evidence.
const FULLEST_SOCKETS: usize = 5;

pub(super) fn udp_rcvbuf_errors(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let v4 = rep.counter("Udp", "RcvbufErrors").rate;
    let v6 = rep.counter("Snmp6", "Udp6RcvbufErrors").rate;
    let fullest = fullest_sockets(rep);
    let rmem_max = rep.sysctl_number("net.core.rmem_max");
    let summary = match fullest.first().filter(|r| r.drops.is_some_and(|d| d > 0)) {
        Some(row) => format!(
            "UDP drops {:.0} datagrams/s at full receive buffers; {} dropped {} in the window (rcvbuf {}, limited by {})",
            v4 + v6,
            row.who(),
            row.drops.unwrap_or(0),
            row.rcvbuf.map_or("unknown".into(), |b| b.to_string()),
            row.limited_by.unwrap_or("unknown")
        ),
        None => format!("UDP drops {:.0} datagrams/s at full receive buffers", v4 + v6),
    };
    cx.judge(Observation {
        id: "udp_rcvbuf_errors",
        layer: Layer::Udp,
        direction: Direction::Ingress,
        value: v4 + v6,
        summary,
        evidence: evidence! {"udp_rcvbuf_errors_per_s" => round(v4), "udp6_rcvbuf_errors_per_s" => round(v6), "udp_in_errors_per_s" => round(rep.counter("Udp", "InErrors").rate), "rmem_max" => rmem_max, "rmem_default" => rep.sysctl_number("net.core.rmem_default"), "fullest_sockets" => fullest},
        explanation: "Datagrams arrive at a socket whose receive buffer is full: the application does not read fast enough, or its SO_RCVBUF (capped by rmem_max) is too small.",
        condition: Condition::SocketRcvbufFull,
    })
    .into_iter()
    .collect()
}

/// The UDP sockets whose own drop counter grew in the window, most drops first; then those
/// with the most unread bytes, which is all there is to go by without drop counts.
fn fullest_sockets(rep: &Report) -> Vec<SocketRow> {
    let Some(sockets) = &rep.sockets else {
        return Vec::new();
    };
    let dropped = sockets
        .overflowing_sockets
        .iter()
        .filter(|row| row.protocol == "udp");
    let waiting = sockets
        .udp_backlogs
        .iter()
        .filter(|row| row.drops.is_none_or(|d| d == 0));
    dropped
        .chain(waiting)
        .take(FULLEST_SOCKETS)
        .cloned()
        .collect()
}
