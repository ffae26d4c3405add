//! The interval schedule on the monotonic clock: deadline k is `start + k × period`, so
//! lateness never accumulates into drift. A sample taken late covers a longer interval and
//! says so; deadlines that passed meanwhile are not invented as rows of their own (their
//! drops cannot be split), the row says how many it spans.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    period: Duration,
    /// Index of the next deadline to wait for.
    next: u64,
}

/// How an interval's sample kept to its deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long after its deadline the sample was taken.
    pub late: Duration,
    /// Periods the interval spans (1 on time; more when deadlines passed while late).
    pub periods: u64,
}

impl Timing {
    /// Late enough to say: a tenth of the period, at least 100 ms (a loaded machine's
    /// ordinary scheduling delay is not worth a note), or any spanned deadline.
    pub fn is_late(&self, period: Duration) -> bool {
        self.periods > 1 || self.late >= (period / 10).max(Duration::from_millis(100))
    }
}

impl Schedule {
    /// Deadlines from `start` (the baseline sample) on, every `period`.
    pub fn new(start: Instant, period: Duration) -> Self {
        Self {
            start,
            period,
            next: 1,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn next_deadline(&self) -> Instant {
        self.deadline(self.next)
    }

    fn deadline(&self, index: u64) -> Instant {
        let nanos = self.period.as_nanos().saturating_mul(index as u128);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Records a sample taken at `now` for the awaited deadline; the next deadline is the
    /// first one still ahead on the grid.
    pub fn sampled(&mut self, now: Instant) -> Timing {
        let awaited = self.next;
        let late = now.saturating_duration_since(self.deadline(awaited));
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        // The last deadline at or before now (at least the awaited one).
        let passed = ((elapsed / self.period.as_nanos().max(1)) as u64).max(awaited);
        self.next = passed + 1;
        Timing {
            late,
            periods: passed - awaited + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn on_time_samples_keep_to_the_grid_without_drift() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 5 * SEC);
        for k in 1..=1000u32 {
            assert_eq!(s.next_deadline(), t0 + 5 * SEC * k);
            // Each sample 30 ms after its deadline: the next deadline does not move.
            let t = s.sampled(t0 + 5 * SEC * k + Duration::from_millis(30));
            assert_eq!(t.periods, 1);
            assert!(!t.is_late(5 * SEC));
        }
        assert_eq!(s.next_deadline(), t0 + 5 * SEC * 1001);
    }

    #[test]
    fn a_late_sample_is_reported_and_spanned_deadlines_counted() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 5 * SEC);
        // Deadline 1 at 5 s; the sample comes at 17 s: deadlines 2 (10 s) and 3 (15 s) passed.
        let t = s.sampled(t0 + 17 * SEC);
        assert_eq!(t.late, 12 * SEC);
        assert_eq!(t.periods, 3);
        assert!(t.is_late(5 * SEC));
        // Back on the grid: the next deadline is 20 s, not 22 s.
        assert_eq!(s.next_deadline(), t0 + 20 * SEC);
        // Late within the period but past the tolerance: one period, still late.
        let t = s.sampled(t0 + 21 * SEC);
        assert_eq!((t.periods, t.late), (1, SEC));
        assert!(t.is_late(5 * SEC));
        assert_eq!(s.next_deadline(), t0 + 25 * SEC);
    }

    #[test]
    fn an_early_wake_up_is_not_late() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, SEC);
        let t = s.sampled(t0 + Duration::from_millis(999));
        assert_eq!((t.late, t.periods), (Duration::ZERO, 1));
        assert_eq!(s.next_deadline(), t0 + 2 * SEC);
    }
}
