//! systemd's notify protocol for `Type=notify` units (contrib/systemd): `READY=1` once the
//! baseline is taken and the log is open, `WATCHDOG=1` at half of `WATCHDOG_USEC`, a
//! `STATUS=` line per interval, `STOPPING=1` at the end. The protocol itself is the
//! `sd-notify` crate's. Without `NOTIFY_SOCKET` nothing is sent and nothing is timed; a
//! message that cannot be sent is said on stderr (at most once a minute) and never stops the
//! monitoring.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::interval::Interval;

/// How often a failure to notify is said on stderr.
const REPORT_EVERY: Duration = Duration::from_secs(60);

pub struct Notifier {
    /// `NOTIFY_SOCKET` is set: a service manager listens.
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when the manager asked this process for pings.
    ping_every: Option<Duration>,
    last_failure_said: Option<Instant>,
}

impl Notifier {
    /// Reads the protocol's environment once, at start.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        // watchdog_enabled checks WATCHDOG_PID against this process when it is set.
        let watchdog = sd_notify::watchdog_enabled().filter(|usec| !usec.is_zero());
        Self {
            enabled,
            ping_every: watchdog.filter(|_| enabled).map(|w| w / 2),
            last_failure_said: None,
        }
    }

    /// How often to send `WATCHDOG=1`; `None`: no watchdog was asked for.
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    /// Start-up is over: the baseline sample is taken and the log is open.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`, sent only while the sampler keeps its schedule (see `sampler_on_time`).
    pub fn ping(&mut self, next_deadline: Instant, now: Instant) {
        if let Some(every) = self.ping_every {
            if sampler_on_time(next_deadline, now, every) {
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// The interval just written, as `systemctl status` shows it.
    pub fn interval_done(&mut self, interval: &Interval, log_failing: bool) {
        if self.enabled {
            let status = interval_status(interval, log_failing);
            self.send(&[NotifyState::Status(&status)]);
        }
    }

    /// The run is ending (a signal, `--count`, stdout closed): no watchdog is expected now.
    pub fn stopping(&mut self, why: &str) {
        if self.enabled {
            let status = format!("stopping: {why}");
            self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            let now = Instant::now();
            let due = self
                .last_failure_said
                .is_none_or(|last| now.duration_since(last) >= REPORT_EVERY);
            if due {
                self.last_failure_said = Some(now);
                eprintln!(
                    "netprobe: notifying the service manager (NOTIFY_SOCKET): {e}; monitoring goes on"
                );
            }
        }
    }
}

/// Whether a watchdog ping may go out now. The pings come from a timer in the same
/// single-threaded loop that samples (not after each sample: an interval longer than half the
/// watchdog would starve it), so a sample that hangs blocks them by itself. This also stops
/// them if the loop turns but the sampling does not: the next deadline overdue by more than a
/// ping period means the sampler is not keeping its schedule, and systemd should restart us.
pub fn sampler_on_time(next_deadline: Instant, now: Instant, ping_every: Duration) -> bool {
    now.saturating_duration_since(next_deadline) <= ping_every
}

/// `#0124 WARN 45 drops`, and whether the log is being written.
pub fn interval_status(interval: &Interval, log_failing: bool) -> String {
    let drops = interval.drops.total();
    let unit = if drops == 1 { "drop" } else { "drops" };
    let log = if log_failing {
        "; log not written (see the journal)"
    } else {
        ""
    };
    format!(
        "#{:04} {} {drops} {unit}{log}",
        interval.iteration,
        interval.severity.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_stop_when_the_sampler_is_behind_by_more_than_a_ping_period() {
        let every = Duration::from_secs(15);
        let deadline = Instant::now() + Duration::from_secs(100);
        assert!(sampler_on_time(
            deadline,
            deadline - Duration::from_secs(99),
            every
        ));
        assert!(sampler_on_time(deadline, deadline + every, every));
        assert!(!sampler_on_time(
            deadline,
            deadline + every + Duration::from_millis(1),
            every
        ));
    }
}
