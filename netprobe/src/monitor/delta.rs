//! Per-interval deltas of the raw kernel counters behind each column: never negative, a
//! 32-bit wrap counted as the increments it hides, a reset (a device or qdisc recreated, a
//! driver reloaded) counted from zero, and said so.

use std::collections::BTreeMap;

use super::columns::{Column, Drops};

/// The raw counters feeding each column at one instant, by a key that names their source
/// (`cpu1`, `TcpExt.ListenOverflows`, `7/rx_queue_0_drops`: interface counters carry the
/// ifindex, so a recreated device starts a new baseline instead of a bogus delta).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub counters: BTreeMap<Column, BTreeMap<String, u64>>,
    /// Columns this device or kernel cannot have, with the reason (their value is 0).
    pub unavailable: BTreeMap<Column, String>,
}

impl Readings {
    pub fn set(&mut self, column: Column, key: impl Into<String>, value: u64) {
        self.counters
            .entry(column)
            .or_default()
            .insert(key.into(), value);
    }

    pub fn mark_unavailable(&mut self, column: Column, reason: impl Into<String>) {
        self.unavailable.insert(column, reason.into());
    }
}

/// A counter that went backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Jump {
    /// A 32-bit counter passed 2^32 (softnet_stat, tc's drops, many drivers' counters).
    Wrapped,
    /// The counter restarted from zero; the interval counts what it reached since.
    Reset,
}

impl Jump {
    pub const fn name(self) -> &'static str {
        match self {
            Jump::Wrapped => "wrapped",
            Jump::Reset => "reset",
        }
    }
}

const WRAP: u64 = 1 << 32;

/// The increments between two readings of one counter. A value below the previous one is a
/// 32-bit wrap when the previous value fits in 32 bits and the wrapped distance is plausible
/// (under 2^31 in one interval); anything else is a reset, counted from zero.
pub fn counter_delta(old: u64, new: u64) -> (u64, Option<Jump>) {
    if new >= old {
        return (new - old, None);
    }
    if old < WRAP {
        let wrapped = WRAP - old + new;
        if wrapped < WRAP / 2 {
            return (wrapped, Some(Jump::Wrapped));
        }
    }
    (new, Some(Jump::Reset))
}

/// One interval's drops with the counters that jumped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    pub drops: Drops,
    /// Each (column, jump) once, in column order.
    pub jumps: Vec<(Column, Jump)>,
}

/// The drops between two readings: per column, the sum of its counters' deltas. A counter
/// seen for the first time (a CPU brought online, a device back under a new ifindex) is a
/// baseline, counted from the next interval on; one that disappeared counts nothing.
pub fn between(before: &Readings, after: &Readings) -> Deltas {
    let mut out = Deltas::default();
    for (column, counters) in &after.counters {
        let Some(old) = before.counters.get(column) else {
            continue;
        };
        for (key, new) in counters {
            let Some(previous) = old.get(key) else {
                continue;
            };
            let (delta, jump) = counter_delta(*previous, *new);
            out.drops.add(*column, delta);
            if let Some(jump) = jump {
                if !out.jumps.contains(&(*column, jump)) {
                    out.jumps.push((*column, jump));
                }
            }
        }
    }
    out.jumps.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_growth_and_no_change() {
        assert_eq!(counter_delta(10, 15), (5, None));
        assert_eq!(counter_delta(7, 7), (0, None));
    }

    #[test]
    fn a_32_bit_wrap_counts_the_increments_across_it() {
        let old = u32::MAX as u64 - 9;
        assert_eq!(counter_delta(old, 5), (15, Some(Jump::Wrapped)));
        assert_eq!(counter_delta(u32::MAX as u64, 0), (1, Some(Jump::Wrapped)));
    }

    #[test]
    fn going_backwards_otherwise_is_a_reset_never_negative() {
        // A 64-bit counter cannot wrap in practice: a lower value is a restart.
        assert_eq!(counter_delta(1 << 40, 12), (12, Some(Jump::Reset)));
        // A small 32-bit value falling further is no wrap either (a wrap would be ~4 billion).
        assert_eq!(counter_delta(1000, 3), (3, Some(Jump::Reset)));
    }

    fn readings(column: Column, pairs: &[(&str, u64)]) -> Readings {
        let mut r = Readings::default();
        for (key, value) in pairs {
            r.set(column, *key, *value);
        }
        r
    }

    #[test]
    fn columns_sum_their_counters_and_new_counters_are_baselines() {
        let before = readings(Column::Softirq, &[("cpu0", 10), ("cpu1", u32::MAX as u64)]);
        let mut after = readings(Column::Softirq, &[("cpu0", 14), ("cpu1", 2), ("cpu2", 999)]);
        after.set(Column::AcceptQueue, "TcpExt.ListenOverflows", 50);
        let d = between(&before, &after);
        // cpu0 +4, cpu1 wrapped +3, cpu2 new: baseline; accept_queue new: baseline.
        assert_eq!(d.drops.get(Column::Softirq), 7);
        assert_eq!(d.drops.get(Column::AcceptQueue), 0);
        assert_eq!(d.jumps, vec![(Column::Softirq, Jump::Wrapped)]);
    }

    #[test]
    fn a_recreated_device_is_a_new_baseline_not_a_delta() {
        let before = readings(Column::NicRx, &[("7/rx_queue_0_drops", 500)]);
        let after = readings(Column::NicRx, &[("9/rx_queue_0_drops", 3)]);
        let d = between(&before, &after);
        assert_eq!(d.drops.get(Column::NicRx), 0);
        assert!(d.jumps.is_empty());
    }
}
