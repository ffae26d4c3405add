//! What a failing log says on stderr: at most one failure line a minute, however many rows
//! fail (a full disk fails every row), the end of an outage once, and every row not written
//! counted in some line. An outage that begins within a minute of the last line (a disk that
//! flaps) is said at the next line due, failure or recovery.

use std::time::{Duration, Instant};

/// Rows not written: how many, the first and the last iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    rows: u64,
    first: u64,
    last: u64,
}

impl Lost {
    fn add(lost: Option<Lost>, iteration: u64) -> Lost {
        match lost {
            None => Lost {
                rows: 1,
                first: iteration,
                last: iteration,
            },
            Some(l) => Lost {
                rows: l.rows + 1,
                last: iteration,
                ..l
            },
        }
    }

    fn describe(self) -> String {
        if self.rows == 1 {
            format!("row #{:04} not written", self.first)
        } else {
            format!(
                "{} rows (#{:04} to #{:04}) not written",
                self.rows, self.first, self.last
            )
        }
    }
}

#[derive(Debug)]
struct Outage {
    /// A failure line was printed during it: its end is said.
    announced: bool,
    lost: Option<Lost>,
}

#[derive(Debug, Default)]
pub struct Health {
    last_line: Option<Instant>,
    outage: Option<Outage>,
    /// Rows not written that no line has counted yet.
    unreported: Option<Lost>,
}

impl Health {
    pub const EVERY: Duration = Duration::from_secs(60);

    pub fn failing(&self) -> bool {
        self.outage.is_some()
    }

    fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last_line
            .is_none_or(|last| now.duration_since(last) >= Self::EVERY);
        if due {
            self.last_line = Some(now);
        }
        due
    }

    /// The row `iteration` (`None`: no row, the log could not be opened again) failed with
    /// `error`: the line to print, if one is due.
    pub fn failed(&mut self, now: Instant, iteration: Option<u64>, error: &str) -> Option<String> {
        let outage = self.outage.get_or_insert(Outage {
            announced: false,
            lost: None,
        });
        if let Some(i) = iteration {
            outage.lost = Some(Lost::add(outage.lost, i));
            self.unreported = Some(Lost::add(self.unreported, i));
        }
        if !self.due(now) {
            return None;
        }
        self.outage.as_mut().expect("set above").announced = true;
        let lost = match self.unreported.take() {
            Some(lost) if lost.rows > 1 => format!(": {} since the last report", lost.describe()),
            Some(lost) => format!(": {}", lost.describe()),
            None => String::new(),
        };
        Some(format!(
            "{error}{lost}; monitoring goes on, and the log is tried again at every row (said at most once a minute)"
        ))
    }

    /// The row `iteration` was written whole: the line to print, if one is due.
    pub fn written(&mut self, now: Instant, iteration: u64) -> Option<String> {
        if let Some(outage) = self.outage.take() {
            if outage.announced {
                // This line counts the whole outage, the rows held back since its first line too.
                self.unreported = None;
                let lost = outage
                    .lost
                    .map_or("no row lost".to_string(), Lost::describe);
                return Some(format!("writing again from #{iteration:04}; {lost}"));
            }
        }
        let lost = self.unreported?;
        if !self.due(now) {
            return None;
        }
        self.unreported = None;
        Some(format!(
            "writing; {} since the last report",
            lost.describe()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "log x.csv: No space left on device (os error 28)";

    #[test]
    fn a_long_outage_is_one_line_a_minute_and_its_end_one_line() {
        let mut h = Health::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(h.written(at(0), 1), None);
        let first = h.failed(at(5), Some(2), FULL).expect("said at once");
        assert!(
            first.starts_with(FULL) && first.contains(": row #0002 not written;"),
            "{first}"
        );
        for (i, s) in (3..14).zip((10..).step_by(5)) {
            assert_eq!(h.failed(at(s), Some(i), FULL), None, "#{i} at {s} s");
        }
        let reminder = h.failed(at(65), Some(14), FULL).expect("a minute later");
        assert!(
            reminder.contains("12 rows (#0003 to #0014) not written since the last report"),
            "{reminder}"
        );
        assert!(h.failing());
        let back = h.written(at(70), 15).expect("the end is said");
        assert_eq!(
            back,
            "writing again from #0015; 13 rows (#0002 to #0014) not written"
        );
        assert!(!h.failing());
        assert_eq!(h.written(at(75), 16), None);
    }

    #[test]
    fn a_flapping_disk_is_said_at_most_once_a_minute_and_no_row_goes_uncounted() {
        let mut h = Health::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(h.failed(at(0), Some(1), FULL).is_some());
        assert!(h.written(at(5), 2).is_some(), "the announced outage's end");
        // Two more outages inside the minute: nothing said yet.
        assert_eq!(h.failed(at(10), Some(3), FULL), None);
        assert_eq!(h.written(at(15), 4), None);
        assert_eq!(h.failed(at(20), Some(5), FULL), None);
        assert_eq!(h.written(at(25), 6), None);
        assert!(!h.failing());
        let late = h.written(at(60), 7).expect("due again");
        assert_eq!(
            late,
            "writing; 2 rows (#0003 to #0005) not written since the last report"
        );
        assert_eq!(h.written(at(200), 8), None, "said once");
    }

    #[test]
    fn a_failed_reopen_is_said_without_a_row() {
        let mut h = Health::default();
        let now = Instant::now();
        let line = h.failed(now, None, "log x.csv: Permission denied").unwrap();
        assert!(
            line.starts_with("log x.csv: Permission denied; monitoring goes on"),
            "{line}"
        );
        assert_eq!(
            h.written(now, 9).as_deref(),
            Some("writing again from #0009; no row lost")
        );
    }
}
