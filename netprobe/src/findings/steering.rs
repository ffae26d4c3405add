//! How receive work is spread: which CPUs take an interface's interrupts, where RPS steers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{model::cpuset::CpuSet, report::model::Report};

/// How receive work is spread: which CPUs take an interface's interrupts, where RPS steers.
#[derive(Debug, Serialize, Clone)]
pub struct Steering {
    pub interface: String,
    /// CPUs that took the interface's interrupts during the window.
    pub irq_cpus: Vec<usize>,
    /// Receive IRQ lines (all but transmit-only ones) and the CPUs they are routed to.
    pub rx_irqs: Vec<IrqLine>,
    /// `rx-N` → CPU mask.
    pub rps: BTreeMap<String, String>,
    pub summary: String,
}

#[derive(Debug, Serialize, Clone)]
pub struct IrqLine {
    pub irq: String,
    pub name: String,
    pub affinity: Vec<usize>,
}

/// Transmit-only queue interrupts (`virtio0-output.0`, `eth0-tx-3`); combined `TxRx` lines
/// and receive lines carry receive work.
fn is_tx_only(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    (name.contains("output") || name.contains("-tx")) && !name.contains("rx")
}

pub(super) fn steering(report: &Report) -> Vec<Steering> {
    let mut out = Vec::new();
    for i in &report.interfaces {
        if i.info.name == "lo" {
            continue;
        }
        let mut irq_cpus: Vec<usize> = report
            .irqs
            .iter()
            .filter(|q| q.ifname == i.info.name)
            .flat_map(|q| {
                q.per_cpu_rate
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r > 0.0)
                    .map(|(cpu, _)| cpu)
            })
            .collect();
        irq_cpus.sort_unstable();
        irq_cpus.dedup();
        let rps = i.info.rps_cpus.clone();
        let rps_cpus: Vec<usize> = rps
            .values()
            .flat_map(|mask| CpuSet::parse_mask(mask).to_vec())
            .collect::<CpuSet>()
            .to_vec();
        let rx_irqs: Vec<IrqLine> = report
            .irqs
            .iter()
            .filter(|q| q.ifname == i.info.name && !is_tx_only(&q.name))
            .map(|q| IrqLine {
                irq: q.irq.clone(),
                name: q.name.clone(),
                affinity: q.affinity.clone(),
            })
            .collect();
        let mut rx_affinity: Vec<usize> = rx_irqs.iter().flat_map(|q| q.affinity.clone()).collect();
        rx_affinity.sort_unstable();
        rx_affinity.dedup();
        let routed = match (rx_irqs.len(), rx_affinity.as_slice()) {
            (0, _) => "no receive IRQ lines found".to_string(),
            (_, []) => format!("{} receive IRQ lines, affinity unreadable", rx_irqs.len()),
            (_, [one]) => format!("all RX interrupts routed to CPU {one}"),
            (n, many) => format!("{n} receive IRQ lines routed to CPUs {many:?}"),
        };
        let irq_text = match irq_cpus.as_slice() {
            [] => format!("{routed} (no NIC interrupts during the window)"),
            [one] => format!("{routed}; interrupts during the window all on CPU {one}"),
            many => format!("{routed}; interrupts during the window on CPUs {many:?}"),
        };
        let rps_text = match rps_cpus.as_slice() {
            [] => "RPS off".to_string(),
            [one] => format!("RPS steers everything to CPU {one}"),
            many => format!("RPS spreads over CPUs {many:?}"),
        };
        out.push(Steering {
            interface: i.info.name.clone(),
            irq_cpus,
            rx_irqs,
            rps,
            summary: format!("{}: {irq_text}, {rps_text}", i.info.name),
        });
    }
    out
}
