//! UDP: datagrams dropped at full receive buffers.

use netprobe_common::vocab::{Direction, Layer};
use serde_json::{json, Value};

use super::{round, Context, Observation};
use crate::{fixes::Condition, report::model::Finding};

/// The sockets with the most unread bytes named in the evidence.
const FULLEST_SOCKETS: usize = 5;

pub(super) fn udp_rcvbuf_errors(cx: &Context) -> Vec<Finding> {
    let rep = cx.report;
    let v4 = rep.counter("Udp", "RcvbufErrors").rate;
    let v6 = rep.counter("Snmp6", "Udp6RcvbufErrors").rate;
    let fullest: Vec<Value> = rep
        .sockets
        .iter()
        .flat_map(|s| s.udp_backlogs.iter())
        .take(FULLEST_SOCKETS)
        .map(
            |b| json!({"port": b.port, "recv_queue_bytes": b.recv_queue_bytes, "owners": b.owners}),
        )
        .collect();
    let rmem_max = rep.sysctl_number("net.core.rmem_max");
    cx.judge(Observation {
        id: "udp_rcvbuf_errors",
        layer: Layer::Udp,
        direction: Direction::Ingress,
        value: v4 + v6,
        summary: format!("UDP drops {:.0} datagrams/s at full receive buffers", v4 + v6),
        evidence: evidence! {"udp_rcvbuf_errors_per_s" => round(v4), "udp6_rcvbuf_errors_per_s" => round(v6), "udp_in_errors_per_s" => round(rep.counter("Udp", "InErrors").rate), "rmem_max" => rmem_max, "fullest_sockets" => fullest},
        explanation: "Datagrams arrive at a socket whose receive buffer is full: the application does not read fast enough, or its SO_RCVBUF (capped by rmem_max) is too small.",
        condition: Condition::SocketRcvbufFull,
    })
    .into_iter()
    .collect()
}
