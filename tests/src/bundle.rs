//! Looking things up in netprobe's JSON: a report's findings, a findings bundle's rows.

use serde_json::Value;

/// The findings of a report with the given id.
pub fn findings<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .collect()
}

/// The finding of a findings bundle with this id, about this namespace (`None`: any);
/// panics with the bundle's findings when there is none.
pub fn finding_about(bundle: &Value, id: &str, netns: Option<u64>) -> Value {
    bundle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id && netns.is_none_or(|ns| f["netns"].as_u64() == Some(ns)))
        .cloned()
        .unwrap_or_else(|| panic!("no {id} finding in {}", bundle["findings"]))
}

/// The reconciliation row of a findings bundle for a kernel counter.
pub fn reconciliation_row(bundle: &Value, counter: &str) -> Value {
    bundle["reconciliation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["counter"] == counter)
        .cloned()
        .unwrap_or_else(|| panic!("no {counter} row in {}", bundle["reconciliation"]))
}

/// An event's (direction, layer).
pub fn direction_layer(event: &Value) -> (Option<&str>, Option<&str>) {
    (event["direction"].as_str(), event["layer"].as_str())
}
