//! Transmit queue disciplines that drop.

use super::{round, Context, Observation};
use crate::{
    fixes::{Condition, QdiscRef},
    report::model::Finding,
};
use netprobe_common::vocab::{Direction, Layer};

pub(super) fn qdisc_drops(cx: &Context) -> Vec<Finding> {
    cx.report
        .qdiscs
        .iter()
        .filter_map(|q| {
            let qdisc = &q.qdisc;
            let at = QdiscRef {
                device: &qdisc.ifname,
                kind: &qdisc.kind,
                parent: (!qdisc.root).then_some(qdisc.parent.as_str()),
            };
            cx.judge(Observation {
                id: "qdisc_drops",
                layer: Layer::Qdisc,
                direction: Direction::Egress,
                value: q.drops_rate,
                summary: format!("{}: qdisc {} {} drops {:.0} packets/s", qdisc.ifname, qdisc.kind, qdisc.handle, q.drops_rate),
                evidence: evidence! {"interface" => qdisc.ifname, "qdisc" => qdisc.kind, "handle" => qdisc.handle, "drops_per_s" => round(q.drops_rate), "overlimits_per_s" => round(q.overlimits_rate), "requeues_per_s" => round(q.requeues_rate), "backlog_bytes" => qdisc.backlog, "qlen" => qdisc.qlen},
                explanation: "The transmit queue discipline drops packets: it is shaping below the offered load, or its queue is too short for the bursts.",
                condition: Condition::QdiscDrops { qdisc: Some(at) },
            })
        })
        .collect()
}
