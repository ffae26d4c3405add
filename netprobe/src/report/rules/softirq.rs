//! The receive softirq and its CPUs: backlog overflows, budget squeezes, imbalance.

use super::{interface_rate, round, Context, Observation, IMBALANCE_MIN_RATE};
use crate::{
    fixes::Condition,
    report::model::{Finding, InterfaceReport},
};
use netprobe_common::vocab::{Direction, Layer};

pub(super) fn softnet_dropped(cx: &Context) -> Vec<Finding> {
    let backlog = cx.report.sysctl_number("net.core.netdev_max_backlog");
    cx.report
        .cpus
        .iter()
        .filter_map(|cpu| {
            cx.judge(Observation {
                id: "softnet_dropped",
                layer: Layer::Backlog,
                direction: Direction::Ingress,
                value: cpu.dropped_rate,
                summary: format!("CPU {}: backlog full, {:.0} packets/s dropped", cpu.cpu, cpu.dropped_rate),
                evidence: evidence! {"cpu" => cpu.cpu, "dropped_per_s" => round(cpu.dropped_rate), "processed_per_s" => round(cpu.processed_rate), "received_rps_per_s" => round(cpu.received_rps_rate), "netdev_max_backlog" => backlog},
                explanation: "The per-CPU input backlog (netdev_max_backlog) overflowed: packets steered to this CPU (RPS/RFS or non-NAPI drivers) arrive faster than it processes them.",
                condition: Condition::BacklogOverflow,
            })
        })
        .collect()
}

pub(super) fn softnet_time_squeeze(cx: &Context) -> Vec<Finding> {
    let budget = cx.report.sysctl_number("net.core.netdev_budget");
    let usecs = cx.report.sysctl_number("net.core.netdev_budget_usecs");
    cx.report
        .cpus
        .iter()
        .filter_map(|cpu| {
            cx.judge(Observation {
                id: "softnet_time_squeeze",
                layer: Layer::Backlog,
                direction: Direction::Ingress,
                value: cpu.time_squeeze_rate,
                summary: format!("CPU {}: NET_RX ran out of budget {:.0} times/s", cpu.cpu, cpu.time_squeeze_rate),
                evidence: evidence! {"cpu" => cpu.cpu, "time_squeeze_per_s" => round(cpu.time_squeeze_rate), "processed_per_s" => round(cpu.processed_rate), "netdev_budget" => budget, "netdev_budget_usecs" => usecs},
                explanation: "The receive softirq stopped with work left (budget or time exhausted); the rest waits for the next round or ksoftirqd, and rings can overflow meanwhile.",
                condition: Condition::NapiBudgetExhausted,
            })
        })
        .collect()
}

/// The interface receiving the most packets (loopback aside): the one whose steering
/// concentrates the work.
fn busiest_interface<'a>(cx: &Context<'a>) -> Option<&'a InterfaceReport> {
    cx.report
        .interfaces
        .iter()
        .filter(|i| i.info.name != "lo")
        .max_by(|a, b| interface_rate(a, "rx_packets").total_cmp(&interface_rate(b, "rx_packets")))
}

pub(super) fn irq_imbalance(cx: &Context) -> Vec<Finding> {
    let im = &cx.report.imbalance;
    if im.net_rx_busiest_rate < IMBALANCE_MIN_RATE {
        return Vec::new();
    }
    let busiest = busiest_interface(cx);
    let rps = match busiest {
        Some(i) if i.info.rps_cpus.is_empty() => "off",
        Some(_) => "on",
        None => "unknown",
    };
    cx.judge(Observation {
        id: "irq_imbalance",
        layer: Layer::Backlog,
        direction: Direction::Ingress,
        value: im.net_rx_ratio,
        summary: format!(
            "CPU {} does {:.1}× the mean NET_RX work ({:.0}/s vs {:.0}/s)",
            im.net_rx_busiest_cpu.unwrap_or(0),
            im.net_rx_ratio,
            im.net_rx_busiest_rate,
            im.net_rx_mean_rate
        ),
        evidence: evidence! {"busiest_cpu" => im.net_rx_busiest_cpu, "net_rx_busiest_per_s" => round(im.net_rx_busiest_rate), "net_rx_mean_per_s" => round(im.net_rx_mean_rate), "ratio" => round(im.net_rx_ratio), "nic_irq_ratio" => round(im.nic_irq_ratio), "interface" => busiest.map(|i| i.info.name.clone()), "rps" => rps},
        explanation: "Receive processing is concentrated on one CPU: a single RX queue or IRQ affinity pins it there while other CPUs idle; that CPU saturates first and drops.",
        condition: Condition::ReceiveImbalance { device: busiest.map(|i| i.info.name.as_str()) },
    })
    .into_iter()
    .collect()
}
