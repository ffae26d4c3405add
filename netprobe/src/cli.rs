//! Command line.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{kernel::btf::VMLINUX_BTF, kernel::filter};

#[derive(Debug, Parser)]
#[command(
    name = "netprobe",
    version,
    about = "Where are packets lost? TCP retransmits and kernel packet drops, per flow, from eBPF."
)]
pub struct Cli {
    /// Kernel BTF to read layouts and drop-reason names from.
    #[arg(long, global = true, default_value = VMLINUX_BTF, value_name = "PATH")]
    pub btf: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream retransmits and drops until Ctrl-C, SIGTERM or --duration; then print a summary.
    Trace(TraceArgs),
    /// Sample every loss counter twice (--interval apart) and report findings with fixes.
    /// Works without root; what it cannot read is listed as skipped.
    Report(ReportArgs),
    /// Watch every per-layer drop counter, every INTERVAL seconds, for days: a console line
    /// (or NDJSON) and a CSV log row per interval (columns: docs/monitor.md).
    Monitor(MonitorArgs),
    /// Analyse `netprobe monitor`'s CSV logs (rotated, gzip or not): intervals with drops,
    /// drops by category and hour, the worst and the last intervals; --chart draws an SVG or PNG.
    Analyze(AnalyzeArgs),
    /// List the drop reasons of the running kernel (names usable with --reason).
    Reasons,
}

/// `netprobe monitor [INTERFACE] [INTERVAL] [LOGFILE]`: the positionals the script took, or
/// the same as flags.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct MonitorArgs {
    /// Interface to watch (default eth0).
    #[arg(value_name = "INTERFACE", conflicts_with = "interface")]
    pub interface_arg: Option<String>,
    /// Seconds between samples (default 5).
    #[arg(value_name = "INTERVAL", conflicts_with = "interval")]
    pub interval_arg: Option<f64>,
    /// CSV log to append to (default /var/log/network_drops.log).
    #[arg(value_name = "LOGFILE", conflicts_with_all = ["log", "no_log"])]
    pub log_arg: Option<PathBuf>,
    /// Interface to watch (the same as INTERFACE).
    #[arg(long, value_name = "IFNAME")]
    pub interface: Option<String>,
    /// Seconds between samples (the same as INTERVAL).
    #[arg(long, value_name = "SECS")]
    pub interval: Option<f64>,
    /// CSV log to append to (the same as LOGFILE).
    #[arg(long, value_name = "PATH", conflicts_with = "no_log")]
    pub log: Option<PathBuf>,
    /// Drops in one interval from which it is CRIT (WARN below, OK at 0).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub threshold: u64,
    /// Stop after N intervals.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// One NDJSON object per interval on stdout instead of the console lines.
    #[arg(long)]
    pub json: bool,
    /// Write no CSV log.
    #[arg(long)]
    pub no_log: bool,
    /// Read the counters only, even as root: no eBPF programs are loaded.
    #[arg(long)]
    pub counters_only: bool,
    /// Serve Prometheus/OpenMetrics `/metrics` at HOST:PORT (a port alone: 127.0.0.1).
    #[arg(long, value_name = "ADDR", value_parser = crate::monitor::exporter::server::parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// Export only the interfaces whose whole name matches REGEX (with --listen).
    #[arg(long, value_name = "REGEX", requires = "listen")]
    pub metrics_interface: Option<String>,
}

impl MonitorArgs {
    pub const DEFAULT_INTERFACE: &str = "eth0";
    pub const DEFAULT_INTERVAL: f64 = 5.0;
    pub const DEFAULT_LOG: &str = "/var/log/network_drops.log";

    pub fn resolved_interface(&self) -> String {
        self.interface_arg
            .clone()
            .or_else(|| self.interface.clone())
            .unwrap_or_else(|| Self::DEFAULT_INTERFACE.into())
    }

    pub fn resolved_interval(&self) -> f64 {
        self.interval_arg
            .or(self.interval)
            .unwrap_or(Self::DEFAULT_INTERVAL)
    }

    /// `None` with `--no-log`.
    pub fn resolved_log(&self) -> Option<PathBuf> {
        if self.no_log {
            return None;
        }
        Some(
            self.log_arg
                .clone()
                .or_else(|| self.log.clone())
                .unwrap_or_else(|| Self::DEFAULT_LOG.into()),
        )
    }
}

/// `netprobe analyze LOGFILE…`: rotated logs oldest first
/// (`network_drops.log.2.gz network_drops.log.1 network_drops.log`).
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The monitor's CSV logs, in time order; gzip-compressed ones are recognised.
    #[arg(value_name = "LOGFILE", required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also draw drops over time, stacked by category, to this SVG or PNG file (by its name).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub chart: Option<PathBuf>,
    /// Drops per interval from which it is CRIT (the monitor's --threshold): the chart's line.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub threshold: u64,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Seconds between the two samples; rates are per second over this window.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
    /// One JSON document instead of text (schema: docs/report.md).
    #[arg(long)]
    pub json: bool,
    /// Only this interface (NIC, ring, qdisc and IRQ sections).
    #[arg(long, value_name = "IFNAME")]
    pub interface: Option<String>,
}

/// Which method attaches the function hooks (`--function-hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FunctionHooks {
    Auto,
    Fentry,
    Kprobe,
    Off,
}

/// How the tracepoint hooks attach (`--tracepoint-hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TracepointHooks {
    /// BTF-typed (tp_btf: direct loads) where the kernel allows it and a hook has that form
    /// (retransmits, drops, NAPI polls, received segments), raw tracepoints elsewhere.
    Auto,
    /// Raw tracepoints only (helper reads): the fallback, for comparison or where a kernel's
    /// BTF-typed tracepoints misbehave.
    Raw,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// NDJSON output: one object per line, ending with a summary object.
    #[arg(long)]
    pub json: bool,
    /// Count in the kernel only: no per-event lines, the lowest cost (one map update per
    /// drop); the summary and findings (at the end and every --report-every) are exact from
    /// the kernel's maps, but drops are not linked to flows.
    #[arg(long, conflicts_with = "max_rate")]
    pub count: bool,
    /// Only flows with this port at either end.
    #[arg(long, value_parser = filter::parse_port)]
    pub port: Option<u16>,
    /// Only flows with this IPv4 or IPv6 address at either end.
    #[arg(long, value_parser = filter::parse_addr)]
    pub addr: Option<IpAddr>,
    /// Only this network namespace: an inode number, a name under /var/run/netns, or a path.
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,
    /// Only drops with this reason (e.g. NETFILTER_DROP); retransmits are not affected.
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// Ring buffer size in bytes (a power of two ≥ 4096).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub ring_size: u32,
    /// Stream at most N drops per second from each drop site (reason, function, device,
    /// namespace) on each CPU; the rest are counted exactly, and the stream says so ("storm:"
    /// lines). Without it a site is sampled only while the reader is behind.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rate: Option<u32>,
    /// Flows and reasons shown in the text summary and in each finding.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Do not attach the per-CPU hooks (softirq entry/exit, NAPI polls): no NET_RX/NAPI
    /// attribution and no retransmit trigger, for the lowest cost on a busy receive path.
    #[arg(long)]
    pub without_cpu_hooks: bool,
    /// Do not attach the receive-path hook (no peer_retransmit / ooo).
    #[arg(long)]
    pub without_receive_hook: bool,
    /// How to hook tcp_send_loss_probe and tcp_retransmit_timer for exact TLP/RTO kinds:
    /// the best the kernel allows (auto: fentry/fexit, else kprobes), one method only, or off
    /// (kinds inferred from the congestion state and the softirq, as without either).
    #[arg(long, value_enum, default_value_t = FunctionHooks::Auto)]
    pub function_hooks: FunctionHooks,
    /// How to attach the tracepoint hooks that have a BTF-typed form (retransmits, drops, NAPI
    /// polls, received segments): tp_btf (direct loads, the cheapest) where the kernel allows
    /// it, else a raw tracepoint (auto); or raw tracepoints only.
    #[arg(long, value_enum, default_value_t = TracepointHooks::Auto)]
    pub tracepoint_hooks: TracepointHooks,
    /// Also print the findings bundle every SECS seconds (each covers the trace so far);
    /// one is always printed at the end.
    #[arg(long, value_name = "SECS")]
    pub report_every: Option<f64>,
}
