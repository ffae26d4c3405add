//! The findings bundle: the eBPF attribution (who lost what, which direction, which CPU)
//! merged with the counter report over the same window, each finding with the evidence from
//! both sides and the fix; and the reconciliation of every number both sides count.
//!
//! Built from the typed window (`model::window`) and the tally of classified drops
//! (`model::tally`): `rows` (flows, CPUs), `steering`, `rules` (one finding per file),
//! `reconcile`, and `text` for people.

mod reconcile;
mod rows;
mod rules;
mod steering;
#[cfg(test)]
pub(crate) mod tests;
mod text;

use netprobe_common::vocab::{Direction, Layer, Severity};
pub use reconcile::{Reconciliation, Relation};
pub use rows::{CpuRow, FlowRow};
use serde::Serialize;
use serde_json::{json, Value};
pub use steering::{IrqLine, Steering};

use crate::{
    fixes::LiveValues,
    model::{tally::DropTally, window::Window},
    report::{model::Report, procfs::Counters},
};

/// `{"type":"findings"}`.
#[derive(Debug, Serialize)]
pub struct FindingsJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// False for the interim bundles of `--report-every`; true for the one at the end.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Both sides cover the same window: from the start of the trace to this bundle.
    pub window_s: f64,
    /// The network namespace whose counters the report read (netprobe's own).
    pub netns: u32,
    /// The trace's mode (`stream`, `count`), as in the summary.
    pub mode: &'static str,
    /// What this mode cannot say (count mode: drops are not linked to flows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub report: Report,
    pub findings: Vec<BundleFinding>,
    pub cpus: Vec<CpuRow>,
    pub flows: Vec<FlowRow>,
    pub steering: Vec<Steering>,
    pub reconciliation: Vec<Reconciliation>,
}

/// One finding: where (direction, layer, CPUs, flows), the evidence from each side, the fix.
#[derive(Debug, Serialize, Clone)]
pub struct BundleFinding {
    pub id: String,
    pub severity: &'static str,
    /// The network namespace the finding is about (0: host-wide, e.g. per-CPU backlogs).
    pub netns: u32,
    /// `events`, `counters`, or `events+counters`.
    pub source: &'static str,
    pub direction: &'static str,
    pub layer: &'static str,
    pub cpus: Vec<usize>,
    pub flows: Vec<String>,
    pub summary: String,
    pub evidence: Value,
    pub fix: String,
}

/// A finding as a rule states it, before it becomes JSON.
#[derive(Debug, Clone)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub netns: u32,
    pub source: &'static str,
    pub direction: Direction,
    pub layer: Layer,
    pub cpus: Vec<usize>,
    pub flows: Vec<String>,
    pub summary: String,
    pub evidence: Value,
    pub fix: String,
}

impl From<Finding> for BundleFinding {
    fn from(f: Finding) -> Self {
        BundleFinding {
            id: f.id,
            severity: f.severity.name(),
            netns: f.netns,
            source: f.source,
            direction: f.direction.name(),
            layer: f.layer.name(),
            cpus: f.cpus,
            flows: f.flows,
            summary: f.summary,
            evidence: f.evidence,
            fix: f.fix,
        }
    }
}

/// Everything the bundle is made from.
pub struct Inputs<'a> {
    pub window: &'a Window,
    pub drops: &'a DropTally,
    pub report: Report,
    /// snmp/netstat at the start and now, in netprobe's namespace.
    pub counters_before: &'a Counters,
    pub counters_now: &'a Counters,
    /// NET_RX per CPU (from /proc/softirqs) at the start and now.
    pub net_rx_before: &'a [u64],
    pub net_rx_now: &'a [u64],
    pub own_netns: u32,
    pub filtered: bool,
    /// Drops carry the socket that dropped them in every TCP state (see `Probe`).
    pub drops_name_their_socket: bool,
    pub is_final: bool,
    pub window_s: f64,
    pub top: usize,
}

impl Inputs<'_> {
    /// A counter's growth over the window, in netprobe's namespace.
    pub(crate) fn delta(&self, group: &str, field: &str) -> u64 {
        let get = |c: &Counters| {
            c.get(group)
                .and_then(|g| g.get(field))
                .copied()
                .unwrap_or(0)
        };
        // Counters that went backwards (reset) read as no growth.
        get(self.counters_now)
            .saturating_sub(get(self.counters_before))
            .max(0) as u64
    }
}

pub fn build(inputs: Inputs) -> FindingsJson {
    let reconciliation = reconcile::reconcile(&inputs);
    let mut all_losses = rows::flow_losses(inputs.window, usize::MAX);
    // The busiest flows are linked to their drops: the rows shown, and the rules that name a
    // cause. (Every flow's drops would cost a pass over the drop tally each.)
    let top = inputs.top.min(all_losses.len());
    rows::link_drops(&mut all_losses[..top], inputs.drops);
    let losses: Vec<_> = all_losses[..top].to_vec();
    let flows = losses.iter().map(FlowRow::from).collect();
    let steering = steering::steering(&inputs.report);
    let cpus = rows::cpu_rows(&inputs, &steering);
    let live = LiveValues::from(&inputs.report);
    let mut findings = rules::event_findings(&inputs, &live, &losses, &all_losses, &steering);
    findings.extend(counter_findings(&inputs));
    // Critical first; otherwise in the rules' order.
    findings.sort_by_key(|f| f.severity != Severity::Critical);
    FindingsJson {
        kind: "findings",
        is_final: inputs.is_final,
        window_s: inputs.window_s,
        netns: inputs.own_netns,
        mode: inputs.window.mode.name(),
        notes: crate::trace::count::notes(inputs.window),
        findings: findings.into_iter().map(BundleFinding::from).collect(),
        report: inputs.report,
        cpus,
        flows,
        steering,
        reconciliation,
    }
}

/// The counter report's own findings, in netprobe's namespace.
fn counter_findings(inputs: &Inputs) -> Vec<Finding> {
    inputs
        .report
        .findings
        .iter()
        .map(|f| {
            let cpu = f.evidence.get("cpu").and_then(|c| c.as_u64());
            Finding {
                id: f.id.to_string(),
                severity: f.severity,
                netns: inputs.own_netns,
                source: "counters",
                direction: f.direction,
                layer: f.layer,
                cpus: cpu.map(|c| vec![c as usize]).unwrap_or_default(),
                flows: Vec::new(),
                summary: f.summary.clone(),
                evidence: json!({ "counters": f.evidence }),
                fix: f.fix.clone(),
            }
        })
        .collect()
}
