//! Anomaly rules over one report, one function per rule, grouped by layer. Every
//! counter-based rule works on per-second rates over the sampling window: a counter's value
//! since boot never triggers a rule by itself. Gauges (socket counts, conntrack usage,
//! accept-queue fill) are judged as they stand. Each finding's fix comes from `fixes`, keyed
//! by its condition and computed from the live values of this report.

use netprobe_common::vocab::{Direction, Layer};
use serde_json::{Map, Value};

use crate::fixes::{self, Condition, LiveValues};

use super::model::{Finding, Report};

/// A JSON object from `key => value` pairs.
macro_rules! evidence {
    ($($key:expr => $value:expr),* $(,)?) => {{
        let mut map = serde_json::Map::new();
        $( map.insert($key.to_string(), serde_json::json!($value)); )*
        map
    }};
}

mod conntrack;
mod nic;
mod qdisc;
mod sockets;
mod softirq;
mod tcp;
#[cfg(test)]
mod tests;
mod thresholds;
mod udp;

pub use thresholds::{threshold, Threshold, IMBALANCE_MIN_RATE, THRESHOLDS};

/// What every rule reads: the report, and the live values its fixes are computed from.
struct Context<'a> {
    report: &'a Report,
    live: LiveValues,
}

/// One rule's reading of one subject; a finding if its value reaches the rule's thresholds.
struct Observation<'a> {
    id: &'static str,
    layer: Layer,
    direction: Direction,
    value: f64,
    summary: String,
    evidence: Map<String, Value>,
    explanation: &'static str,
    condition: Condition<'a>,
}

impl Context<'_> {
    fn judge(&self, o: Observation) -> Option<Finding> {
        let severity = threshold(o.id).judge(o.value)?;
        Some(Finding {
            id: o.id,
            severity,
            layer: o.layer,
            direction: o.direction,
            summary: o.summary,
            evidence: o.evidence,
            explanation: o.explanation.to_string(),
            fix: fixes::fix(o.condition, &self.live).command,
        })
    }
}

type Rule = fn(&Context) -> Vec<Finding>;

/// Every rule, from the wire up.
const RULES: &[Rule] = &[
    nic::nic_rx_discards,
    nic::nic_ring_undersized,
    nic::network_errors,
    qdisc::qdisc_drops,
    softirq::softnet_dropped,
    softirq::softnet_time_squeeze,
    softirq::irq_imbalance,
    tcp::tcp_retransmits,
    tcp::tcp_reordering,
    tcp::listen_overflows,
    tcp::tcp_rcvbuf_pruned,
    udp::udp_rcvbuf_errors,
    sockets::tcp_timewait,
    sockets::tcp_closewait,
    sockets::accept_queue_full,
    conntrack::conntrack_usage,
    conntrack::conntrack_drops,
];

/// Every rule's findings: critical first, then by layer.
pub fn evaluate(report: &Report) -> Vec<Finding> {
    let cx = Context {
        report,
        live: LiveValues::from(report),
    };
    let mut out: Vec<Finding> = RULES.iter().flat_map(|rule| rule(&cx)).collect();
    out.sort_by_key(|f| (std::cmp::Reverse(f.severity), layer_order(f.layer)));
    out
}

/// Up the stack as a packet arrives: NIC → qdisc → backlog/CPU → IP → TCP/UDP → sockets →
/// conntrack.
pub fn layer_order(layer: Layer) -> usize {
    [
        Layer::Nic,
        Layer::Qdisc,
        Layer::Backlog,
        Layer::Ip,
        Layer::Tcp,
        Layer::Udp,
        Layer::Socket,
        Layer::Netfilter,
    ]
    .iter()
    .position(|l| *l == layer)
    .unwrap_or(99)
}

/// Two decimals, for evidence.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A rate from an interface's counters, 0 when the counter is absent.
fn interface_rate(iface: &super::model::InterfaceReport, counter: &str) -> f64 {
    iface.counters.get(counter).map(|c| c.rate).unwrap_or(0.0)
}
