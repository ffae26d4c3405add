//! The device and its driver: receive discards, an undersized ring, interface errors.

use netprobe_common::vocab::{Direction, Layer};
use serde_json::{json, Map, Value};

use super::{interface_rate, round, Context, Observation};
use crate::{
    fixes::Condition,
    report::model::{Finding, NicReport},
};

pub(super) fn nic_rx_discards(cx: &Context) -> Vec<Finding> {
    cx.report
        .nics
        .iter()
        .filter_map(|nic| {
            let loss = nic.rx_loss_rate();
            let top: Vec<Value> = nic
                .loss
                .iter()
                .filter(|l| l.rate > 0.0)
                .map(|l| json!({"name": l.name, "queue": l.queue, "rate": round(l.rate)}))
                .collect();
            cx.judge(Observation {
                id: "nic_rx_discards",
                layer: Layer::Nic,
                direction: Direction::Ingress,
                value: loss,
                summary: format!("{}: the NIC discards {:.0} received packets/s", nic.ifname, loss),
                evidence: evidence! {"interface" => nic.ifname, "driver" => nic.driver, "rx_discards_per_s" => round(loss), "counters" => top, "rings" => nic.rings},
                explanation: "The NIC or its driver drops packets before the kernel sees them: the receive ring is full because the CPU servicing it does not drain it fast enough, or the ring is too small for the bursts.",
                condition: Condition::RxRingOverflow { device: Some(&nic.ifname) },
            })
        })
        .collect()
}

/// Receive loss the interface's own counters see (missed, fifo), beside the driver's.
fn interface_rx_missed(cx: &Context, nic: &NicReport) -> f64 {
    cx.report
        .interfaces
        .iter()
        .find(|i| i.info.name == nic.ifname)
        .map(|i| interface_rate(i, "statistics.rx_missed_errors") + interface_rate(i, "rx_fifo"))
        .unwrap_or(0.0)
}

pub(super) fn nic_ring_undersized(cx: &Context) -> Vec<Finding> {
    cx.report
        .nics
        .iter()
        .filter_map(|nic| {
            let ring = nic.rings?;
            let lost = nic.rx_loss_rate().max(interface_rx_missed(cx, nic));
            if ring.rx >= ring.rx_max || lost <= 0.0 {
                return None;
            }
            cx.judge(Observation {
                id: "nic_ring_undersized",
                layer: Layer::Nic,
                direction: Direction::Ingress,
                value: lost,
                summary: format!("{}: rx ring {} of max {} while {:.0} packets/s are missed", nic.ifname, ring.rx, ring.rx_max, lost),
                evidence: evidence! {"interface" => nic.ifname, "rx_ring" => ring.rx, "rx_ring_max" => ring.rx_max, "rx_loss_per_s" => round(lost)},
                explanation: "The receive ring is smaller than the hardware allows and the NIC is running out of descriptors; a larger ring absorbs bursts.",
                condition: Condition::RxRingOverflow { device: Some(&nic.ifname) },
            })
        })
        .collect()
}

pub(super) fn network_errors(cx: &Context) -> Vec<Finding> {
    cx.report
        .interfaces
        .iter()
        .filter_map(|iface| {
            let rate = |name: &str| interface_rate(iface, name);
            let parts = [
                ("rx_errs", rate("rx_errs")),
                ("rx_missed", rate("statistics.rx_missed_errors")),
                ("rx_fifo", rate("rx_fifo")),
                ("tx_errs", rate("tx_errs")),
                ("tx_drop", rate("tx_drop")),
                ("tx_fifo", rate("tx_fifo")),
            ];
            let total: f64 = parts.iter().map(|p| p.1).sum();
            let (worst, _) = parts
                .iter()
                .copied()
                .fold(("", 0.0), |a, p| if p.1 > a.1 { p } else { a });
            let name = iface.info.name.as_str();
            let condition = match worst {
                "tx_drop" | "tx_fifo" => Condition::TransmitDrops { device: name },
                "rx_missed" | "rx_fifo" => Condition::RxRingOverflow { device: Some(name) },
                _ => Condition::DeviceErrors { device: name },
            };
            // rx_drop is evidence, not part of the metric: it also rises for benign reasons
            // (unknown protocols, inactive bond slaves), and backlog drops are softnet_dropped's.
            let evidence: Map<String, Value> = parts
                .iter()
                .map(|(k, v)| (format!("{k}_per_s"), json!(round(*v))))
                .chain([
                    ("interface".to_string(), json!(name)),
                    ("rx_drop_per_s".to_string(), json!(round(rate("rx_drop")))),
                ])
                .collect();
            cx.judge(Observation {
                id: "network_errors",
                layer: Layer::Nic,
                direction: Direction::Ingress,
                value: total,
                summary: format!("{name}: {total:.0} errors+drops/s (mostly {worst})"),
                evidence,
                explanation: "Interface error and drop counters are rising over the window: packets are lost at the device.",
                condition,
            })
        })
        .collect()
}
