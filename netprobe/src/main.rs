use std::process::ExitCode;

use clap::Parser;
use netprobe::{
    btf::{DropReasons, KernelBtf},
    cli::{Cli, Command},
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
            for (value, name) in reasons.iter() {
                println!("{value:>8}  {name}");
            }
        }
    }
    Ok(())
}
