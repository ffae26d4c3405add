//! `netprobe monitor`: the always-on per-layer loss monitor. Every interval, the delta of
//! each drop counter behind the CSV's columns (counters.rs, docs/monitor.md), a severity, a
//! console line or an NDJSON object, and a row of the CSV log. Built to run for days: a
//! schedule without drift, counters that wrap or restart, an interface that goes away, a log
//! that is rotated or cannot be written. This version reads counters only: the eBPF
//! aggregation mode (drop reasons, CPUs, flows) is not in it yet, and it says so at start.

pub mod clock;
pub mod columns;
pub mod console;
pub mod counters;
pub mod csv_log;
pub mod delta;
pub mod interval;
pub mod json;
pub mod links;
pub mod schedule;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::report::{render::Style, sample::SYS_CLASS_NET};
use counters::Sample;
use csv_log::{CsvLog, LogError};
use schedule::{Schedule, Timing};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("interval {0}: must be a positive number of seconds (at most 86400)")]
    Interval(f64),
    #[error("interface {0}: no such interface in this network namespace")]
    UnknownInterface(String),
    #[error("--threshold 0: must be at least 1 drop")]
    Threshold,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("signal handlers: {0}")]
    Signals(io::Error),
    #[error("starting the event loop: {0}")]
    Runtime(io::Error),
    #[error("writing to stdout: {0}")]
    Stdout(io::Error),
}

/// What `netprobe monitor` was asked for, positionals and flags resolved.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub interface: String,
    pub interval: f64,
    /// `None`: `--no-log`.
    pub log: Option<PathBuf>,
    pub threshold: u64,
    pub count: Option<u64>,
    pub json: bool,
}

impl MonitorOptions {
    /// Checks everything a typo could get wrong before anything runs.
    pub fn validate(&self) -> Result<(), MonitorError> {
        if !(self.interval.is_finite() && self.interval > 0.0 && self.interval <= 86400.0) {
            return Err(MonitorError::Interval(self.interval));
        }
        let name = &self.interface;
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || !Path::new(SYS_CLASS_NET).join(name).exists()
        {
            return Err(MonitorError::UnknownInterface(name.clone()));
        }
        if self.threshold == 0 {
            return Err(MonitorError::Threshold);
        }
        Ok(())
    }
}

/// Runs until `--count` intervals are done, SIGTERM or SIGINT (exit 0 either way), or stdout
/// is closed by its reader.
pub fn run(options: &MonitorOptions) -> Result<(), MonitorError> {
    options.validate()?;
    let (log, last_iteration) = match &options.log {
        Some(path) => {
            let (log, last) = CsvLog::open(path)?;
            (Some(log), last)
        }
        None => (None, 0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MonitorError::Runtime)?;
    runtime.block_on(watch(options, log, last_iteration + 1))
}

struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> Result<Self, MonitorError> {
        let on = |kind| signal(kind).map_err(MonitorError::Signals);
        Ok(Self {
            hangup: on(SignalKind::hangup())?,
            terminate: on(SignalKind::terminate())?,
            interrupt: on(SignalKind::interrupt())?,
        })
    }
}

/// Where each interval goes.
struct Outputs {
    log: Option<CsvLog>,
    json: bool,
    style: Style,
}

impl Outputs {
    /// Writes the interval everywhere; `false` once stdout's reader is gone.
    fn emit(&mut self, interval: &interval::Interval) -> Result<bool, MonitorError> {
        if let Some(log) = &mut self.log {
            log.write(interval);
        }
        let text = if self.json {
            let mut line = serde_json::to_string(&json::IntervalJson::from(interval))
                .expect("plain data serializes");
            line.push('\n');
            line
        } else {
            console::lines(interval, &self.style)
        };
        let mut out = io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(MonitorError::Stdout(e)),
        }
    }
}

async fn watch(
    options: &MonitorOptions,
    log: Option<CsvLog>,
    first_iteration: u64,
) -> Result<(), MonitorError> {
    let mut signals = Signals::install()?;
    let interface = options.interface.as_str();
    let period = Duration::from_secs_f64(options.interval);
    let mut before = counters::take(interface, None);
    let mut known_ifindex = before.link.ifindex;
    announce(options, &log, first_iteration, &before);
    let mut outputs = Outputs {
        log,
        json: options.json,
        style: Style::for_stdout(),
    };
    let mut schedule = Schedule::new(before.at, period);
    let mut iteration = first_iteration;
    let mut done = 0u64;
    loop {
        let deadline = tokio::time::Instant::from_std(schedule.next_deadline());
        let stopped_by = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => None,
            _ = signals.hangup.recv() => {
                if let Some(log) = &mut outputs.log {
                    log.reopen();
                }
                continue;
            }
            _ = signals.terminate.recv() => Some("SIGTERM"),
            _ = signals.interrupt.recv() => Some("SIGINT"),
        };
        let after = counters::take(interface, known_ifindex);
        known_ifindex = after.link.ifindex.or(known_ifindex);
        let timing = match stopped_by {
            // The last interval ends early, on purpose: not late, one (short) period.
            Some(_) => Timing {
                late: Duration::ZERO,
                periods: 1,
            },
            None => schedule.sampled(after.at),
        };
        let interval = interval::build(
            &before,
            &after,
            interval::Context {
                timestamp: clock::local_timestamp(),
                iteration,
                interface,
                threshold: options.threshold,
                period,
                timing,
                stopped_by,
            },
        );
        let reader_there = outputs.emit(&interval)?;
        before = after;
        iteration += 1;
        done += 1;
        if !reader_there || stopped_by.is_some() || options.count.is_some_and(|c| done >= c) {
            return Ok(());
        }
    }
}

/// The one line at start (after the baseline sample: what follows is measured), and the
/// columns this interface cannot have.
fn announce(options: &MonitorOptions, log: &Option<CsvLog>, first: u64, baseline: &Sample) {
    // SAFETY: geteuid has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let log = match (log, &options.log) {
        (Some(_), Some(path)) if first > 1 => {
            format!("log {} (continuing at #{first:04})", path.display())
        }
        (Some(_), Some(path)) => format!("log {}", path.display()),
        _ => "no log".to_string(),
    };
    let counters_only = if root {
        "counters only (eBPF attribution: not in this version)"
    } else {
        "not root: counters only (eBPF attribution: not in this version)"
    };
    eprintln!(
        "netprobe monitor: {} every {} s, CRIT from {} drops, {log}; {counters_only}",
        links::describe(&options.interface, &baseline.nic.source),
        options.interval,
        options.threshold
    );
    let unavailable: Vec<String> = baseline
        .readings
        .unavailable
        .iter()
        .map(|(column, reason)| format!("{}: {reason}", column.name()))
        .collect();
    if !unavailable.is_empty() {
        eprintln!(
            "netprobe monitor: always 0 here: {}",
            unavailable.join("; ")
        );
    }
}
