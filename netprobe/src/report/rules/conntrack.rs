//! Connection tracking: a filling table, refused entries.

use super::{round, Context, Observation};
use crate::{fixes::Condition, report::model::Finding};
use netprobe_common::vocab::{Direction, Layer};

pub(super) fn conntrack_usage(cx: &Context) -> Vec<Finding> {
    let Some(ct) = &cx.report.conntrack else {
        return Vec::new();
    };
    cx.judge(Observation {
        id: "conntrack_usage",
        layer: Layer::Netfilter,
        direction: Direction::Unknown,
        value: ct.usage_pct,
        summary: format!("conntrack table {:.0}% full ({}/{})", ct.usage_pct, ct.count, ct.max),
        evidence: evidence! {"count" => ct.count, "max" => ct.max, "usage_pct" => round(ct.usage_pct)},
        explanation: "When the connection-tracking table is full, new flows are dropped (\"nf_conntrack: table full, dropping packet\").",
        condition: Condition::ConntrackTableFull,
    })
    .into_iter()
    .collect()
}

pub(super) fn conntrack_drops(cx: &Context) -> Vec<Finding> {
    let Some(ct) = &cx.report.conntrack else {
        return Vec::new();
    };
    let stat = |n: &str| ct.stats.get(n).map(|c| c.rate).unwrap_or(0.0);
    let drops = stat("drop") + stat("early_drop") + stat("insert_failed");
    cx.judge(Observation {
        id: "conntrack_drops",
        layer: Layer::Netfilter,
        direction: Direction::Unknown,
        value: drops,
        summary: format!("conntrack drops {drops:.0} packets/s"),
        evidence: evidence! {"drop_per_s" => round(stat("drop")), "early_drop_per_s" => round(stat("early_drop")), "insert_failed_per_s" => round(stat("insert_failed")), "count" => ct.count, "max" => ct.max},
        explanation: "Connection tracking refuses packets: the table is full (drop, early_drop) or inserts race (insert_failed, typical of UDP DNS with parallel A/AAAA queries).",
        condition: Condition::ConntrackTableFull,
    })
    .into_iter()
    .collect()
}
