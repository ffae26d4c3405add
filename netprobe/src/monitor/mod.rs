//! `netprobe monitor`: the always-on per-layer loss monitor. Every interval, the delta of
//! each drop counter behind the CSV's columns (counters.rs, docs/monitor.md), a severity, a
//! console line or an NDJSON object, and a row of the CSV log. Built to run for days: a
//! schedule without drift, counters that wrap or restart, an interface that goes away, a log
//! that is rotated or cannot be written. With root, the kernel programs run in count mode
//! beside the counters (`kernel_side`): drop reasons, CPUs, interfaces and retransmits by
//! kind, read once per interval; without root (or `--counters-only`), counters only, said
//! once at start.

pub mod clock;
pub mod columns;
pub mod console;
pub mod counters;
pub mod csv_log;
pub mod delta;
pub mod exporter;
pub mod interval;
pub mod json;
pub mod kernel_side;
pub mod links;
pub mod notify;
pub mod sampler;
pub mod schedule;

use std::{
    io::{self, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::report::{render::Style, sample::SYS_CLASS_NET};
use counters::Sample;
use csv_log::{CsvLog, LogError};
use exporter::{ExportError, Exporter};
use notify::Notifier;
use sampler::{EbpfState, Sampler, Snapshot};
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
    #[error(transparent)]
    Export(#[from] ExportError),
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
    /// No eBPF side even as root.
    pub counters_only: bool,
    /// The kernel's BTF (`--btf`), for the eBPF side.
    pub btf: PathBuf,
    /// `--listen`: serve `/metrics` there (`exporter`).
    pub listen: Option<SocketAddr>,
    /// `--metrics-interface REGEX`: the interfaces whose series are exported.
    pub metrics_interface: Option<String>,
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
    let listener = options
        .listen
        .map(exporter::server::bind)
        .transpose()
        .map_err(ExportError::from)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MonitorError::Runtime)?;
    runtime.block_on(watch(options, log, last_iteration + 1, listener))
}

/// The exporter, its registry served from `listener`, when `--listen` was given, and the
/// address bound (the start says it: a scraper's configuration wants the port).
fn start_export(
    options: &MonitorOptions,
    sampler: &Sampler,
    listener: Option<TcpListener>,
    baseline: &sampler::Snapshot,
) -> Result<Option<(Exporter, SocketAddr)>, MonitorError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let mut exporter = Exporter::new(&exporter::Start {
        interface: &options.interface,
        interface_filter: options.metrics_interface.as_deref(),
        hooks: sampler.hooks(),
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_string())
            .unwrap_or_default(),
    })?;
    exporter.baseline(&baseline.counters);
    let bound =
        exporter::server::start(listener, exporter.registry()).map_err(ExportError::from)?;
    Ok(Some((exporter, bound)))
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
    /// `--listen`'s metrics.
    export: Option<Exporter>,
}

impl Outputs {
    /// Adds the interval to the metrics, if exported.
    fn export(&mut self, interval: &interval::Interval, before: &Sample, after: &Sample) {
        if let Some(export) = &mut self.export {
            export.record(interval, before, after);
        }
    }

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

/// What woke the loop up.
enum Wake {
    Deadline,
    Hangup,
    Stop(&'static str),
    WatchdogPing,
}

async fn next_wake(
    signals: &mut Signals,
    deadline: tokio::time::Instant,
    watchdog: &mut Option<tokio::time::Interval>,
) -> Wake {
    let ping = async {
        match watchdog {
            Some(timer) => timer.tick().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => Wake::Deadline,
        _ = signals.hangup.recv() => Wake::Hangup,
        _ = signals.terminate.recv() => Wake::Stop("SIGTERM"),
        _ = signals.interrupt.recv() => Wake::Stop("SIGINT"),
        _ = ping => Wake::WatchdogPing,
    }
}

/// The watchdog's timer, first tick one period from now (not at once, as tokio's would).
fn watchdog_timer(notifier: &Notifier) -> Option<tokio::time::Interval> {
    notifier.ping_every().map(|every| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After a stall, one ping and the period again: no burst of pings that catch up.
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    })
}

async fn watch(
    options: &MonitorOptions,
    log: Option<CsvLog>,
    first_iteration: u64,
    listener: Option<TcpListener>,
) -> Result<(), MonitorError> {
    let mut signals = Signals::install()?;
    let period = Duration::from_secs_f64(options.interval);
    let (mut sampler, ebpf) = Sampler::start(options);
    let mut before = sampler.take();
    let (export, metrics_at) = start_export(options, &sampler, listener, &before)?.unzip();
    let mut notifier = Notifier::from_env();
    notifier.ready(&announce(
        options,
        &log,
        first_iteration,
        &before.counters,
        &ebpf,
        metrics_at,
    ));
    let mut watchdog = watchdog_timer(&notifier);
    let mut outputs = Outputs {
        log,
        json: options.json,
        style: Style::for_stdout(),
        export,
    };
    let mut schedule = Schedule::new(before.counters.at, period);
    let mut iteration = first_iteration;
    let mut done = 0u64;
    loop {
        let next_deadline = schedule.next_deadline();
        let stopped_by = match next_wake(&mut signals, next_deadline.into(), &mut watchdog).await {
            Wake::Deadline => None,
            Wake::Hangup => {
                if let Some(log) = &mut outputs.log {
                    log.reopen();
                }
                continue;
            }
            Wake::WatchdogPing => {
                notifier.ping(next_deadline, std::time::Instant::now());
                continue;
            }
            Wake::Stop(signal) => {
                notifier.stopping(&format!("stopped by {signal}"));
                Some(signal)
            }
        };
        let after = sampler.take();
        let timing = match stopped_by {
            // The last interval ends early, on purpose: not late, one (short) period.
            Some(_) => Timing {
                late: Duration::ZERO,
                periods: 1,
            },
            None => schedule.sampled(after.counters.at),
        };
        let interval = between(
            options,
            &mut sampler,
            (&before, &after),
            iteration,
            (timing, stopped_by),
        );
        outputs.export(&interval, &before.counters, &after.counters);
        let reader_there = outputs.emit(&interval)?;
        notifier.interval_done(&interval, outputs.log.as_ref().is_some_and(CsvLog::failing));
        before = after;
        iteration += 1;
        done += 1;
        if stopped_by.is_some() {
            // STOPPING=1 went out when the signal came, before this last interval.
            return Ok(());
        }
        if let Some(why) = run_over(options, done, reader_there) {
            notifier.stopping(why);
            return Ok(());
        }
    }
}

/// The interval between two snapshots: the counters' columns and the eBPF side's attribution.
fn between(
    options: &MonitorOptions,
    sampler: &mut Sampler,
    (before, after): (&Snapshot, &Snapshot),
    iteration: u64,
    (timing, stopped_by): (Timing, Option<&'static str>),
) -> interval::Interval {
    let mut interval = interval::build(
        &before.counters,
        &after.counters,
        interval::Context {
            timestamp: clock::local_timestamp(),
            iteration,
            interface: &options.interface,
            threshold: options.threshold,
            period: Duration::from_secs_f64(options.interval),
            timing,
            stopped_by,
        },
    );
    interval.kernel = sampler.attribute(before, after);
    interval
}

/// Why the run ends after `done` intervals with no signal, if it does.
fn run_over(options: &MonitorOptions, done: u64, reader_there: bool) -> Option<&'static str> {
    if !reader_there {
        Some("stdout closed")
    } else if options.count.is_some_and(|c| done >= c) {
        Some("--count reached")
    } else {
        None
    }
}

/// The one line at start (after the baseline sample: what follows is measured), and the
/// columns this interface cannot have. Returns what is monitored, for the service manager's
/// status.
fn announce(
    options: &MonitorOptions,
    log: &Option<CsvLog>,
    first: u64,
    baseline: &Sample,
    ebpf: &EbpfState,
    metrics_at: Option<SocketAddr>,
) -> String {
    let log = match (log, &options.log) {
        (Some(_), Some(path)) if first > 1 => {
            format!("log {} (continuing at #{first:04})", path.display())
        }
        (Some(_), Some(path)) => format!("log {}", path.display()),
        _ => "no log".to_string(),
    };
    let what = format!(
        "{} every {} s, CRIT from {} drops, {log}",
        links::describe(&options.interface, &baseline.nic.source),
        options.interval,
        options.threshold
    );
    eprintln!("netprobe monitor: {what}; {}", ebpf.describe());
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
    // After the columns line, which scripts read as the second line.
    for line in ebpf.inactive() {
        eprintln!("netprobe monitor: {line}");
    }
    if let Some(at) = metrics_at {
        eprintln!("netprobe monitor: metrics on http://{at}/metrics");
    }
    format!("monitoring {what}")
}
