//! netprobe: where packets are lost, from eBPF events and the kernel's own counters.
//!
//! The pipeline: `kernel` (BTF, tracefs, loading, the ring buffer) → `model` (typed events,
//! classified once) → `trace` (the command, its stream and summary) and `findings`
//! (aggregations, rules, reconciliation) beside `report` (the kernel's own counters) and `monitor` (those
//! counters' deltas every interval, for days).

pub mod analyze;
pub mod cli;
pub mod findings;
pub mod fixes;
pub mod kernel;
pub mod model;
pub mod monitor;
pub mod report;
pub mod trace;
