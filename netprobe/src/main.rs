use std::{io::Write, process::ExitCode};

use clap::Parser;
use netprobe::{
    cli::{Cli, Command},
    kernel::btf::{DropReasons, KernelBtf},
    report, trace,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line; the chain is already part of each error's message.
            eprintln!("netprobe: error: {e:#}");
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
            runtime.block_on(trace::run(&args, &cli.btf))?;
        }
        Command::Report(args) => {
            let report = report::run(&report::ReportOptions {
                interval: args.interval,
                interface: args.interface.clone(),
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!(
                    "{}",
                    report::render::text(&report, &report::render::Style::for_stdout())
                );
            }
        }
        Command::Reasons => {
            let reasons = DropReasons::from_btf(&KernelBtf::load(&cli.btf)?)?;
            if !reasons.recorded() {
                eprintln!("netprobe: this kernel records no drop reasons (enum skb_drop_reason arrived in Linux 5.17): drops are reported as UNRECORDED, with the layer of the function that freed them");
            }
            let mut out = std::io::stdout().lock();
            for (value, name) in reasons.iter() {
                // A reader that stopped reading (`| head`) is not an error.
                if writeln!(out, "{value:>8}  {name}").is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}
