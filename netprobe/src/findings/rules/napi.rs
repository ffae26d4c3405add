//! `napi_budget_exhausted`: NAPI polls that used their whole budget, beside softnet_stat's
//! time_squeeze on the same CPUs.

use netprobe_common::vocab::{Direction, Layer, Severity};
use serde_json::json;

use super::fix_for;
use crate::{
    findings::{Finding, Inputs},
    fixes::{Condition, LiveValues},
    model::window::CpuWork,
};

pub(super) fn finding(inputs: &Inputs, live: &LiveValues) -> Option<Finding> {
    let squeezed: Vec<&CpuWork> = inputs
        .window
        .cpus
        .iter()
        .filter(|c| c.time_squeeze > 0 && c.napi_full_budget > 0)
        .collect();
    if squeezed.is_empty() {
        return None;
    }
    Some(Finding {
        id: "napi_budget_exhausted".into(),
        severity: Severity::Warning,
        netns: 0,
        source: "events+counters",
        direction: Direction::Ingress,
        layer: Layer::Backlog,
        cpus: squeezed.iter().map(|c| c.cpu).collect(),
        flows: Vec::new(),
        summary: "receive processing ran out of budget: NAPI polls used their whole budget and softnet_stat counted time squeezes".into(),
        evidence: json!({
            "events": squeezed.iter().map(|c| json!({"cpu": c.cpu, "napi_full_budget": c.napi_full_budget})).collect::<Vec<_>>(),
            "counters": squeezed.iter().map(|c| json!({"cpu": c.cpu, "time_squeeze": c.time_squeeze})).collect::<Vec<_>>(),
        }),
        fix: fix_for(Condition::NapiBudgetExhausted, live),
    })
}
