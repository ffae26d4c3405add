//! `backlog_overflow`: the CPU whose input backlog overflowed, the CPUs that enqueued, and
//! the steering that sent them there.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::{json, Value};

use super::{fix_for, top_flows};
use crate::{
    findings::{Finding, Inputs},
    fixes::{Condition, LiveValues},
    model::window::CpuCount,
};

fn cpu_list(cpus: &[CpuCount]) -> Value {
    cpus.iter()
        .map(|c| json!({"cpu": c.cpu, "count": c.count}))
        .collect()
}

pub(super) fn finding(
    inputs: &Inputs,
    live: &LiveValues,
    steering_text: &[String],
) -> Option<Finding> {
    let b = &inputs.window.backlog;
    if b.drop_events + b.softnet_dropped == 0 {
        return None;
    }
    let overflowing: Vec<usize> = b.overflowing_cpus.iter().map(|c| c.cpu).collect();
    let enqueuing: Vec<usize> = b.enqueuing_cpus.iter().map(|c| c.cpu).collect();
    let current = inputs.report.sysctl_number("net.core.netdev_max_backlog");
    let flows = inputs
        .drops
        .groups
        .iter()
        .filter(|(key, _)| key.layer == Layer::Backlog)
        .flat_map(|(_, g)| g.flows.iter().map(|(f, n)| (f, *n)));
    Some(Finding {
        id: "backlog_overflow".into(),
        severity: Severity::Critical,
        netns: 0,
        source: "events+counters",
        direction: Direction::Ingress,
        layer: Layer::Backlog,
        cpus: overflowing.clone(),
        flows: top_flows(flows, inputs.top),
        summary: format!(
            "CPU {overflowing:?}'s input backlog overflowed ({} drops, softnet_stat {}), enqueued from CPUs {enqueuing:?}; netdev_max_backlog is {}",
            b.drop_events,
            b.softnet_dropped,
            current.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
        ),
        evidence: json!({
            "events": {"backlog_drops": b.drop_events, "enqueuing_cpus": cpu_list(&b.enqueuing_cpus)},
            "counters": {"softnet_dropped": b.softnet_dropped, "overflowing_cpus": cpu_list(&b.overflowing_cpus),
                         "net.core.netdev_max_backlog": current},
            "steering": steering_text,
        }),
        fix: fix_for(Condition::SteeredBacklogOverflow, live),
    })
}
