use std::{
    fmt::Write as _,
    io::{self, Write},
    process::ExitCode,
};

use anyhow::Context;
use clap::Parser;
use netprobe::{
    analyze,
    cli::{Cli, Command},
    kernel::btf::{DropReasons, KernelBtf},
    monitor, report, trace,
};

fn main() -> ExitCode {
    // clap prints --help, --version and usage errors itself and ignores a closed stdout.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line; the chain is already part of each error's message. Nobody is
            // left to tell if stderr is gone too, so a failed write is not worth a panic.
            let _ = writeln!(io::stderr(), "netprobe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Trace(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // trace stops by itself, successfully, once its stdout is closed.
            runtime.block_on(trace::run(&args, &cli.btf))?;
        }
        Command::Report(args) => {
            let report = report::run(&report::ReportOptions {
                interval: args.interval,
                interface: args.interface.clone(),
            })?;
            let text = if args.json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                report::render::text(&report, &report::render::Style::for_stdout())
            };
            print(&text)?;
        }
        Command::Monitor(args) => monitor::run(&monitor::MonitorOptions {
            interface: args.resolved_interface(),
            interval: args.resolved_interval(),
            log: args.resolved_log(),
            threshold: args.threshold,
            count: args.count,
            json: args.json,
            counters_only: args.counters_only,
            btf: cli.btf.clone(),
            listen: args.listen,
            metrics_interface: args.metrics_interface.clone(),
        })?,
        Command::Analyze(args) => print(&analyze::run(&analyze::AnalyzeOptions {
            files: args.files,
            json: args.json,
            chart: args.chart,
            threshold: args.threshold,
        })?)?,
        Command::Reasons => {
            let reasons = DropReasons::from_btf(&KernelBtf::load(&cli.btf)?)?;
            if !reasons.recorded() {
                let _ = writeln!(
                    io::stderr(),
                    "netprobe: this kernel records no drop reasons (enum skb_drop_reason arrived in Linux 5.17): drops are reported as UNRECORDED, with the layer of the function that freed them"
                );
            }
            let mut text = String::new();
            for (value, name) in reasons.iter() {
                let _ = writeln!(text, "{value:>8}  {name}");
            }
            print(&text)?;
        }
    }
    Ok(())
}

/// Writes a command's whole output to stdout. A reader that stopped reading (`| head`, a
/// closed pipe) is not a failure: the output was for it alone, so the command ends with exit
/// status 0, as a completed one would. Any other write error (a full disk…) is.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
