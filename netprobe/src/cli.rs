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
    /// List the drop reasons of the running kernel (names usable with --reason).
    Reasons,
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

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// NDJSON output: one object per line, ending with a summary object.
    #[arg(long)]
    pub json: bool,
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
    /// Also print the findings bundle every SECS seconds (each covers the trace so far);
    /// one is always printed at the end.
    #[arg(long, value_name = "SECS")]
    pub report_every: Option<f64>,
}
